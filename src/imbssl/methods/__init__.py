"""Self-supervised methods: one short module each (heads, loss, optimizer defaults).

Importing this package registers every method in `registry.METHODS`.
"""

from . import simclr, simsiam  # noqa: F401  (registration side effect)
from .registry import METHODS, Method, MethodConfig, build_method, get_method  # noqa: F401

try:  # MSN needs the ViT backbone module; registered when present
    from . import msn  # noqa: F401
except ImportError:  # pragma: no cover
    pass
