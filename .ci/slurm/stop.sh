#!/usr/bin/env bash
# Stop the daemons .ci/slurm/start.sh started (and only those), after cancelling leftover jobs.
# Idempotent: does nothing when nothing was started.
set -uo pipefail

STATE_DIR="${IMBSSL_SLURM_STATE_DIR:-/run/imbssl-slurm}"
STARTED="$STATE_DIR/started"

log() { echo "[slurm/stop] $*" >&2; }

[[ -s "$STARTED" ]] || { log "nothing to stop"; exit 0; }

# Jobs still running would leave slurmstepd processes behind once slurmd is gone.
if grep -qx slurmctld "$STARTED" && command -v scancel >/dev/null; then
    scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 20); do
        [[ -z "$(squeue -h -t running,completing 2>/dev/null)" ]] && break
        sleep 0.5
    done
fi

pid_file() {
    case "$1" in
        slurmd) echo /run/slurm/slurmd.pid ;;
        slurmctld) echo /run/slurm/slurmctld.pid ;;
        munged) echo /run/munge/munged.pid ;;
    esac
}

# Stop in reverse start order: slurmd, slurmctld, then munged (the slurm daemons need it to exit).
for daemon in $(tac "$STARTED"); do
    file="$(pid_file "$daemon")"
    pid="$(cat "$file" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        log "stopping $daemon (pid $pid)"
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { log "$daemon did not stop, killing it"; kill -KILL "$pid"; }
    fi
done
rm -f "$STARTED"
