#!/usr/bin/env bash
# README command one: the main job, end to end, on this machine.
#   1. sets up the stack and the local SLURM cluster (two emulated nodes)
#   2. builds tpcflow and checks the environment (tpcflow doctor)
#   3. starts the dispatcher as a daemon, salting science runs (key + vault)
#      and running the conditions loop ([conditions] in its settings)
#   4. a live DAQ writes runs 17390 (science) and 17391 (calibration, Kr83m)
#      at SURF; the simulated detector follows the `realistic` truth, not
#      conditions v1
#   5. the dispatcher moves, salts, reconstructs under MPI (2 ranks over both
#      nodes) and catalogues them; once run 17391 is complete its calibration
#      job (SLURM, tpcflow calibrate) measures the detector, learning the top
#      array's light response, and the candidate tag cal-017391 is published
#      from run 17391 on (within the sanity limits)
#   6. the DAQ writes science run 17392, which prompt processing reconstructs
#      with cal-017391
#   7. compares xy with v1 and with the measured conditions (against the true
#      detector's bound, and the goodness of fit)
#   8. starts the web monitor and prints a summary: the tag made from the
#      calibration run, the runs that used it, its prompt latency, the URLs
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

[conditions]
# The conditions loop: a calibration job for each complete calibration run,
# its candidate tag published for prompt processing unless the lifetime (SE
# gain) moved by more than 40 % (10 %) from the tag in force. v1's lifetime is
# nominal, not measured: the first calibration may move it by ~25 %.
calibrate = true
auto_publish = true
max_lifetime_change = 0.4
settle_s = 5.0
TOML

echo "== dispatcher daemon (pass every 2 s), log in $DEMO_DIR/dispatch.log"
"$BIN" dispatch --daemon --interval 2 --catalog "$CAT" --data-root "$DATA" \
  --config "$DEMO_DIR/dispatch.toml" > "$DEMO_DIR/dispatch.log" 2>&1 &
echo $! > "$DEMO_DIR/dispatch.pid"

# Wait (up to 10 min) until `test` says yes; print `what` on giving up.
wait_for() {
  local what=$1 test=$2
  for _ in $(seq 1 300); do
    eval "$test" && return 0
    sleep 2
  done
  echo "demo: $what did not happen in time; see $DEMO_DIR/dispatch.log" >&2
  tail -20 "$DEMO_DIR/dispatch.log" >&2
  return 1
}
reconstructed() {
  "$BIN" status --catalog "$CAT" --json 2>/dev/null | python3 -c \
    'import json,sys; d=json.load(sys.stdin); print(sum(r["reconstructed"] for r in d["runs"]))' 2>/dev/null || echo 0
}
tag_state() {
  "$BIN" conditions list --catalog "$CAT" --json 2>/dev/null | python3 -c \
    'import json,sys; print(next((t["state"] for t in json.load(sys.stdin) if t["source_run"] == int(sys.argv[1])), "none"))' "$1" 2>/dev/null || echo none
}

echo "== live DAQ: runs 17390 (science), 17391 (calibration, 83mKr); detector truth 'realistic'"
start=$(date +%s.%N)
mkdir -p "$DATA/SURF/017391"
printf 'run_type = "calibration"\nconditions = "v1"\n' > "$DATA/SURF/017391/RUNINFO.toml"
"$BIN" sim --run 17390 --files 12 --events-per-file 40 --close-on-time --seed 17390 --source mixed --live --rate 120 --detector-truth realistic --out "$DATA/SURF" >/dev/null
"$BIN" sim --run 17391 --files 12 --events-per-file 100 --close-on-time --seed 17391 --source kr83m --live --rate 120 --detector-truth realistic --out "$DATA/SURF" >/dev/null

echo "== the conditions loop: run 17391 reconstructed, then its calibration job (SLURM) makes a candidate tag"
wait_for "the tag of calibration run 17391" '[[ $(tag_state 17391) =~ ^(published|held)$ ]]'
"$BIN" conditions list --catalog "$CAT"

echo "== live DAQ: run 17392 (science), processed with the conditions in force"
"$BIN" sim --run 17392 --files 10 --events-per-file 40 --close-on-time --seed 17392 --source mixed --live --rate 120 --detector-truth realistic --out "$DATA/SURF" >/dev/null
echo "   34 files written at SURF"

echo "== waiting for every file to be reconstructed and catalogued"
ok=0
wait_for "reconstruction of all 34 files" '[[ $(reconstructed) -ge 34 ]]' && ok=1
end=$(date +%s.%N)
kill "$(cat "$DEMO_DIR/dispatch.pid")" 2>/dev/null || true
rm -f "$DEMO_DIR/dispatch.pid"
[[ $ok == 1 ]] || exit 1

