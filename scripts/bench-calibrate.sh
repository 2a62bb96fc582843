#!/usr/bin/env bash
# Time and memory of `tpcflow calibrate` on a 3e4-event Kr83m run, one core.
#   scripts/bench-calibrate.sh [events per file, default 2000] [copies, default 15]
# Simulates one Kr83m file (once, under target/bench-data/calib/), reconstructs
# it with v1, and gives calibrate COPIES copies of its RQ file as one run
# (copies x events events: the estimators' cost depends on the event count,
# not on the events being distinct). Prints one table: wall, user and system
# seconds, peak resident memory, and the products' own timer.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000}
copies=${2:-15}
bin=target/release/tpcflow
cargo build --release --locked --bin tpcflow >/dev/null
data=target/bench-data/calib
mkdir -p "$data"
raw="$data/raw/000001/000001_00000.raw.h5"
if [ ! -f "$raw" ]; then
    "$bin" sim --run 1 --files 1 --events-per-file "$events" --source kr83m --seed 1 \
        --out "$data/raw" --threads 1 >/dev/null
fi
if ! ls "$data"/rq/*.rq.h5 >/dev/null 2>&1; then
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        "$bin" reco --inputs "$raw" --out-dir "$data/rq" --threads 1 >/dev/null
fi
rm -rf "$data/copies" "$data/out"
mkdir -p "$data/copies"
src=$(ls "$data"/rq/*.rq.h5 | head -1)
for i in $(seq 1 "$copies"); do
    cp "$src" "$data/copies/000001_$(printf %05d "$i").rq.h5"
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
/usr/bin/time -v taskset -c 0 "$bin" calibrate --rq "$data"/copies/*.rq.h5 --out "$data/out" \
    --tag bench --runs 1 >"$log.out" 2>"$log"
field() { grep -F "$1" "$log" | sed 's/.*: //'; }
printf '%-10s %-8s %-8s %-8s %-10s %s\n' events wall_s user_s sys_s peak_MB products_s
printf '%-10s %-8s %-8s %-8s %-10.0f %s\n' "$((events * copies))" \
    "$(field 'Elapsed (wall clock)')" "$(field 'User time')" "$(field 'System time')" \
    "$(echo "$(field 'Maximum resident set size') / 1024" | bc -l)" \
    "$(sed -n 's/.* in \([0-9.]*\) s .*/\1/p' "$log.out")"
rm -f "$log.out"
