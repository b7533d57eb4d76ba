"""A training job stopped mid-epoch (a signal, a wall-time checkpoint, a damaged checkpoint) goes
on from where it stopped and ends with the weights of the uninterrupted run, bit for bit on the
CPU. In-process runs here; the same through torchrun in test_distributed.py and through SLURM in
test_slurm.py."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch

from imbssl import Stopped, UserError
from imbssl.core import checkpoint
from imbssl.data.augment import AugmentConfig
from imbssl.models.backbones import ModelConfig
from imbssl.training.loop import TrainSettings
from imbssl.training.pretrain import pretrain

from helpers.interrupt import killed_after_checkpoint, killed_after_epoch, signalled_during_step

BATCH = 32
SUBSET = "imbalanced-p100.csv"


def settings(**kw) -> TrainSettings:
    base = dict(epochs=2, batch_size=BATCH, checkpoint_every=1, knn_every=0, log_every=2, device="cpu")
    return TrainSettings(**{**base, **kw})


def run(digits_data, out, method="simsiam", **kw):
    from imbssl.methods.msn import MSNConfig
    from imbssl.methods.simsiam import SimSiamConfig

    train, test, subsets = digits_data
    if method == "msn":  # a ViT: MSN masks patches, drawing from the global RNG
        config, model = MSNConfig(proj_hidden_dim=32, proj_dim=16, num_prototypes=8, warmup_epochs=1), "vit_mini"
    else:
        config, model = SimSiamConfig(proj_dim=32, pred_hidden_dim=8, warmup_epochs=1), "resnet10"
    return pretrain(method, config, str(train), str(test), str(subsets / SUBSET), str(out), seed=3,
                    settings=kw.pop("settings", settings()), model=ModelConfig(arch=model, width=4),
                    augment=AugmentConfig(), **kw)


def steps_per_epoch(digits_data) -> int:
    return len(np.loadtxt(digits_data[2] / SUBSET, delimiter=",", skiprows=1)) // BATCH


def assert_same_run(straight, resumed):
    """The same weights, bit for bit, and the same metrics rows (but for the clock's columns)."""
    a, b = checkpoint.load(straight / "model.pt"), checkpoint.load(resumed / "model.pt")
    assert a["method_state"].keys() == b["method_state"].keys()
    for key, value in a["method_state"].items():
        assert torch.equal(value, b["method_state"][key]), key
    rows = [[row.split(",") for row in (folder / "metrics.csv").read_text().splitlines()] for folder in (straight, resumed)]
    clock = {rows[0][0].index("images_per_s"), rows[0][0].index("seconds")}
    strip = lambda table: [[cell for i, cell in enumerate(row) if i not in clock] for row in table]
    assert strip(rows[0]) == strip(rows[1])


@pytest.mark.parametrize("method, data_on_device, signum", [
    ("simsiam", "true", signal.SIGTERM),
    ("simsiam", "false", signal.SIGUSR1),  # a streamed source skips the batches done too
    ("msn", "true", signal.SIGTERM),  # MSN's masks: the global RNG's state is restored
])
def test_a_signal_mid_epoch_stops_after_that_step_and_the_run_resumes_there_exactly(
        digits_data, tmp_path, capsys, method, data_on_device, signum):
    steps = steps_per_epoch(digits_data)
    assert steps >= 6
    run(digits_data, tmp_path / "straight", method, settings=settings(data_on_device=data_on_device))
    with signalled_during_step(steps + 4, signum):  # the 4th step of the second epoch
        run(digits_data, tmp_path / "resumed", method, settings=settings(data_on_device=data_on_device))
    err = capsys.readouterr().err
    out = tmp_path / "resumed"
    assert f"stopped by {signal.Signals(signum).name} at epoch 1 step 4: {out / 'checkpoint.pt'} holds" in err
    assert "run the same command again to resume from it" in err  # not under SLURM
    saved = checkpoint.load(out / "checkpoint.pt")
    assert (saved["epoch"], saved["step"], len(saved["ranks"])) == (1, 4, 1)
    assert checkpoint.load(checkpoint.previous(out / "checkpoint.pt"))["epoch"] == 1  # the epoch's, kept
    assert not (out / "model.pt").exists()

    run(digits_data, out, method, settings=settings(data_on_device=data_on_device))
    assert f"resuming {out} from epoch 1 step 4 (checkpoint.pt)" in capsys.readouterr().err
    assert_same_run(tmp_path / "straight", out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "model.pt"]  # both generations gone


def test_a_signal_after_an_epochs_last_step_stops_at_the_epoch(digits_data, tmp_path, capsys):
    """The last step of an epoch leaves the decision to the epoch's end: metrics, then a plain
    epoch checkpoint (checkpoint_every 2 would write none there)."""
    steps = steps_per_epoch(digits_data)
    with signalled_during_step(steps):
        run(digits_data, tmp_path / "run", settings=settings(checkpoint_every=2))
    saved = checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    assert (saved["epoch"], saved["step"], len(saved["metrics"])) == (1, 0, 1)
    assert "stopped by SIGTERM at epoch 1:" in capsys.readouterr().err


def test_wall_time_checkpoints_fall_mid_epoch_and_resume_there_exactly(digits_data, tmp_path, monkeypatch):
    """checkpoint_minutes shorter than a step: a checkpoint after every step. A run killed after
    the one of epoch 1 step 2 resumes there; 0 minutes writes epoch checkpoints only."""
    from imbssl.training import loop

    steps = steps_per_epoch(digits_data)
    every_step = settings(checkpoint_minutes=1e-9)
    run(digits_data, tmp_path / "straight", settings=settings(checkpoint_minutes=0))
    written = []
    real = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda path, state: (written.append((state["epoch"], state["step"])),
                                                                      real(path, state)))
    with killed_after_checkpoint(1, 2):
        run(digits_data, tmp_path / "resumed", settings=every_step)
    assert written == [(0, s) for s in range(1, steps)] + [(1, 0), (1, 1), (1, 2)]
    run(digits_data, tmp_path / "resumed", settings=every_step)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")

    written.clear()
    run(digits_data, tmp_path / "epochs-only", settings=settings(checkpoint_minutes=0, epochs=3))
    assert written == [(1, 0), (2, 0)]


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(digits_data, tmp_path, capsys):
    out = tmp_path / "resumed"
    run(digits_data, tmp_path / "straight", settings=settings(epochs=3))
    with killed_after_epoch(2):
        run(digits_data, out, settings=settings(epochs=3))
    newest = out / "checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short, as a damaged disk or a partial copy would
    capsys.readouterr()
    run(digits_data, out, settings=settings(epochs=3))
    err = capsys.readouterr().err
    assert f"resuming {out} from epoch 1 (checkpoint.prev.pt)" in err  # one generation older
    assert "warning: checkpoint.pt (" in err and "resumed from the older checkpoint.prev.pt" in err
    assert "moved the unreadable file to checkpoint.pt.unreadable" in err
    assert_same_run(tmp_path / "straight", out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "model.pt"]


