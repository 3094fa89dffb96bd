#!/usr/bin/env bash
# Schema-driven fuzzing of the RUNNING signer over mutual TLS, driven by the official OpenAPI
# files in ../shared/specs (Web3Signer eth2 + keymanager, the Ethereum keymanager API, the
# Ethereum remote-signing API). Uses schemathesis (pinned, installed into a venv under target/).
#
# Checks: no 5xx, status codes, content types, headers and bodies conform to the spec, invalid
# data is rejected, auth is not ignored. Where one of our deliberate differences from Web3Signer
# makes a check inapplicable, that check is switched off for that operation only (see the
# generated schemathesis.toml below and docs/api.md, "Fuzzing").
#
# Prints the number of generated requests per endpoint. Environment:
#   API_FUZZ_MAX_EXAMPLES  examples per operation and phase (default 100)
#   API_FUZZ_SEED          hypothesis seed (default fixed, so CI runs are reproducible)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES="${API_FUZZ_MAX_EXAMPLES:-100}"
SEED="${API_FUZZ_SEED:-20251125}"
WORK="$PWD/target/api-fuzz"
VENV="$WORK/venv"
SPECS="$PWD/../shared/specs"
mkdir -p "$WORK"

# --- schemathesis, pinned, in a venv (idempotent) ---
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    ./scripts/install-deps.sh python3-venv
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
echo "== api-fuzz: $("$VENV/bin/schemathesis" --version)"

# --- an appliance (demo: certificates, SoftHSM2 token, three sealed keys) and the server ---
# KEYSTAKE_SIGNER_BIN: a binary already built (the test command passes the one `cargo test`
# built, instead of compiling the crate a second time with other features).
if [ -n "${KEYSTAKE_SIGNER_BIN:-}" ]; then
  BIN="$KEYSTAKE_SIGNER_BIN"
else
  cargo build --locked --quiet --bin keystake-signer
  BIN="$PWD/target/debug/keystake-signer"
fi
APPLIANCE="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$APPLIANCE"
}
trap cleanup EXIT
KEYSTAKE_LOG=warn "$BIN" demo --dir "$APPLIANCE" --listen 127.0.0.1:0 --no-serve >/dev/null
CONFIG="$APPLIANCE/signer.toml"
# The files exist before the server starts: the background child opens them itself, and the
# loop below may read before it has (awk on a missing file would end the script under set -e).
: >"$WORK/serve.out"
: >"$WORK/serve.log"
KEYSTAKE_LOG=info "$BIN" serve --config "$CONFIG" --listen 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVER_PID=$!
URL=""
for _ in $(seq 1 300); do
  URL="$(awk '/^listening on /{print $3; exit}' "$WORK/serve.out")"
  [ -n "$URL" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; echo "server died" >&2; exit 1; }
  sleep 0.1
done
[ -n "$URL" ] || { echo "server did not start" >&2; exit 1; }
# (awk reads the whole listing: closing the pipe early would fail the command under pipefail)
KEY="$(KEYSTAKE_LOG=warn "$BIN" keys list --config "$CONFIG" | awk 'NR == 1 {print $1}')"
TOKEN="$(tr -d '[:space:]' <"$APPLIANCE/data/keymanager.token")"
CERTS="$APPLIANCE/certs"
echo "== api-fuzz: server $URL, key $KEY, max $MAX_EXAMPLES examples per operation, seed $SEED"

# --- per-operation settings ---
# Every check runs everywhere except where a deliberate, documented difference makes it
# inapplicable (docs/api.md, "Fuzzing"):
# - sign: the signing path always addresses a key held here, so generated bodies reach the
#   decoder and the slashing check instead of stopping at "unknown key".
#   positive_data_acceptance off: Web3Signer's schemas mark almost nothing required (and the
#   remote-signing spec's discriminator names schemas, not types), but a signing root cannot be
#   computed without the data, a supplied signingRoot must match, the block version must match
#   the fork at the slot, and slashable requests are refused (412): all schema-valid, all 4xx.
#   negative_data_rejection off: like Web3Signer we accept what its schemas do not allow but
#   its clients send: `type` in any case, `signingRoot: null` as absent.
#   status_code_conformance off: a request without `Content-Type: application/json` is
#   answered 415 (issue 17: a web page can send it cross-origin without a preflight), a status
#   the spec does not list; the other statuses are checked by the integration tests.
# - keystores POST/DELETE: positive_data_acceptance off: `passwords[i]` must unlock
#   `keystores[i]` (equal lengths, in the spec's prose only) and a request without a body has
#   nothing to import or delete (Web3Signer's copy of the spec does not mark the body required);
#   both are answered 400, the spec's "malformed request".
cat >"$WORK/schemathesis.toml" <<EOF
[checks]
enabled = true

