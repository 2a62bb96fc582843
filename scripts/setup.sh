#!/usr/bin/env bash
# Bring up the local SLURM + munge test cluster for tpcflow (Debian 12, root,
# no systemd, no cgroups). Idempotent and fast: when everything is already up
# it changes nothing and only checks (~0.2 s).
#
#   1. installs missing Debian packages (SLURM, munge, Open MPI, HDF5, clang, ...)
#   2. makes sure munged runs (key, /run/munge) and `munge -n | unmunge` works
#   3. renders slurm/slurm.conf.in to /etc/slurm/slurm.conf (rewritten, and the
#      SLURM daemons restarted, only if the rendering differs)
#   4. starts slurmctld and one slurmd per node if they are not running
#   5. waits until every node is usable (resuming nodes left down/drained)
#
# Env:
#   TPCFLOW_SLURM_NODES  2 (default): emulated nodes n1..nN on this host
#                        (127.0.0.1, ports 17001.., host CPUs and memory split);
#                        1: one node named after the host (`slurmd -C` as is)
#   TPCFLOW_SLURM_WAIT   seconds to wait for usable nodes (default 60)
# Usage: scripts/setup.sh [--two-sites]
#   --two-sites  also bring up the second site, cluster `ukdc` with slurmdbd
#                accounting (scripts/setup-ukdc.sh); this default cluster is
#                the site USDC in tpcflow's settings and is left as it is
# Stop everything with scripts/stop-cluster.sh (and scripts/stop-ukdc.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEMPLATE=$here/../slurm/slurm.conf.in

NODES=${TPCFLOW_SLURM_NODES:-2}
WAIT_SECS=${TPCFLOW_SLURM_WAIT:-60}
CLUSTER_NAME=tpcflow
CONF=/etc/slurm/slurm.conf
# Paths substituted into the template (stop-cluster.sh knows RUN_DIR too).
RUN_DIR=/run
LOG_DIR=/var/log/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
TMP_PREFIX=/tmp/slurm-
JOBCOMP_LOG=$LOG_DIR/jobcomp.log
CONTROL_ADDR=127.0.0.1
BASE_PORT=17000            # emulated node i listens on BASE_PORT + i
MUNGE_PID_FILE=/run/munge/munged.pid

PACKAGES=(slurm-wlm slurmctld slurmd slurm-client munge openmpi-bin libopenmpi-dev
          libhdf5-dev hdf5-tools clang libclang-dev pkg-config python3-h5py python3-pandas
          chromium chromium-driver)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root"
TWO_SITES=0
case "${1:-}" in
  --two-sites) TWO_SITES=1 ;;
  "") ;;
  *) die "usage: $0 [--two-sites]" ;;
esac
[[ $NODES =~ ^[1-9][0-9]*$ ]] || die "TPCFLOW_SLURM_NODES must be a positive integer, got '$NODES'"
[[ -r $TEMPLATE ]] || die "template not found: $TEMPLATE"
shopt -s nullglob

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

changes=()          # what this run did (started/resumed/...), for the summary
declare -A SLURMD_T0=()   # node -> epoch seconds just before this run started its slurmd
CTLD_STARTED=0      # 1 if this run started slurmctld

