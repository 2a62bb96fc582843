#!/usr/bin/env bash
# Strong and weak scaling of `tpcflow reco` through real SLURM jobs.
#   scripts/bench-scaling.sh [MAX_RANKS]     (default: the cluster's CPU count)
# Submits the same workload with 1, 2, ... ranks (one CPU and one rayon thread
# per rank, spread over the nodes), reads each job's JSON summary and prints a
# table. On Perlmutter: run it inside the repo with TPCFLOW_PROFILE=perlmutter,
# TPCFLOW_ACCOUNT=mXXXX, TPCFLOW_QOS=regular, TPCFLOW_CPUS_PER_TASK=32,
# TPCFLOW_RANKS="8 16 32 64 128" (ranks spread 8 per node) and a workload on
# $SCRATCH (TPCFLOW_BENCH_DIR); the script is the same.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${TPCFLOW_BENCH_DIR:-/tmp/tpcflow-bench-scaling}
PROFILE=${TPCFLOW_PROFILE:-local}
CPUS=${TPCFLOW_CPUS_PER_TASK:-1}
FILES_PER_RANK=${TPCFLOW_FILES_PER_RANK:-4}
# ~130 MB per file: a rank's share must outweigh the job's fixed start-up
# (srun, MPI init, planning: ~0.5 s here) for per-rank rates to mean anything.
EVENTS=${TPCFLOW_EVENTS_PER_FILE:-400}
# Each configuration runs REPEAT times, interleaved; the table shows medians.
# Within a repeat each configuration runs JOBS times after one core
# benchmark: a job (1-3 s here) is much shorter than the core benchmark
# (~25 s), and this machine's speed swings by 10-20 % from one job to the
# next, so more jobs per core run make the medians steadier for little time.
REPEAT=${TPCFLOW_BENCH_REPEAT:-5}
JOBS=${TPCFLOW_BENCH_JOBS:-2}
# The reference of the per-rank rates: the single-core reco benchmark
# (`cargo bench --bench reco`, ~25 s; the first time it also simulates its
# 2 GB raw file) on the strong workload's events, run once per repeat before
# that repeat's jobs, so that each job is compared with the core measured in
# the same minutes (this machine's speed drifts by 10 % within an hour).
# 1 = run it, 0 = skip it; a number > 1 is taken as its MB/s, measured elsewhere.
CORE=${TPCFLOW_BENCH_CORE:-1}
# Where the jobs find their inputs: `cached` (read into the page cache before
# the repeat's jobs: the table measures the pipeline, not the disk) or `cold`
# (dropped from the cache before every job: the job reads them from disk, as
# when a year of data is reprocessed; on Perlmutter, from Lustre).
INPUTS=${TPCFLOW_BENCH_INPUTS:-cached}
[[ $INPUTS == cached || $INPUTS == cold ]] || { echo "TPCFLOW_BENCH_INPUTS is cached or cold, not $INPUTS" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

cargo build --release --locked -q
BIN=$PWD/target/release/tpcflow
total_cpus=$(sinfo -h -o '%C' | awk -F/ '{print $4}')
nodes_avail=$(sinfo -h -N -o '%N' | sort -u | wc -l)
RANKS=${TPCFLOW_RANKS:-$(seq 1 "${1:-$total_cpus}" | tr '\n' ' ')}
max_ranks=$(echo "$RANKS" | tr ' ' '\n' | sort -n | tail -1)
mkdir -p "$BENCH_DIR"

# Workload: FILES_PER_RANK files per rank at the largest rank count. Run 900,
# seed 900 and `mixed` events, as the benchmarks' raw file (benches/common):
# events depend only on (seed, run, event number), so its first events are
# this workload's, and the core benchmark below runs on the same events.
n_files=$((FILES_PER_RANK * max_ranks))
if [[ ! -f $BENCH_DIR/SURF/.complete-900-$n_files-$EVENTS ]]; then
  rm -rf "$BENCH_DIR/SURF"
  "$BIN" sim --run 900 --files "$n_files" --events-per-file "$EVENTS" --seed 900 --source mixed --out "$BENCH_DIR/SURF" >&2
  touch "$BENCH_DIR/SURF/.complete-900-$n_files-$EVENTS"
fi
mapfile -t all_files < <(find "$BENCH_DIR/SURF" -name '*.raw.h5' | sort)
# Input lists carry each file's catalogued adler32, as the dispatcher writes
# them (the job then does not re-read its inputs to checksum them).
if [[ ! -f $BENCH_DIR/SURF/.adler32-$n_files-$EVENTS ]]; then
  python3 - "${all_files[@]}" > "$BENCH_DIR/SURF/.adler32-$n_files-$EVENTS" <<'PY'
import sys, zlib
for path in sys.argv[1:]:
    a = 1
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            a = zlib.adler32(chunk, a)
    print(f"{path}\t{a:08x}")
PY
fi
mapfile -t all_lines < "$BENCH_DIR/SURF/.adler32-$n_files-$EVENTS"

core_mbs() { # the core benchmark's median MB/s on the workload's events
  if [[ $CORE == 1 ]]; then
    local mbs
    # On core 0, as the local template pins rank 0 (slurm/reco-local.sbatch).
    mbs=$(TPCFLOW_BENCH_RECO_EVENTS=$((n_files * EVENTS)) taskset -c 0 cargo bench -q --bench reco -- "reco_1core/stage/full" 2>&1 \
      | awk '/1 core, up to full/ {print $7}' | tail -1)
    [[ -n $mbs ]] || { echo "the core benchmark printed no MB/s" >&2; exit 1; }
    echo "$mbs"
  elif [[ $CORE != 0 ]]; then
    echo "$CORE"
  else
    echo 0
  fi
}

evict_inputs() { # drop the inputs from the page cache
  sync
  python3 - "${all_files[@]}" <<'PY'
import os, sys
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}

submit() { # ranks nfiles tag -> prints the job's JSON summary
  local ranks=$1 nfiles=$2 tag=$3 out=$BENCH_DIR/out-$3 nodes
  [[ $INPUTS == cold ]] && evict_inputs
  nodes=$(( ranks < nodes_avail ? ranks : nodes_avail ))
  rm -rf "$out"; mkdir -p "$out"
  printf '%s\n' "${all_lines[@]:0:$nfiles}" > "$out/inputs.txt"
  local template=slurm/reco-$PROFILE.sbatch script=$out/job.sbatch
  sed -e "s|{{job_name}}|tpcflow-bench-$tag|" -e "s|{{nodes}}|$nodes|" -e "s|{{ntasks}}|$ranks|" \
      -e "s|{{ntasks_per_node}}|$(( (ranks + nodes - 1) / nodes ))|" -e "s|{{cpus_per_task}}|$CPUS|" \
      -e "s|{{time_limit}}|00:30:00|" -e "s|{{log}}|$out/job.log|" -e "s|{{tpcflow}}|$BIN|" \
      -e "s|{{account}}|${TPCFLOW_ACCOUNT:-none}|" -e "s|{{qos}}|${TPCFLOW_QOS:-regular}|" \
      -e "s|{{reco_args}}|--inputs @$out/inputs.txt --out-dir $out/rq --json|" "$template" > "$script"
  local job state="" n=0 log=()
  job=$(sbatch --parsable "$script"); job=${job%%;*}
  # While the job runs, wait for rank 0's summary in its log (read by bash
  # itself) rather than asking slurmctld: here the controller, munge and the
  # polling commands share the ranks' two cores, and `scontrol` every 0.5 s
  # took ~3 % of a two-rank job's CPU (a one-rank job leaves them a core).
  # slurmctld is asked every 10 s, in case the job ends without a summary.
  while :; do
    mapfile -t log 2>/dev/null < "$out/job.log" || true
    [[ ${log[*]: -5} == *'"exit_code"'* ]] && break
    if (( ++n % 20 == 0 )); then
      state=$(scontrol show job -o "$job" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)
      case $state in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL) break ;; esac
    fi
    sleep 0.5
  done
  while :; do
    state=$(scontrol show job -o "$job" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)
    case $state in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL) break ;; esac
    sleep 0.2
  done
  [[ $state == COMPLETED ]] || { echo "job $job ($tag) ended $state" >&2; cat "$out/job.log" >&2; exit 1; }
  sed -n '/^{/,/^}/p' "$out/job.log"
}

