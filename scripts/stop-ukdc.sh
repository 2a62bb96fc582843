#!/usr/bin/env bash
# Stop the second local site started by scripts/setup-ukdc.sh, each daemon by
# the pid in its pid file under /run/tpcflow-ukdc (SIGTERM, SIGKILL after 15 s).
# The default cluster and MariaDB are never touched.
#
# Usage: scripts/stop-ukdc.sh [--controller-only]
#   --controller-only  stop slurmctld of ukdc only (a site outage: its nodes,
#                      and the jobs running there, go on)
set -euo pipefail
RUN_DIR=/run/tpcflow-ukdc
TIMEOUT=${TPCFLOW_STOP_TIMEOUT:-15}
only_ctld=0
case "${1:-}" in
  --controller-only) only_ctld=1 ;;
  "") ;;
  *) echo "usage: $0 [--controller-only]" >&2; exit 2 ;;
esac
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != [ZX] ]]
}
stop() {
  local name=$1 f=$2 pid="" deadline
  [[ -r $f ]] && read -r pid <"$f" || true
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 0
  printf 'stop-ukdc: stopping %s (pid %s)\n' "$(basename "$f" .pid)" "$pid" >&2
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + TIMEOUT))
  while alive "$pid"; do
    if ((SECONDS >= deadline)); then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; break; fi
    sleep 0.1
  done
  rm -f "$f"
}
shopt -s nullglob
stop slurmctld "$RUN_DIR/slurmctld.pid"
((only_ctld)) && exit 0
for f in "$RUN_DIR"/slurmd-*.pid; do stop slurmd "$f"; done
stop slurmdbd "$RUN_DIR/slurmdbd.pid"
exit 0