echo
echo "== tpcflow status"
"$BIN" status --catalog "$CAT"

echo
CAL=$DATA/RQ/calibration/017391
echo "== the calibration job's products: detector health from run 17391 (report: $CAL/report.md)"
grep -h '^calibrate:' "$DATA"/jobs/*cal17391*/job.log || true
grep -E '^\| (product|electron lifetime|single-electron gain|dead channels|noisy channels|liquid-level tilt|Kr83m energy peak|corrections|told|measured) ' \
  "$CAL/report.md" || true

echo
echo "== xy of runs 17391 and 17392 with v1 and with the measured conditions (learned light response)"
MEASURED=$DEMO_DIR/cal-017391.toml
"$BIN" conditions show cal-017391 --toml --catalog "$CAT" > "$MEASURED"
# Prompt processing made run 17391 with v1 and run 17392 with cal-017391: the other of each here.
"$BIN" reco --inputs "$DATA/USDC/017391/"*.raw.h5 --out-dir "$DEMO_DIR/rq-cal-017391/17391" \
  --conditions "$MEASURED" --threads 2 >/dev/null
"$BIN" reco --inputs "$DATA/USDC/017392/"*.raw.h5 --out-dir "$DEMO_DIR/rq-v1/17392" \
  --conditions v1 --threads 2 >/dev/null
"$BIN" validate --rq "$DEMO_DIR/rq-cal-017391/17391/"*.rq.h5 --truth "$DATA/SURF/017391/"*.truth.h5 \
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
def gof(pattern):
    g = np.concatenate([h5py.File(p, "r")["events/xy_gof"][:] for p in sorted(glob.glob(pattern))])
    return np.mean(g[np.isfinite(g)])
for run, v1, learned in (
    (17391, f"{data}/RQ/prompt-v1/017391_*.rq.h5", f"{demo}/rq-cal-017391/17391/*.rq.h5"),
    (17392, f"{demo}/rq-v1/17392/*.rq.h5", f"{data}/RQ/prompt-cal-017391/017392_*.rq.h5"),
):
    print(f"run {run} mean xy goodness of fit: v1 {gof(v1):.2f}, learned response {gof(learned):.2f}")
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
# The conditions loop, from the catalog (through the health page's API) and the RQ files.
/usr/bin/python3 - "$PORT" "$DATA" <<'PY'
import glob, json, os, statistics, sys, time, urllib.request
import h5py
port, data = sys.argv[1], sys.argv[2]
health = None
for _ in range(50):
    try:
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5))
        break
    except OSError:
        time.sleep(0.2)
if health is None:
    print("conditions loop: the web monitor did not answer; see tpcflow conditions list")
    sys.exit(0)
carried = {}
for path in glob.glob(os.path.join(data, "RQ", "*", "*.rq.h5")):
    with h5py.File(path, "r") as f:
        tag = f.attrs["conditions_tag"]
    carried.setdefault(tag.decode() if isinstance(tag, bytes) else str(tag), set()).add(int(os.path.basename(path)[:6]))
latencies = []
for p in health["trends"]:
    runs = " ".join(map(str, p["used_by_runs"])) or "none"
    rq = " ".join(map(str, sorted(carried.get(p["tag"], ())))) or "none"
    valid = f", valid from run {p['first_run']}" if p["first_run"] is not None else ""
    print(f"conditions loop: calibration run {p['source_run']} -> tag {p['tag']} ({p['state']}{valid}); "
          f"runs processed with it: {runs} (catalog), RQ files carrying it: runs {rq}")
    if p["products_latency_s"] is not None:
        latencies.append(p["products_latency_s"])
if latencies:
    what = f"median of {len(latencies)}" if len(latencies) > 1 else "one calibration run"
    print(f"prompt latency of the calibration products (last file at SURF -> tag published, {what}): "
          f"{statistics.median(latencies):.1f} s")
print(f"tag in force for the newest run {health['newest_run']}: {health['tag_in_force']}")
PY
jobs=$(ls "$DATA/jobs" | wc -l)
printf 'SLURM jobs: %s (scripts and logs under %s)\n' "$jobs" "$DATA/jobs"
python3 -c "import sys; print(f'wall time of the live part: {float(sys.argv[2]) - float(sys.argv[1]):.0f} s')" "$start" "$end"
echo "RQ files: $DATA/RQ/prompt-*/*.rq.h5  (h5py/pandas: see README)"
if [[ -f $DEMO_DIR/serve.pid ]]; then
  echo "web monitor (pid $(cat "$DEMO_DIR/serve.pid")): http://127.0.0.1:$PORT/  runs | /families | /event?run=17391&event=5"
  echo "detector health: http://127.0.0.1:$PORT/health"
fi
