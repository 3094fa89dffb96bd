#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs, then runs format and
# lint checks and every test (unit, vectors, real SoftHSM2/SQLite/mTLS binary tests).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# py_ecc's venv (made by install-deps.sh): tests/dkg.rs verifies deposits with it, not our code.
export KEYSTAKE_PY_ECC_PYTHON="$PWD/target/py-ecc/venv/bin/python"
export CARGO_TERM_COLOR=never
# CI builds from a clean checkout: incremental-compilation caches are written and never reused.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --locked --workspace --all-targets --all-features -- -D warnings
echo "== keystake-core stays pure (no I/O crate among its dependencies)"
./scripts/check-core-purity.sh
echo "== hadolint Dockerfile"
./scripts/lint-dockerfile.sh
echo "== cargo test"
cargo test --locked --workspace
echo "== api fuzz (schemathesis over mutual TLS against the running server)"
# The binary `cargo test` just built (its integration tests ran it), not a second build.
KEYSTAKE_SIGNER_BIN="$PWD/target/debug/keystake-signer" ./scripts/api-fuzz.sh
# A real consensus client (Lodestar devnet, ../shared/interop/lodestar) signing every duty through
# the forwarder and the appliance; two runs of about a minute each (plus npm ci when its cache under
# target/tmp is cold), one at a time and after the parallel suite so slots are not starved of CPU.
echo "== Lodestar devnet through keystake-signer connect (serial)"
cargo test --locked --test main interop::lodestar -- --ignored --test-threads=1
# The appliance: disk image built twice (reproducible), booted under qemu TCG (provisions, signs a
# vector over mutual TLS, boots again), and the container built with podman and run (firmware/ci.sh).
# Part of the whole suite, so it always runs; a developer iterating on Rust code may skip it with
# KEYSTAKE_SKIP_APPLIANCE_TEST=1 (CI never does).
if [ "${KEYSTAKE_SKIP_APPLIANCE_TEST:-}" = 1 ] && [ "${CI:-}" != true ]; then
  echo "== appliance image, boot and container: SKIPPED (KEYSTAKE_SKIP_APPLIANCE_TEST=1)"
else
  echo "== appliance image, boot and container (firmware/ci.sh)"
  ./firmware/ci.sh
fi
