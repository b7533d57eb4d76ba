"""Stopping a training run the ways a job stops, without a test-only parameter in the training
code: right after a checkpoint, as a kill would (the loop's checkpoint writer is wrapped), or by a
signal sent to this process during a given step (the loop's step function is wrapped)."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

import pytest


class Killed(Exception):
    """Raised right after the chosen checkpoint was written."""


@contextmanager
def killed_after_checkpoint(epoch: int, step: int = 0):
    """Within the block, a training run stops with `Killed` once its checkpoint at `step` batches
    into the epoch after `epoch` finished ones is on disk (step 0: the checkpoint of epoch `epoch`,
    which needs checkpoint_every dividing it); the block expects that to happen."""
    from imbssl.training import loop

    real = loop.save_checkpoint

    def save_then_die(path, state):
        real(path, state)
        if (state["epoch"], state.get("step", 0)) >= (epoch, step):
            raise Killed(f"killed after the checkpoint at epoch {state['epoch']} step {state.get('step', 0)}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            yield


def killed_after_epoch(epoch: int):
    """A training run stops once its checkpoint of `epoch` is on disk (see killed_after_checkpoint)."""
    return killed_after_checkpoint(epoch, 0)


@contextmanager
def signalled_during_step(count: int, signum: int = signal.SIGTERM):
    """Within the block, this process gets `signum` while the training loop runs its `count`-th
    step (1-based, counted over epochs), as SLURM's signal would come: the run must stop after that
    step with a checkpoint, raising imbssl.Stopped (which the block expects)."""
    from imbssl import Stopped
    from imbssl.training import loop

    real, calls = loop.train_step, []

    def step_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == count:
            os.kill(os.getpid(), signum)  # the handler runs at once, in this (the main) thread
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "train_step", step_then_signal)
        with pytest.raises(Stopped):
            yield
