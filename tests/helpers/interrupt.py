"""Stopping a training run right after its checkpoint of a given epoch, as a kill would, without a
test-only parameter in the training code: the loop's checkpoint writer is wrapped."""

from __future__ import annotations

from contextlib import contextmanager

import pytest


class Killed(Exception):
    """Raised right after the checkpoint of the chosen epoch was written."""


@contextmanager
def killed_after_epoch(epoch: int):
    """Within the block, a training run stops with `Killed` once its checkpoint of `epoch` is on
    disk (the run needs checkpoint_every dividing `epoch`); the block expects that to happen."""
    from imbssl.training import loop

    real = loop.save_checkpoint

    def save_then_die(path, state):
        real(path, state)
        if state["epoch"] >= epoch:
            raise Killed(f"killed after epoch {state['epoch']}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            yield
