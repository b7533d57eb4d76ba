"""GPU lease on the CPU: fake devices (IMBSSL_NUM_GPUS), real processes, real flocks."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from imbssl import UserError
from imbssl.orchestration.gpu_lease import visible_devices

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
    return [sys.executable, "-m", "imbssl.orchestration.gpu_lease", "--", *command]


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


# A job that records which devices (and slots) it held and when, holding them for a moment.
HOLDING_JOB = textwrap.dedent(
    """
    import json, os, sys, time
    start = time.time_ns()
    time.sleep(float(sys.argv[2]))
    record = {"pid": os.getpid(), "devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "slots": os.environ.get("IMBSSL_GPU_SLOTS"), "start": start, "end": time.time_ns()}
    with open(os.path.join(sys.argv[1], f"{os.getpid()}.json"), "w") as f:
        json.dump(record, f)
    """
)


def run_concurrently(commands: list[list[str]], env: dict[str, str], timeout: float) -> None:
    """Start every command at once; all must finish within `timeout` seconds (no deadlock)."""
    jobs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for command in commands]
    deadline = time.monotonic() + timeout
    try:
        for job in jobs:
            _, err = job.communicate(timeout=max(0.1, deadline - time.monotonic()))
            assert job.returncode == 0, err
    except subprocess.TimeoutExpired:
        pytest.fail(f"the jobs did not all finish within {timeout} s: deadlocked")
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.wait()


def records_of(directory: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in directory.glob("*.json")), key=lambda r: r["start"])


def overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_jobs_of_two_gpus_get_two_at_once_never_overlap_and_never_deadlock(tmp_path):
    """Three jobs asking for 2 of 3 GPUs, started together: a job that waits on a device while
    holding another (two jobs each holding half of what the other needs) would deadlock them."""
    records = tmp_path / "records"
    records.mkdir()
    env = lease_env(tmp_path / "locks", IMBSSL_NUM_GPUS="3")
    job = leased(sys.executable, "-c", HOLDING_JOB, str(records), "0.3")
    job[job.index("--"):job.index("--")] = ["--gpus", "2"]
    run_concurrently([job] * 3, env, timeout=60)

    held = records_of(records)
    assert len(held) == 3
    for record in held:
        devices = record["devices"].split(",")
        assert len(devices) == len(set(devices)) == 2 and set(devices) <= {"0", "1", "2"}, record
    for a, b in zip(held, held[1:]):
        assert not overlap(a, b), f"two jobs of 2 GPUs ran at once on 3 GPUs: {a} {b}"


def test_small_jobs_share_a_gpu_by_slots_and_a_whole_gpu_job_waits_for_all(tmp_path):
    """One GPU with 3 slots: three one-slot jobs run on it at once (each with its own slot); a job
    asking for the whole GPU never runs beside any of them."""
    slot_records, whole_records = tmp_path / "slots", tmp_path / "whole"
    slot_records.mkdir()
    whole_records.mkdir()
    env = lease_env(tmp_path / "locks", IMBSSL_NUM_GPUS="1")
    slots = ["--slots", "1", "--slots-per-device", "3", "--"]
    whole = ["--slots", "all", "--slots-per-device", "3", "--"]
    # The slot jobs keep their slots until all three have started: they must hold them together.
    slot_job = [sys.executable, "-m", "imbssl.orchestration.gpu_lease", *slots, sys.executable, "-c", RECORDING_JOB,
                str(slot_records), "3"]
    whole_job = [sys.executable, "-m", "imbssl.orchestration.gpu_lease", *whole, sys.executable, "-c", HOLDING_JOB,
                 str(whole_records), "0.2"]
    run_concurrently([whole_job, *[slot_job] * 3], env, timeout=60)

    shared = [json.loads(p.read_text()) for p in slot_records.glob("*.json")]
    (alone,) = records_of(whole_records)
    assert len(shared) == 3 and {r["device"] for r in shared} == {"0"}
    first_end = min(r["end"] for r in shared)
    assert all(r["start"] < first_end for r in shared), "the one-slot jobs did not share the GPU"
    assert alone["devices"] == "0" and alone["slots"] is None
    assert not any(overlap(alone, r) for r in shared), "a whole-GPU job ran beside a one-slot job"


def test_each_slot_job_holds_its_own_slot(tmp_path):
    env = lease_env(tmp_path / "locks", IMBSSL_NUM_GPUS="2")
    print_slots = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['IMBSSL_GPU_SLOTS'])"
    holders = []
    try:
        seen = []
        for _ in range(4):  # 2 GPUs x 2 slots, each job kept alive while the next one leases
            holder = subprocess.Popen([sys.executable, "-m", "imbssl.orchestration.gpu_lease", "--slots", "1",
                                       "--slots-per-device", "2", "--", sys.executable, "-c",
                                       f"{print_slots}; import sys, time; sys.stdout.flush(); time.sleep(60)"],
                                      env=env, stdout=subprocess.PIPE, text=True)
            holders.append(holder)
            seen.append(holder.stdout.readline().strip())
        assert seen == ["0 0", "0 1", "1 0", "1 1"]  # the first GPU filled before the second is touched
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


def test_more_gpus_than_the_machine_has_is_a_user_error(tmp_path):
    env = lease_env(tmp_path / "locks", IMBSSL_NUM_GPUS="2")
    done = subprocess.run([sys.executable, "-m", "imbssl.orchestration.gpu_lease", "--gpus", "3", "--", "true"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "asks for 3 GPUs but this machine has 2" in done.stderr


def test_a_job_waiting_for_gpus_holds_none_of_them(tmp_path):
    """All or nothing: a job of 2 GPUs that finds only one free leaves it free while it waits (a
    one-GPU job takes it meanwhile), then takes two at once when they free up. Holding the free
    one while waiting is how two jobs each holding half of what the other needs deadlock."""
    import threading

    from imbssl.orchestration.gpu_lease import _try_lock, acquire, slot_file

    locks = tmp_path / "locks"
    locks.mkdir()
    other_job = [_try_lock(slot_file(locks, device, 0)) for device in ("0", "1")]  # holds GPUs 0 and 1
    result = {}
    waiting = threading.Thread(target=lambda: result.update(held=acquire(["0", "1", "2"], locks, 0.02, gpus=2)))
    waiting.start()
    try:
        time.sleep(0.5)  # the 2-GPU job has tried GPU 2 many times by now
        assert waiting.is_alive() and "held" not in result
        for _ in range(50):  # the waiting job may be in the middle of an attempt: it lets go at once
            small_job = _try_lock(slot_file(locks, "2", 0))
            if small_job is not None:
                break
            time.sleep(0.01)
        assert small_job is not None, "the waiting 2-GPU job holds GPU 2"
        os.close(small_job)
    finally:
        for fd in other_job:
            os.close(fd)
        waiting.join(timeout=30)
    assert sorted(device for device, _, _ in result["held"]) == ["0", "1"]
    for _, _, fds in result["held"]:
        for fd in fds:
            os.close(fd)


# --- one lock folder for every user of the machine ----------------------------------------------

NOBODY = 65534
# A lease process as `uid` under a umask that would make private files and folders: the Python
# interpreter starts as root (it may live under /root), imports the lease, then becomes `uid`.
LEASE_AS = textwrap.dedent(
    """
    import os, sys
    from imbssl.orchestration import gpu_lease
    uid = int(sys.argv[1])
    if uid != os.getuid():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.umask(0o077)
    sys.exit(gpu_lease.main(sys.argv[2:]))
    """
)
# The job: records who held which device when (a shell: the job runs as that user).
RECORD = ('echo "$(id -u) $CUDA_VISIBLE_DEVICES $(date +%s%N)" > "$0/$(id -u).start"; sleep 1; '
          'date +%s%N > "$0/$(id -u).end"')


def lease_as(uid: int, records: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", LEASE_AS, str(uid), "--", "sh", "-c", RECORD, str(records)],
                            env=env, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def world_readable_tmp():
    """A folder every user may enter (pytest's tmp_path is root's alone)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="imbssl-lease-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="running a job as another user needs root")
def test_jobs_of_two_users_never_hold_the_one_gpu_at_once(world_readable_tmp):
    """root's job creates the lock folder and file under umask 077; nobody's job, started while
    root's holds the GPU, must wait for it (it can open and lock root's file), then run."""
    records = world_readable_tmp / "records"
    records.mkdir(mode=0o777)
    records.chmod(0o777)
    locks = world_readable_tmp / "locks"  # created by the first job
    env = lease_env(locks, IMBSSL_NUM_GPUS="1")
    first = lease_as(0, records, env)
    for _ in range(600):
        if (records / "0.start").exists() or first.poll() is not None:
            break
        time.sleep(0.05)
    second = lease_as(NOBODY, records, env)
    errors = [job.communicate(timeout=60)[1] for job in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], errors

    started = {uid: (records / f"{uid}.start").read_text().split() for uid in (0, NOBODY)}
    assert [started[uid][:2] for uid in (0, NOBODY)] == [["0", "0"], [str(NOBODY), "0"]]  # both on GPU 0
    root_end = int((records / "0.end").read_text())
    assert int(started[NOBODY][2]) > root_end, "two users' jobs held GPU 0 at once"
    assert "all GPUs 0 are leased, waiting" in errors[1]
    assert stat.S_IMODE(locks.stat().st_mode) == 0o1777  # sticky, world-writable: whatever the umask
    assert stat.S_IMODE((locks / "gpu0.lock").stat().st_mode) == 0o666


@pytest.mark.skipif(os.geteuid() != 0, reason="running a job as another user needs root")
def test_a_lock_folder_another_user_cannot_write_is_one_line(world_readable_tmp):
    locks = world_readable_tmp / "locks"
    locks.mkdir(mode=0o755)  # made by hand, or by an older imbssl, for one user only
    done = subprocess.run([sys.executable, "-c", LEASE_AS, str(NOBODY), "--", "true"],
                          env=lease_env(locks, IMBSSL_NUM_GPUS="1"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"cannot create GPU lock files in {locks} (mode 0755" in done.stderr
    assert f"chmod 1777 {locks}" in done.stderr and "IMBSSL_LOCK_DIR" in done.stderr


def test_the_default_lock_folder_is_the_same_for_every_user():
    import tempfile

    from imbssl.orchestration.gpu_lease import lock_dir

    expected = Path(tempfile.gettempdir()) / "imbssl-gpu-locks"
    assert lock_dir({"USER": "alice"}) == lock_dir({"USER": "bob", "LOGNAME": "bob"}) == expected
    assert lock_dir({"IMBSSL_LOCK_DIR": "/scratch/locks"}) == Path("/scratch/locks")
