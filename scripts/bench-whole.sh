#!/usr/bin/env bash
# The whole `tpcflow reco` process against the reconstruction core (item 4 of
# the performance issue: start-up, input checksum, reading, RQ writing and
# fsync included).
#   scripts/bench-whole.sh [ROUNDS]        (default 5)
# The input is the reco benchmark's 1000-event mixed file (335 MB of samples;
# simulated once under target/bench-data/ by the benchmark), with its adler32
# given as the dispatcher gives it. Each round: the file is dropped from the
# page cache and read back sequentially, which leaves it in 2 MiB folios (how
# fast the kernel hands a cached file over depends on the folio size, see
# docs/performance.md); the core benchmark runs once pinned to core 0
# (`cargo bench --bench reco`, full stage); then `tpcflow reco --threads 1`
# runs twice pinned to core 0 and twice free on every core. The table shows
# medians over the rounds: wall time, MB/s of samples, the fraction of the
# core's median MB/s, and the time that is not the core's (the whole
# process's less the core's own for the same samples) per GB of samples.
#   TPCFLOW_BENCH_INPUTS=cold scripts/bench-whole.sh [ROUNDS]
# drops the file from the page cache before every whole-process run, as when
# a year of data is reprocessed (the core benchmark still runs on it cached);
# the table then also shows the MB read from the file's disk per run.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
INPUTS=${TPCFLOW_BENCH_INPUTS:-cached}
[[ $INPUTS == cached || $INPUTS == cold ]] || { echo "TPCFLOW_BENCH_INPUTS is cached or cold, not $INPUTS" >&2; exit 2; }
EVENTS=1000
export TPCFLOW_BENCH_RAW_GB=0.3299 TPCFLOW_BENCH_RECO_EVENTS=$EVENTS
FILE=$PWD/target/bench-data/reader-$EVENTS/000900/000900_00000.raw.h5
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

cargo build --release --locked -q
cargo bench --locked --bench reco --no-run -q 2>/dev/null
BIN=$PWD/target/release/tpcflow

core_bench() {
  # criterion's line `thrpt: [low median high]`, the median in MB/s.
  taskset -c 0 cargo bench --locked -q --bench reco -- 'reco_1core/stage/full$' 2>&1 |
    awk '/thrpt:/ && !done { v = $4; u = $5; if (u ~ /^GB/) v *= 1000; print v; done = 1 }'
}

drop() {
  python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$FILE"
}

recache() {
  drop
  cat "$FILE" >/dev/null
}

# Sectors read so far from the disk holding the file (/proc/diskstats).
DISK=$(basename "$(df --output=source "$FILE" | tail -1)")
sectors_read() {
  awk -v d="$DISK" '$3 == d { n = $6 } END { print n + 0 }' /proc/diskstats
}

[[ -f $FILE ]] || core_bench >/dev/null
ADLER=$(python3 -c 'import sys, zlib
a = 1
with open(sys.argv[1], "rb") as f:
    while (b := f.read(1 << 20)):
        a = zlib.adler32(b, a)
print(f"{a:08x}")' "$FILE")
printf '%s\t%s\n' "$FILE" "$ADLER" >"$OUT/inputs.txt"

whole() { # $1: pin | free; prints the wall time [s]
  local pin=() a b
  [[ $1 == pin ]] && pin=(taskset -c 0)
  rm -rf "$OUT/rq"
  [[ $INPUTS == cold ]] && drop
  local s0 s1
  s0=$(sectors_read)
  a=$EPOCHREALTIME
  "${pin[@]}" "$BIN" reco --inputs "@$OUT/inputs.txt" --out-dir "$OUT/rq" --threads 1 >/dev/null 2>&1
  b=$EPOCHREALTIME
  s1=$(sectors_read)
  echo "disk $(( (s1 - s0) * 512 ))" >>"$OUT/runs"
  # The bytes of samples read, from the result record (and a check that the
  # input was reconstructed).
  python3 -c 'import glob, json, sys
r = json.load(open(glob.glob(sys.argv[1] + "/*.result.json")[0]))
assert r["status"] == "ok", r
open(sys.argv[2], "w").write(str(r["bytes_read"]))' "$OUT/rq" "$OUT/bytes"
  python3 -c "print(f'{$b - $a:.4f}')"
}

for r in $(seq "$ROUNDS"); do
  recache
  t=$(core_bench)
  echo "core $t" >>"$OUT/runs"
  for _ in 1 2; do
    t=$(whole pin)
    echo "pin $t" >>"$OUT/runs"
    t=$(whole free)
    echo "free $t" >>"$OUT/runs"
  done
  echo "round $r of $ROUNDS done" >&2
done

python3 - "$OUT/runs" "$OUT/bytes" "$INPUTS" "$(stat -c %s "$FILE")" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    runs.setdefault(k, []).append(float(v))
mb = int(open(sys.argv[2]).read()) / 1e6
core = statistics.median(runs["core"])
print(f"core (pinned): median {core:.0f} MB/s over {len(runs['core'])} runs "
      f"({min(runs['core']):.0f}-{max(runs['core']):.0f}); {mb:.1f} MB of samples")
disk = statistics.median(runs["disk"]) / 1e6
print(f"inputs {sys.argv[3]}: read from disk per run, median {disk:.0f} MB "
      f"(file {int(sys.argv[4]) / 1e6:.0f} MB)")
print(f"{'whole process, 1 thread':<28} {'median s':>9} {'MB/s':>7} {'of the core':>12} "
      f"{'not core s/GB':>14}  runs")
for k, label in (("pin", "one core (taskset -c 0)"), ("free", "every core")):
    t = statistics.median(runs[k])
    # What is not the core: the process's time beyond the core's own time
    # for these samples, per GB of samples.
    rest = (t - mb / core) / (mb / 1000)
    print(f"{label:<28} {t:9.3f} {mb / t:7.0f} {mb / t / core:12.2f} {rest:14.3f}  "
          + " ".join(f"{x:.3f}" for x in runs[k]))
PY
