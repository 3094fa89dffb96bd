#!/usr/bin/env bash
# What the forwarders add per signature over one appliance (docs/performance.md): `bench load` at a
# fixed rate against (1) the appliance directly over mutual TLS, (2) `connect --upstream` (the
# single-appliance forwarder), (3) `connect --cluster` over a 1-of-1 cluster on the same appliance
# (the threshold path: decode, fan-out, partial verification, combine, group verification), and
# (4) `connect --cluster` over a 3-of-4 cluster of four appliances on this machine. For the three
# forwarder targets `cpu_per_sig_us` is the forwarder's own CPU time per signature (its pid is
# given as --appliance-pid), for the direct target the appliance's.
# usage: forwarder-latency.sh [SECONDS] [RATE]          prints one summary line per target
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/keystake-signer}   # build with: cargo build --release --features tools
SECS=${1:-10}; RATE=${2:-200}
KEYS=$PWD/../shared/interop/lodestar/keystores
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
export KEYSTAKE_LOG=warn

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# start NAME CMD… : run CMD in the background, wait until it prints a line starting with "forwarding on" or "listening on"
start() {
  local name=$1; shift
  "$@" > "$W/$name.out" 2> "$W/$name.err" &
  PIDS+=($!)
  for _ in $(seq 100); do
    grep -qE '^(forwarding|listening) on' "$W/$name.out" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not start:"; cat "$W/$name.err"; exit 1
}
# Every run signs far-future, strictly increasing duties (the load tool's rule), so the runs never
# conflict; the appliances also hold shares, hence --allow-non-demo-keys (test appliances only).
load() { "$BIN" bench load --config "$W/a1/signer.toml" --rate "$RATE" --duration "$SECS" --connections 16 --allow-non-demo-keys "$@" | tail -1; }

# Four demo appliances (own PKI, token, three demo keys each).
PORTS=()
for i in 1 2 3 4; do
  port=$(free_port); PORTS+=("$port")
  "$BIN" demo --dir "$W/a$i" --listen "127.0.0.1:$port" --no-serve > /dev/null
  # The load tool's duties start far above the wall clock, which a production appliance refuses
  # (issue 17: future_margin_epochs, default 1): benchmark appliances lift the margin.
  printf '\n[slashing]\nfuture_margin_epochs = 1000000000000000000\n' >> "$W/a$i/signer.toml"
  "$BIN" enrolment show --config "$W/a$i/signer.toml" > "$W/a$i.pub"
done
id() { local c=$W/a$1/certs; printf 'ca = "%s"\nclient_cert = "%s"\nclient_key = "%s"\n' "$c/ca.pem" "$c/client.pem" "$c/client.key"; }

# Interop key 0 split 1-of-1 to appliance 1; interop key 1 split 3-of-4 to appliances 1–4.
"$BIN" split --keystore "$KEYS/interop-0.json" --password-file "$KEYS/interop-0.pass" --threshold 1 \
  --enrolment-key "$W/a1.pub" --out "$W/one" > /dev/null
"$BIN" keys import-share --config "$W/a1/signer.toml" --package "$W/one/share-1.pkg" --manifest "$W/one/manifest.json" > /dev/null
"$BIN" split --keystore "$KEYS/interop-1.json" --password-file "$KEYS/interop-1.pass" --threshold 3 \
  --enrolment-key "$W/a1.pub" --enrolment-key "$W/a2.pub" --enrolment-key "$W/a3.pub" --enrolment-key "$W/a4.pub" \
  --out "$W/four" > /dev/null
for i in 1 2 3 4; do
  "$BIN" keys import-share --config "$W/a$i/signer.toml" --package "$W/four/share-$i.pkg" --manifest "$W/four/manifest.json" > /dev/null
done
for i in 1 2 3 4; do start "serve$i" "$BIN" serve --config "$W/a$i/signer.toml"; done
{ echo "manifests = [\"$W/one/manifest.json\"]"; printf '[[appliance]]\nindex = 1\nurl = "https://127.0.0.1:%s"\n' "${PORTS[0]}"; id 1; } > "$W/one.toml"
{ echo "manifests = [\"$W/four/manifest.json\"]"
  for i in 1 2 3 4; do printf '[[appliance]]\nindex = %s\nurl = "https://127.0.0.1:%s"\n' "$i" "${PORTS[$((i-1))]}"; id "$i"; done; } > "$W/four.toml"

FP=$(free_port); C=$W/a1/certs
start single "$BIN" connect --listen "127.0.0.1:$FP" --upstream "https://127.0.0.1:${PORTS[0]}" \
  --ca "$C/ca.pem" --client-cert "$C/client.pem" --client-key "$C/client.key"
PID_SINGLE=${PIDS[-1]}
T1=$(free_port); start one "$BIN" connect --cluster "$W/one.toml" --listen "127.0.0.1:$T1"
PID_ONE=${PIDS[-1]}
T4=$(free_port); start four "$BIN" connect --cluster "$W/four.toml" --listen "127.0.0.1:$T4"
PID_FOUR=${PIDS[-1]}

echo "direct (mTLS to the appliance):        $(load)"
echo "connect --upstream (one appliance):    $(load --forwarder "http://127.0.0.1:$FP" --appliance-pid "$PID_SINGLE")"
echo "connect --cluster, 1-of-1:             $(load --forwarder "http://127.0.0.1:$T1" --appliance-pid "$PID_ONE")"
echo "connect --cluster, 3-of-4 (4 on host): $(load --forwarder "http://127.0.0.1:$T4" --appliance-pid "$PID_FOUR")"
