"""The export job (`imbssl export`): a pipeline model.pt's backbone as a file another library loads.

The files: model.pt read through core.artifacts, the export written atomically. The conversion
itself (key names, the loading code) is imbssl.models.export, with no files.
"""

from __future__ import annotations

import os

import torch

from imbssl import UserError
from imbssl.core import checkpoint
from imbssl.core.artifacts import read_model
from imbssl.core.atomic import atomic_path
from imbssl.models.export import BackboneMeta, library_state_dict, loader_code, safetensors_metadata

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
    model_file = read_model(model)
    meta = BackboneMeta.from_model_meta(model_file.meta)
    state_dict = library_state_dict(model_file.backbone, meta, fmt)
    if fmt == "safetensors":
        write_safetensors(state_dict, safetensors_metadata(meta), out)
    else:
        checkpoint.save(state_dict, out)
    return loader_code(meta, fmt, str(out))
