"""Prototype usage of a trained MSN/PMSN model: how many images each prototype wins.

An image "wins" the prototype its target (EMA) encoder output is most similar to (cosine), i.e.
the argmax of its soft assignment; the temperature does not change the argmax. The target
encoder is used because it is the one MSN evaluates. Counts are written to JSON with the prior
they should be compared with, as the images per prototype it expects (N * p_k, most used first),
so that `figures.py` draws both without torch or a copy of the prior's formula.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from imbssl import UserError
from imbssl.core import checkpoint
from imbssl.core.atomic import write_json
from imbssl.data.augment import centre_crop, normalize
from imbssl.data.store import load_split
from imbssl.data.device import StreamedImages, as_source, resolve_device
from imbssl.methods import build_method
from imbssl.methods.msn import MSN, MSNConfig
from imbssl.models.backbones import backbone_from_meta
from imbssl.data.subsets import read_csv


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


def load_msn(model_path: str | os.PathLike, config: MSNConfig, device: torch.device) -> tuple[MSN, dict]:
    """The MSN/PMSN method stored in a pretrain model.pt, built with the settings it was trained with."""
    state = checkpoint.load(model_path, map_location="cpu")
    if state.get("method") not in ("msn", "pmsn"):
        raise UserError(f"{model_path} holds a {state.get('method')!r} model: prototype usage needs msn or pmsn")
    backbone = backbone_from_meta(state)
    method = build_method(state["method"], backbone, **vars(config))
    try:
        method.load_state_dict(state["method_state"])
    except RuntimeError as err:
        raise UserError(f"{model_path} does not match the {state['method']} settings given (num_prototypes, "
                        f"proj_dim, proj_hidden_dim): pass the settings it was trained with") from err
    return method.to(device), state


def write_usage(model: str, train_data: str, subset: str, out: str, config: MSNConfig,
                device: str = "auto", batch_size: int = 1024) -> dict:
    """Prototype usage of `model` on the images of `subset`, written to the JSON file `out`."""
    dev = resolve_device(device)
    method, state = load_msn(model, config, dev)
    split = load_split(train_data)
    indices, _ = read_csv(subset)
    images = StreamedImages(split.images, indices, dev)  # one pass: streamed in chunks
    counts = prototype_usage(method, images, state["mean"], state["std"], batch_size, state["image_size"])
    result = {
        "method": state["method"],
        "prior": method.config.prior,
        "tau": method.config.tau,
        "num_prototypes": int(counts.shape[0]),
        "num_images": int(counts.sum()),
        "counts": counts.tolist(),
        # The prior's p_k are sorted from the most likely prototype: compare with sorted usage.
        "expected": (method.prior.cpu().double() * int(counts.sum())).tolist(),
    }
    write_json(out, result)
    return result