[[operations]]
include-operation-id = "SIGN"
parameters = { identifier = "$KEY" }
checks.positive_data_acceptance.enabled = false
checks.negative_data_rejection.enabled = false
checks.status_code_conformance.enabled = false

[[operations]]
include-path = "/eth/v1/keystores"
include-method = ["POST", "DELETE"]
checks.positive_data_acceptance.enabled = false
EOF

run() {
  local name="$1" spec="$2"; shift 2
  echo "== api-fuzz: $name ($spec)"
  "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$spec" \
    --url "$URL" \
    --request-cert "$CERTS/client.pem" --request-cert-key "$CERTS/client.key" \
    --tls-verify "$CERTS/ca.pem" \
    --header "Authorization: Bearer $TOKEN" \
    --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
    --workers 1 --no-color \
    --report har --report-har-path "$WORK/$name.har" \
    "$@"
}

status=0
passed=0
failed=0
tally() { if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi; }
tally run web3signer "$SPECS/web3signer-eth2/web3signer.yaml"
tally run keymanager "$SPECS/keymanager/keymanager-oapi.yaml" --include-path /eth/v1/keystores
tally run remote-signing "$SPECS/remote-signing-api/remote-signing-oapi.yaml"

# --- requests per endpoint (from the HAR files) ---
"$VENV/bin/python" - "$WORK" <<'PY' >"$WORK/requests-per-endpoint.txt" || { failed=$((failed + 1)); status=1; }
import json, re, sys, collections, pathlib
work = pathlib.Path(sys.argv[1])
templates = [(re.compile(r"^/api/v1/eth2/sign/[^/]*$"), "/api/v1/eth2/sign/{identifier}")]
print(f"{'spec':<15} {'endpoint':<32} requests per method")
grand = 0
for har in sorted(work.glob("*.har")):
    counts = collections.defaultdict(collections.Counter)
    for entry in json.loads(har.read_text())["log"]["entries"]:
        path = re.sub(r"^https?://[^/]+", "", entry["request"]["url"]).split("?")[0]
        for pattern, name in templates:
            if pattern.match(path):
                path = name
        counts[path][entry["request"]["method"]] += 1
    for path in sorted(counts):
        methods = counts[path]
        # One request per undocumented method: schemathesis' unsupported_method probe (405).
        probes = sum(n for n in methods.values() if n == 1)
        real = ", ".join(f"{m} {n}" for m, n in sorted(methods.items()) if n > 1)
        print(f"{har.stem:<15} {path:<32} {real}" + (f" (+{probes} other-method probes)" if probes else ""))
        grand += sum(methods.values())
print(f"total generated requests: {grand}")
server_errors = [
    (e["request"]["method"], e["request"]["url"], e["response"]["status"])
    for har in sorted(work.glob("*.har"))
    for e in json.loads(har.read_text())["log"]["entries"]
    if e["response"]["status"] >= 500
]
print(f"5xx responses: {len(server_errors)}")
for method, url, status in server_errors[:20]:
    print(f"  {status} {method} {url}")
sys.exit(1 if server_errors else 0)
PY

cat "$WORK/requests-per-endpoint.txt"
if grep -qiE 'panicked|internal error|appliance side' "$WORK/serve.log"; then
  echo "api-fuzz: the server log shows an internal error:" >&2
  grep -iE 'panicked|internal error|appliance side' "$WORK/serve.log" | head -n 20 >&2
  failed=$((failed + 1))
  status=1
fi
kill -0 "$SERVER_PID" 2>/dev/null || { echo "api-fuzz: the server died" >&2; failed=$((failed + 1)); status=1; }
# One line per spec run (plus any server-side failure), in the plain form test harnesses read.
echo "api-fuzz: $passed passed, $failed failed"
exit "$status"
