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
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

cargo build --release --locked -q
BIN=$PWD/target/release/tpcflow
total_cpus=$(sinfo -h -o '%C' | awk -F/ '{print $4}')
nodes_avail=$(sinfo -h -N -o '%N' | sort -u | wc -l)
RANKS=${TPCFLOW_RANKS:-$(seq 1 "${1:-$total_cpus}" | tr '\n' ' ')}
max_ranks=$(echo "$RANKS" | tr ' ' '\n' | sort -n | tail -1)
mkdir -p "$BENCH_DIR"

# Workload: FILES_PER_RANK files per rank at the largest rank count.
n_files=$((FILES_PER_RANK * max_ranks))
if [[ ! -f $BENCH_DIR/SURF/.complete-$n_files-$EVENTS ]]; then
  rm -rf "$BENCH_DIR/SURF"
  "$BIN" sim --run 500 --files "$n_files" --events-per-file "$EVENTS" --seed 500 --source mixed --out "$BENCH_DIR/SURF" >&2
  touch "$BENCH_DIR/SURF/.complete-$n_files-$EVENTS"
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

submit() { # ranks nfiles tag -> prints the job's JSON summary
  local ranks=$1 nfiles=$2 tag=$3 out=$BENCH_DIR/out-$3 nodes
  nodes=$(( ranks < nodes_avail ? ranks : nodes_avail ))
  rm -rf "$out"; mkdir -p "$out"
  printf '%s\n' "${all_lines[@]:0:$nfiles}" > "$out/inputs.txt"
  local template=slurm/reco-$PROFILE.sbatch script=$out/job.sbatch
  sed -e "s|{{job_name}}|tpcflow-bench-$tag|" -e "s|{{nodes}}|$nodes|" -e "s|{{ntasks}}|$ranks|" \
      -e "s|{{ntasks_per_node}}|$(( (ranks + nodes - 1) / nodes ))|" -e "s|{{cpus_per_task}}|$CPUS|" \
      -e "s|{{time_limit}}|00:30:00|" -e "s|{{log}}|$out/job.log|" -e "s|{{tpcflow}}|$BIN|" \
      -e "s|{{account}}|${TPCFLOW_ACCOUNT:-none}|" -e "s|{{qos}}|${TPCFLOW_QOS:-regular}|" \
      -e "s|{{reco_args}}|--inputs @$out/inputs.txt --out-dir $out/rq --json|" "$template" > "$script"
  local job state=""
  job=$(sbatch --parsable "$script"); job=${job%%;*}
  while :; do
    state=$(scontrol show job -o "$job" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)
    case $state in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL) break ;; esac
    sleep 0.5
  done
  [[ $state == COMPLETED ]] || { echo "job $job ($tag) ended $state" >&2; cat "$out/job.log" >&2; exit 1; }
  sed -n '/^{/,/^}/p' "$out/job.log"
}

results=$BENCH_DIR/results.jsonl
: > "$results"
base_files=$((FILES_PER_RANK * max_ranks))
for r in $RANKS; do
  echo "strong: $r rank(s), $base_files files" >&2
  submit "$r" "$base_files" "strong-$r" | python3 -c "import json,sys; d=json.load(sys.stdin); d['mode']='strong'; print(json.dumps(d))" >> "$results"
  echo "weak: $r rank(s), $((FILES_PER_RANK * r)) files" >&2
  submit "$r" "$((FILES_PER_RANK * r))" "weak-$r" | python3 -c "import json,sys; d=json.load(sys.stdin); d['mode']='weak'; print(json.dumps(d))" >> "$results"
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for mode in ("strong", "weak"):
    rs = [r for r in rows if r["mode"] == mode]
    base = rs[0]
    def mb(r): return sum(p["bytes"] for p in r["per_rank"]) / 1e6
    def rate(r): return mb(r) / r["wall_seconds"]
    print(f"\n{mode} scaling (threads/rank = {base['threads']})")
    print(f"{'ranks':>5} {'files':>6} {'events':>7} {'MB':>8} {'wall s':>7} {'MB/s':>8} {'MB/s/rank':>10} {'busy MB/s/rank':>15} {'reco MB/s/rank':>15} {'read+write':>10} {'efficiency':>10}")
    for r in rs:
        n = r["ranks"]
        ev = sum(p["events"] for p in r["per_rank"])
        files = r["files_ok"] + r["files_skipped"]
        if mode == "strong":
            eff = base["wall_seconds"] / (n * r["wall_seconds"]) * base["ranks"]
        else:
            eff = base["wall_seconds"] / r["wall_seconds"]
        # Busy: raw bytes over the seconds each rank spent on its files (read,
        # reconstruct, write RQ, fsync, result record), without job start-up.
        busy = sum(p["bytes"] / 1e6 / max(p["busy_seconds"], 1e-9) for p in r["per_rank"]) / n
        # Reco: the core alone inside the job (compare with `cargo bench --bench
        # reco`); read+write: the share of busy time spent outside the core.
        reco = sum(p["bytes"] / 1e6 / max(p["reco_seconds"], 1e-9) for p in r["per_rank"]) / n
        io = sum(p["busy_seconds"] - p["reco_seconds"] for p in r["per_rank"]) / max(sum(p["busy_seconds"] for p in r["per_rank"]), 1e-9)
        print(f"{n:>5} {files:>6} {ev:>7} {mb(r):>8.1f} {r['wall_seconds']:>7.2f} {rate(r):>8.1f} {rate(r)/n:>10.1f} {busy:>15.1f} {reco:>15.1f} {io:>10.0%} {eff:>9.0%}")
PY
