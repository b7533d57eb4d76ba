"""One job on several processes (torchrun, gloo on the CPU): the same steps as one process, resume
after a killed rank, a failing rank ends the job, two "nodes" on one machine; and the pure pieces
(which images a rank trains on, the launch command lines)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from imbssl import UserError
from imbssl.core import checkpoint, distributed
from imbssl.orchestration.launch import job_command, multinode_command, step_environment
from imbssl.training.loop import effective_batch_size

TESTS = Path(__file__).resolve().parent
TOLERANCE = 1e-5  # 2 x B/2 against 1 x B differ by < 1e-6 here; without SyncBN or the gathers by > 1e-4


def run_env() -> dict[str, str]:
    """Jobs find `imbssl` beside this Python; no GPUs to lease; one thread per process."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "IMBSSL_NUM_GPUS": "0", "OMP_NUM_THREADS": "1"}


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--max-restarts=0", *args]


# --- the pure pieces ---------------------------------------------------------------------------

@pytest.mark.parametrize("world", [1, 2, 4])
def test_the_ranks_share_out_exactly_the_global_batch(world):
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    for step in range(5):
        parts = [distributed.rank_batch(order, step, 8, rank, world) for rank in range(world)]
        assert all(len(part) == 8 // world for part in parts)
        assert torch.equal(torch.cat(parts), order[step * 8:(step + 1) * 8])
    with pytest.raises(ValueError, match="not divisible"):
        distributed.rank_batch(order, 0, 6, 0, 4)


def test_shards_cover_every_index_once_in_order():
    for n, world in [(13, 2), (13, 4), (3, 4), (8, 2)]:
        parts = [range(n)[distributed.shard(n, rank, world)] for rank in range(world)]
        assert [i for part in parts for i in part] == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_rank_zero_keeps_the_single_process_random_stream():
    assert distributed.rank_seed(1234, 0) == 1234
    assert len({distributed.rank_seed(1234, rank) for rank in range(4)}) == 4


def test_with_one_process_every_collective_is_the_identity():
    x = torch.randn(6, 3)
    assert distributed.world_size() == 1 and distributed.is_main()
    for collective in (distributed.all_gather_with_grad, distributed.all_reduce_with_grad,
                       distributed.all_reduce_sum, distributed.mean_over_ranks):
        assert collective(x) is x
    assert torch.equal(distributed.batch_mean(x), x.mean(dim=0))
    assert distributed.gather_rows(x, 6) is x
    module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    cpu = torch.device("cpu")
    assert distributed.wrap(distributed.convert_sync_batchnorm(module, cpu), cpu) is module
    assert type(module[1]) is torch.nn.BatchNorm1d


def test_small_training_sets_split_evenly_over_the_processes():
    assert effective_batch_size(37, 32, 2) == 32
    assert effective_batch_size(31, 32, 2) == 30  # all images that split evenly
    assert effective_batch_size(31, 32, 1) == 31
    # The config check stops a batch that does not split over the GPUs before any job (test_config.py).
    with pytest.raises(AssertionError, match="config check"):
        effective_batch_size(100, 32, 3)
    with pytest.raises(UserError, match="fewer GPUs"):
        effective_batch_size(3, 32, 4)


def test_one_gpu_runs_the_command_itself_and_several_run_it_under_torchrun():
    command = ["imbssl", "pretrain", "--seed", "0"]
    assert job_command(command, 1, 1, {}) == (command, None)
    argv, env = job_command(command, 4, 1, {"HOME": "/h"})
    assert argv[-6:] == ["--standalone", "--no-python", *command]
    # torchrun passes SIGUSR1 on to its workers too, and gives them time for their stop checkpoint.
    assert env == {"HOME": "/h", "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
                   "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "120"}
    assert job_command(command, 4, 1, {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "600"})[1]["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "600"
    assert argv[:4] == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=4"]
    # Under SLURM on one node: the same standalone torchrun on the GPUs SLURM gave the job.
    assert job_command(command, 2, 1, {"SLURM_JOB_ID": "7"})[0][-6:-4] == ["--standalone", "--no-python"]
    with pytest.raises(UserError, match="pretrain.nodes=2: a job on several nodes runs under SLURM only"):
        job_command(command, 2, 2, {})


def test_several_nodes_start_one_torchrun_per_node_meeting_on_the_first():
    argv = multinode_command(["imbssl", "distill"], 4, 3, "gpu-node-01", 21234, "991234")
    srun, rest = argv[:argv.index(sys.executable)], argv[argv.index(sys.executable):]
    assert srun == ["srun", "--overlap", "--nodes=3", "--ntasks=3", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    for option in ("--nproc-per-node=4", "--nnodes=3", "--rdzv-backend=c10d", "--rdzv-endpoint=gpu-node-01:21234",
                   "--rdzv-id=imbssl-991234", "--max-restarts=0"):
        assert option in rest
    assert rest[-3:] == ["--no-python", "imbssl", "distill"]
    # The nested srun must not inherit the step it runs in (1 task on 1 node).
    env = step_environment({"SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "n[1-3]", "SLURM_NTASKS": "1",
                            "SLURM_STEP_ID": "0", "SRUN_CPUS_PER_TASK": "1", "HOME": "/h"})
    assert env == {"SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "n[1-3]", "HOME": "/h"}


# One write per rank: the ranks share the pipe, and separate writes of one line could interleave.
PRINT_RANK = ("import os; e = os.environ; "
              "os.write(1, f\"{e['RANK']} {e['WORLD_SIZE']} {e['CUDA_VISIBLE_DEVICES']}\\n\".encode())")


def test_launch_leases_the_gpus_then_starts_one_process_per_gpu(tmp_path):
    env = {**run_env(), "IMBSSL_NUM_GPUS": "3", "IMBSSL_LOCK_DIR": str(tmp_path / "locks")}
    done = subprocess.run([sys.executable, "-m", "imbssl.orchestration.launch", "--gpus", "2", "--", sys.executable, "-c",
                           PRINT_RANK], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(done.stdout.splitlines()) == ["0 2 0,1", "1 2 0,1"]  # two fake GPUs, leased at once


def test_several_nodes_on_a_workstation_stop_in_one_line():
    done = subprocess.run([sys.executable, "-m", "imbssl.orchestration.launch", "--gpus", "2", "--nodes", "2", "--", "true"],
                          env=run_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "runs under SLURM only" in done.stderr


# --- 2 processes x B/2 == 1 process x B ---------------------------------------------------------

@pytest.fixture(scope="module")
def two_and_one(tmp_path_factory):
    """The steps of tests/helpers/ddp_job.py under torchrun (2 ranks) and in this process (1)."""
    from helpers import ddp_job

    out = tmp_path_factory.mktemp("ddp")
    done = subprocess.run(torchrun("--standalone", "--nproc-per-node=2", str(TESTS / "helpers" / "ddp_job.py"), "steps",
                                   str(out / "two")), env=run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    two = torch.load(out / "two" / "steps.pt")
    assert two["world_size"] == 2
    return two, ddp_job.steps(out / "one"), ddp_job


@pytest.mark.parametrize("method", ["simsiam", "simclr", "msn", "distill", "byol", "vicreg", "swav", "pswav",
                                    "dino"])
def test_two_processes_train_exactly_like_one_with_the_whole_batch(two_and_one, method):
    """Same loss at every step and the same weights: SyncBatchNorm, SimCLR's global negatives,
    MSN's global prior and Sinkhorn, VICReg's gathered variance and covariance, SwAV's global
    Sinkhorn (with its queue: each rank queues its own rows), DINO's global center and DDP's
    gradient averaging make 2 x B/2 one batch of B."""
    two, one, _ = two_and_one
    a, b = one["methods"][method], two["methods"][method]
    assert len(a["losses"]) == len(b["losses"]) == 4
    assert a["losses"] == pytest.approx(b["losses"], rel=TOLERANCE, abs=TOLERANCE)
    assert a["state"].keys() == b["state"].keys()
    if method == "swav":  # the queue held all 32 rows in one process, 16 on each rank
        assert (a["state"]["queue.filled"].item(), b["state"]["queue.filled"].item()) == (32, 16)
    for key, value in a["state"].items():
        if key.startswith("queue."):
            continue
        assert torch.allclose(value.float(), b["state"][key].float(), rtol=TOLERANCE, atol=TOLERANCE), key


def test_features_of_all_ranks_come_back_in_index_order(two_and_one):
    two, _, ddp_job = two_and_one
    reference = ddp_job.reference_features()
    assert two["features"].shape == reference.shape == (13, 32)
    assert torch.allclose(two["features"], reference, atol=1e-5)


def test_a_failing_rank_ends_the_job_with_its_error(tmp_path):
    started = time.monotonic()
    done = subprocess.run(torchrun("--standalone", "--nproc-per-node=2", str(TESTS / "helpers" / "ddp_job.py"), "fail",
                                   str(tmp_path)), env=run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "planted failure on rank 1" in done.stderr
    assert time.monotonic() - started < 120, "the other rank kept the job waiting"
    assert not (tmp_path / "simsiam" / "model.pt").exists()


def test_the_ranks_read_the_same_decisions_two_steps_after_any_rank_cast_them(tmp_path):
    """A checkpoint wished by rank 0 at step 2 and a stop wished by rank 1 at step 6 are read by
    both ranks at steps 4 and 8 (the settled end, which reads every cast in flight)."""
    done = subprocess.run(torchrun("--standalone", "--nproc-per-node=2", str(TESTS / "helpers" / "ddp_job.py"),
                                   "votes", str(tmp_path)), env=run_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    read = [(tmp_path / f"votes{rank}.txt").read_text() for rank in (0, 1)]
    assert read == ["0 0 0 0 1 0 0 0 2"] * 2


# --- whole jobs through the launcher -------------------------------------------------------------

EPOCHS = 4  # of 11 steps of 32 images (16 per rank): room for a stop mid-epoch


def pretrain_command(digits_data, out: Path) -> list[str]:
    train, test, subsets = digits_data
    return ["imbssl", "pretrain", "--method", "simsiam", "--train-data", str(train), "--test-data", str(test),
            "--subset", str(subsets / "imbalanced-p100.csv"), "--out-dir", str(out), "--epochs", str(EPOCHS),
            "--batch-size", "32", "--checkpoint-every", "1", "--knn-every", "0", "--knn-k", "5", "--arch",
            "resnet10", "--width", "4", "--proj-dim", "16", "--pred-hidden-dim", "8", "--warmup-epochs", "0"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_nodes(digits_data, tmp_path_factory) -> tuple[Path, list[str]]:
    """Two torchrun launchers, as two nodes would start them (--nnodes 2, a c10d rendezvous on the
    first node), training one model together: (its folder, each launcher's stderr)."""
    out = tmp_path_factory.mktemp("two-nodes") / "run"
    node = torchrun("--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--rdzv-id=two-nodes", "--no-python",
                    *pretrain_command(digits_data, out))
    nodes = [subprocess.Popen(node, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [job.communicate(timeout=300)[1] for job in nodes]
    assert [job.returncode for job in nodes] == [0, 0], "\n".join(err[-3000:] for err in errs)
    return out, errs


def test_two_nodes_meeting_on_localhost_finish_one_run(two_nodes):
    out, errs = two_nodes
    assert sorted(line for err in errs for line in err.splitlines() if "of 2 on cpu" in line) == [
        "[imbssl] rank 0 of 2 on cpu (gloo)", "[imbssl] rank 1 of 2 on cpu (gloo)"]
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "model.pt"]  # one model, no checkpoint left
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + EPOCHS


def launched(command: list[str], gpus: int = 2) -> list[str]:
    return [sys.executable, "-m", "imbssl.orchestration.launch", "--gpus", str(gpus), "--", *command]


def rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of a worker of the torchrun process `launcher_pid` by its RANK."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher_pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def weights(path: Path) -> dict:
    return checkpoint.load(path)["method_state"]


def test_resume_after_killing_a_rank_equals_an_uninterrupted_run(digits_data, two_nodes, tmp_path):
    """`imbssl.orchestration.launch --gpus 2` (torchrun on this machine's CPU), rank 1 killed after the first
    checkpoint: the job ends at once; run again, it resumes and ends with the weights of the
    uninterrupted 2-process run (the two-"node" one)."""
    out = tmp_path / "killed"
    job = subprocess.Popen(launched(pretrain_command(digits_data, out)), env=run_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "checkpoint.pt").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim = rank_pid(job.pid, 1)
    assert victim is not None and job.poll() is None, "the job ended before a rank could be killed"
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = job.communicate(timeout=120)
    assert job.returncode != 0 and time.monotonic() - killed_at < 60, err[-3000:]
    assert "rank 1 of 2 on cpu (gloo)" in err
    assert not (out / "model.pt").exists() and (out / "checkpoint.pt").exists()

    resumed = subprocess.run(launched(pretrain_command(digits_data, out)), env=run_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resuming {out} from epoch" in resumed.stderr
    uninterrupted, _ = two_nodes
    a, b = weights(uninterrupted / "model.pt"), weights(out / "model.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = (out / "metrics.csv").read_text().splitlines()
    straight = (uninterrupted / "metrics.csv").read_text().splitlines()
    assert len(rows) == len(straight) == 1 + EPOCHS
    assert [row.split(",")[:4] for row in rows] == [row.split(",")[:4] for row in straight]  # epoch..out_std


def test_a_signal_to_torchrun_stops_both_ranks_at_one_step_and_the_job_resumes_there(digits_data, two_nodes,
                                                                                     tmp_path):
    """SIGUSR1 to the job (torchrun, which the launcher became) in its second epoch: torchrun passes
    it on, the two ranks agree on a step, rank 0 checkpoints there and both exit 75; run again, the
    job resumes at that step and ends with the uninterrupted 2-process run's weights."""
    out = tmp_path / "signalled"
    job = subprocess.Popen(launched(pretrain_command(digits_data, out)), env=run_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "checkpoint.pt").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.poll() is None, "the job ended before its first checkpoint"
    job.send_signal(signal.SIGUSR1)  # just after epoch 1's checkpoint: early in epoch 2
    _, err = job.communicate(timeout=180)
    assert job.returncode != 0, err[-3000:]
    stop = checkpoint.load(out / "checkpoint.pt")
    epoch, step = stop["epoch"], stop["step"]
    assert epoch == 1 and 0 < step < 11, (epoch, step)  # mid-epoch, one state of the whole job:
    assert len(stop["ranks"]) == 2  # both ranks' random streams and metric sums
    assert f"stopped by SIGUSR1 at epoch {epoch} step {step}: {out / 'checkpoint.pt'} holds" in err
    assert not (out / "model.pt").exists()

    resumed = subprocess.run(launched(pretrain_command(digits_data, out)), env=run_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resuming {out} from epoch {epoch} step {step} (checkpoint.pt)" in resumed.stderr
    uninterrupted, _ = two_nodes
    a, b = weights(uninterrupted / "model.pt"), weights(out / "model.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = (out / "metrics.csv").read_text().splitlines()
    straight = (uninterrupted / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[:4] for row in rows] == [row.split(",")[:4] for row in straight]
