#!/usr/bin/env bash
# The container, end to end without a Docker daemon: the local Debian base (build-base.sh), a
# real `podman build` of the Dockerfile, then the container with a read-only root as an operator
# runs it — `init` (the TLS key generated in the token), `certs generate --ca-dir --config` (the
# server certificate for that key, from a CA mounted for that run only) and `keys import` once
# into the data volume, then `serve`; no server key file exists — signs one request
# over mutual TLS from the host (curl with a client certificate), and `podman healthcheck run`
# must pass (the image's HEALTHCHECK: `keystake-signer healthcheck` over mutual TLS).
#
#   firmware/container-test.sh     (needs target/release/keystake-signer)
#
# Prints `container: signature 0x…` and, last, `container-test: OK: …` with the image size.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/podman/containers.conf}
IMAGE=localhost/keystake-signer:test
BIN=$REPO/target/release/keystake-signer
[ -x "$BIN" ] || { echo "build the release signer first (firmware/build-image.sh does)" >&2; exit 1; }
"$REPO/scripts/install-deps.sh" podman runc curl
"$HERE/build-base.sh"
T0=$(date +%s)
podman build --quiet --format docker -t "$IMAGE" "$REPO" >/dev/null
echo "container: built $IMAGE in $(( $(date +%s) - T0 )) s"

W=$(mktemp -d -p "${TMPDIR:-/tmp}" keystake-container.XXXXXX)
NAME=keystake-ct-$$
cleanup() { podman rm -f "$NAME" >/dev/null 2>&1 || true; rm -rf "$W"; }
trap cleanup EXIT
fail() {
  echo "container-test: FAILED: $*" >&2
  podman logs "$NAME" 2>&1 | tail -n 40 >&2 || true
  exit 1
}

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$W/etc/certs" "$W/data" "$W/import"
# Demo PKI on the host; the container gets the CA certificate and the probe's client identity,
# and the CA (certificate + key) only for the one run that certifies the token's TLS key.
"$BIN" certs generate --out "$W/pki" --client ct --server-name 127.0.0.1 >/dev/null
mkdir -p "$W/ca" && cp "$W/pki/ca.pem" "$W/pki/ca.key" "$W/ca/"
cp "$W/pki/ca.pem" "$W/pki/ct.pem" "$W/pki/ct.key" "$W/etc/certs/"
cat > "$W/etc/signer.toml" <<EOF
data_dir = "/var/lib/keystake/store"
listen = "127.0.0.1:$PORT"
network = "mainnet"
policy_file = "/etc/keystake/policy.toml"
[tls]
ca_cert = "/etc/keystake/certs/ca.pem"
# Issued at setup to the TLS key \`init\` generates in the token (no server key file).
server_cert = "/var/lib/keystake/certs/server.pem"
[hsm]
backend = "pkcs11"
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "keystake"
user_pin_file = "/var/lib/keystake/token/user.pin"
so_pin_file = "/var/lib/keystake/token/so.pin"
softhsm2_conf = "/var/lib/keystake/token/softhsm2.conf"
[keymanager]
token_file = "/var/lib/keystake/store/keymanager.token"
# The identity the image's HEALTHCHECK probes /upcheck with.
[client]
cert = "/etc/keystake/certs/ct.pem"
key = "/etc/keystake/certs/ct.key"
EOF
printf '[[client]]\ncn = "ct"\n[[client.grant]]\nkeys = "all"\noperations = ["all"]\n' > "$W/etc/policy.toml"
# One key to sign with: the first Web3Signer vector key when the shared vectors are there (the
# signature is then checked), else a throw-away key.
VECTOR=$REPO/../shared/vectors/web3signer/attestation__key0.json
if [ -f "$VECTOR" ]; then
  read -r SECRET PUBKEY EXPECTED < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["secret_key"], c["pubkey"], c["signature"])' "$VECTOR")
  python3 -c 'import json,sys; json.dump(json.load(open(sys.argv[1]))["request"], open(sys.argv[2], "w"))' "$VECTOR" "$W/request.json"
else
  SECRET=$(printf '%02x' $(( $(od -An -N1 -tu1 /dev/urandom) % 0x70 )))$(od -An -N31 -tx1 /dev/urandom | tr -d ' \n')
  PUBKEY= EXPECTED=
fi
echo "container test" > "$W/import/key.pass"
python3 "$HERE/make-keystore.py" "$SECRET" "$PUBKEY" "container test" "$W/import/key.json"
# The container runs as uid 10001 and refuses files other users may read.
chown -R 10001:10001 "$W/etc" "$W/data" "$W/import" "$W/ca"
chmod -R go-rwx "$W/etc" "$W/data" "$W/import" "$W/ca"

RUN=(podman run --rm --read-only --network host -v "$W/etc:/etc/keystake:ro" -v "$W/data:/var/lib/keystake")
"${RUN[@]}" "$IMAGE" init --config /etc/keystake/signer.toml >/dev/null 2>&1 || fail "init in the container"
"${RUN[@]}" -v "$W/ca:/ca:ro" "$IMAGE" certs generate --ca-dir /ca --config /etc/keystake/signer.toml \
  --out /var/lib/keystake/certs --server-name 127.0.0.1 >/dev/null 2>&1 || fail "issuing the server certificate to the token key"
rm -rf "$W/ca"
imported=$("${RUN[@]}" -v "$W/import:/import:ro" "$IMAGE" keys import --config /etc/keystake/signer.toml \
  --keystore /import/key.json --password-file /import/key.pass 2>/dev/null) || fail "keys import in the container"
PUBKEY=${imported%% *}
rm -f "$W/import/key.json" "$W/import/key.pass"

podman run -d --name "$NAME" --read-only --network host -v "$W/etc:/etc/keystake:ro" \
  -v "$W/data:/var/lib/keystake" "$IMAGE" >/dev/null 2>"$W/run.err" || { cat "$W/run.err" >&2; fail "podman run"; }
CURL=(curl -sS --max-time 10 --cacert "$W/pki/ca.pem" --cert "$W/pki/ct.pem" --key "$W/pki/ct.key")
for _ in $(seq 1 60); do
  [ "$("${CURL[@]}" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/upcheck" 2>/dev/null)" = 200 ] && break
  [ "$(podman inspect -f '{{.State.Running}}' "$NAME")" = true ] || fail "the container stopped"
  sleep 1
done
[ -f "$W/request.json" ] || echo '{"type":"RANDAO_REVEAL","fork_info":{"fork":{"previous_version":"0x00000000","current_version":"0x00000000","epoch":"0"},"genesis_validators_root":"0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"},"randao_reveal":{"epoch":"3"}}' > "$W/request.json"
answer=$("${CURL[@]}" -X POST -H 'content-type: application/json' -H 'accept: application/json' \
  --data-binary "@$W/request.json" "https://127.0.0.1:$PORT/api/v1/eth2/sign/$PUBKEY") || fail "signing over mutual TLS"
SIGNATURE=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["signature"])' "$answer") || fail "no signature in $answer"
echo "container: signature $SIGNATURE"
[ -z "$EXPECTED" ] || [ "$SIGNATURE" = "$EXPECTED" ] || fail "signature differs from the vector's $EXPECTED"
podman healthcheck run "$NAME" >/dev/null || fail "the image's HEALTHCHECK failed"
echo "container: HEALTHCHECK healthy"
SIZE=$(podman image inspect -f '{{.Size}}' "$IMAGE")
echo "container-test: OK: image $(( SIZE / 1024 / 1024 )) MiB, user $(podman image inspect -f '{{.Config.User}}' "$IMAGE"), read-only root, signed over mTLS"
