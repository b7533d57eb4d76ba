"""Prototype usage of a trained model with prototypes (MSN, PMSN, SwAV, power-law SwAV, DINO): how
many images each prototype wins.

An image "wins" the prototype its scores are highest for (`Method.prototype_scores`: the encoder
the method evaluates, a temperature never changes the argmax). The prior says how many images each
prototype should take (`Method.prototype_prior`), most likely first, so that sorted usage and prior
compare on one axis.
"""

from __future__ import annotations

import numpy as np
import torch

from imbssl.data.augment import centre_crop, normalize
from imbssl.data.device import as_source
from imbssl.methods.registry import Method


@torch.no_grad()
def prototype_usage(method: Method, images, mean, std, batch_size: int = 1024, size: int | None = None) -> np.ndarray:
    """(K,) int64: images of uint8 NCHW `images` (a tensor on the method's device, or an image
    source), centre-cropped to `size`, won by each prototype."""
    images = as_source(images)
    was_training = method.training
    method.eval()
    counts = None
    for chunk in images.chunks(batch_size):
        winners = method.prototype_scores(normalize(centre_crop(chunk, size), mean, std)).argmax(dim=1)
        found = torch.bincount(winners, minlength=len(method.prototype_prior()))
        counts = found if counts is None else counts + found
    method.train(was_training)
    return counts.cpu().numpy() if counts is not None else np.zeros(len(method.prototype_prior()), np.int64)


def expected_usage(method: Method, num_images: int) -> list[float]:
    """Images per prototype the method's prior expects, most likely prototype first (compare with
    the sorted usage)."""
    return (method.prototype_prior().cpu().double() * num_images).tolist()
