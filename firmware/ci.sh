#!/usr/bin/env bash
# The appliance steps of the test command (scripts/test.sh always runs this, unless a developer
# sets KEYSTAKE_SKIP_APPLIANCE_TEST=1 outside CI): the disk image built twice and compared byte for byte, a qemu TCG
# boot that provisions, signs a test vector over mutual TLS and boots again without the
# provisioning volume, then the container (hadolint runs earlier in test.sh).
#
# The Debian tree and the downloaded .debs are cached under target/appliance (firmware/debian-tree.sh,
# keyed by the package list, the version lock, suite and mirror): a checkout whose target/ is
# warm skips debootstrap; an empty target/ pays one debootstrap (docs/appliance.md has the cost).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
OUT=target/appliance
echo "== appliance image (firmware/build-image.sh)"
./firmware/build-image.sh "$OUT/out-a"
T_BUILD=$(( $(date +%s) - T0 ))
echo "== appliance image again, for reproducibility"
T1=$(date +%s)
./firmware/build-image.sh "$OUT/out-b" | tail -n 1
if ! cmp -s "$OUT/out-a/SHA256SUMS" "$OUT/out-b/SHA256SUMS"; then
  diff "$OUT/out-a/SHA256SUMS" "$OUT/out-b/SHA256SUMS" >&2 || true
  echo "appliance: two builds from the same inputs differ" >&2
  exit 1
fi
echo "reproducible: two builds give sha256 $(grep ' keystake-appliance.img$' "$OUT/out-a/SHA256SUMS" | cut -d' ' -f1)"
rm -rf "$OUT/out-b"
T_REBUILD=$(( $(date +%s) - T1 ))
T2=$(date +%s)

echo "== boot test (firmware/boot-test.sh, qemu TCG)"
VECTOR=../shared/vectors/web3signer/attestation__key0.json
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
read -r SECRET PUBKEY EXPECTED < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["secret_key"], c["pubkey"], c["signature"])' "$VECTOR")
python3 -c 'import json,sys; json.dump(json.load(open(sys.argv[1]))["request"], open(sys.argv[2], "w"))' "$VECTOR" "$W/request.json"
echo "boot test password" > "$W/key0.pass"
python3 firmware/make-keystore.py "$SECRET" "$PUBKEY" "boot test password" "$W/key0.json"
./firmware/boot-test.sh "$OUT/out-a" --keystore "$W/key0.json" --password-file "$W/key0.pass" \
  --sign "$PUBKEY=$W/request.json" | tee "$W/boot.log"
grep -qx "signature $EXPECTED" "$W/boot.log" || { echo "appliance: the signature is not the vector's $EXPECTED" >&2; exit 1; }
T_BOOT=$(( $(date +%s) - T2 ))
T3=$(date +%s)

echo "== container (firmware/container-test.sh, podman)"
./firmware/container-test.sh
echo "appliance: image ${T_BUILD} s, second image ${T_REBUILD} s, boot test ${T_BOOT} s, container $(( $(date +%s) - T3 )) s, all appliance steps $(( $(date +%s) - T0 )) s"
