"""Prototype usage of a trained MSN/PMSN model: how many images each prototype wins.

An image "wins" the prototype its target (EMA) encoder output is most similar to (cosine), i.e.
the argmax of its soft assignment; the temperature does not change the argmax. The target
encoder is used because it is the one MSN evaluates.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from imbssl.data.augment import centre_crop, normalize
from imbssl.data.device import as_source
from imbssl.methods.msn import MSN


@torch.no_grad()
def prototype_usage(method: MSN, images, mean, std, batch_size: int = 1024, size: int | None = None) -> np.ndarray:
    """(K,) int64: images of uint8 NCHW `images` (a tensor on the method's device, or an image
    source), centre-cropped to `size`, won by each prototype."""
    images = as_source(images)
    was_training = method.training
    method.eval()
    encoder, projector = method.target["backbone"], method.target["projector"]
    prototypes = F.normalize(method.prototypes.float(), dim=1)
    counts = torch.zeros(prototypes.shape[0], dtype=torch.int64, device=images.device)
    for chunk in images.chunks(batch_size):
        z = projector(encoder(normalize(centre_crop(chunk, size), mean, std))).float()
        winners = (F.normalize(z, dim=1) @ prototypes.T).argmax(dim=1)
        counts += torch.bincount(winners, minlength=prototypes.shape[0])
    method.train(was_training)
    return counts.cpu().numpy()


def expected_usage(method: MSN, num_images: int) -> list[float]:
    """Images per prototype the method's prior expects, most likely prototype first (compare with
    the sorted usage)."""
    return (method.prior.cpu().double() * num_images).tolist()
