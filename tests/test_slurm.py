"""Runs through a real SLURM (the single-node cluster .ci/slurm/start.sh starts in CI).

Skipped unless `sinfo` answers; with IMBSSL_SLURM=1 a missing SLURM is an error instead.
Jobs go through profiles/slurm, adapted to the CI node only where a cluster-sized request could
never run on it (partition, memory, CPUs) and where a cluster without accounting needs it
(`slurm-status-command: squeue`, no account); everything else (executor, the GPUs the rules ask
for, requeue, retries) is the profile as users get it.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
SNAKEMAKE_TIMEOUT_S = 900  # a hang guard: the SLURM demo takes 3-8 minutes on the 2-core CI node


def sinfo_responds() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


if not sinfo_responds():
    if os.environ.get("IMBSSL_SLURM") == "1":
        raise RuntimeError("IMBSSL_SLURM=1 but `sinfo` does not answer: start SLURM with .ci/slurm/start.sh")
    pytest.skip("no SLURM here (`sinfo` does not answer); .ci/slurm/start.sh starts one", allow_module_level=True)

pytestmark = pytest.mark.slurm


def default_partition() -> str:
    """IMBSSL_SLURM_PARTITION, else the cluster's default partition (marked * by sinfo)."""
    if os.environ.get("IMBSSL_SLURM_PARTITION"):
        return os.environ["IMBSSL_SLURM_PARTITION"]
    partitions = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout.split()
    return next((p.rstrip("*") for p in partitions if p.endswith("*")), partitions[0])


def write_ci_profile(dest: Path) -> Path:
    """profiles/slurm with requests sized for a 1-CPU-per-job CI node, in dest/config.yaml."""
    profile = yaml.safe_load(PROFILE.read_text())
    profile["default-resources"].update(slurm_partition=default_partition(), mem_mb=1000, cpus_per_task=1, runtime=30)
    for resources in profile["set-resources"].values():
        # GPU rules ask per GPU, CPU rules (prepare_data) per task: one CPU each on the CI node.
        resources.update(mem_mb=1000, **({"cpus_per_gpu": 1} if "cpus_per_gpu" in resources else {"cpus_per_task": 1}))
    profile.update({
        "slurm-status-command": "squeue",  # the CI cluster has no accounting: sacct never answers
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-no-account": True,
        "slurm-keep-successful-logs": True,
        "latency-wait": 5,
        "jobs": 4,
    })
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


def slurm_queue() -> str:
    """What the cluster is doing: its jobs (all states) and its node, for failure messages."""
    commands = (["squeue", "-t", "all", "-o", "%i %j %T %M %R"], ["sinfo", "-N", "-o", "%N %T %G %E"])
    return "\n".join(subprocess.run(c, capture_output=True, text=True).stdout for c in commands)


@pytest.fixture(autouse=True)
def idle_cluster():
    """Fail fast, and say why, when jobs left by an earlier run still hold the CI node."""
    busy = subprocess.run(["squeue", "-h", "-t", "pending,running,configuring,completing"],
                          capture_output=True, text=True).stdout.strip()
    assert not busy, f"jobs from an earlier run hold the SLURM node (restart it with .ci/slurm/start.sh):\n{busy}"


def run_snakemake(workdir: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **env_vars)
    env.pop("SLURM_CONF", None)
    try:
        return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT_S)
    except subprocess.TimeoutExpired as timeout:
        stderr = timeout.stderr or ""
        stderr = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
        queue = slurm_queue()
        # Killing snakemake leaves its jobs queued: cancel them (they are named after the run ID) so
        # that they do not hold the node for the next test.
        for run_id in re.findall(r"SLURM run ID: (\S+)", stderr):
            subprocess.run(["scancel", f"--name={run_id}"], capture_output=True)
        pytest.fail(f"snakemake ran past {SNAKEMAKE_TIMEOUT_S} s; the cluster at that moment:\n{queue}"
                    f"\nsnakemake's stderr (end):\n{stderr[-4000:]}")


