"""One free GPU per local job: a lock file per device, held for as long as the job runs.

Snakemake gives local jobs no GPU ids (snakemake issue #281): with `--resources gpu=N` it only
limits how many GPU jobs run at once. Prefix a job's command with this module and each job gets
a device nobody else holds:

    python -m imbssl.gpu_lease -- imbssl pretrain --method simsiam ...

It takes the first device whose lock file it can `flock` without blocking (retrying every
IMBSSL_LOCK_POLL_SECONDS while all are taken), exports CUDA_VISIBLE_DEVICES=<id> and *execs* the
command. The locked file descriptor is made inheritable, so after exec the job process itself
holds the lock: it is released by the kernel when the job exits, however it exits (SIGKILL, OOM
kill, Snakemake cancelling it), and there is no wrapper process that could die and free the
device while the job still runs on it, nor one that has to forward signals or exit codes.

It does nothing but exec the command when SLURM runs the job (SLURM_JOB_ID set: SLURM assigns the
devices and sets CUDA_VISIBLE_DEVICES itself) or when there is no GPU.

Environment:
    IMBSSL_NUM_GPUS          number of devices (tests, overrides); otherwise CUDA_VISIBLE_DEVICES
                             if set (lease among the listed ids), otherwise `nvidia-smi -L`.
    IMBSSL_LOCK_DIR          where the lock files live (default /tmp/imbssl-gpu-locks-$USER); all
                             jobs sharing the GPUs of one machine must use the same directory.
    IMBSSL_LOCK_POLL_SECONDS pause between rounds of attempts while every device is taken (0.5).
"""

from __future__ import annotations

import fcntl
import getpass
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from . import UserError

PROG = "imbssl.gpu_lease"


def visible_devices(env: Mapping[str, str]) -> list[str]:
    """Device ids a job on this machine may lease (empty: no GPU, nothing to lease)."""
    count = env.get("IMBSSL_NUM_GPUS")
    if count is not None:
        if not count.strip().isdigit():
            raise UserError(f"IMBSSL_NUM_GPUS={count!r} is not a number of GPUs: set it to 0, 1, 2, ... or unset it")
        return [str(i) for i in range(int(count))]
    if "CUDA_VISIBLE_DEVICES" in env:
        # The user already narrowed the devices (e.g. to keep GPU 0 free): lease among those.
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    return [str(i) for i in range(_count_with_nvidia_smi())]


def _count_with_nvidia_smi() -> int:
    """Number of GPUs `nvidia-smi -L` lists; 0 without a driver (cheaper than importing torch)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if listing.returncode != 0:
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


def lock_dir(env: Mapping[str, str]) -> Path:
    default = Path(tempfile.gettempdir()) / f"imbssl-gpu-locks-{getpass.getuser()}"
    return Path(env.get("IMBSSL_LOCK_DIR") or default)


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on `path`, or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # The holder's pid, for whoever wonders who has the device (`cat gpu0.lock`).
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def acquire(devices: list[str], directory: Path, poll_seconds: float) -> tuple[str, int]:
    """Block until one of `devices` is free; return it and the fd that holds its lock."""
    directory.mkdir(parents=True, exist_ok=True)
    announced = False
    while True:
        for device in devices:
            fd = _try_lock(directory / f"gpu{device}.lock")
            if fd is not None:
                return device, fd
        if not announced:
            print(f"{PROG}: all GPUs {','.join(devices)} are leased, waiting for one "
                  f"(locks in {directory})", file=sys.stderr, flush=True)
            announced = True
        time.sleep(poll_seconds)


def lease_and_exec(command: list[str]) -> None:
    """Exec `command` on a leased GPU (or as is under SLURM / without GPUs); returns only on error."""
    env = os.environ
    devices = [] if "SLURM_JOB_ID" in env else visible_devices(env)
    if devices:
        poll = float(env.get("IMBSSL_LOCK_POLL_SECONDS", "0.5"))
        device, fd = acquire(devices, lock_dir(env), poll)
        os.set_inheritable(fd, True)  # the job process keeps the lock after exec
        env["CUDA_VISIBLE_DEVICES"] = device
        print(f"{PROG}: CUDA_VISIBLE_DEVICES={device} for pid {os.getpid()}", file=sys.stderr, flush=True)
    try:
        os.execvp(command[0], command)
    except OSError as err:
        raise UserError(f"cannot run {command[0]!r}: {err.strerror}: check the command after '--'") from err


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m {PROG} -- COMMAND [ARGS...]\n\n{__doc__}", file=sys.stderr)
        return 0 if argv else 2
    try:
        lease_and_exec(argv)
    except UserError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
