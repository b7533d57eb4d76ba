"""GPU lease on the CPU: fake devices (IMBSSL_NUM_GPUS), real processes, real flocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from imbssl import UserError
from imbssl.gpu_lease import visible_devices

NUM_DEVICES = 3
NUM_JOBS = 6

# A job that records (device, start, end) while it holds its lease. It keeps the lease until
# NUM_DEVICES jobs have started, so the first NUM_DEVICES jobs hold their leases at the same
# time (every device must then be in use) without the test depending on how fast processes start.
RECORDING_JOB = textwrap.dedent(
    """
    import json, os, sys, time
    out = sys.argv[1]
    start = time.time_ns()
    open(os.path.join(out, f"{os.getpid()}.start"), "w").close()
    deadline = time.time() + 30
    while len([f for f in os.listdir(out) if f.endswith(".start")]) < int(sys.argv[2]) and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    record = {"pid": os.getpid(), "device": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "start": start, "end": time.time_ns()}
    with open(os.path.join(out, f"{os.getpid()}.json"), "w") as f:
        json.dump(record, f)
    """
)

PRINT_DEVICE = "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>'))"


def lease_env(lock_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env.update(IMBSSL_LOCK_DIR=str(lock_dir), IMBSSL_LOCK_POLL_SECONDS="0.05", **extra)
    return env


def leased(*command: str) -> list[str]:
    return [sys.executable, "-m", "imbssl.gpu_lease", "--", *command]


def run_print_device(env: dict[str, str]) -> str:
    done = subprocess.run(leased(sys.executable, "-c", PRINT_DEVICE), env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_concurrent_jobs_never_share_a_device_and_use_all(tmp_path):
    records_dir = tmp_path / "records"
    records_dir.mkdir()
    env = lease_env(tmp_path / "locks", IMBSSL_NUM_GPUS=str(NUM_DEVICES))
    jobs = [subprocess.Popen(leased(sys.executable, "-c", RECORDING_JOB, str(records_dir), str(NUM_DEVICES)),
                             env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(NUM_JOBS)]
    for job in jobs:
        _, err = job.communicate(timeout=120)
        assert job.returncode == 0, err

    records = [json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))]
    assignment = "\n".join(f"  pid {r['pid']}: device {r['device']} [{r['start']}, {r['end']}]"
                           for r in sorted(records, key=lambda r: r["start"]))
    print(f"GPU lease assignment:\n{assignment}")
    assert len(records) == NUM_JOBS, assignment
    assert {r["device"] for r in records} == {str(d) for d in range(NUM_DEVICES)}, assignment
    for device in range(NUM_DEVICES):
        holders = sorted((r for r in records if r["device"] == str(device)), key=lambda r: r["start"])
        for before, after in zip(holders, holders[1:]):
            assert before["end"] < after["start"], f"two holders overlap on device {device}:\n{assignment}"


def test_killed_holder_frees_its_device(tmp_path):
    env = lease_env(tmp_path / "locks", IMBSSL_NUM_GPUS="1")
    started = tmp_path / "started"
    holder = subprocess.Popen(leased(sys.executable, "-c",
                                     f"import time; open({str(started)!r}, 'w').close(); time.sleep(600)"), env=env)
    try:
        for _ in range(600):
            if started.exists() or holder.poll() is not None:
                break
            time.sleep(0.05)
        assert started.exists(), "the lease holder never started"
        # The lease is held by the job process itself (exec), so the device is taken now...
        waiting = subprocess.Popen(leased(sys.executable, "-c", PRINT_DEVICE), env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.communicate(timeout=1)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # ... and the kernel drops its lock with it: the waiting job gets device 0.
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert out.strip() == "0"
    assert "all GPUs 0 are leased, waiting" in err


def test_exit_status_of_the_job_is_kept(tmp_path):
    env = lease_env(tmp_path / "locks", IMBSSL_NUM_GPUS="2")
    done = subprocess.run(leased(sys.executable, "-c", "raise SystemExit(3)"), env=env, timeout=60)
    assert done.returncode == 3


def test_under_slurm_cuda_visible_devices_is_left_alone(tmp_path):
    env = lease_env(tmp_path / "locks", IMBSSL_NUM_GPUS="3", SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="5")
    assert run_print_device(env) == "5"
    assert not (tmp_path / "locks").exists()


def test_without_gpus_cuda_visible_devices_stays_unset(tmp_path):
    env = lease_env(tmp_path / "locks", IMBSSL_NUM_GPUS="0")
    assert run_print_device(env) == "<unset>"
    assert not (tmp_path / "locks").exists()


def test_without_nvidia_smi_there_is_no_gpu(tmp_path):
    env = lease_env(tmp_path / "locks", PATH=str(tmp_path))  # no nvidia-smi on this PATH
    env.pop("IMBSSL_NUM_GPUS", None)
    assert run_print_device(env) == "<unset>"


def test_devices_narrowed_by_the_user_are_leased_among(tmp_path):
    env = lease_env(tmp_path / "locks", CUDA_VISIBLE_DEVICES="2,3")
    env.pop("IMBSSL_NUM_GPUS", None)
    assert run_print_device(env) == "2"
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_bad_gpu_count_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="IMBSSL_NUM_GPUS='two'"):
        visible_devices({"IMBSSL_NUM_GPUS": "two"})
    env = lease_env(tmp_path / "locks", IMBSSL_NUM_GPUS="two")
    done = subprocess.run(leased("true"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "IMBSSL_NUM_GPUS" in done.stderr