results=$BENCH_DIR/results.jsonl
: > "$results"
base_files=$((FILES_PER_RANK * max_ranks))
tag() { python3 -c "import json,sys; d=json.load(sys.stdin); d['mode']='$1'; d['rep']=$2; d['core_mbs']=$3; print(json.dumps(d))"; }
for rep in $(seq 1 "$REPEAT"); do
  [[ $CORE == 1 ]] && echo "run $rep/$REPEAT core benchmark: cargo bench --bench reco -- reco_1core/stage/full" >&2
  core=$(core_mbs)
  # Cached inputs are read here so that the jobs find them in the page cache
  # (this VM also drops cached pages that were not used for a minute). They
  # are first dropped from the cache and then read whole, sequentially, so
  # that each repeat starts from the same cache: pages read back one by one
  # after the VM dropped some hold 4 KiB folios, a sequential read 2 MB ones,
  # and mapping a file of small folios costs a rank more than twice as much
  # (read 5.6 % of its busy time against 2.2 %, same binary and files).
  evict_inputs
  [[ $INPUTS == cached ]] && cat "${all_files[@]}" > /dev/null
  for j in $(seq 1 "$JOBS"); do
    for r in $RANKS; do
      echo "run $rep/$REPEAT job $j/$JOBS strong: $r rank(s), $base_files files" >&2
      submit "$r" "$base_files" "strong-$r" | tag strong "$rep" "$core" >> "$results"
      echo "run $rep/$REPEAT job $j/$JOBS weak: $r rank(s), $((FILES_PER_RANK * r)) files" >&2
      submit "$r" "$((FILES_PER_RANK * r))" "weak-$r" | tag weak "$rep" "$core" >> "$results"
    done
  done
