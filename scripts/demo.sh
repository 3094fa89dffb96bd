#!/usr/bin/env bash
# One command from a fresh Debian machine to a working signer: installs SoftHSM2, builds, creates
# a SoftHSM2 token with a non-extractable sealing key, demo certificates (CA, server, client),
# three HSM-sealed validator keys, and serves the Web3Signer API with mutual TLS.
#   DEMO_DIR (default ./demo)   LISTEN (default 127.0.0.1:9000)   extra args go to `demo` (e.g. --no-serve)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --locked --bin keystake-signer
exec ./target/debug/keystake-signer demo --dir "${DEMO_DIR:-./demo}" --listen "${LISTEN:-127.0.0.1:9000}" "$@"
