"""A training job asked to stop (SIGTERM, SIGUSR1) stops at a checkpoint of its last step.

SLURM sends SIGTERM to every process of a job it preempts, cancels or times out (then SIGKILL
after KillWait or the partition's GraceTime), and the signal a job asked for with `sbatch
--signal` ahead of its time limit; a person may send either. The training loop checks the flag
set here after each step (a Python bool: no host synchronisation), writes a checkpoint at that
step and raises `imbssl.Stopped`; the command exits with `Stopped.exit_status`.

Whether the job then runs again is SLURM's business, with one exception: a job whose SLURM state
is still RUNNING was warned ahead of its time limit (`--signal`) or signalled by hand, and nobody
else will requeue it, so rank 0 requeues it itself (`scontrol requeue`, as PyTorch Lightning's
and submitit's SLURM support do). A preempted, cancelled or timed-out job is already leaving
RUNNING when the signal comes: SLURM requeues a preempted job itself, and Snakemake's `retries`
resubmits one that failed. Either way the next run resumes from the checkpoint.

Nothing here imports torch: the command line imports `imbssl.Stopped` without it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@dataclass
class StopRequest:
    """Set by a signal handler: the training loop reads `signal` after every step."""

    signal: int | None = None

    def handle(self, signum: int, frame) -> None:
        if self.signal is None:  # the first one names the reason; SLURM may repeat SIGTERM
            self.signal = signum
            print(f"[imbssl] got {signal.Signals(signum).name}: stopping after this step with a checkpoint",
                  file=sys.stderr, flush=True)

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else "none"


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """SIGTERM and SIGUSR1 set the request instead of ending the process, for the block's duration
    (outside the main thread, where Python cannot install handlers, nothing changes)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.signal(signum, request.handle) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def slurm_job_id(env: Mapping[str, str]) -> str | None:
    """The id `scontrol` knows this job by (an array task's is <array job>_<task>), or None outside SLURM."""
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def _slurm(*command: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


def slurm_job_state(job_id: str) -> str | None:
    """RUNNING, COMPLETING, PREEMPTED, ... as squeue says, or None if it cannot tell."""
    done = _slurm("squeue", "--noheader", "--jobs", job_id, "--format=%T")
    if done is None or done.returncode != 0 or not done.stdout.split():
        return None
    return done.stdout.split()[0]


def requeue_if_running(env: Mapping[str, str]) -> str:
    """After the stop checkpoint (rank 0): requeue the SLURM job if it still runs; says what
    becomes of the job, in words, for the log."""
    job_id = slurm_job_id(env)
    if job_id is None:
        return "run the same command again to resume from it"
    assert re.fullmatch(r"[0-9_]+", job_id), job_id
    state = slurm_job_state(job_id)
    if state != "RUNNING":
        return (f"SLURM job {job_id} is {state or 'in an unknown state'}: it resumes from the checkpoint when "
                f"SLURM requeues it or Snakemake reruns it")
    done = _slurm("scontrol", "requeue", job_id)
    if done is None or done.returncode != 0:
        why = "scontrol not found" if done is None else (done.stderr or done.stdout).strip()
        return (f"could not requeue SLURM job {job_id} ({why}): it resumes from the checkpoint when Snakemake "
                f"reruns it (retries) or you rerun the same command")
    return f"requeued SLURM job {job_id} (scontrol requeue): it resumes from the checkpoint when it runs again"

