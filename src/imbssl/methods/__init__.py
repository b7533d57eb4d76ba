"""Self-supervised methods: one short module each (heads, loss, optimizer defaults).

Importing this package registers every method in `registry.METHODS`.
"""

from imbssl.methods import byol, dino, msn, simclr, simsiam, swav, vicreg  # noqa: F401  (registration side effect)
from imbssl.methods.registry import METHODS, Method, MethodConfig, build_method, get_method  # noqa: F401