def test_when_no_checkpoint_can_be_read_the_job_stops_in_one_line(digits_data, tmp_path):
    out = tmp_path / "run"
    with killed_after_epoch(2):
        run(digits_data, out, settings=settings(epochs=3))
    for path in (out / "checkpoint.pt", checkpoint.previous(out / "checkpoint.pt")):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as err:
        run(digits_data, out, settings=settings(epochs=3))
    message = str(err.value)
    assert "\n" not in message and f"no checkpoint in {out} can be read" in message
    assert "checkpoint.pt (" in message and "checkpoint.prev.pt (" in message and "delete them" in message


def test_a_crash_between_rotating_and_writing_leaves_the_previous_generation(tmp_path):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_generation({"epoch": 1}, path)
    checkpoint.save_generation({"epoch": 2}, path)
    assert checkpoint.load(path)["epoch"] == 2 and checkpoint.load(checkpoint.previous(path))["epoch"] == 1
    path.rename(checkpoint.previous(path))  # what a crash right after the rotation leaves
    loaded = checkpoint.load_newest(path)
    assert (loaded.state["epoch"], loaded.path.name, loaded.unreadable) == (2, "checkpoint.prev.pt", [])
    assert checkpoint.load_newest(tmp_path / "none.pt") is None


def test_the_signal_handlers_are_the_loops_only_while_it_runs(digits_data, tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    run(digits_data, tmp_path / "run", settings=settings(epochs=2))
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_stopped_command_exits_with_the_resumable_status(digits_data, tmp_path, monkeypatch):
    from imbssl.cli import main

    train, test, subsets = digits_data
    argv = ["pretrain", "--method", "simsiam", "--train-data", str(train), "--test-data", str(test),
            "--subset", str(subsets / SUBSET), "--out-dir", str(tmp_path / "run"), "--epochs", "2",
            "--batch-size", str(BATCH), "--knn-every", "0", "--arch", "resnet10", "--width", "4", "--proj-dim", "16",
            "--pred-hidden-dim", "8", "--device", "cpu"]

    def stopped(*args, **kwargs):
        raise Stopped("stopped by SIGTERM at epoch 0 step 1")

    monkeypatch.setattr("imbssl.training.jobs.train_loop", stopped)
    assert main(argv) == Stopped.exit_status == 75  # EX_TEMPFAIL: rerun to resume


# --- whether a stopped SLURM job requeues itself ----------------------------------------------

FAKE_SLURM = """#!/bin/sh
echo "$(basename "$0") $*" >> "{calls}"
case "$(basename "$0")" in
    squeue) echo "{state}" ;;
    scontrol) exit {scontrol_status} ;;
esac
"""


def fake_slurm(folder, state: str, scontrol_status: int = 0) -> dict[str, str]:
    """squeue and scontrol stand-ins on PATH: squeue says `state`, both record their calls."""
    folder.mkdir(exist_ok=True)
    for name in ("squeue", "scontrol"):
        script = folder / name
        script.write_text(FAKE_SLURM.format(calls=folder / "calls", state=state, scontrol_status=scontrol_status))
        script.chmod(0o755)
    return {"PATH": f"{folder}:/usr/bin:/bin"}


@pytest.mark.parametrize("state, requeued", [
    ("RUNNING", True),  # a warning ahead of the time limit (--signal), or a signal sent by hand
    ("COMPLETING", False),  # scancel, the time limit itself: SLURM is ending the job
    ("PREEMPTED", False),  # SLURM requeues it, or Snakemake's retries resubmit it
])
def test_a_stopped_slurm_job_requeues_itself_only_while_it_still_runs(tmp_path, monkeypatch, state, requeued):
    from imbssl.training.preemption import requeue_if_running

    monkeypatch.setenv("PATH", fake_slurm(tmp_path / "bin", state)["PATH"])
    said = requeue_if_running({"SLURM_JOB_ID": "4242"})
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    assert calls[0] == "squeue --noheader --jobs 4242 --format=%T"
    assert (calls[1:] == ["scontrol requeue 4242"]) == requeued, calls
    assert said.startswith("requeued SLURM job 4242") == requeued, said
    if not requeued:
        assert said == f"SLURM job 4242 is {state}: it resumes from the checkpoint when SLURM requeues it or Snakemake reruns it"


def test_a_requeue_that_fails_says_so_and_an_array_task_is_named_as_scontrol_knows_it(tmp_path, monkeypatch):
    from imbssl.training.preemption import requeue_if_running

    monkeypatch.setenv("PATH", fake_slurm(tmp_path / "bin", "RUNNING", scontrol_status=1)["PATH"])
    said = requeue_if_running({"SLURM_JOB_ID": "77", "SLURM_ARRAY_JOB_ID": "70", "SLURM_ARRAY_TASK_ID": "7"})
    assert (tmp_path / "bin" / "calls").read_text().splitlines()[1] == "scontrol requeue 70_7"
    assert said.startswith("could not requeue SLURM job 70_7") and "retries" in said
    assert requeue_if_running({}) == "run the same command again to resume from it"  # not under SLURM


def test_a_mid_epoch_checkpoint_of_two_processes_resumes_on_one_with_the_epochs_mean_kept():
    """Resumed on another number of processes: rank 0 carries the old ranks' sums, scaled so that
    the epoch's mean over the new ranks is the same, and the random streams start anew."""
    from imbssl.training.checkpointing import resume_point

    shares = [{"sums": {"loss": torch.tensor(3.0), "std": torch.tensor(1.0)}, "rng": {"device": torch.zeros(1)}},
              {"sums": {"loss": torch.tensor(5.0), "std": torch.tensor(2.0)}, "rng": {"device": torch.ones(1)}}]
    state = {"metrics": [{"epoch": 1}], "epoch": 1, "step": 4, "ranks": shares}
    start = resume_point(state, torch.device("cpu"))
    assert (start.epoch, start.step, start.part.step, start.part.rng) == (1, 4, 4, None)
    # two ranks' mean so far: (3 + 5) / 2 = 4, which one rank carries alone
    assert {key: value.item() for key, value in start.part.sums.items()} == {"loss": 4.0, "std": 1.5}
    one = resume_point({**state, "ranks": shares[:1]}, torch.device("cpu"))
    assert one.part.rng is shares[0]["rng"] and one.part.sums["loss"].item() == 3.0  # same world: its own
