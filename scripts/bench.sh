#!/usr/bin/env bash
# Run the criterion benchmarks and print one table of medians.
#   scripts/bench.sh [criterion filter]      e.g. scripts/bench.sh raw_reader
# TPCFLOW_BENCH_RAW_GB sets the reader benchmark's file size (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench --locked --bench sim_and_raw -- "${1:-}" 2>&1 | tee "$out" >&2
python3 - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rows, name = [], None
for line in text.splitlines():
    m = re.match(r"^(\S+/\S+)\s*(time:.*)?$", line)
    if m and not line.startswith(("Benchmarking", "Found", "Warning")):
        name = m.group(1)
        line = m.group(2) or ""
    t = re.search(r"time:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", line)
    if t and name:
        rows.append([name, t.group(1), ""])
    r = re.search(r"thrpt:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", line)
    if r and rows and rows[-1][0] == name and not rows[-1][2] and "%" not in line:
        rows[-1][2] = r.group(1)
print(f"\n{'benchmark':<48} {'median time':>14} {'median throughput':>20}")
for n, t, r in rows:
    print(f"{n:<48} {t:>14} {r:>20}")
PY
