#!/usr/bin/env bash
# Run every criterion benchmark and print one table of medians.
#   scripts/bench.sh [criterion filter]      e.g. scripts/bench.sh raw_reader
# Benches: sim_and_raw (simulator events/s, raw reader mmap vs HDF5), reco (per
# stage and end to end on 1 core, 1 vs 2 threads, xy fit), rq_writer (RQ HDF5
# write and read back), dispatch (a dispatcher pass and catalog queries over
# 1M catalogued files).
# Environment:
#   TPCFLOW_BENCH_RAW_GB=2     size of the shared raw file (GB of samples)
#   TPCFLOW_BENCH_QUICK=1      criterion --quick: a rough table in minutes
#   TPCFLOW_BENCHES="reco rq_writer"   which bench targets (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
args=()
[[ -n ${TPCFLOW_BENCH_QUICK:-} ]] && args+=(--quick)
[[ -n ${1:-} ]] && args+=("$1")
for b in ${TPCFLOW_BENCHES:-sim_and_raw reco rq_writer dispatch}; do
  echo "@@bench $b" >> "$out"
  cargo bench --locked --bench "$b" -- "${args[@]}" 2>&1 | tee -a "$out" >&2
done
python3 - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rows, extra, bench, name, block = [], [], "", None, False
for line in text.splitlines():
    if line.startswith("@@bench "):
        bench, name, block = line.split()[1], None, False
        continue
    # The benches' own summaries: reco's block, rq_writer's and dispatch's lines.
    if line.startswith("reco benchmark summary"):
        block = True
    elif block and not line.startswith("  "):
        block = False
    if block or line.startswith(("rq_writer summary", "a pass with nothing")):
        extra.append(f"[{bench}] {line.rstrip()}")
    m = re.match(r"^(\S+/\S+)\s*(time:.*)?$", line)
    if m and not line.startswith(("Benchmarking", "Found", "Warning")):
        name = m.group(1)
        line = m.group(2) or ""
    t = re.search(r"time:\s+\[\S+\s+\S+\s+(\S+\s+\S+)\s+\S+\s+\S+\]", line)
    if t and name and not (rows and rows[-1][1] == name):
        rows.append([bench, name, " ".join(t.group(1).split()), ""])
    r = re.search(r"thrpt:\s+\[\S+\s+\S+\s+(\S+\s+\S+)\s+\S+\s+\S+\]", line)
    if r and rows and rows[-1][1] == name and not rows[-1][3] and "%" not in line:
        rows[-1][3] = " ".join(r.group(1).split())
print(f"\n{'bench':<12} {'benchmark':<44} {'median time':>14} {'median throughput':>20}")
for b, n, t, r in rows:
    print(f"{b:<12} {n:<44} {t:>14} {r:>20}")
if extra:
    print("\nSummaries printed by the benches:")
    for e in extra:
        print("  " + e)
PY
