"""Run one `imbssl` command as a job on its GPUs: the command itself on one GPU, under torchrun on several.

Every GPU rule runs `python -m imbssl.orchestration.launch --gpus G --nodes M [--slots ...] -- imbssl <command> ...`:

- one GPU, one node: the command as it is (no torchrun, no process group), on a leased GPU;
- G GPUs on one node: `torchrun --standalone --nproc-per-node G --no-python <command>` on G GPUs
  leased at once (on a workstation) or the G GPUs SLURM gave the job;
- M nodes (SLURM only): `srun` starts one torchrun per node of the job's allocation, which meet in
  a c10d rendezvous hosted on the allocation's first node and start G processes each.

torchrun stops every process of the job when one fails (no restarts: Snakemake's `--retries` and
SLURM's requeue rerun the job, which resumes from its checkpoint), so a crashed rank ends the job
with its error instead of leaving the others waiting.

Signals: torchrun passes SIGTERM, and here SIGUSR1 too (`PET_SIGNALS_TO_HANDLE`), on to its
workers, which stop at an agreed step with a checkpoint; it waits `TORCH_ELASTIC_SHUTDOWN_TIMEOUT`
seconds (120 here, torch's default 30) for them before SIGKILL. Both are read from the
environment, so torch releases without these options ignore them (torch < 2.9 forwards SIGTERM
only). Without torchrun the command is exec'd and gets every signal itself.

Nothing here imports torch: it starts before the job's processes do.

Environment:
    IMBSSL_RDZV_PORT   port of the multi-node rendezvous on the first node (default: 20000 + the
                       SLURM job id modulo 10000, so that jobs sharing a node use different ports).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping

from imbssl import UserError
from imbssl.orchestration.gpu_lease import add_lease_arguments, exec_command, lease, run_or_report, split_command

PROG = "imbssl.orchestration.launch"

# SLURM variables that a nested srun must still see: the allocation's identity. The others
# describe the job step this command runs in (one task on one node) and would override the srun
# options below (the SLURM executor plugin strips them the same way for its own srun).
SLURM_KEEP = {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_CLUSTER_NAME",
              "SLURM_CONF", "SLURM_SUBMIT_DIR", "SLURM_SUBMIT_HOST"}


def torchrun(gpus: int) -> list[str]:
    """torchrun as a module of this Python (the venv's, whatever PATH holds)."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={gpus}", "--max-restarts=0"]


def standalone_command(command: list[str], gpus: int) -> list[str]:
    """G processes on this node; the rendezvous on a free local port."""
    return [*torchrun(gpus), "--standalone", "--no-python", *command]


def multinode_command(command: list[str], gpus: int, nodes: int, head: str, port: int, job_id: str) -> list[str]:
    """One torchrun per node of the SLURM allocation (srun), meeting on `head`:`port`."""
    srun = ["srun", "--overlap", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=1"]
    return [*srun, *torchrun(gpus), f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={head}:{port}",
            f"--rdzv-id=imbssl-{job_id}", "--no-python", *command]


# Environment of torchrun (its options' environment variables), unless the user set them.
TORCHRUN_ENV = {
    "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
    "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "120",  # seconds the workers get to write their stop checkpoint
}


def torchrun_environment(env: Mapping[str, str]) -> dict[str, str]:
    return {**TORCHRUN_ENV, **env}


def rendezvous_port(env: Mapping[str, str]) -> int:
    if env.get("IMBSSL_RDZV_PORT"):
        return int(env["IMBSSL_RDZV_PORT"])
    return 20000 + int(env["SLURM_JOB_ID"]) % 10000


def first_node(env: Mapping[str, str]) -> str:
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise UserError("SLURM_JOB_NODELIST is not set: a job on several nodes must run inside a SLURM allocation")
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return hosts.stdout.split()[0]


def step_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment for a nested srun: without the enclosing step's SLURM/SRUN settings."""
    return {key: value for key, value in env.items()
            if not (key.startswith(("SLURM_", "SRUN_", "SBATCH_")) and key not in SLURM_KEEP)}


def job_command(command: list[str], gpus: int, nodes: int, env: Mapping[str, str],
                rendezvous: str = "auto") -> tuple[list[str], dict[str, str] | None]:
    """(argv to exec, environment or None for the current one) that runs `command` on the job's GPUs."""
    if gpus < 1 or nodes < 1:
        raise UserError(f"--gpus {gpus} --nodes {nodes}: a job needs at least one GPU on one node")
    multinode = nodes > 1 or rendezvous == "c10d"
    if multinode and "SLURM_JOB_ID" not in env:
        raise UserError(f"pretrain.nodes={nodes}: a job on several nodes runs under SLURM only "
                        "(snakemake --profile profiles/slurm); on one machine set nodes: 1")
    if multinode:
        argv = multinode_command(command, gpus, nodes, first_node(env), rendezvous_port(env), env["SLURM_JOB_ID"])
        return argv, torchrun_environment(step_environment(env))
    if gpus == 1:
        return command, None
    return standalone_command(command, gpus), torchrun_environment(env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options, command = split_command(argv)
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", usage="%(prog)s [options] -- COMMAND [ARGS...]",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_lease_arguments(parser)
    parser.add_argument("--nodes", type=int, default=1, help="nodes of a SLURM job (default 1)")
    parser.add_argument("--rendezvous", choices=["auto", "c10d"], default="auto",
                        help="c10d: the multi-node launch (srun + torchrun) even on one node")
    args = parser.parse_args(options)
    if not command:
        parser.error("no command after '--'")
    return run_or_report(PROG, lambda: launch(command, args.gpus, args.nodes, args.slots, args.slots_per_device,
                                              args.rendezvous))


def launch(command: list[str], gpus: int, nodes: int, slots: int | None, slots_per_device: int,
           rendezvous: str) -> None:
    """Lease the job's GPUs (one node: SLURM assigns a multi-node job's) and exec its command line."""
    if nodes == 1:
        lease(os.environ, gpus, slots, slots_per_device)  # sets CUDA_VISIBLE_DEVICES to the leased GPUs
    # built after the lease: the environment it gives the command carries the leased devices
    argv, env = job_command(command, gpus, nodes, os.environ, rendezvous)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    exec_command(argv)


if __name__ == "__main__":
    sys.exit(main())
