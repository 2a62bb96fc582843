#!/usr/bin/env bash
# Run every criterion benchmark and print one table of medians.
#   scripts/bench.sh [criterion filter]      e.g. scripts/bench.sh raw_reader
# Each bench target runs as `cargo bench --locked --bench B -- [--quick] [FILTER]`;
# the table lists, grouped by bench, each benchmark id with criterion's median
# time and median throughput (elements/s or bytes/s, as the bench declares),
# then the summary lines the benches print themselves. A bench that fails
# (e.g. dispatch without the local SLURM cluster) is marked in the table, the
# others still run, and the script exits 1. With a filter every bench still
# does its setup (e.g. rq_writer reconstructs its events) before criterion
# skips the benchmarks that do not match.
# Benches: sim_and_raw (simulator events/s, raw reader mmap vs HDF5), reco (per
# stage and end to end on 1 core, 1 vs 2 threads, xy fit), rq_writer (an RQ
# file written the way a reco unit writes it, and read back), dispatch (a
# dispatcher pass and catalog queries over 1M catalogued files; needs SLURM).
# Environment:
#   TPCFLOW_BENCH_RAW_GB=2     size of the shared raw file (GB of samples;
#                              simulated once under target/bench-data/)
#   TPCFLOW_BENCH_RECO_MB=500  MB of samples per reco pass
#   TPCFLOW_BENCH_RQ_EVENTS=1000  events in the benchmarked RQ file
#   TPCFLOW_BENCH_RQ_BATCH=32     events per appended batch (tpcflow reco --batch)
#   TPCFLOW_BENCH_FILES=1000000   catalog size for dispatch (built once under
#                                 target/bench-data/: 0.74 GB, ~30 s)
#   TPCFLOW_BENCH_QUICK=1      criterion --quick: a rough table in about a minute
#                              (once the raw file and the catalog exist)
#   TPCFLOW_BENCHES="reco rq_writer"   which bench targets (default: all)
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
args=()
[[ -n ${TPCFLOW_BENCH_QUICK:-} ]] && args+=(--quick)
[[ -n ${1:-} ]] && args+=("$1")
status=0
for b in ${TPCFLOW_BENCHES:-sim_and_raw reco rq_writer dispatch}; do
  echo "@@bench $b" >> "$out"
  cargo bench --locked --bench "$b" -- "${args[@]}" 2>&1 | tee -a "$out" >&2
  rc=$?
  if (( rc != 0 )); then
    echo "@@failed $b $rc" >> "$out"
    status=1
  fi
done
python3 - "$out" "${CARGO_TARGET_DIR:-target}/criterion" <<'PY'
import glob, json, os, re, sys
text = open(sys.argv[1]).read()
# Criterion's saved analysis of each benchmark (its last run): the median of
# the per-iteration times of the samples, and the declared throughput.
saved = {}
for f in glob.glob(os.path.join(sys.argv[2], "**", "new", "benchmark.json"), recursive=True):
    try:
        b = json.load(open(f))
        est = json.load(open(os.path.join(os.path.dirname(f), "estimates.json")))
        saved[b["full_id"]] = (est["median"]["point_estimate"], b.get("throughput"))
    except (OSError, ValueError, KeyError):
        pass

def scaled(v, units, step):
    for u in units[:-1]:
        if abs(v) < step:
            return f"{v:.4g} {u}"
        v /= step
    return f"{v:.4g} {units[-1]}"

def fmt_time(ns):
    return scaled(ns, ["ns", "us", "ms", "s"], 1000.0)

def fmt_thrpt(tp, ns):
    if not tp:
        return ""
    (kind, n), = tp.items()
    per_s = n / (ns * 1e-9)
    if kind == "Bytes":
        return scaled(per_s, ["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"], 1024.0)
    if kind == "BytesDecimal":
        return scaled(per_s, ["B/s", "KB/s", "MB/s", "GB/s", "TB/s"], 1000.0)
    return scaled(per_s, ["elem/s", "Kelem/s", "Melem/s", "Gelem/s"], 1000.0)

rows, extra, bench, name, block = [], [], "", None, False
for line in text.splitlines():
    if line.startswith("@@bench "):
        bench, name, block = line.split()[1], None, False
        continue
    if line.startswith("@@failed "):
        _, b, rc = line.split()
        rows.append([b, f"FAILED (exit {rc}; its output is above)", "", ""])
        continue
    # The benches' own summaries: reco's block, rq_writer's and dispatch's lines.
    if line.startswith("reco benchmark summary"):
        block = True
    elif block and not line.startswith("  "):
        block = False
    if block or line.startswith(("rq_writer summary", "a pass with nothing", "built a catalog")):
        extra.append(f"[{bench}] {line.rstrip()}")
    # A benchmark's report: its id, then "time: [low estimate high]" on the
    # same line or the next.
    m = re.match(r"^(\S+/\S+)\s*(time:.*)?$", line)
    if m and not line.startswith(("Benchmarking", "Found", "Warning")):
        name = m.group(1)
        line = m.group(2) or ""
    t = re.search(r"time:\s+\[\S+\s+\S+\s+(\S+\s+\S+)\s+\S+\s+\S+\]", line)
    if t and name and not (rows and rows[-1][1] == name):
        if name in saved:
            ns, tp = saved[name]
            rows.append([bench, name, fmt_time(ns), fmt_thrpt(tp, ns)])
        else:
            # Not saved (e.g. --noplot/--discard-baseline): criterion's printed estimate.
            rows.append([bench, name + " (estimate, not median)", " ".join(t.group(1).split()), ""])
    r = re.search(r"thrpt:\s+\[\S+\s+\S+\s+(\S+\s+\S+)\s+\S+\s+\S+\]", line)
    if r and rows and rows[-1][1].startswith(name + " (") and not rows[-1][3] and "%" not in line:
        rows[-1][3] = " ".join(r.group(1).split())
w = max([len(n) for _, n, _, _ in rows] + [20])
print(f"\n{'bench':<12} {'benchmark':<{w}} {'median time':>12} {'median throughput':>18}")
prev = None
for b, n, t, r in rows:
    if prev is not None and b != prev:
        print()
    prev = b
    print(f"{b:<12} {n:<{w}} {t:>12} {r:>18}")
if extra:
    print("\nSummaries printed by the benches:")
    for e in extra:
        print("  " + e)
PY
exit $status
