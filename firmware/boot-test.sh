#!/usr/bin/env bash
# Boots the appliance image under qemu (TCG: no KVM needed) with a provisioning volume made
# here, and checks it as an operator would:
#
#   firmware/boot-test.sh OUT_DIR [--keystore F --password-file F]… [--sign PUBKEY=REQUEST.json]… [--csr-round]
#
# OUT_DIR is what firmware/build-image.sh wrote. The provisioning volume (vfat, label KSPROV,
# made with mkfs.vfat + mtools, no mounts) carries signer.toml (no server key file), the demo CA
# made by `keystake-signer certs generate` as the client CA and as the issuing CA with which first
# boot certifies the TLS key it generates inside the token (the CA key is wiped afterwards), the
# server names (127.0.0.1, localhost), and the keystores given (none given: one throw-away demo
# key). The guest's mTLS port is forwarded to 127.0.0.1.
#
# --csr-round: no issuing CA on the volume instead; first boot must write server.csr and stop,
# the host signs it (openssl, as an operator's CA would), and the boot after that installs the
# certificate and serves (the two-step round for a CA whose key never travels).
#
# Prints, one line each: `provisioned`, `serving`, `signature 0x…` per --sign (signed over
# mutual TLS from the host with curl and the demo client certificate), the guest's status line,
# `wiped`, and last `boot-test: OK: …` with the boot time and the image size. Exit 0 only when
# all of it held: / mounted read-only, the data partition nodev,nosuid,noexec, only the signer's
# ports listening, the firewall up, the provisioning secrets gone from the volume.
set -euo pipefail
OUT=${1:?usage: boot-test.sh OUT_DIR [--keystore F --password-file F]… [--sign PUBKEY=REQUEST.json]…}
shift
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
KEYSTORES=() PASSWORDS=() SIGNS=() CSR_ROUND=0
while [ $# -gt 0 ]; do
  case $1 in
    --keystore) KEYSTORES+=("${2:?--keystore needs a file}"); shift 2 ;;
    --password-file) PASSWORDS+=("${2:?--password-file needs a file}"); shift 2 ;;
    --sign) SIGNS+=("${2:?--sign needs PUBKEY=REQUEST.json}"); shift 2 ;;
    --csr-round) CSR_ROUND=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#KEYSTORES[@]} = ${#PASSWORDS[@]} ] || { echo "each --keystore needs its --password-file" >&2; exit 2; }
for f in "$OUT/keystake-appliance.img" "$OUT/vmlinuz" "$OUT/initrd.img" "$OUT/cmdline"; do
  [ -f "$f" ] || { echo "no $f: run firmware/build-image.sh $OUT first" >&2; exit 1; }
done
"$REPO/scripts/install-deps.sh" qemu-system-x86 mtools dosfstools curl
BIN=${BIN:-$REPO/target/release/keystake-signer}
[ -x "$BIN" ] || BIN=$REPO/target/debug/keystake-signer
BOOT_TIMEOUT=${BOOT_TIMEOUT:-600}

