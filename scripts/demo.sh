#!/usr/bin/env bash
# README command one: the main job, end to end, on this machine.
#   1. sets up the stack and the local SLURM cluster (two emulated nodes)
#   2. builds tpcflow and checks the environment (tpcflow doctor)
#   3. starts the dispatcher as a daemon, salting science runs (key + vault)
#   4. a live DAQ writes 3 runs (science, calibration, science; 34 files) at SURF
#   5. waits until every file is moved, salted, reconstructed under MPI
#      (2 ranks over both nodes) and catalogued
#   6. measures the detector from the calibration run (tpcflow calibrate: the
#      simulated detector follows the `realistic` truth, not conditions v1),
#      learning the top array's light response, and reconstructs the
#      calibration run and the science run after it with what it measured
#      (xy against the true detector's bound, v1 beside it)
#   7. starts the web monitor and prints a summary with the URLs
# Data lives under TPCFLOW_DEMO_DIR (default /tmp/tpcflow-demo). Re-running is
# safe: the previous demo's processes are stopped and its data replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${TPCFLOW_DEMO_DIR:-/tmp/tpcflow-demo}
PORT=${TPCFLOW_DEMO_PORT:-8080}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 TPCFLOW_LOG=${TPCFLOW_LOG:-warn}

TPCFLOW_SLURM_NODES=2 scripts/setup.sh
echo "== build"
cargo build --release --locked
BIN=$PWD/target/release/tpcflow

echo "== tpcflow doctor"
"$BIN" doctor

