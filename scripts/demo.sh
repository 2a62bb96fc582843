#!/usr/bin/env bash
# README command one: the main job, end to end with what exists today.
#   1. sets up the stack and the local two-node SLURM cluster
#   2. builds tpcflow and checks the environment (tpcflow doctor)
#   3. simulates a DAQ run at the SURF site directory
#   4. proves MPI + HDF5 through SLURM: a 2-rank sbatch job across both nodes
# Where it keeps its data: TPCFLOW_DEMO_DIR (default /tmp/tpcflow-demo).
# Re-running is safe: outputs are replaced atomically.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${TPCFLOW_DEMO_DIR:-/tmp/tpcflow-demo}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

scripts/setup.sh
echo "== build"
cargo build --release --locked
BIN=$PWD/target/release/tpcflow
mkdir -p "$DEMO_DIR"

echo "== tpcflow doctor"
"$BIN" doctor

echo "== simulate run 17390 (4 files x 50 events, mixed sources) at SURF"
"$BIN" sim --run 17390 --files 4 --events-per-file 50 --seed 17390 --source mixed \
  --out "$DEMO_DIR/SURF"

echo "== MPI + HDF5 through SLURM: 2 ranks on 2 emulated nodes"
rm -rf "$DEMO_DIR/selftest"
job=$(sbatch --parsable --job-name=tpcflow-demo-selftest --nodes=2 --ntasks=2 \
  --output="$DEMO_DIR/selftest.log" \
  --wrap "srun --mpi=pmix $BIN mpi-selftest --out $DEMO_DIR/selftest --expect-size 2")
job=${job%%;*}
for _ in $(seq 1 120); do
  state=$(scontrol show job -o "$job" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)
  [[ -z $state ]] && state=$(grep "^JobId=$job " /var/log/slurm/jobcomp.log | tail -1 | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)
  case $state in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL) break ;; esac
  sleep 0.5
done
cat "$DEMO_DIR/selftest.log"
[[ $state == COMPLETED ]] || { echo "demo: selftest job $job ended $state" >&2; exit 1; }

echo
echo "== summary"
echo "raw files at SURF: $(find "$DEMO_DIR/SURF" -name '*.raw.h5' | wc -l) ($(du -sh "$DEMO_DIR/SURF" | cut -f1))"
nodes=$(grep "^JobId=$job " /var/log/slurm/jobcomp.log | tail -1 | grep -o ' NodeList=[^ ]*' | cut -d= -f2 || true)
echo "SLURM job $job: $state on nodes ${nodes:-?}"
echo "open a raw file:  /usr/bin/python3 -c \"import h5py; f=h5py.File('$DEMO_DIR/SURF/017390/017390_00000.raw.h5'); print(dict(f.attrs))\""