W=$(mktemp -d -p "${TMPDIR:-/tmp}" keystake-boot.XXXXXX)
QEMU_PID=
cleanup() {
  [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
fail() {
  echo "boot-test: FAILED: $*" >&2
  echo "--- serial console (last 60 lines)" >&2
  tail -n 60 "$W/serial.log" >&2 2>/dev/null || true
  exit 1
}

# Demo PKI: the appliance gets the CA certificate (clients chain to it) and, once, the CA key to
# issue its own server certificate; the demo server.key is never used (the key is the token's).
"$BIN" certs generate --out "$W/pki" --client boot-test --server-name 127.0.0.1 --server-name localhost >/dev/null
if [ ${#KEYSTORES[@]} = 0 ]; then
  # A throw-away demo key: 32 random bytes below the group order (top byte < 0x73).
  secret=$(printf '%02x' $(( $(od -An -N1 -tu1 /dev/urandom) % 0x70 )))$(od -An -N31 -tx1 /dev/urandom | tr -d ' \n')
  echo "demo password" > "$W/demo.pass"
  python3 "$HERE/make-keystore.py" "$secret" "" "demo password" "$W/demo.json"
  KEYSTORES=("$W/demo.json") PASSWORDS=("$W/demo.pass")
fi

cat > "$W/signer.toml" <<'EOF'
# Written by firmware/boot-test.sh; installed by first-boot provisioning.
data_dir = "/var/lib/keystake/store"
listen = "0.0.0.0:9000"
network = "mainnet"
metrics_listen = "0.0.0.0:9464"
policy_file = "/var/lib/keystake/config/policy.toml"

[tls]
ca_cert = "/var/lib/keystake/config/certs/ca.pem"
server_cert = "/var/lib/keystake/config/certs/server.pem"

[hsm]
backend = "pkcs11"
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "keystake"
user_pin_file = "/var/lib/keystake/token/user.pin"
so_pin_file = "/var/lib/keystake/token/so.pin"
softhsm2_conf = "/var/lib/keystake/token/softhsm2.conf"

[keymanager]
token_file = "/var/lib/keystake/store/keymanager.token"
EOF

# The provisioning volume: vfat, built as a file with mtools.
PROV=$W/provision.img
mkfs.vfat -C -n KSPROV -i 4b535056 "$PROV" 8192 >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$PROV" ::certs ::keystores ::issuing-ca
# The demo client may do everything with every key (docs/authorization.md).
printf '[[client]]\ncn = "boot-test"\n[[client.grant]]\nkeys = "all"\noperations = ["all"]\n' > "$W/policy.toml"
mcopy -i "$PROV" "$W/signer.toml" ::signer.toml
mcopy -i "$PROV" "$W/policy.toml" ::policy.toml
mcopy -i "$PROV" "$W/pki/ca.pem" ::certs/
printf '127.0.0.1\nlocalhost\n' > "$W/server-names"
mcopy -i "$PROV" "$W/server-names" ::server-names
[ "$CSR_ROUND" = 1 ] || mcopy -i "$PROV" "$W/pki/ca.pem" "$W/pki/ca.key" ::issuing-ca/
for i in "${!KEYSTORES[@]}"; do
  mcopy -i "$PROV" "${KEYSTORES[$i]}" "::keystores/key$i.json"
  mcopy -i "$PROV" "${PASSWORDS[$i]}" "::keystores/key$i.pass"
done

# A scratch copy of the image: the data partition is written at first boot.
cp --sparse=always "$OUT/keystake-appliance.img" "$W/disk.img"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port) METRICS_PORT=$(free_port)
# boot SERIAL_LOG [extra qemu args]: start the guest in the background (QEMU_PID).
boot() {
  local serial=$1; shift
  rm -f "$W/qmp.sock"
  qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024 -display none -no-reboot \
    -kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.img" -append "$(cat "$OUT/cmdline")" \
    -drive "file=$W/disk.img,format=raw,if=virtio" "$@" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:9000,hostfwd=tcp:127.0.0.1:$METRICS_PORT-:9464" \
    -device virtio-net-pci,netdev=n0 \
    -serial "file:$serial" -monitor none -qmp "unix:$W/qmp.sock,server=on,wait=off" &
  QEMU_PID=$!
}
# Power off through ACPI (QMP), as a host would, and wait for qemu to exit.
power_off() {
  python3 - "$W/qmp.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()
for command in ("qmp_capabilities", "system_powerdown"):
    f.write(json.dumps({"execute": command}) + "\n"); f.flush(); f.readline()
PY
  for _ in $(seq 1 120); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 1; done
  if kill -0 "$QEMU_PID" 2>/dev/null; then fail "the guest did not power off within 120 s"; fi
  wait "$QEMU_PID" || true
  QEMU_PID=
}
CURL=(curl -sS --max-time 20 --cacert "$W/pki/ca.pem" --cert "$W/pki/boot-test.pem" --key "$W/pki/boot-test.key")
BASE=https://127.0.0.1:$PORT
# Wait until /upcheck answers 200 over mutual TLS; prints the seconds it took.
wait_serving() {
  local t0=$1
  until [ "$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$BASE/upcheck" 2>/dev/null)" = 200 ]; do
    kill -0 "$QEMU_PID" 2>/dev/null || fail "qemu exited before the signer served"
    [ $(( $(date +%s) - t0 )) -lt "$BOOT_TIMEOUT" ] || fail "not serving after ${BOOT_TIMEOUT} s"
    sleep 2
  done
  echo $(( $(date +%s) - t0 ))
}

# SHA-256 (16 hex digits) of the public key in the certificate the guest serves.
served_key() {
  openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$W/pki/ca.pem" -cert "$W/pki/boot-test.pem" \
    -key "$W/pki/boot-test.key" -verify_return_error </dev/null 2>/dev/null \
    | openssl x509 -pubkey -noout | sha256sum | cut -c1-16
}
DEMO_FILE_KEY=$(openssl x509 -in "$W/pki/server.pem" -pubkey -noout | sha256sum | cut -c1-16)

if [ "$CSR_ROUND" = 1 ]; then
  # (b) No issuing CA: first boot writes server.csr to the volume and stops without serving.
  T_CSR=$(date +%s)
  boot "$W/serial0.log" -drive "file=$PROV,format=raw,if=virtio"
  until grep -aqs 'keystake-provision: .*wrote server.csr' "$W/serial0.log"; do
    kill -0 "$QEMU_PID" 2>/dev/null || { cp "$W/serial0.log" "$W/serial.log"; fail "qemu exited before the CSR"; }
    [ $(( $(date +%s) - T_CSR )) -lt "$BOOT_TIMEOUT" ] || { cp "$W/serial0.log" "$W/serial.log"; fail "no server.csr after ${BOOT_TIMEOUT} s"; }
    sleep 2
  done
  if "${CURL[@]}" -o /dev/null "$BASE/upcheck" 2>/dev/null; then fail "the signer serves without a certificate"; fi
  power_off
  grep -aq 'keystake-provision: provisioned' "$W/serial0.log" && fail "provisioned without a server certificate"
  mcopy -i "$PROV" ::server.csr "$W/server.csr"
  # The operator's CA signs the request (here openssl with the demo CA; its key stays here).
  openssl x509 -req -in "$W/server.csr" -CA "$W/pki/ca.pem" -CAkey "$W/pki/ca.key" -CAcreateserial \
    -copy_extensions copy -days 30 -out "$W/server.crt" 2>/dev/null
  mcopy -i "$PROV" "$W/server.crt" ::certs/server.crt
  echo "csr round: server.csr written by the guest in $(( $(date +%s) - T_CSR )) s, signed on the host, returned as certs/server.crt"
fi

T0=$(date +%s)
boot "$W/serial.log" -drive "file=$PROV,format=raw,if=virtio"
BOOT_S=$(wait_serving "$T0")
grep -q "keystake-provision: provisioned" "$W/serial.log" || fail "no provisioning message on the console"
if [ "$CSR_ROUND" = 1 ]; then
  grep -aq 'keystake-provision: installed certs/server.crt' "$W/serial.log" || fail "certs/server.crt was not installed"
else
  grep -aq "keystake-provision: issued the server certificate to the token's TLS key" "$W/serial.log" \
    || fail "first boot did not issue the server certificate to the token's key"
fi
echo "provisioned"
echo "serving on $BASE after $BOOT_S s"
TLS_KEY=$(served_key)
[ -n "$TLS_KEY" ] && [ "$TLS_KEY" != "$(printf '' | sha256sum | cut -c1-16)" ] || fail "could not read the served certificate"
[ "$TLS_KEY" != "$DEMO_FILE_KEY" ] || fail "the guest serves the demo PKI's file key"
echo "tls key $TLS_KEY (generated in the token at first boot)"

for request in "${SIGNS[@]}"; do
  pubkey=${request%%=*} file=${request#*=}
  answer=$("${CURL[@]}" -X POST -H 'content-type: application/json' -H 'accept: application/json' \
    --data-binary "@$file" -w '\n%{http_code}' "$BASE/api/v1/eth2/sign/$pubkey") || fail "signing request $file: curl failed"
  status=${answer##*$'\n'} body=${answer%$'\n'*}
  [ "$status" = 200 ] || fail "signing $file with $pubkey: HTTP $status $body"
  signature=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["signature"])' "$body")
  echo "signature $signature"
done

# The guest's own view (keystake-status.service on the serial console).
for _ in $(seq 1 60); do grep -aq 'KEYSTAKE-STATUS' "$W/serial.log" && break; sleep 1; done
STATUS=$(grep -ao 'KEYSTAKE-STATUS.*' "$W/serial.log" | tail -n 1 | tr -d '\r') || fail "no status line on the console"
echo "$STATUS"
case " $STATUS " in *" root=ro,"*|*" root=ro "*) ;; *) fail "/ is not mounted read-only" ;; esac
for option in nodev nosuid noexec; do
  case "$STATUS" in *"data="*"$option"*) ;; *) fail "the data partition lacks $option" ;; esac
