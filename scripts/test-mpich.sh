#!/usr/bin/env bash
# The MPI tests built against MPICH, the ABI of Perlmutter's Cray MPICH.
#
# Builds tpcflow and its tests with Debian's MPICH (`MPICC=mpicc.mpich`) into
# a target directory of their own, then runs the integration tests that
# start MPI jobs. The tests see which MPI they are linked to and launch its
# ranks accordingly: MPICH's Hydra `mpiexec.mpich` instead of `mpirun`, and
# `srun --mpi=pmi2` instead of `--mpi=pmix` under the local SLURM.
#
# The default build stays Open MPI: installing MPICH leaves Debian's `mpicc`
# and `mpirun` alternatives on Open MPI (priority 50 against 40), which this
# script checks, and it never changes them. scripts/test.sh and CI are not
# affected.
#
# Env:
#   CARGO_TARGET_DIR     default target/; the MPICH build goes to
#                        $CARGO_TARGET_DIR/mpich (or TPCFLOW_MPICH_TARGET_DIR)
#   TPCFLOW_MPICH_TESTS  test name filters (default: the MPI tests below)
# Usage: scripts/test-mpich.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'test-mpich: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if ! command -v mpicc.mpich >/dev/null || ! command -v mpiexec.mpich >/dev/null; then
  [[ $EUID -eq 0 ]] || die "MPICH is missing: apt-get install --no-install-recommends mpich libmpich-dev"
  log "installing Debian's MPICH"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mpich libmpich-dev
fi
# The default MPI must still be Open MPI (scripts/test.sh, CI, the demo).
for alt in mpi mpirun; do
  current=$(update-alternatives --query "$alt" 2>/dev/null | sed -n 's/^Value: //p')
  [[ $current == *openmpi* ]] ||
    die "the '$alt' alternative is '$current', not Open MPI: scripts/test.sh would build against it"
done

# The cluster for the srun tests (idempotent; fast when it is up).
scripts/setup.sh
srun --mpi=list 2>&1 | grep -qw pmi2 || die "this SLURM has no pmi2 plugin (srun --mpi=list)"
unset TPCFLOW_SKIP_CLUSTER_TESTS

# build-probe-mpi (mpi-sys) takes MPI_PKG_CONFIG, then CRAY_MPICH_DIR, then
# $MPICC: make MPICH's wrapper the one it finds. mpi-sys does not rebuild
# when these change, hence the target directory of its own.
unset MPI_PKG_CONFIG CRAY_MPICH_DIR
export MPICC=mpicc.mpich
export CARGO_TARGET_DIR=${TPCFLOW_MPICH_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/mpich}
export CARGO_TERM_COLOR=never
# The tests set Open MPI's root permission themselves; MPICH needs none.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# The tests that start MPI ranks: mpiexec with 2 ranks (reco_mpi,
# reco_hardening), 1-rank launches (reco_startup), srun --mpi=pmi2 in sbatch
# jobs across the emulated nodes (stack, reco_mpi), and the world-size checks.
read -r -a filters <<<"${TPCFLOW_MPICH_TESTS:-reco_mpi:: reco_hardening:: reco_startup:: stack::}"

log "building with $(mpichversion 2>/dev/null | sed -n 's/^MPICH Version:[[:space:]]*/MPICH /p') into $CARGO_TARGET_DIR"
# The test build builds the tpcflow binary the tests run (one build of the crate).
cargo test --release --locked --test it --no-run "$@"
linked=$(ldd "$CARGO_TARGET_DIR/release/tpcflow" | grep -Eo 'lib(mpich|mpi)\.so[^ ]*' | sort -u | tr '\n' ' ')
[[ $linked == *libmpich* && $linked != *libmpi.so* ]] ||
  die "tpcflow links '$linked', not MPICH (a stale mpi-sys build in $CARGO_TARGET_DIR?)"
log "tpcflow links $linked"

cargo test --release --locked --test it "$@" -- "${filters[@]}"
log "ok: the MPI tests pass with MPICH"
