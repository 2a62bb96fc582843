#!/usr/bin/env bash
# Bring up the second local site: SLURM cluster `ukdc` with its accounting
# daemon (slurmdbd + MariaDB), beside the default cluster of scripts/setup.sh
# (which must be up: it provides munge). Idempotent: when everything already
# runs it only checks (~0.3 s). `scripts/setup.sh --two-sites` runs it last.
#
#   1. installs slurmdbd and mariadb-server if missing
#   2. starts MariaDB (no systemd; socket only, no TCP port) and creates the
#      accounting database user
#   3. renders slurm/slurm-ukdc.conf.in and slurm/slurmdbd.conf.in into
#      $CONF_DIR (daemons of this site restarted only if the rendering differs)
#   4. starts slurmdbd, registers the cluster, starts slurmctld and the slurmd
#      of nodes u1, u2 (ports below), each with pid files under $RUN_DIR
#   5. waits until both nodes are idle
#
# Client commands reach this cluster with SLURM_CONF=/etc/slurm-ukdc/slurm.conf.
# Nothing here touches the default cluster's daemons or files.
# Stop this site with scripts/stop-ukdc.sh [--controller-only].
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Keep these in sync with scripts/stop-ukdc.sh.
CONF_DIR=/etc/slurm-ukdc
RUN_DIR=/run/tpcflow-ukdc
LOG_DIR=/var/log/slurm-ukdc
STATE_DIR=/var/spool/slurmctld-ukdc
SPOOL_DIR=/var/spool/slurmd-ukdc
TMP_PREFIX=/tmp/slurm-ukdc-
CONTROL_ADDR=127.0.0.1
CTLD_PORT=6827
SLURMD_PORT=6828
DBD_PORT=6839
NODE_PORT_BASE=17010        # node u<i> listens on NODE_PORT_BASE + i
NODES=2
DB_NAME=tpcflow_acct
DB_USER=slurm
DB_PASS=tpcflow-local-accounting
WAIT_SECS=${TPCFLOW_SLURM_WAIT:-60}
export SLURM_CONF=$CONF_DIR/slurm.conf

log() { printf 'setup-ukdc: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $EUID -eq 0 ]] || die "must run as root"
# One run at a time (tests call this in parallel; apt-get and MariaDB's first
# start must not race).
exec 9>/tmp/tpcflow-ukdc-setup.lock
flock 9

alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != [ZX] ]]
}
pid_of() {
  local pid=""
  if [[ -r $1 ]]; then read -r pid <"$1" || true; fi
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" \
    && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && echo "$pid"
}
# Run a command with only stdin, stdout and stderr open. Daemons started here
# must not inherit other descriptors: a caller under `flock -s
# /tmp/tpcflow-cluster.lock` (as the tests are run) would leave that lock held
# by MariaDB or slurmdbd for as long as they live, and fd 9 is this script's lock.
bare() {
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec "$@"
  )
}
changes=()

# --- 1. packages -------------------------------------------------------------
missing=()
for p in slurmdbd mariadb-server; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  bare apt-get update -qq
  DEBIAN_FRONTEND=noninteractive bare apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || die "munge does not work: run scripts/setup.sh first"

# --- 2. MariaDB --------------------------------------------------------------
db_ok() { mariadb-admin --protocol=socket ping >/dev/null 2>&1; }
if ! db_ok; then
  log "starting MariaDB"
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  bare setsid -f mariadbd --user=mysql --skip-networking >>/var/log/mysql-tpcflow.log 2>&1 </dev/null
  for ((i = 0; i < 100; i++)); do db_ok && break; sleep 0.1; done
  db_ok || die "MariaDB did not start: $(tail -n 10 /var/log/mysql-tpcflow.log)"
  changes+=(start:mariadb)
fi
mariadb --protocol=socket -e "CREATE DATABASE IF NOT EXISTS $DB_NAME;
  CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
  GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';" || die "cannot create the accounting database"