# A previous demo: stop its processes, then replace its data (only a directory
# this script made, recognised by its marker).
for pidfile in "$DEMO_DIR"/*.pid; do
  [[ -f $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
done
if [[ -d $DEMO_DIR ]]; then
  [[ -f $DEMO_DIR/.tpcflow-demo ]] || { echo "demo: $DEMO_DIR exists and is not a tpcflow demo directory" >&2; exit 1; }
  rm -rf "$DEMO_DIR"
fi
mkdir -p "$DEMO_DIR/data/SURF" "$DEMO_DIR/blinding"
touch "$DEMO_DIR/.tpcflow-demo"
CAT=$DEMO_DIR/catalog.db
DATA=$DEMO_DIR/data

echo "== blinding: salt key and vault (kept apart from the analysts' data)"
"$BIN" salt keygen --key "$DEMO_DIR/blinding/salt.key" --vault "$DEMO_DIR/blinding/vault" --rate 0.1

cat > "$DEMO_DIR/dispatch.toml" <<TOML
# Dispatcher settings of the demo: jobs of 4 files, 2 MPI ranks over both nodes.
profile = "local"
files_per_job = 4
nodes = 2
ntasks = 2
cpus_per_task = 1
max_queued_jobs = 4
backoff_s = 5.0
salt_key = "$DEMO_DIR/blinding/salt.key"
salt_vault = "$DEMO_DIR/blinding/vault"
TOML

echo "== dispatcher daemon (pass every 2 s), log in $DEMO_DIR/dispatch.log"
"$BIN" dispatch --daemon --interval 2 --catalog "$CAT" --data-root "$DATA" \
  --config "$DEMO_DIR/dispatch.toml" > "$DEMO_DIR/dispatch.log" 2>&1 &
echo $! > "$DEMO_DIR/dispatch.pid"

echo "== live DAQ: runs 17390 (science), 17391 (calibration, 83mKr), 17392 (science); detector truth 'realistic'"
start=$(date +%s.%N)
mkdir -p "$DATA/SURF/017391"
printf 'run_type = "calibration"\nconditions = "v1"\n' > "$DATA/SURF/017391/RUNINFO.toml"
"$BIN" sim --run 17390 --files 12 --events-per-file 40 --close-on-time --seed 17390 --source mixed --live --rate 120 --detector-truth realistic --out "$DATA/SURF" >/dev/null
"$BIN" sim --run 17391 --files 12 --events-per-file 100 --close-on-time --seed 17391 --source kr83m --live --rate 120 --detector-truth realistic --out "$DATA/SURF" >/dev/null
"$BIN" sim --run 17392 --files 10 --events-per-file 40 --close-on-time --seed 17392 --source mixed --live --rate 120 --detector-truth realistic --out "$DATA/SURF" >/dev/null
echo "   34 files written at SURF"

echo "== waiting for every file to be reconstructed and catalogued"
for _ in $(seq 1 300); do
  done_files=$("$BIN" status --catalog "$CAT" --json 2>/dev/null | python3 -c \
    'import json,sys; d=json.load(sys.stdin); print(sum(r["reconstructed"] for r in d["runs"]))' 2>/dev/null || echo 0)
  [[ $done_files -ge 34 ]] && break
  sleep 2
done
end=$(date +%s.%N)
kill "$(cat "$DEMO_DIR/dispatch.pid")" 2>/dev/null || true
rm -f "$DEMO_DIR/dispatch.pid"
[[ $done_files -ge 34 ]] || { echo "demo: only $done_files of 34 files reconstructed; see $DEMO_DIR/dispatch.log" >&2; tail -20 "$DEMO_DIR/dispatch.log" >&2; exit 1; }

echo
echo "== tpcflow status"
"$BIN" status --catalog "$CAT"

echo
echo "== tpcflow calibrate: detector health from calibration run 17391 (report: $DEMO_DIR/calib-17391/report.md)"
"$BIN" calibrate --runs 17391 --catalog "$CAT" --campaign prompt-v1 --tag kr-17391 \
  --out "$DEMO_DIR/calib-17391"
grep -E '^\| (electron lifetime|single-electron gain|dead channels|noisy channels|liquid-level tilt|told|measured) ' \
  "$DEMO_DIR/calib-17391/report.md" || true

echo
echo "== reconstruct runs 17391 and 17392 with the measured conditions (learned light response)"
MEASURED=$DEMO_DIR/calib-17391/conditions.toml
for run in 17391 17392; do
  "$BIN" reco --inputs "$DATA/USDC/0$run/"*.raw.h5 --out-dir "$DEMO_DIR/rq-kr-17391/$run" \
    --conditions "$MEASURED" --threads 2 >/dev/null
done
"$BIN" validate --rq "$DEMO_DIR/rq-kr-17391/17391/"*.rq.h5 --truth "$DATA/SURF/017391/"*.truth.h5 \
  --baseline-rq "$DATA/RQ/prompt-v1/017391_"*.rq.h5 --conditions "$MEASURED" \
  --out "$DEMO_DIR/validate-17391" --json > "$DEMO_DIR/validate-17391.json"
# Debian's python3 (setup installs python3-h5py there), whatever python3 is first in PATH.
/usr/bin/python3 - "$DEMO_DIR" "$DATA" <<'PY'
import glob, json, sys
import h5py, numpy as np
demo, data = sys.argv[1], sys.argv[2]
v = json.load(open(f"{demo}/validate-17391.json"))
t, b = v["xy_truth"], v["xy_baseline"]["truth"]
t, b = t["xy"], b["xy"]
print(f"run 17391 xy, {t['in_range_events']} single scatters of 1e3-1e5 phd, rms over the true detector's bound:"
      f" v1 {b['ratio_crb_diff']:.2f}, learned response {t['ratio_crb_diff']:.2f}  (report: {demo}/validate-17391/report.md)")
def gof(paths):
    g = np.concatenate([h5py.File(p, "r")["events/xy_gof"][:] for p in paths])
    return np.mean(g[np.isfinite(g)])
for run in (17391, 17392):
    before = gof(sorted(glob.glob(f"{data}/RQ/prompt-v1/0{run}_*.rq.h5")))
    after = gof(sorted(glob.glob(f"{demo}/rq-kr-17391/{run}/*.rq.h5")))
    print(f"run {run} mean xy goodness of fit: v1 {before:.2f}, learned response {after:.2f}")
PY

if "$BIN" serve --help >/dev/null 2>&1; then
  "$BIN" serve --catalog "$CAT" --data-root "$DATA" --addr "127.0.0.1:$PORT" > "$DEMO_DIR/serve.log" 2>&1 &
  echo $! > "$DEMO_DIR/serve.pid"
fi

echo
echo "== summary"
"$BIN" status --catalog "$CAT" --json | python3 -c '
import json, sys, glob, os
d = json.load(sys.stdin)
runs = d["runs"]; files = sum(r["files"] for r in runs)
repl = sum(r["usdc"] + r["ukdc"] + r["archive"] for r in runs)
salted = sum(r["salted"] for r in runs); reco = sum(r["reconstructed"] for r in runs)
recs = [json.load(open(p)) for p in glob.glob(os.path.join(sys.argv[1], "RQ", "*", "*.result.json"))]
events = sum(r["events"] for r in recs if r["status"] == "ok")
mb = sum(r["bytes_read"] for r in recs) / 1e6; busy = sum(r["wall_seconds"] for r in recs)
lat = d["latency"]
print(f"files moved from SURF: {files}; replicas verified at USDC/UKDC/ARCHIVE: {repl} of {3*files}")
print(f"science files salted: {salted}; files reconstructed and catalogued: {reco}")
print(f"events reconstructed: {events}; reco throughput {mb:.0f} MB in {busy:.1f} s of job time ({mb/max(busy,1e-9):.0f} MB/s)")
med, p90 = lat["median_s"], lat["p90_s"]
print(f"latency SURF write -> RQ catalogued: median {med:.1f} s, p90 {p90:.1f} s")
' "$DATA"
jobs=$(ls "$DATA/jobs" | wc -l)
printf 'SLURM jobs: %s (scripts and logs under %s)\n' "$jobs" "$DATA/jobs"
python3 -c "import sys; print(f'wall time of the live part: {float(sys.argv[2]) - float(sys.argv[1]):.0f} s')" "$start" "$end"
echo "RQ files: $DATA/RQ/prompt-v1/*.rq.h5  (h5py/pandas: see README)"
if [[ -f $DEMO_DIR/serve.pid ]]; then
  echo "web monitor (pid $(cat "$DEMO_DIR/serve.pid")): http://127.0.0.1:$PORT/  runs | /families | /event?run=17391&event=5"
fi
