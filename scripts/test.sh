#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs, then runs format and
# lint checks and every test (unit, vectors, real SoftHSM2/SQLite/mTLS binary tests).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
echo "== hadolint Dockerfile"
./scripts/lint-dockerfile.sh
echo "== cargo test"
cargo test --locked
echo "== api fuzz (schemathesis over mutual TLS against the running server)"
./scripts/api-fuzz.sh
