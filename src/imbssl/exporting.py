"""`imbssl export`: a pipeline model.pt's backbone as a file another library loads.

The files: read model.pt (read_model_file, the one place that does), write the export atomically.
The conversion itself (key names, the loading code) is imbssl.models.export, with no files.
"""

from __future__ import annotations

import os

import torch

from imbssl import UserError
from imbssl.core import checkpoint
from imbssl.core.atomic import atomic_path
from imbssl.models.export import BackboneMeta, library_state_dict, loader_code, safetensors_metadata

# What export needs of a model.pt (every pipeline model.pt has them: training.loop.save_model).
MODEL_FILE_KEYS = ("backbone", "arch", "width", "image_size", "output_dim", "mean", "std")


def read_model_file(path: str | os.PathLike) -> dict:
    """The contents of a pipeline model.pt: the `backbone` state dict, arch, width, stem,
    image_size, output_dim, mean, std (and what else training stored)."""
    contents = checkpoint.load(path)
    missing = [key for key in MODEL_FILE_KEYS if key not in contents]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: pass a model.pt written by the pipeline "
                        f"(results/pretrain/<subset>/<method>/seed<seed>/model.pt)")
    return contents


def write_safetensors(state_dict: dict[str, torch.Tensor], metadata: dict[str, str], out: str | os.PathLike) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError as err:
        raise UserError("export --format safetensors needs the safetensors package: "
                        "pip install 'imbssl[export]'") from err
    with atomic_path(out) as tmp:
        save_file(state_dict, str(tmp), metadata=metadata)


def export_model(model: str | os.PathLike, fmt: str, out: str | os.PathLike) -> str:
    """Write the backbone of `model` for `fmt` (torchvision | timm | safetensors) to `out`;
    return the Python code that loads it."""
    contents = read_model_file(model)
    meta = BackboneMeta.from_model_file(contents)
    state_dict = library_state_dict(contents["backbone"], meta, fmt)
    if fmt == "safetensors":
        write_safetensors(state_dict, safetensors_metadata(meta), out)
    else:
        checkpoint.save(state_dict, out)
    return loader_code(meta, fmt, str(out))
