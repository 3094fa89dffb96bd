#!/usr/bin/env bash
# Issue 16's figures in one sitting (docs/performance.md): distinct-message load at 16 and 64
# connections, 1,000 req/s latency, the mainnet mix with 10,000 keys, and a 10,000-key slot burst.
# Each `bench load` line measures raw blst in the same run. Not part of CI.
#   usage: issue16.sh WORKDIR [SECONDS]        (WORKDIR is created; ports 9160/9161)
set -euo pipefail
WORK=$1; SECS=${2:-15}
BIN=${BIN:-./target/release/keystake-signer}   # cargo build --release --features tools --bin keystake-signer
mkdir -p "$WORK"
"$BIN" demo --dir "$WORK/a" --listen 127.0.0.1:9160 --no-serve > /dev/null
"$BIN" demo --dir "$WORK/b" --listen 127.0.0.1:9161 --no-serve > /dev/null
# The load tool's duties start far above the wall clock (never slashable against an earlier run),
# which a production appliance refuses (issue 17: future_margin_epochs, default 1): benchmark
# appliances lift the margin.
for d in a b; do printf '\n[slashing]\nfuture_margin_epochs = 1000000000000000000\n' >> "$WORK/$d/signer.toml"; done
"$BIN" bench populate --config "$WORK/b/signer.toml" --keys 9997 > /dev/null 2>&1 || true
"$BIN" serve --config "$WORK/a/signer.toml" > "$WORK/a.log" 2>&1 & A=$!
"$BIN" serve --config "$WORK/b/signer.toml" > "$WORK/b.log" 2>&1 & B=$!
trap 'kill $A $B 2>/dev/null || true' EXIT
sleep 2
load() { echo "== $*"; "$BIN" bench load "$@" | tail -4; }
load --config "$WORK/a/signer.toml" --duration "$SECS" --connections 16
load --config "$WORK/a/signer.toml" --duration "$SECS" --connections 64
load --config "$WORK/a/signer.toml" --duration "$SECS" --connections 16 --rate 1000
load --config "$WORK/b/signer.toml" --duration "$SECS" --connections 64 --mix mainnet --keys 10000
load --config "$WORK/b/signer.toml" --connections 256 --mix mainnet --keys 10000 --burst 1
