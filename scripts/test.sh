#!/usr/bin/env bash
# README command two: set up the real stack (packages, munge, SLURM), then
# check formatting and lints and run every test, the cluster/MPI/HDF5 ones
# included. Tests that need the cluster fail loudly if it is missing: this
# script never skips them.
set -euo pipefail
cd "$(dirname "$0")/.."

# Both local sites: the sites:: tests need cluster ukdc (they would start it
# themselves, but installing MariaDB and slurmdbd belongs here, not in a test).
scripts/setup.sh --two-sites
unset TPCFLOW_SKIP_CLUSTER_TESTS
# Open MPI refuses root unless told; the machines here run everything as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export CARGO_TERM_COLOR=never

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --release --locked -- -D warnings
echo "== tests"
cargo test --workspace --release --locked
