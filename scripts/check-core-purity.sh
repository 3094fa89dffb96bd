#!/usr/bin/env bash
# Fails when the pure core (crates/keystake-core) gains an I/O dependency, directly or through
# another crate: it must stay free of async runtimes, databases, HSM clients, HTTP/gRPC/TLS
# stacks, logging and metrics, so that signing roots, slashing rules, threshold math and policy
# remain pure functions (design.md §2). Reads the resolved graph of normal dependencies only
# (dev-dependencies may use anything).
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='tokio rusqlite libsqlite3-sys cryptoki yubihsm hyper hyper-util axum tonic tracing prometheus rustls tokio-rustls'
deps=$(cargo tree --locked --offline -p keystake-core -e normal --prefix none --format '{p}' 2>/dev/null \
  || cargo tree --locked -p keystake-core -e normal --prefix none --format '{p}')
bad=()
for crate in $forbidden; do
  if grep -qE "^${crate} v" <<<"$deps"; then
    bad+=("$crate")
  fi
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "keystake-core must stay pure, but depends (directly or transitively) on: ${bad[*]}" >&2
  for crate in "${bad[@]}"; do
    cargo tree --locked -p keystake-core -e normal -i "$crate" >&2 || true
  done
  exit 1
fi
echo "keystake-core: $(wc -l <<<"$deps") normal dependencies, none of: $forbidden"
