"""The base of every method, and the registry that finds a method's class from the catalog.

A method is its heads, its loss and its optimizer settings; the training loop runs any of them.
`get_method(name)` imports `imbssl.methods.<module>` as `catalog.py` lists it, so only the method
that runs is imported.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from imbssl.core.optim import build_optimizer
from imbssl.methods import catalog


Optimizer = Literal["sgd", "lars", "adamw"]  # core/optim.py builds each


@dataclass
class MethodConfig:
    """Optimizer settings every method has; subclasses add their heads' sizes and loss settings."""

    optimizer: Optimizer = "sgd"  # sgd | lars | adamw (core/optim.py)
    base_lr: float = 0.03  # scaled by batch_size / 256
    weight_decay: float = 1e-5  # weight decay coefficient (decoupled from the gradient in adamw)
    momentum: float = 0.9  # momentum of sgd and lars (unused by adamw)
    warmup_epochs: int = 0  # linear warm-up of the learning rate, then the cosine schedule

    def optimizer_options(self) -> dict:
        """Keyword arguments of `build_optimizer` beyond the four above (none by default)."""
        return {}


@dataclass
class LARSMethodConfig(MethodConfig):
    """A method whose recipe trains with LARS: its trust coefficient and lr clipping are settings,
    because the recipes differ (SimCLR: eta 0.001, unclipped; solo-learn's CIFAR recipes: eta 0.02,
    clipped) and the step of every weight tensor scales with eta."""

    optimizer: Optimizer = "lars"
    lars_eta: float = 0.001  # LARS trust coefficient: a weight tensor's step is eta x ||w|| / ||g||
    lars_clip_lr: bool = False  # cap each tensor's LARS learning rate at the global one

    def optimizer_options(self) -> dict:
        return {"lars_eta": self.lars_eta, "lars_clip_lr": self.lars_clip_lr}


class Method(nn.Module):
    """A backbone plus the heads and loss of one self-supervised method."""

    name: ClassVar[str] = "method"  # the catalog's name (set by each method's module)
    num_views: ClassVar[int] = 2
    # The config section holding the method's settings, for messages (default: its name).
    config_section: ClassVar[str | None] = None

    def __init__(self, backbone: nn.Module, config: MethodConfig):
        super().__init__()
        self.backbone = backbone
        self.config = config

    def loss(self, views: list[torch.Tensor], index: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of a batch of augmented views, and extra metrics as 0-d tensors (never .item()'d here).

        `views` holds `num_views` augmentations of the same images; `index` their positions in the
        training set (used by methods that look up per-image data, e.g. the cluster of an image).

        Must include "out_std": the std of the L2-normalised output, a collapse indicator
        (about 1/sqrt(dim) when healthy, 0 when collapsed).
        """
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor], index: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Calling the method computes its loss: what DistributedDataParallel wraps."""
        return self.loss(views, index)

    @property
    def eval_backbone(self) -> nn.Module:
        """The backbone that is saved and evaluated: the trained one, unless a method says otherwise
        (MSN evaluates its EMA target encoder)."""
        return self.backbone

    def exported_state(self) -> dict[str, torch.Tensor]:
        """What model.pt keeps of the trained module (a resume checkpoint keeps all of it)."""
        return self.state_dict()

    @property
    def section(self) -> str:
        return self.config_section or self.name

    def make_optimizer(self, batch_size: int) -> torch.optim.Optimizer:
        return build_optimizer(self, self.config.optimizer, self.peak_lr(batch_size), self.config.weight_decay,
                               self.config.momentum, no_decay=self.no_decay_parameters(),
                               fixed_lr=self.fixed_lr_parameters(), **self.config.optimizer_options())

    def no_decay_parameters(self) -> list[nn.Parameter]:
        """Parameters kept out of weight decay beyond the optimizer's own rule (none by default)."""
        return []

    def fixed_lr_parameters(self) -> list[nn.Parameter]:
        """Parameters whose learning rate stays at the peak while the schedule moves the rest."""
        return []

    def clip_gradients(self) -> None:
        """Hook between backward and the optimizer step (MSN clips its encoder's gradients here)."""

    def peak_lr(self, batch_size: int) -> float:
        return self.config.base_lr * batch_size / 256

    def after_step(self, progress: float) -> None:
        """Hook after each optimizer step (`progress` in [0, 1]); EMA teachers update here."""

    # Methods with prototypes (the catalog's `prototypes`) answer these two: which prototype an
    # image goes to, and how many images the method's prior expects each prototype to take.

    def prototype_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) scores of normalised images `x` against the K prototypes, from the encoder the
        method evaluates: an image goes to its highest-scoring prototype."""
        raise NotImplementedError(f"{self.name} has no prototypes")

    def prototype_prior(self) -> torch.Tensor:
        """(K,) the share of images the method's prior expects each prototype to take, most likely
        first (uniform unless the method says otherwise)."""
        raise NotImplementedError(f"{self.name} has no prototypes")


def get_method(name: str) -> tuple[type[Method], type[MethodConfig]]:
    """The Method subclass and settings dataclass of a catalogued method (an unknown name is a
    one-line error listing the known ones)."""
    info = catalog.method_info(name)
    module = importlib.import_module(f"imbssl.methods.{info.module}")
    cls, config_cls = getattr(module, info.class_name), getattr(module, info.config_class)
    assert cls.name == name, f"catalog entry {name!r} names {info.class_name}, whose `name` is {cls.name!r}"
    return cls, config_cls


def build_method(name: str, backbone: nn.Module, **settings) -> Method:
    cls, config_cls = get_method(name)
    return cls(backbone, config_cls(**settings))


def output_std(z: torch.Tensor) -> torch.Tensor:
    """Collapse indicator of SimSiam's paper: per-dimension std of L2-normalised outputs, averaged."""
    return nn.functional.normalize(z.detach().float(), dim=1).std(dim=0).mean()
