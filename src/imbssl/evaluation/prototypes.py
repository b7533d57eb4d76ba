"""The prototype-usage job: how many images of a subset each prototype of a model wins (the
methods with prototypes, catalog.MethodInfo.prototypes).

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
from imbssl.methods import catalog
from imbssl.methods.prototypes import expected_usage, prototype_usage
from imbssl.methods.registry import Method, MethodConfig, build_method
from imbssl.models.backbones import backbone_from_meta


def load_prototype_method(model_path: str | os.PathLike, config: MethodConfig,
                          device: torch.device) -> tuple[Method, object]:
    """The method with prototypes stored in a pretrain model.pt, built with the settings it was
    trained with, and the file's metadata."""
    model = read_model(model_path)
    info = catalog.METHODS.get(model.meta.method)
    if info is None or not info.prototypes:
        raise UserError(f"{model_path} holds a {model.meta.method!r} model: prototype usage needs a method with "
                        f"prototypes ({', '.join(catalog.prototype_methods())})")
    method = build_method(model.meta.method, backbone_from_meta(model.meta), **vars(config))
    try:
        method.load_state_dict(model.method_state)
    except RuntimeError as err:
        raise UserError(f"{model_path} does not match the {model.meta.method} settings given (its head and "
                        f"prototype sizes): pass the settings it was trained with") from err
    return method.to(device), model.meta


def write_usage(model: str, train_data: str, subset: str, out: str, config: MethodConfig,
                device: str = "auto", batch_size: int = 1024, subset_name: str = "", seed: int = 0) -> PrototypeUsage:
    """Prototype usage of `model` on the images of `subset`, written to the JSON file `out`."""
    dev = resolve_device(device)
    method, meta = load_prototype_method(model, config, dev)
    split = load_split(train_data)
    indices, _ = read_subset(subset)
    images = StreamedImages(split.images, indices, dev)  # one pass: streamed in chunks
    counts = prototype_usage(method, images, meta.mean, meta.std, batch_size, meta.image_size)
    usage = PrototypeUsage(method=meta.method, prior=getattr(method.config, "prior", "uniform"),
                           tau=getattr(method.config, "tau", 0.0),
                           num_prototypes=int(counts.shape[0]), num_images=int(counts.sum()),
                           counts=counts.tolist(), expected=expected_usage(method, int(counts.sum())),
                           subset=subset_name, seed=seed)
    write_prototype_usage(out, usage)
    return usage