done
case "$STATUS" in *" listening=9000,9464 "*) ;; *) fail "unexpected listening ports" ;; esac
case "$STATUS" in *" nftables=active "*) ;; *) fail "the firewall is not active" ;; esac
case "$STATUS" in *" keyfiles=0 "*|*" keyfiles=0") ;; *) fail "a private key file is on the data partition" ;; esac

power_off

# The provisioning secrets are gone from the volume (what is left: config and certificates).
left=$(mdir -i "$PROV" -b ::keystores 2>/dev/null | grep -c . || true)
[ "$left" = 0 ] || fail "$left file(s) left in keystores/ on the provisioning volume"
if mdir -i "$PROV" -b ::issuing-ca 2>/dev/null | grep -q 'ca.key'; then fail "the issuing CA key was left on the provisioning volume"; fi
echo "wiped"

# Second boot, without the provisioning volume: the appliance serves from its data partition.
if [ "${BOOT_TWICE:-1}" = 1 ]; then
  T1=$(date +%s)
  boot "$W/serial2.log"
  SECOND_S=$(wait_serving "$T1")
  keys=$("${CURL[@]}" "$BASE/api/v1/eth2/publicKeys" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$keys" = "${#KEYSTORES[@]}" ] || fail "second boot serves $keys key(s), not ${#KEYSTORES[@]}"
  if grep -aq 'keystake-provision:' "$W/serial2.log"; then fail "the second boot provisioned again"; fi
  [ "$(served_key)" = "$TLS_KEY" ] || fail "the second boot serves another TLS key"
  echo "second boot: serving $keys key(s) after $SECOND_S s with the same token TLS key, no provisioning"
  power_off
fi
IMG_MB=$(( $(stat -c %s "$OUT/keystake-appliance.img") / 1024 / 1024 ))
echo "boot-test: OK: booted to serving in ${BOOT_S} s (qemu TCG), ${#SIGNS[@]} signature(s), image ${IMG_MB} MiB"
