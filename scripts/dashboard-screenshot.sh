#!/usr/bin/env bash
# Records a real run of the signer and renders docs/grafana/keystake-signer.json to
# docs/dashboard.png (see docs/metrics.md for how and why). Not part of the test command.
#   DURATION (seconds of load, default 150)   OUT (default docs/dashboard.png)
# Needs: the deps of scripts/install-deps.sh, curl, python3 with venv; installs matplotlib from
# PyPI into target/plotenv.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-150}"
OUT="${OUT:-docs/dashboard.png}"
cargo build --features tools --bin keystake-signer --example grpc_sign
BIN=./target/debug/keystake-signer
EXAMPLE=./target/debug/examples/grpc_sign
WORK="$(mktemp -d)"
trap 'kill "${SERVER:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$((20000 + RANDOM % 20000))
"$BIN" demo --dir "$WORK/demo" --listen "127.0.0.1:$PORT" --no-serve >/dev/null
D="$WORK/demo"
"$BIN" certs generate --out "$D/certs" --ca-dir "$D/certs" --client intruder >/dev/null
cat > "$D/policy.toml" <<'POLICY'
[[client]]
cn = "client"
[[client.grant]]
keys = "all"
operations = ["attestation", "randao"]
POLICY
sed -i 's/^network = "mainnet"$/network = "mainnet"\npolicy_file = "policy.toml"/' "$D/signer.toml"
"$BIN" serve --config "$D/signer.toml" --metrics-listen 127.0.0.1:0 > "$WORK/serve.out" 2> "$WORK/serve.log" &
SERVER=$!
for _ in $(seq 100); do grep -q '^metrics on' "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
METRICS="$(sed -n 's|^metrics on http://\(.*\)/metrics$|\1|p' "$WORK/serve.out")"
KEY="$("$BIN" keys list --config "$D/signer.toml" | awk 'NR == 1 { print $1 }')"
CURL=(curl -s -o /dev/null -w '%{http_code}' --cacert "$D/certs/ca.pem" -H 'Content-Type: application/json')
FORK='"fork_info":{"fork":{"previous_version":"0x05000000","current_version":"0x06000000","epoch":"411392"},"genesis_validators_root":"0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"}'
attestation() { # source target block-root-byte
  printf '{"type":"ATTESTATION",%s,"attestation":{"slot":"%s","index":"0","beacon_block_root":"0x%s","source":{"epoch":"%s","root":"0x%s"},"target":{"epoch":"%s","root":"0x%s"}}}' \
    "$FORK" $(( $2 * 32 )) "$(printf "$3%.0s" $(seq 32))" "$1" "$(printf '11%.0s' $(seq 32))" "$2" "$(printf '22%.0s' $(seq 32))"
}
randao() { printf '{"type":"RANDAO_REVEAL",%s,"randao_reveal":{"epoch":"%s"}}' "$FORK" "$1"; }
scrape() {
  curl -s "http://$METRICS/metrics" | python3 -c 'import json,sys,time; print(json.dumps({"t": time.time(), "text": sys.stdin.read()}))' >> "$WORK/scrapes.jsonl"
}
rest() { "${CURL[@]}" --cert "$D/certs/$1.pem" --key "$D/certs/$1.key" --data "$2" "https://127.0.0.1:$PORT/api/v1/eth2/sign/$KEY" >/dev/null || true; }
END=$(( $(date +%s) + DURATION )); i=0; target=1000
while [ "$(date +%s)" -lt "$END" ]; do
  i=$((i + 1)); target=$((target + 1))
  rest client "$(attestation $((target - 1)) $target aa)"
  [ $((i % 3)) = 0 ] && rest client "$(randao $target)"
  [ $((i % 7)) = 0 ] && rest client "$(attestation $((target - 1)) $target bb)"   # double vote: 412
  [ $((i % 5)) = 0 ] && rest intruder "$(attestation 1 2 aa)"                    # not in policy: 403
  [ $((i % 11)) = 0 ] && rest client "$(printf '{"type":"BLOCK_V2"}')"          # not granted / malformed
  [ $((i % 15)) = 0 ] && "$EXAMPLE" "$D/signer.toml" >/dev/null 2>&1 || true    # gRPC traffic
  [ $((i % 10)) = 0 ] && scrape
  # Vary the load over time so the panels show change.
  sleep "0.0$(( (i / 40) % 2 * 5 + 2 ))"
done
scrape
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
python3 -m venv target/plotenv
target/plotenv/bin/pip install -q matplotlib
target/plotenv/bin/python docs/grafana/render_dashboard.py docs/grafana/keystake-signer.json "$WORK/scrapes.jsonl" "$OUT"
cp "$WORK/scrapes.jsonl" docs/grafana/last-run-scrapes.jsonl
echo "rendered $OUT from $(wc -l < "$WORK/scrapes.jsonl") scrapes"
