"""Free GPUs (or GPU slots) per local job: lock files, held for as long as the job runs.

Snakemake gives local jobs no GPU ids (snakemake issue #281): with `--resources gpu=N` it only
limits how many GPU jobs run at once. Prefix a job's command with this module and each job gets
devices nobody else holds:

    python -m imbssl.orchestration.gpu_lease -- imbssl pretrain --method simsiam ...            # one whole GPU
    python -m imbssl.orchestration.gpu_lease --gpus 2 -- torchrun ... imbssl pretrain ...       # two whole GPUs
    python -m imbssl.orchestration.gpu_lease --slots 1 --slots-per-device 3 -- imbssl evaluate  # a third of one

Each device has `slots-per-device` slot lock files (gpu0.lock, gpu0.slot1.lock, ...). A job of
one slot takes a free slot, filling the lowest devices first so that whole devices stay free for
the jobs that need one; a job of whole devices takes every slot of each of its devices. A job of
several devices takes them all at once or none: it `flock`s without blocking and, when it cannot
get all, lets go of what it got and tries again after IMBSSL_LOCK_POLL_SECONDS (jittered), so two
jobs that each hold half of what the other needs never wait on each other. Then it exports
CUDA_VISIBLE_DEVICES=<ids> (and, for a job of slots, IMBSSL_GPU_SLOTS=<its slots>) and *execs* the
command. The locked file descriptors are made inheritable, so after exec the job process itself
holds the locks: the kernel releases them when the job exits, however it exits (SIGKILL, OOM
kill, Snakemake cancelling it), and there is no wrapper process that could die and free the
devices while the job still runs on them, nor one that has to forward signals or exit codes.
(`imbssl.orchestration.launch` leases through this module, then execs the command or torchrun.)

The lease only sees jobs that lease: a program that does not (another user's notebook, a job
started without this module) may use a leased GPU; keep GPUs away from imbssl with
CUDA_VISIBLE_DEVICES (jobs lease among the ids it lists).

It does nothing but exec the command when SLURM runs the job (SLURM_JOB_ID set: SLURM assigns the
devices and sets CUDA_VISIBLE_DEVICES itself) or when there is no GPU.

Environment:
    IMBSSL_NUM_GPUS          number of devices (tests, overrides); otherwise CUDA_VISIBLE_DEVICES
                             if set (lease among the listed ids), otherwise `nvidia-smi -L`.
    IMBSSL_LOCK_DIR          where the lock files live (default /tmp/imbssl-gpu-locks, one folder
                             for every user of the machine: created sticky and world-writable like
                             /tmp, its lock files readable and writable by all whatever the umask);
                             all jobs sharing the GPUs of one machine must use the same folder and
                             the same number of slots per device. A private folder opts out: its
                             jobs then share GPUs with everybody else's.
    IMBSSL_LOCK_POLL_SECONDS pause between rounds of attempts while the devices are taken (0.5).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from imbssl import UserError

PROG = "imbssl.orchestration.gpu_lease"


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
    """One folder for every user of the machine (not per user: two users' jobs must not both
    lease GPU 0)."""
    return Path(env.get("IMBSSL_LOCK_DIR") or Path(tempfile.gettempdir()) / "imbssl-gpu-locks")


SHARED_DIR_MODE = 0o1777  # like /tmp: anyone may add a lock file, nobody may remove another's
SHARED_FILE_MODE = 0o666


def make_shared_dir(directory: Path) -> None:
    """Create the lock folder so that every user can lock in it (the umask cannot narrow it);
    a folder that exists is left as it is, and must let this user create files."""
    if not directory.is_dir():
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir()
            os.chmod(directory, SHARED_DIR_MODE)
        except FileExistsError:
            pass  # another job made it meanwhile
    if not os.access(directory, os.W_OK | os.X_OK):
        mode = directory.stat().st_mode & 0o7777
        raise UserError(f"cannot create GPU lock files in {directory} (mode {mode:04o}, owner uid "
                        f"{directory.stat().st_uid}): ask its owner to `chmod 1777 {directory}`, or set "
                        f"IMBSSL_LOCK_DIR to a folder every user of the GPUs can write")


def _open_lock(path: Path) -> int:
    """An fd on the lock file `path`, made readable and writable by every user if this opens it
    first. An existing file is opened without O_CREAT: in a sticky world-writable folder Linux
    refuses O_CREAT on another user's file (fs.protected_regular)."""
    while True:
        try:
            return os.open(path, os.O_RDWR)
        except FileNotFoundError:
            pass
        except PermissionError:  # a file another user made under a narrow umask: flock needs no write access
            return os.open(path, os.O_RDONLY)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, SHARED_FILE_MODE)
        except FileExistsError:
            continue  # another job created it between the two opens
        os.fchmod(fd, SHARED_FILE_MODE)  # the umask took bits off at creation
        return fd


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on `path`, or None if another process holds it."""
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # The holder's pid, for whoever wonders who has the device (`cat gpu0.lock`).
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # opened read-only: the lock holds all the same
    return fd


def slot_file(directory: Path, device: str, slot: int) -> Path:
    """Slot 0 is gpu<id>.lock (the whole device when a device has one slot), the others gpu<id>.slot<j>.lock."""
    return directory / (f"gpu{device}.lock" if slot == 0 else f"gpu{device}.slot{slot}.lock")


def _release(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)  # closing the only descriptor of the open file drops its flock


def _try_lock_all(paths: list[Path]) -> list[int] | None:
    """fds locking every one of `paths`, or None (and nothing held) if any is taken."""
    fds = []
    for path in paths:
        fd = _try_lock(path)
        if fd is None:
            _release(fds)
            return None
        fds.append(fd)
    return fds


Lease = list[tuple[str, list[int], list[int]]]  # (device, its slots held, the fds holding them)


def _try_once(devices: list[str], directory: Path, gpus: int, slots: int | None, slots_per_device: int) -> Lease | None:
    """One round: `gpus` whole devices (slots None) or `slots` slots of one device, all or nothing."""
    if slots is not None:
        for device in devices:  # lowest devices first: packs slot jobs, keeps whole devices free
            for first in range(slots_per_device - slots + 1):
                taken = list(range(first, first + slots))
                fds = _try_lock_all([slot_file(directory, device, j) for j in taken])
                if fds is not None:
                    return [(device, taken, fds)]
        return None
    held: Lease = []
    every = list(range(slots_per_device))
    for device in devices:
        fds = _try_lock_all([slot_file(directory, device, j) for j in every])
        if fds is not None:
            held.append((device, every, fds))
            if len(held) == gpus:
                return held
    for _, _, fds in held:
        _release(fds)
    return None


def acquire(devices: list[str], directory: Path, poll_seconds: float, gpus: int = 1, slots: int | None = None,
            slots_per_device: int = 1) -> Lease:
    """Block until the request can be met; return [(device, its slots, fds holding them), ...].

    `slots` None asks for `gpus` whole devices, else for that many slots of one device. Never waits
    while holding a lock, so concurrent requests cannot deadlock.
    """
    if gpus > len(devices):
        raise UserError(f"a job asks for {gpus} GPUs but this machine has {len(devices)} ({','.join(devices)}): "
                        f"lower pretrain.gpus (or clustering.expert_gpus)")
    if slots is not None and not 1 <= slots <= slots_per_device:
        raise UserError(f"a job asks for {slots} slots of a GPU with {slots_per_device}: use at most "
                        f"gpu_slots_per_device slots, or gpu_slots: all")
    make_shared_dir(directory)
    announced = False
    while True:
        held = _try_once(devices, directory, gpus, slots, slots_per_device)
        if held is not None:
            return held
        if not announced:
            print(f"{PROG}: {_waiting_for(devices, gpus, slots)} (locks in {directory})", file=sys.stderr, flush=True)
            announced = True
        time.sleep(poll_seconds * random.uniform(0.5, 1.5))  # jitter: competing jobs do not retry in step


def _waiting_for(devices: list[str], gpus: int, slots: int | None) -> str:
    listed = ",".join(devices)
    if slots is not None:
        return f"every slot of GPUs {listed} is leased, waiting for {slots} free slot(s) on one"
    if gpus == 1:
        return f"all GPUs {listed} are leased, waiting for one"
    return f"fewer than {gpus} of GPUs {listed} are free, waiting for {gpus} at once"


def lease(env, gpus: int = 1, slots: int | None = None, slots_per_device: int = 1) -> None:
    """Take the GPUs (or slots) of this job and set CUDA_VISIBLE_DEVICES in `env` (os.environ);
    the locks stay held by this process and, once inheritable, by whatever it execs. Does nothing
    under SLURM or without GPUs."""
    devices = [] if "SLURM_JOB_ID" in env else visible_devices(env)
    if not devices:
        return
    if gpus > 1:
        slots = None  # a job on several GPUs takes them whole
    elif slots is not None and slots >= slots_per_device:
        slots = None
    poll = float(env.get("IMBSSL_LOCK_POLL_SECONDS", "0.5"))
    held = acquire(devices, lock_dir(env), poll, gpus, slots, slots_per_device)
    for _, _, fds in held:
        for fd in fds:
            os.set_inheritable(fd, True)  # the job process keeps the locks after exec
    env["CUDA_VISIBLE_DEVICES"] = ",".join(device for device, _, _ in held)
    share = ""
    if slots is not None:  # which share of the device, for whoever wonders (and the tests)
        env["IMBSSL_GPU_SLOTS"] = ",".join(map(str, held[0][1]))
        share = f" (slots {env['IMBSSL_GPU_SLOTS']} of {slots_per_device})"
    print(f"{PROG}: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}{share} for pid {os.getpid()}",
          file=sys.stderr, flush=True)


def exec_command(command: list[str]) -> None:
    try:
        os.execvp(command[0], command)
    except OSError as err:
        raise UserError(f"cannot run {command[0]!r}: {err.strerror}: check the command after '--'") from err


def lease_and_exec(command: list[str], gpus: int = 1, slots: int | None = None, slots_per_device: int = 1) -> None:
    """Exec `command` on leased GPUs (or as is under SLURM / without GPUs); returns only on error."""
    lease(os.environ, gpus, slots, slots_per_device)
    exec_command(command)


def parse_slots(text: str) -> int | None:
    """`all` (whole devices: None) or a number of slots."""
    if text == "all":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 'all' or a number of slots >= 1, got {text!r}")


def add_lease_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", type=int, default=1, help="GPUs this job needs, leased all at once (default 1)")
    parser.add_argument("--slots", type=parse_slots, default=None, metavar="all|N",
                        help="slots of one GPU this job needs, or 'all' for whole GPUs (default all)")
    parser.add_argument("--slots-per-device", type=int, default=1,
                        help="jobs that may share one GPU (gpu_slots_per_device; default 1)")


def split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """(options, command) of `[options] -- command`."""
    if "--" not in argv:
        return [], argv
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options, command = split_command(argv)
    if not command or command[0] in ("-h", "--help") or "-h" in options or "--help" in options:
        print(f"usage: python -m {PROG} [--gpus N] [--slots all|N] [--slots-per-device S] -- COMMAND [ARGS...]"
              f"\n\n{__doc__}", file=sys.stderr)
        return 0 if command or options else 2
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}")
    add_lease_arguments(parser)
    args = parser.parse_args(options)
    return run_or_report(PROG, lambda: lease_and_exec(command, args.gpus, args.slots, args.slots_per_device))


def run_or_report(prog: str, action) -> int:
    """Run `action` (which execs the job and does not return) and turn a UserError into one line
    and exit status 2: the command-line ending of this module and of launch.py."""
    try:
        action()
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