# --- 3. configuration --------------------------------------------------------
NODE_LINES="" NODE_NAMES=""
hw=$(slurmd -C) || die "slurmd -C failed"
hw=${hw%%$'\n'*}
declare -A HW=()
for kv in $hw; do HW[${kv%%=*}]=${kv#*=}; done
mem_each=$((${HW[RealMemory]} * 95 / 100 / NODES))
host=$(hostname -s)
for ((i = 1; i <= NODES; i++)); do
  NODE_LINES+="NodeName=u$i NodeHostname=$host NodeAddr=$CONTROL_ADDR Port=$((NODE_PORT_BASE + i))"
  NODE_LINES+=" CPUs=1 Boards=1 SocketsPerBoard=1 CoresPerSocket=1 ThreadsPerCore=1 RealMemory=$mem_each"$'\n'
  NODE_NAMES+="${NODE_NAMES:+,}u$i"
done
NODE_LINES=${NODE_LINES%$'\n'}

render() {
  local out
  out=$(<"$1")
  out=${out//@CONF_DIR@/"$CONF_DIR"}
  out=${out//@CONTROL_HOST@/"$host"}
  out=${out//@CONTROL_ADDR@/"$CONTROL_ADDR"}
  out=${out//@CTLD_PORT@/"$CTLD_PORT"}
  out=${out//@SLURMD_PORT@/"$SLURMD_PORT"}
  out=${out//@DBD_PORT@/"$DBD_PORT"}
  out=${out//@STATE_DIR@/"$STATE_DIR"}
  out=${out//@RUN_DIR@/"$RUN_DIR"}
  out=${out//@LOG_DIR@/"$LOG_DIR"}
  out=${out//@SPOOL_DIR@/"$SPOOL_DIR"}
  out=${out//@TMP_PREFIX@/"$TMP_PREFIX"}
  out=${out//@DB_NAME@/"$DB_NAME"}
  out=${out//@DB_USER@/"$DB_USER"}
  out=${out//@DB_PASS@/"$DB_PASS"}
  out=${out//@NODE_LINES@/"$NODE_LINES"}
  out=${out//@NODE_NAMES@/"$NODE_NAMES"}
  [[ $out =~ @[A-Z_]+@ ]] && die "unreplaced placeholder ${BASH_REMATCH[0]} in $1"
  printf '%s\n' "$out"
}

conf_changed=0
# install_conf CONTENT FILE MODE
install_conf() {
  if [[ -f $2 ]] && cmp -s "$2" <(printf '%s\n' "$1"); then return 0; fi
  printf '%s\n' "$1" >"$2.tmp.$$"
  chmod "$3" "$2.tmp.$$"
  mv -f "$2.tmp.$$" "$2"
  log "wrote $2"
  conf_changed=1
  changes+=("wrote:${2##*/}")
}
mkdir -p "$CONF_DIR" "$RUN_DIR" "$LOG_DIR" "$STATE_DIR"
ctld_conf=$(render "$here/../slurm/slurm-ukdc.conf.in")
dbd_conf=$(render "$here/../slurm/slurmdbd.conf.in")
install_conf "$ctld_conf" "$CONF_DIR/slurm.conf" 0644
install_conf "$dbd_conf" "$CONF_DIR/slurmdbd.conf" 0600
if ((conf_changed)); then
  "$here/stop-ukdc.sh"
fi

# --- 4. daemons --------------------------------------------------------------
fail_with_logs() {
  local f
  log "ERROR: $*"
  for f in "$LOG_DIR"/*.log; do printf -- '--- tail %s\n' "$f" >&2; tail -n 15 "$f" >&2; done
  exit 1
}
dbd_ok() { sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1; }
if ! pid_of "$RUN_DIR/slurmdbd.pid" slurmdbd >/dev/null; then
  log "starting slurmdbd"
  bare slurmdbd || fail_with_logs "slurmdbd failed to start"
  changes+=(start:slurmdbd)
fi
for ((i = 0; i < 100; i++)); do dbd_ok && break; sleep 0.1; done
dbd_ok || fail_with_logs "slurmdbd does not answer on port $DBD_PORT"
if ! sacctmgr -n -P show cluster format=cluster | grep -qx ukdc; then
  sacctmgr -i add cluster ukdc >/dev/null || fail_with_logs "cannot register cluster ukdc"
  changes+=(register:ukdc)
fi
for ((i = 1; i <= NODES; i++)); do mkdir -p "$SPOOL_DIR/u$i" "${TMP_PREFIX}u$i"; done
declare -A T0=()
if ! pid_of "$RUN_DIR/slurmctld.pid" slurmctld >/dev/null; then
  log "starting slurmctld (ukdc)"
  bare slurmctld -f "$SLURM_CONF" || fail_with_logs "slurmctld failed to start"
  changes+=(start:slurmctld)
fi
for ((i = 1; i <= NODES; i++)); do
  if ! pid_of "$RUN_DIR/slurmd-u$i.pid" slurmd >/dev/null; then
    log "starting slurmd -N u$i"
    T0[u$i]=1
    bare slurmd -f "$SLURM_CONF" -N "u$i" || fail_with_logs "slurmd -N u$i failed to start"
    changes+=("start:slurmd-u$i")
  fi
done

# --- 5. wait for idle nodes --------------------------------------------------
deadline=$((SECONDS + WAIT_SECS))
declare -A resumed=()
while :; do
  ok=1
  out=$(sinfo -h -N -o '%N %T' 2>/dev/null) || out=""
  for ((i = 1; i <= NODES; i++)); do
    state=$(awk -v n="u$i" '$1 == n { print $2; exit }' <<<"$out")
    case $state in
      idle | mixed | allocated | completing) ;;
      down | drain*)
        ok=0
        if [[ -z ${resumed[u$i]:-} ]]; then
          scontrol update nodename="u$i" state=resume 2>/dev/null || true
          resumed[u$i]=1
          changes+=("resume:u$i")
        fi ;;
      *) ok=0 ;;
    esac
  done
  ((ok)) && break
  ((SECONDS < deadline)) || fail_with_logs "ukdc nodes not usable after ${WAIT_SECS}s: $(tr '\n' ' ' <<<"${out:-no answer}")"
  sleep 0.2
done
if ((${#changes[@]})); then what="${changes[*]}"; else what="nothing changed"; fi
echo "SLURM cluster 'ukdc' up (SLURM_CONF=$SLURM_CONF, accounting in slurmdbd): $(sinfo -h -N -o '%N(%T)' | tr '\n' ' ')[$what]"