def failure_report(done: subprocess.CompletedProcess, workdir: Path) -> str:
    logs = "".join(f"\n--- {log}\n{log.read_text()[-2000:]}"
                   for log in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")))
    return f"snakemake exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}{logs}"


TOY_SNAKEFILE = """
localrules: all, table

rule all:
    input: "tables/table.csv"

rule pretrain:
    output: "models/{i}.txt"
    resources: gpu=1
    shell: "python -m imbssl.orchestration.gpu_lease -- sh -c 'echo $CUDA_VISIBLE_DEVICES $SLURM_JOB_ID' > {output}"

rule table:
    input: expand("models/{i}.txt", i=range(2))
    output: "tables/table.csv"
    shell: "cat {input} > {output}"
"""


def test_gpu_rules_run_as_slurm_jobs_on_their_gpu(tmp_path):
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    profile = write_ci_profile(tmp_path / "profile")
    lock_dir = tmp_path / "gpu-locks"
    done = run_snakemake(tmp_path, "--profile", str(profile), IMBSSL_LOCK_DIR=str(lock_dir), IMBSSL_NUM_GPUS="3")
    assert done.returncode == 0, failure_report(done, tmp_path)

    rows = [line.split() for line in (tmp_path / "tables" / "table.csv").read_text().splitlines()]
    # Each GPU job ran as its own SLURM job, on the GPU SLURM gave it (the lease left it alone).
    assert len(rows) == 2 and {device for device, _ in rows} <= {"0", "1"}, rows  # the CI node's 2 fake GPUs
    assert len({job_id for _, job_id in rows}) == 2, rows
    assert not lock_dir.exists(), "the GPU lease acted inside a SLURM job"
    assert len(list((tmp_path / ".snakemake" / "slurm_logs" / "rule_pretrain").rglob("*.log"))) == 2


def copy_repo(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", "results", ".snakemake", "*.egg-info", "__pycache__",
                                    ".pytest_cache", "shared", "data", ".venv", "venv")
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def test_demo_pipeline_through_slurm_profile(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    profile = write_ci_profile(repo / "profiles" / "slurm-ci")
    # The demo with one baseline and Experiment II on one subset: every kind of job (data, subsets,
    # pretraining, base, features, k-means, experts, distillation, evaluation, tables, figures) goes
    # through SLURM, in a few minutes on the 2-core CI node. The full demo runs in test_pipeline.py.
    done = run_snakemake(repo, "--profile", str(profile), "--configfile", "config/demo.yaml",
                         "--config", "methods=[simsiam]", "clustering={subsets: [imbalanced-p100]}")
    assert done.returncode == 0, failure_report(done, repo)

    table2 = (repo / "results" / "tables" / "table2.csv").read_text().splitlines()
    # The demo's subsets (one imbalance factor): imbalanced-p100, balanced-p100, full.
    assert len(table2) == 1 + 3, f"table2.csv should have the 3 subsets of SimSiam: {table2}"
    table3 = (repo / "results" / "tables" / "table3.csv").read_text()
    for method in ("SimSiam+C+D", "SimSiam+D"):
        assert method in table3, table3
    for rule in ("pretrain", "expert", "distill", "evaluate"):
        assert list((repo / ".snakemake" / "slurm_logs" / f"rule_{rule}").rglob("*.log")), \
            f"no {rule} job went through SLURM"


# Each rank writes its own file: two ranks printing to one shared stdout (through srun's output
# forwarding) can interleave their lines (seen once in CI: "01 2 0,1 vm" and " 2 0,1 vm").
RANKS_SCRIPT = """
import os, socket
line = " ".join([os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ.get("CUDA_VISIBLE_DEVICES", "None"),
                 socket.gethostname()])
with open(f"rank{os.environ['RANK']}.txt", "w") as out:
    out.write(line + "\\n")
"""

MULTINODE_SNAKEFILE = """
localrules: all

rule all:
    input: "ranks.txt"

rule pretrain:
    output: "ranks.txt"
    resources: gpu=2, nodes=1, launch="--gpus 2 --nodes 1 --rendezvous c10d"
    shell: "python -m imbssl.orchestration.launch {resources.launch} -- python ranks.py && cat rank0.txt rank1.txt > {output}"
"""


def test_the_multinode_launch_starts_torchrun_through_srun_inside_the_job(tmp_path):
    """The launch of a job on several nodes (srun inside the executor's job step, one torchrun per
    node meeting in a c10d rendezvous on the first node), on the one node this SLURM has."""
    (tmp_path / "Snakefile").write_text(MULTINODE_SNAKEFILE)
    (tmp_path / "ranks.py").write_text(RANKS_SCRIPT)
    profile = write_ci_profile(tmp_path / "profile")
    done = run_snakemake(tmp_path, "--profile", str(profile))
    assert done.returncode == 0, failure_report(done, tmp_path)
    ranks = sorted(line.split() for line in (tmp_path / "ranks.txt").read_text().splitlines())
    assert [rank[:3] for rank in ranks] == [["0", "2", "0,1"], ["1", "2", "0,1"]], ranks  # both fake GPUs


def test_a_training_job_of_two_gpus_runs_its_two_ranks_under_slurm(tmp_path):
    """`pretrain.gpus: 2` through the SLURM profile: one SLURM job with both (fake) GPUs, torchrun
    with two ranks (gloo on this CPU-only node), one model."""
    repo = copy_repo(tmp_path / "repo")
    profile = write_ci_profile(repo / "profiles" / "slurm-ci")
    target = "results/pretrain/imbalanced-p100/simsiam/seed0/model.pt"
    config = ("--configfile", "config/demo.yaml", "--config", "pretrain={gpus: 2, epochs: 3}",
              "clustering={allow_budget_mismatch: true}")
    data = run_snakemake(repo, "results/subsets/imbalanced-p100.csv", "--cores", "2", *config)  # here: seconds
    assert data.returncode == 0, data.stderr[-3000:]
    done = run_snakemake(repo, target, "--profile", str(profile), *config)
    assert done.returncode == 0, failure_report(done, repo)
    log = (repo / "results/logs/pretrain/imbalanced-p100/simsiam/seed0.log").read_text()
    assert "[imbssl] rank 0 of 2 on cpu (gloo)" in log and "[imbssl] rank 1 of 2 on cpu (gloo)" in log, log[-3000:]
    assert log.count(" epoch 3/3 ") == 1  # rank 0 reports for both
    assert (repo / target).exists() and not (repo / target).with_name("checkpoint.pt").exists()
    assert len(list((repo / ".snakemake" / "slurm_logs" / "rule_pretrain").rglob("*.log"))) == 1


# --- preemption: a training job stopped mid-epoch resumes at its step, as if never stopped -----

# "full": 1,437 digits images in 44 steps of 32 per epoch (about a second or two each on the CI
# node), so that a signal lands mid-epoch; checkpoints at every epoch end only.
PREEMPT_CONFIG = ("--configfile", "config/demo.yaml", "--config",
                  "pretrain={epochs: 3, batch_size: 32, knn_every: 0, checkpoint_every: 1, checkpoint_minutes: 0}",
                  "clustering={allow_budget_mismatch: true}")
PREEMPT_RUN = "results/pretrain/full/simsiam/seed0"
PREEMPT_LOG = "results/logs/pretrain/full/simsiam/seed0.log"


def poll(found, timeout: float, what: str, job: subprocess.Popen | None = None):
    """found()'s first truthy value within `timeout` seconds (fails saying `what` it waited for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        if job is not None and job.poll() is not None:
            pytest.fail(f"snakemake ended while waiting for {what}:\n{Path(job.stderr.name).read_text()[-4000:]}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout} s; the cluster:\n{slurm_queue()}")


def log_line(repo: Path, pattern: str) -> re.Match | None:
    log = repo / PREEMPT_LOG
    return re.search(pattern, log.read_text()) if log.exists() else None


def running_job() -> str | None:
    jobs = subprocess.run(["squeue", "-h", "-t", "running", "-o", "%i"], capture_output=True, text=True).stdout.split()
    return jobs[0] if len(jobs) == 1 else None


def job_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def uninterrupted_run(repo: Path, config: tuple[str, ...], dest: Path) -> Path:
    """The run trained here, without SLURM and without a stop (the same launcher and command),
    moved to `dest`; the data and subsets stay for the SLURM run."""
    done = run_snakemake(repo, f"{PREEMPT_RUN}/model.pt", "--cores", "2", *config)
    assert done.returncode == 0, done.stderr[-4000:]
    shutil.move(repo / PREEMPT_RUN, dest)
    (repo / PREEMPT_LOG).unlink()  # the SLURM run's log is watched
    return dest


def signal_mid_epoch(repo: Path, send, job: subprocess.Popen) -> str:
    """Once the job logged its first epoch, `send(job_id)` 40% into its second (timed from the
    first epoch's images/s); returns the SLURM job id."""
    first = poll(lambda: log_line(repo, r"epoch 1/3 loss \S+ lr \S+ images/s (\d+)"), 300, "first epoch", job)
    job_id = poll(running_job, 30, "running SLURM job", job)
    time.sleep(0.4 * 44 * 32 / float(first.group(1)))
    send(job_id)
    return job_id


def run_again_now(job_id: str, job: subprocess.Popen) -> None:
    """A requeued job waits about two minutes (BeginTime) before it runs again: start it now."""
    poll(lambda: job_state(job_id) == "PENDING", 120, f"job {job_id} pending again", job)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)


def assert_same_model(uninterrupted: Path, resumed: Path) -> None:
    import torch

    from imbssl.core import checkpoint

    a, b = checkpoint.load(uninterrupted / "model.pt"), checkpoint.load(resumed / "model.pt")
    for key, value in a["method_state"].items():
        assert torch.equal(value, b["method_state"][key]), key
    rows = [(folder / "metrics.csv").read_text().splitlines() for folder in (uninterrupted, resumed)]
    assert [row.split(",")[:4] for row in rows[0]] == [row.split(",")[:4] for row in rows[1]]  # epoch .. loss


def start_slurm_run(repo: Path, profile: Path, config: tuple[str, ...]) -> subprocess.Popen:
    """Snakemake through the profile, in the background; its output goes to files (a pipe nobody
    reads while the test waits could fill up and stop it)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("SLURM_CONF", None)
    return subprocess.Popen([sys.executable, "-m", "snakemake", f"{PREEMPT_RUN}/model.pt", "--profile", str(profile),
                             *config], cwd=repo, env=env, stdout=open(repo / "snakemake.out", "w"),
                            stderr=open(repo / "snakemake.err", "w"), text=True)


def finish(job: subprocess.Popen, repo: Path) -> None:
    try:
        job.wait(timeout=SNAKEMAKE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        job.kill()
        subprocess.run(["scancel", f"--user={getpass.getuser()}"], capture_output=True)
        pytest.fail(f"snakemake ran past {SNAKEMAKE_TIMEOUT_S} s; the cluster:\n{slurm_queue()}")
    out, err = ((repo / name).read_text() for name in ("snakemake.out", "snakemake.err"))
    assert job.returncode == 0, failure_report(subprocess.CompletedProcess(job.args, job.returncode, out, err), repo)


def test_a_job_warned_by_sigterm_checkpoints_at_its_step_requeues_itself_and_ends_as_if_never_stopped(tmp_path):
    """What the profile's `--signal=TERM@300` sends ahead of the time limit (here by hand): the
    job, still RUNNING, checkpoints at its step and requeues itself; SLURM runs it again, it
    resumes at that step, and its model.pt is the uninterrupted run's, bit for bit."""
    repo = copy_repo(tmp_path / "repo")
    profile = write_ci_profile(repo / "profiles" / "slurm-ci")
    uninterrupted = uninterrupted_run(repo, PREEMPT_CONFIG, tmp_path / "uninterrupted")
    job = start_slurm_run(repo, profile, PREEMPT_CONFIG)
    job_id = signal_mid_epoch(repo, lambda job_id: subprocess.run(["scancel", "--signal=TERM", job_id], check=True),
                              job)
    stop = poll(lambda: log_line(repo, r"stopped by SIGTERM at epoch (\d+) step (\d+): .*; (.*)"), 120, "stop", job)
    epoch, step = int(stop.group(1)), int(stop.group(2))
    assert epoch == 1 and 0 < step < 44, stop.group(0)
    assert stop.group(3).startswith(f"requeued SLURM job {job_id} (scontrol requeue)"), stop.group(0)
    run_again_now(job_id, job)
    finish(job, repo)
    assert log_line(repo, rf"resuming {PREEMPT_RUN} from epoch 1 step {step} \(checkpoint.pt\)"), \
        (repo / PREEMPT_LOG).read_text()[-3000:]
    assert_same_model(uninterrupted, repo / PREEMPT_RUN)
    assert sorted(p.name for p in (repo / PREEMPT_RUN).iterdir()) == ["metrics.csv", "model.pt"]


def test_a_two_process_job_requeued_by_slurm_resumes_at_the_step_both_ranks_stopped_at(tmp_path):
    """`scontrol requeue` (what preemption with PreemptMode=REQUEUE does): SLURM sends SIGTERM to
    every process and requeues the job itself; the two gloo ranks stop at one step, rank 0
    checkpoints there (the job is no longer RUNNING: it does not requeue itself), and the job
    resumes there with the uninterrupted 2-process run's weights."""
    repo = copy_repo(tmp_path / "repo")
    profile = write_ci_profile(repo / "profiles" / "slurm-ci")
    config = (*PREEMPT_CONFIG[:2], "--config", PREEMPT_CONFIG[3].replace("{epochs", "{gpus: 2, epochs"),
              PREEMPT_CONFIG[4])
    uninterrupted = uninterrupted_run(repo, config, tmp_path / "uninterrupted")
    job = start_slurm_run(repo, profile, config)
    job_id = signal_mid_epoch(repo, lambda job_id: subprocess.run(["scontrol", "requeue", job_id], check=True), job)
    stop = poll(lambda: log_line(repo, r"stopped by SIGTERM at epoch (\d+) step (\d+): .*; (.*)"), 120, "stop", job)
    epoch, step = int(stop.group(1)), int(stop.group(2))
    assert epoch == 1 and 0 < step < 44, stop.group(0)
    assert "it resumes from the checkpoint when SLURM requeues it" in stop.group(3), stop.group(0)
    run_again_now(job_id, job)
    finish(job, repo)
    log = (repo / PREEMPT_LOG).read_text()
    assert f"resuming {PREEMPT_RUN} from epoch 1 step {step} (checkpoint.pt)" in log, log[-3000:]
    assert "[imbssl] rank 1 of 2 on cpu (gloo)" in log
    assert_same_model(uninterrupted, repo / PREEMPT_RUN)
