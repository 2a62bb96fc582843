#!/usr/bin/env bash
# Stop the local SLURM test cluster started by scripts/setup.sh:
# every slurmd, then slurmctld, then munged, each by the pid in its pid file.
# Each daemon gets SIGTERM, then SIGKILL if it has not exited after a timeout
# (the slurmd are stopped in parallel).
# Idempotent: daemons that are not running are skipped.
#
# Usage: scripts/stop-cluster.sh [--keep-munge]
#   --keep-munge  leave munged running (setup.sh uses this to restart SLURM only)
# Env: TPCFLOW_STOP_TIMEOUT  seconds to wait after SIGTERM (default 15)
set -euo pipefail

# Keep these in sync with scripts/setup.sh / slurm/slurm.conf.in.
RUN_DIR=/run
MUNGE_PID_FILE=/run/munge/munged.pid
TIMEOUT=${TPCFLOW_STOP_TIMEOUT:-15}

keep_munge=0
case "${1:-}" in
  --keep-munge) keep_munge=1 ;;
  "") ;;
  *) echo "usage: $0 [--keep-munge]" >&2; exit 2 ;;
esac

log() { printf 'stop-cluster: %s\n' "$*" >&2; }

# alive PID: the process exists and is not a zombie (an orphaned daemon that
# died stays a zombie here for ~1.3 s until init reaps it).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != [ZX] ]]
}

# pid_of PIDFILE NAME: print the pid from PIDFILE if that process is alive and
# is really NAME (guards against stale pid files and reused pids).
pid_of() {
  local pid=""
  if [[ -r $1 ]]; then read -r pid <"$1" || true; fi
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" \
    && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && echo "$pid"
}

# stop_group NAME PIDFILE...: SIGTERM every live NAME process named in the pid
# files at once, wait for all of them, SIGKILL what is left after TIMEOUT.
stop_group() {
  local name=$1 f pid deadline pids=() left
  shift
  for f in "$@"; do
    if pid=$(pid_of "$f" "$name"); then
      log "stopping $(basename "$f" .pid) (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  deadline=$((SECONDS + TIMEOUT))
  while ((${#pids[@]})); do
    left=()
    for pid in "${pids[@]}"; do
      alive "$pid" && left+=("$pid")
    done
    pids=("${left[@]}")
    ((${#pids[@]})) || break
    if ((SECONDS >= deadline)); then
      log "$name pid(s) ${pids[*]} still running after ${TIMEOUT}s: SIGKILL"
      kill -KILL "${pids[@]}" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.1
  done
  rm -f "$@"   # the daemons are gone: their pid files are stale
}

# All slurmd first (one per emulated node: slurmd-<node>.pid), then the controller.
shopt -s nullglob
stop_group slurmd "$RUN_DIR"/slurmd-*.pid
stop_group slurmctld "$RUN_DIR/slurmctld.pid"
((keep_munge)) || stop_group munged "$MUNGE_PID_FILE"

# Report (but do not touch) daemons that run without a pid file we know of.
for name in slurmd slurmctld munged; do
  [[ $name == munged ]] && ((keep_munge)) && continue
  for pid in $(pgrep -x "$name" || true); do
    alive "$pid" && log "WARNING: $name pid $pid still running (no known pid file): not touched"
  done
done
exit 0
