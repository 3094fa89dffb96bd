#!/usr/bin/env bash
# Throughput vs concurrency: runs `bench load` against the appliance CONFIG describes for each
# connection count and writes a CSV for plot.py.   usage: sweep.sh CONFIG OUT.csv [SECONDS]
set -euo pipefail
CONFIG=$1; OUT=$2; SECS=${3:-10}
BIN=${BIN:-./target/release/keystake-signer}   # build with: cargo build --release --features tools
echo "connections,throughput,raw_blst,ratio,p50_ms,p99_ms" > "$OUT"
for c in 1 2 4 8 16 32 64; do
  line=$("$BIN" bench load --config "$CONFIG" --duration "$SECS" --connections "$c" | tail -1)
  echo "$c: $line"
  v() { echo "$line" | tr ' ' '\n' | grep "^$1=" | cut -d= -f2; }
  echo "$c,$(v throughput),$(v raw_blst),$(v ratio),$(v p50_ms),$(v p99_ms)" >> "$OUT"
done
