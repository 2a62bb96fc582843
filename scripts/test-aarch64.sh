#!/usr/bin/env bash
# The reconstruction core (crate tpcflow-reco) built for aarch64 and its tests
# run there, under user-mode emulation (qemu-aarch64), as on an Arm node.
#
# The core has no x86-only code without a portable fallback: on aarch64 it
# takes the portable path. This script holds it to that:
#   1. clippy with -D warnings on every target of the crate for aarch64 (code
#      that only x86-64 uses must be cfg'd as such, not left unused);
#   2. the crate's unit and doc tests, linked by Debian's aarch64 cross gcc and
#      run by qemu-aarch64 with the aarch64 C library. One of them,
#      `the_portable_reconstruction_of_fixed_events_is_bit_for_bit_the_recorded_one`,
#      compares the reconstruction of fixed events with the digest recorded
#      from x86-64: the two builds give the same bits.
#
# Needs the Rust standard library for aarch64 (`rustup target add
# aarch64-unknown-linux-gnu`: from the Rust project's server, which is not one
# of the package registries CI reaches, so scripts/test.sh does not call this
# script). Installs gcc-aarch64-linux-gnu and qemu-user when missing.
# Builds into target/aarch64-unknown-linux-gnu/.
# Usage: scripts/test-aarch64.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
log() { printf 'test-aarch64: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if ! rustup target list --installed | grep -qx "$TARGET"; then
  log "adding the Rust target $TARGET"
  rustup target add "$TARGET" || die "no Rust standard library for $TARGET (rustup target add $TARGET)"
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  [[ $EUID -eq 0 ]] || die "missing: apt-get install --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
  log "installing the aarch64 cross linker and qemu-user"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CARGO_TERM_COLOR=never

log "clippy, $TARGET"
cargo clippy -p tpcflow-reco --all-targets --release --locked --target "$TARGET" -- -D warnings
log "tests, $TARGET under qemu-aarch64"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test -p tpcflow-reco --release --locked --target "$TARGET" "$@" 2>&1 | tee "$out"
# The tests must have run as aarch64 code: the fixed-events test names the
# architecture only when it fails, so check that the binary is aarch64.
bin=$(sed -n "s/^ *Running unittests src\/lib.rs (\(.*\))$/\1/p" "$out" | head -1)
[[ -n $bin ]] || die "no unit-test binary in cargo's output"
# ELF e_machine (2 bytes at offset 18): 183 is aarch64.
machine=$(od -An -t u2 -j 18 -N 2 "$bin" | tr -d ' ')
[[ $machine == 183 ]] || die "$bin is not an aarch64 binary (ELF machine $machine)"
grep -q "the_portable_reconstruction_of_fixed_events_is_bit_for_bit_the_recorded_one ... ok" "$out" ||
  [[ $# -gt 0 ]] || die "the fixed-events digest test did not run"
log "passed: tpcflow-reco's tests on $TARGET"