done

INPUTS=$INPUTS python3 - "$results" <<'PY'
import json, os, sys
from statistics import median
rows = [json.loads(l) for l in open(sys.argv[1])]
cores = sorted({r["rep"]: r["core_mbs"] for r in rows if r["core_mbs"] > 0}.values())
core = median(cores) if cores else None
def mb(r): return sum(p["bytes"] for p in r["per_rank"]) / 1e6
def per_rank(r, f): return sum(f(p) for p in r["per_rank"]) / r["ranks"]
# Busy: raw bytes over the seconds each rank spent on its files (read,
# reconstruct, write RQ, fsync, result record), without job start-up or
# waiting. Reco: the core alone inside the job (compare with the core
# benchmark). read+write: the share of busy time outside the core. Idle: time
# ranks waited for work or for the others to finish, share of the wall time.
metrics = {
    "wall": lambda r: r["wall_seconds"],
    "busy": lambda r: per_rank(r, lambda p: p["bytes"] / 1e6 / max(p["busy_seconds"], 1e-9)),
    "reco": lambda r: per_rank(r, lambda p: p["bytes"] / 1e6 / max(p["reco_seconds"], 1e-9)),
    "io": lambda r: sum(p["busy_seconds"] - p["reco_seconds"] for p in r["per_rank"])
    / max(sum(p["busy_seconds"] for p in r["per_rank"]), 1e-9),
    "idle": lambda r: per_rank(r, lambda p: p.get("idle_seconds", 0.0)) / max(r["wall_seconds"], 1e-9),
    # Per-rank busy rate over the core benchmark run just before this job.
    "vs_core": lambda r: per_rank(r, lambda p: p["bytes"] / 1e6 / max(p["busy_seconds"], 1e-9))
    / r["core_mbs"] if r["core_mbs"] > 0 else 0.0,
}
runs = len([r for r in rows if r["mode"] == rows[0]["mode"] and r["ranks"] == rows[0]["ranks"]])
print(f"\nmedians of {runs} job(s) per row; inputs {os.environ['INPUTS']}", end="")
print(f"; core benchmark (1 core, reco only, the strong workload's events): {core:.0f} MB/s "
      f"(runs {cores[0]:.0f}-{cores[-1]:.0f}); busy/core compares each job with the core run before it" if core else "")
for mode in ("strong", "weak"):
    ranks = sorted({r["ranks"] for r in rows if r["mode"] == mode})
    med = {}
    for n in ranks:
        rs = [r for r in rows if r["mode"] == mode and r["ranks"] == n]
        med[n] = {k: median(f(r) for r in rs) for k, f in metrics.items()}
        med[n]["walls"] = sorted(r["wall_seconds"] for r in rs)
        rel = sorted(metrics["vs_core"](r) for r in rs)
        med[n]["rel_q"] = (rel[len(rel) // 4], rel[(3 * len(rel)) // 4])
        med[n]["mb"] = mb(rs[0])
        med[n]["files"] = rs[0]["files_ok"] + rs[0]["files_skipped"]
        med[n]["threads"] = rs[0]["threads"]
    b = ranks[0]
    print(f"\n{mode} scaling (threads/rank = {med[b]['threads']})")
    vs = "busy/core (q1-q3)" if core else ""
    print(f"{'ranks':>5} {'files':>6} {'MB':>8} {'wall s':>7} {'(range)':>11} {'MB/s':>8} {'MB/s/rank':>10} "
          f"{'busy MB/s/rank':>15} {'reco MB/s/rank':>15} {'read+write':>10} {'idle':>5} {'efficiency':>10} {vs:>17}")
    for n in ranks:
        m = med[n]
        rate = m["mb"] / m["wall"]
        eff = med[b]["wall"] * b / (n * m["wall"]) if mode == "strong" else med[b]["wall"] / m["wall"]
        rng = f"{m['walls'][0]:.2f}-{m['walls'][-1]:.2f}"
        rel = f"{m['vs_core']:>7.0%} ({m['rel_q'][0]:.0%}-{m['rel_q'][1]:.0%})" if core else ""
        print(f"{n:>5} {m['files']:>6} {m['mb']:>8.1f} {m['wall']:>7.2f} {rng:>11} {rate:>8.1f} {rate / n:>10.1f} "
              f"{m['busy']:>15.1f} {m['reco']:>15.1f} {m['io']:>10.0%} {m['idle']:>5.0%} {eff:>10.0%} {rel}")
PY
