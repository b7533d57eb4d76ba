#!/usr/bin/env bash
# Start a single-node SLURM cluster (one node, one partition, one fake GPU) on a CI machine.
#
# Run as root. Idempotent: installs only what is missing, starts only what is not running, and
# records what it started in $STATE_DIR/started so that stop.sh stops exactly those daemons.
# Afterwards `sinfo` shows the node idle in partition $IMBSSL_SLURM_PARTITION (default: ci).
#
# Pitfalls (Debian 12: slurm 22.05.8, munge 0.5.15, no systemd). [seen] = hit while writing this
# script, [issue 4] = facts recorded in issue 4 and kept as they are:
#  - [issue 4] No systemd: start the daemons by hand. munged refuses to run as root: start it as
#    the munge user, after creating /run/munge (tmpfs, gone after a reboot) owned by munge.
#    [seen] Debian's postinst already writes /etc/munge/munge.key; we create one only if missing.
#  - [issue 4] slurm.conf must be at /etc/slurm/slurm.conf: the Snakemake executor's job step drops
#    SLURM_CONF, so a config elsewhere is not found inside jobs.
#  - [issue 4] The node line comes from `slurmd -C` (minus its UpTime line) so it matches the
#    hardware; we append Gres=gpu:2 (two fake GPUs, see below).
#  - [issue 4] Without DefMemPerCPU a job without --mem takes all the node's memory.
#  - [issue 4] No accounting: `sacct` fails ("Slurm accounting storage is disabled") and the
#    executor's default status command waits forever: run Snakemake with
#    `--slurm-status-command squeue`. [seen] The plugin (2.8) silently switches back to sacct
#    when MinJobAge < 3 x --slurm-init-seconds-before-status-checks and sacct is on PATH:
#    MinJobAge=3600 keeps squeue in use. [seen] It also logs "not able to get a SLURM account
#    via sacct" at every submission: harmless, jobs run without an account.
#  - [issue 4] proctrack/linuxproc, task/none, jobacct_gather/none: no cgroup plugins in a container.
#  - [issue 4] MailProg=/bin/true (no mail program installed).
#  - [issue 4] Fake GPU: GresTypes=gpu, Gres=gpu:1, gres.conf AutoDetect=off + Name=gpu
#    File=/dev/null. [seen] `sbatch --gpus=1` and the executor's `gpu: 1` resource then run with
#    CUDA_VISIBLE_DEVICES=0. [seen] With one GPU every GPU job of the demo runs one after the
#    other (~20 s each on one CPU: over 10 minutes for the demo), so the node gets two fake GPUs,
#    each needing its own File (/dev/null, /dev/zero): two GPU jobs at once on the 2 CPU cores.
#  - [seen] Saved state survives a reboot (/var/spool and /run are on disk here, and a CI machine
#    can start from a copy of this disk): `slurmctld -i` only ignores *unreadable* state, so jobs a
#    killed session left RUNNING were recovered, held both fake GPUs, and every new job pended until
#    the test timed out. A fresh slurmctld therefore starts with `-c` (clear all job and node
#    state) on emptied spool directories, and stale pid files are removed first (their pid may
#    belong to another process on the new machine). If the node still comes up down/drained we
#    resume it.
#  - [seen] Wait for `sinfo` to report the node idle, not only for the pid files.
#  - [seen] A job requeued with `scontrol requeue` (or preempted) waits ~2 minutes (BeginTime)
#    before it runs again; the executor keeps waiting and then sees it finish. The preemption
#    tests in tests/test_slurm.py start it at once (`scontrol update jobid=N StartTime=now`).
#  - apt-get needs DEBIAN_FRONTEND=noninteractive and `apt-get update` on a fresh image; the
#    install pulls ~60 packages (slurm-wlm's plugin set), about a minute.

set -euo pipefail

PARTITION="${IMBSSL_SLURM_PARTITION:-ci}"
STATE_DIR="${IMBSSL_SLURM_STATE_DIR:-/run/imbssl-slurm}"
NODE="$(hostname -s)"

log() { echo "[slurm/start] $*" >&2; }

if [[ "$(id -u)" != 0 ]]; then
    echo "start.sh: run as root (it installs packages and starts system daemons)" >&2
    exit 2
fi
mkdir -p "$STATE_DIR"
touch "$STATE_DIR/started"

started() { echo "$1" >>"$STATE_DIR/started"; }

# --- packages ---------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# --- munge ------------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
        mungekey --create --force
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    started munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# --- slurm configuration ----------------------------------------------------------------------
NODE_LINE="$(slurmd -C | grep '^NodeName=') Gres=gpu:2 State=UNKNOWN"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat >/etc/slurm/slurm.conf <<EOF
# Written by .ci/slurm/start.sh (single-node CI cluster).
ClusterName=imbssl-ci
SlurmctldHost=${NODE}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MailProg=/bin/true
MinJobAge=3600
GresTypes=gpu
${NODE_LINE}
PartitionName=${PARTITION} Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
cat >/etc/slurm/gres.conf <<EOF
# Two fake GPUs (no device behind them): a job asking --gpus=1 gets CUDA_VISIBLE_DEVICES=0 or 1.
AutoDetect=off
Name=gpu File=/dev/null
Name=gpu File=/dev/zero
EOF

# --- daemons ----------------------------------------------------------------------------------
# A pid file counts only if its process is the daemon it names (a stale file can hold any pid).
running() { [[ -s "$1" ]] && [[ "$(ps -o comm= -p "$(cat "$1")" 2>/dev/null)" == "$2" ]]; }
if ! running /run/slurm/slurmctld.pid slurmctld; then
    log "starting slurmctld with a clean state"
    rm -f /run/slurm/slurmctld.pid
    find /var/spool/slurmctld -mindepth 1 -delete
    slurmctld -c -i
    started slurmctld
fi
if ! running /run/slurm/slurmd.pid slurmd; then
    log "starting slurmd with a clean state"
    rm -f /run/slurm/slurmd.pid
    find /var/spool/slurmd -mindepth 1 -delete
    slurmd -c
    started slurmd
fi

for _ in $(seq 60); do
    state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)"
    case "$state" in
        idle|mixed|allocated) log "node $NODE is $state in partition $PARTITION"; exit 0 ;;
        down*|drain*|inval*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
echo "start.sh: node $NODE not idle after 30 s (state: ${state:-none}); see /var/log/slurm/" >&2
exit 1
