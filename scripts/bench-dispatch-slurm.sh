#!/usr/bin/env bash
# What submitting and tracking many jobs costs the dispatcher and slurmctld,
# on the real local cluster: a campaign of N one-file jobs (default 1000),
# submitted once as plain jobs and once as a SLURM job array, then tracked for
# a few passes while SLURM holds them (the jobs only sleep, throttled to two
# running at a time; they are scancelled at the end).
#   scripts/bench-dispatch-slurm.sh [N]
# Prints per phase: sbatch/squeue calls, pass wall time, slurmctld CPU time,
# and the time of the pass's `squeue -r` alone.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
DIR=${TPCFLOW_BENCH_DIR:-/tmp/tpcflow-bench-dispatch-slurm}
export TPCFLOW_LOG=warn
cargo build --release --locked -q
BIN=$PWD/target/release/tpcflow

ctld_cpu() { # slurmctld user+system CPU time [s]
  local pid; pid=$(pgrep -x slurmctld | head -1)
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$pid/stat"
}

rm -rf "$DIR"; mkdir -p "$DIR/SURF"
"$BIN" sim --run 900 --files "$N" --events-per-file 1 --seed 900 --out "$DIR/SURF" > /dev/null
cat > "$DIR/sleep.sbatch" <<'EOF'
#!/bin/bash
#SBATCH --job-name={{job_name}}
#SBATCH --output=/dev/null
#SBATCH --time={{time_limit}}
#SBATCH --no-requeue
# {{nodes}} {{ntasks}} {{cpus_per_task}} {{log}} {{tpcflow}} {{reco_args}} {{account}} {{qos}} {{ntasks_per_node}}
sleep 600
EOF

results=$DIR/results.txt; : > "$results"
for mode in plain array; do
  site=$DIR/$mode; mkdir -p "$site"
  ln -sfn "$DIR/SURF" "$site/SURF"
  if [[ $mode == array ]]; then min=8; else min=0; fi
  cat > "$site/dispatch.toml" <<EOF
profile = "$DIR/sleep.sbatch"
prompt_conditions = ""
files_per_job = 1
max_queued_jobs = $N
max_submissions_per_pass = $N
array_min_jobs = $min
array_max_jobs = 1000
array_throttle = 2
EOF
  "$BIN" campaign create --name "bench-$mode" --runs 900 --conditions v1 --catalog "$site/catalog.db" > /dev/null
  pass() {
    local label=$1 before after json
    before=$(ctld_cpu)
    json=$("$BIN" dispatch --once --json --catalog "$site/catalog.db" --data-root "$site" --config "$site/dispatch.toml")
    after=$(ctld_cpu)
    local t0 t1; t0=$(date +%s.%N); squeue -h -r -t all -o '%i|%j|%T|%r' > /dev/null; t1=$(date +%s.%N)
    python3 - "$mode" "$label" "$before" "$after" "$t0" "$t1" "$json" >> "$results" <<'PY'
import json, sys
mode, label, before, after, t0, t1, text = sys.argv[1:]
r = json.loads(text)
print(f"{mode:<6} {label:<12} {r['jobs_submitted']:>9} {r['arrays_submitted']:>7} {r['slurm_calls']:>11} "
      f"{r['seconds']:>9.3f} {r['stage_seconds'].get('reconcile', 0):>10.3f} {r['stage_seconds'].get('submit', 0):>9.3f} "
      f"{float(after) - float(before):>10.2f} {float(t1) - float(t0):>10.3f}")
PY
  }
  pass "submit"
  for i in 1 2 3; do pass "track-$i"; done
  # Cancel everything this catalog submitted (job names carry its instance id).
  inst=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT value FROM meta WHERE key = \x27instance\x27").fetchone()[0])' "$site/catalog.db")
  squeue -h -o '%F %j' | awk -v p="^tpcflow-$inst-" '$2 ~ p {print $1}' | sort -u | xargs -r scancel
  sleep 2
done
printf '\n%s jobs of one file each; jobs sleep, two run at a time.\n' "$N"
printf '%-6s %-12s %9s %7s %11s %9s %10s %9s %10s %10s\n' mode pass submitted arrays slurm_calls pass_s reconcile submit_s ctld_cpu_s squeue_s
cat "$results"