# --- 1. packages -------------------------------------------------------------
ensure_packages() {
  local installed missing=() p
  # One dpkg-query for all; it exits 1 when some package is unknown.
  # shellcheck disable=SC2016  # ${...} is dpkg-query's format syntax
  installed=$(dpkg-query -W -f='${db:Status-Status} ${Package}\n' "${PACKAGES[@]}" 2>/dev/null || true)
  for p in "${PACKAGES[@]}"; do
    grep -qx "installed $p" <<<"$installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# --- 2. munge ----------------------------------------------------------------
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ensure_munge() {
  local key=/etc/munge/munge.key i
  if [[ ! -s $key ]]; then
    log "creating $key"
    install -d -o munge -g munge -m 0700 /etc/munge
    runuser -u munge -- mungekey --create --keyfile="$key" 2>/dev/null \
      || dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
    chown munge:munge "$key"
    chmod 0400 "$key"
  fi
  if [[ ! -d /run/munge || $(stat -c %U /run/munge) != munge ]]; then
    install -d -o munge -g munge -m 0755 /run/munge
  fi
  munge_ok && return 0
  if ! pid_of "$MUNGE_PID_FILE" munged >/dev/null; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged || die "munged failed to start: $(tail -n 5 /var/log/munge/munged.log 2>/dev/null)"
    changes+=(start:munged)
  fi
  for ((i = 0; i < 50; i++)); do
    munge_ok && return 0
    sleep 0.1
  done
  die "munge -n | unmunge fails; munged log: $(tail -n 10 /var/log/munge/munged.log 2>/dev/null)"
}

# --- 3. slurm.conf -----------------------------------------------------------
NODE_NAMES=()
NODE_LINES=""

# Node definitions from this host's real hardware (`slurmd -C`).
make_nodes() {
  local hw kv cores threads cores_each mem_each i host
  hw=$(slurmd -C) || die "slurmd -C failed"
  hw=${hw%%$'\n'*}           # first line: NodeName=<host> CPUs=.. RealMemory=..
  declare -A HW=()
  for kv in $hw; do HW[${kv%%=*}]=${kv#*=}; done
  if ((NODES == 1)); then
    NODE_NAMES=("${HW[NodeName]}")
    # As is (a larger RealMemory would make the node "inval"), plus an explicit address.
    NODE_LINES="$hw NodeAddr=$CONTROL_ADDR"
    return
  fi
  # N emulated nodes: split the cores (at least 1 each) and ~95 % of the memory.
  cores=$(( ${HW[Boards]:-1} * ${HW[SocketsPerBoard]:-1} * ${HW[CoresPerSocket]:-1} ))
  threads=${HW[ThreadsPerCore]:-1}
  cores_each=$((cores / NODES)); ((cores_each >= 1)) || cores_each=1
  mem_each=$((${HW[RealMemory]} * 95 / 100 / NODES))
  host=$(hostname -s)
  for ((i = 1; i <= NODES; i++)); do
    NODE_NAMES+=("n$i")
    NODE_LINES+="NodeName=n$i NodeHostname=$host NodeAddr=$CONTROL_ADDR Port=$((BASE_PORT + i))"
    NODE_LINES+=" CPUs=$((cores_each * threads)) Boards=1 SocketsPerBoard=1 CoresPerSocket=$cores_each"
    NODE_LINES+=" ThreadsPerCore=$threads RealMemory=$mem_each"$'\n'
  done
  NODE_LINES=${NODE_LINES%$'\n'}
}

render_conf() {
  local out names
  names=$(IFS=,; echo "${NODE_NAMES[*]}")
  out=$(<"$TEMPLATE")
  # Quoted replacements: no special meaning of '&' (bash 5.2 patsub_replacement).
  out=${out//@CLUSTER_NAME@/"$CLUSTER_NAME"}
  out=${out//@CONTROL_HOST@/"$(hostname -s)"}
  out=${out//@CONTROL_ADDR@/"$CONTROL_ADDR"}
  out=${out//@STATE_DIR@/"$STATE_DIR"}
  out=${out//@RUN_DIR@/"$RUN_DIR"}
  out=${out//@LOG_DIR@/"$LOG_DIR"}
  out=${out//@SPOOL_DIR@/"$SPOOL_DIR"}
  out=${out//@TMP_PREFIX@/"$TMP_PREFIX"}
  out=${out//@JOBCOMP_LOG@/"$JOBCOMP_LOG"}
  out=${out//@NODE_LINES@/"$NODE_LINES"}
  out=${out//@NODE_NAMES@/"$names"}
  if [[ $out =~ @[A-Z_]+@ ]]; then
    die "unreplaced placeholder ${BASH_REMATCH[0]} in $TEMPLATE"
  fi
  printf '%s\n' "$out"
}

# write_conf CONTENT: replace $CONF if CONTENT differs; sets conf_changed=1 then.
conf_changed=0
write_conf() {
  if [[ -f $CONF ]] && cmp -s "$CONF" <(printf '%s\n' "$1"); then
    return 0
  fi
  mkdir -p "${CONF%/*}"
  [[ -f $CONF ]] && cp -p "$CONF" "$CONF.bak"
  printf '%s\n' "$1" >"$CONF.tmp.$$"
  mv -f "$CONF.tmp.$$" "$CONF"
  log "wrote $CONF (${#NODE_NAMES[@]} node(s): ${NODE_NAMES[*]})"
  conf_changed=1
  changes+=(wrote:slurm.conf)
}

# --- 4. daemons --------------------------------------------------------------
any_slurm_daemon() {
  local f
  pid_of "$RUN_DIR/slurmctld.pid" slurmctld >/dev/null && return 0
  for f in "$RUN_DIR"/slurmd-*.pid; do
    pid_of "$f" slurmd >/dev/null && return 0
  done
  return 1
}

ensure_daemons() {
  local n
  mkdir -p "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR"
  for n in "${NODE_NAMES[@]}"; do
    mkdir -p "$SPOOL_DIR/$n" "$TMP_PREFIX$n"
  done
  if ! pid_of "$RUN_DIR/slurmctld.pid" slurmctld >/dev/null; then
    log "starting slurmctld"
    slurmctld || fail_with_logs "slurmctld failed to start"
    changes+=(start:slurmctld)
    CTLD_STARTED=1
  fi
  for n in "${NODE_NAMES[@]}"; do
    if ! pid_of "$RUN_DIR/slurmd-$n.pid" slurmd >/dev/null; then
      log "starting slurmd -N $n"
      SLURMD_T0[$n]=$EPOCHSECONDS
      slurmd -N "$n" || fail_with_logs "slurmd -N $n failed to start"
      changes+=("start:slurmd-$n")
    fi
  done
}

fail_with_logs() {
  local f
  log "ERROR: $*"
  for f in slurmctld "${NODE_NAMES[@]/#/slurmd-}"; do
    f=$LOG_DIR/$f.log
    [[ -f $f ]] || continue
    printf -- '--- tail %s\n' "$f" >&2
    tail -n 15 "$f" >&2
  done
  sinfo -N -o '%N %T %E' >&2 2>/dev/null || true
  exit 1
}

# --- 5. wait for usable nodes ------------------------------------------------
# registered NODE: true once a slurmd started by this run has registered.
# Needed because a restarted slurmctld restores the saved node state ("idle")
# before the new slurmd has said hello.
registered() {
  local t0=${SLURMD_T0[$1]:-} t
  [[ -z $t0 ]] && return 0
  t=$(scontrol show node -o "$1" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*') || return 1
  t=${t#*=}
  [[ $t != None ]] && (($(date -d "$t" +%s) >= t0))
}

wait_for_nodes() {
  local deadline=$((SECONDS + WAIT_SECS)) out n state ok reconfigured=0
  declare -A resumed=()
  while :; do
    ok=0
    if out=$(sinfo -h -N -o '%N %T' 2>/dev/null) && [[ -n $out ]]; then
      ok=1
      for n in "${NODE_NAMES[@]}"; do
        state=$(awk -v n="$n" '$1 == n { print $2; exit }' <<<"$out")
        case $state in
          idle | mixed | allocated | completing | planned) registered "$n" || ok=0 ;;
          inval) fail_with_logs "node $n is INVAL (config does not match its hardware)" ;;
          down | drain*)   # left over from an earlier run: resume once
            ok=0
            if [[ -z ${resumed[$n]:-} ]]; then
              log "node $n is $state: resuming"
              scontrol update nodename="$n" state=resume 2>/dev/null || true
              resumed[$n]=1
              changes+=("resume:$n")
            fi ;;
          unknown)
            ok=0
            # A restarted slurmctld (e.g. after a crash) would wait ~4 s for its
            # next ping of a slurmd that kept running: make them re-register now.
            if ((CTLD_STARTED && !reconfigured)) && [[ -z ${SLURMD_T0[$n]:-} ]]; then
              scontrol reconfigure 2>/dev/null || true
              reconfigured=1
            fi ;;
          *) ok=0 ;;       # not responding (*), not listed yet
        esac
      done
    fi
    ((ok)) && return 0
    ((SECONDS < deadline)) || fail_with_logs "nodes not usable after ${WAIT_SECS}s: $(tr '\n' ' ' <<<"${out:-no answer from slurmctld}")"
    sleep 0.2
  done
}

# --- main --------------------------------------------------------------------
ensure_packages
ensure_munge
make_nodes
conf=$(render_conf)      # not inside an `if`: a failure here must stop the script
write_conf "$conf"
if ((conf_changed)) && any_slurm_daemon; then
  log "config changed: restarting SLURM daemons"
  "$here/stop-cluster.sh" --keep-munge
  changes+=(stop:slurm-daemons)
fi
ensure_daemons

wait_for_nodes

summary=$(sinfo -h -N -o '%N %c %T' | awk '{ s = s sep $1 "(" $2 " CPU, " $3 ")"; sep = " "; t += $2; n++ }
  END { printf "%d node(s), %d CPUs: %s", n, t, s }')
if ((${#changes[@]})); then what="${changes[*]}"; else what="nothing changed"; fi
echo "SLURM cluster '$CLUSTER_NAME' up, partition debug: $summary [$what]"
if ((TWO_SITES)); then
  "$here/setup-ukdc.sh"
fi
