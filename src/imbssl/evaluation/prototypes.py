"""The prototype-usage job: how many images of a subset each prototype of an MSN/PMSN model wins.

Counts are written with the prior they should be compared with, as the images per prototype it
expects (N * p_k, most used first), so that the figure draws both without torch or a copy of the
prior's formula.
"""

from __future__ import annotations

import os

import torch

from imbssl import UserError
from imbssl.core.artifacts import PrototypeUsage, read_model, read_subset, write_prototype_usage
from imbssl.data.device import StreamedImages, resolve_device
from imbssl.data.store import load_split
from imbssl.methods.msn import MSN, MSNConfig
from imbssl.methods.prototypes import expected_usage, prototype_usage
from imbssl.methods.registry import build_method
from imbssl.models.backbones import backbone_from_meta


def load_msn(model_path: str | os.PathLike, config: MSNConfig, device: torch.device) -> tuple[MSN, object]:
    """The MSN/PMSN method stored in a pretrain model.pt, built with the settings it was trained
    with, and the file's metadata."""
    model = read_model(model_path)
    if model.meta.method not in ("msn", "pmsn"):
        raise UserError(f"{model_path} holds a {model.meta.method!r} model: prototype usage needs msn or pmsn")
    method = build_method(model.meta.method, backbone_from_meta(model.meta), **vars(config))
    try:
        method.load_state_dict(model.method_state)
    except RuntimeError as err:
        raise UserError(f"{model_path} does not match the {model.meta.method} settings given (num_prototypes, "
                        f"proj_dim, proj_hidden_dim): pass the settings it was trained with") from err
    return method.to(device), model.meta


def write_usage(model: str, train_data: str, subset: str, out: str, config: MSNConfig,
                device: str = "auto", batch_size: int = 1024) -> PrototypeUsage:
    """Prototype usage of `model` on the images of `subset`, written to the JSON file `out`."""
    dev = resolve_device(device)
    method, meta = load_msn(model, config, dev)
    split = load_split(train_data)
    indices, _ = read_subset(subset)
    images = StreamedImages(split.images, indices, dev)  # one pass: streamed in chunks
    counts = prototype_usage(method, images, meta.mean, meta.std, batch_size, meta.image_size)
    usage = PrototypeUsage(method=meta.method, prior=method.config.prior, tau=method.config.tau,
                           num_prototypes=int(counts.shape[0]), num_images=int(counts.sum()),
                           counts=counts.tolist(), expected=expected_usage(method, int(counts.sum())))
    write_prototype_usage(out, usage)
    return usage
