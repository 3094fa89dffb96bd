#!/bin/sh
# First-boot provisioning of the appliance (keystake-provision.service, as root).
#
# Reads the provisioning volume (a disk labelled KSPROV, vfat or ext4):
#   signer.toml                       the signer configuration (paths under /var/lib/keystake)
#   certs/ca.pem                      the CA client certificates must chain to
#   certs/server.pem, certs/server.key  the appliance's TLS certificate and key
#   policy.toml                       the authorization policy (serve refuses to start without one
#                                     unless signer.toml sets allow_any_client = true)
#   keystores/NAME.json + NAME.pass   EIP-2335 keystores to import, with their passwords
# and then, as the unprivileged keystake user: `keystake-signer init` (SoftHSM2 token, sealing
# key, random PINs, store), `keys import` of each keystore (sealed by the HSM). Finally it wipes
# the secrets (server key, keystores, passwords) from the provisioning volume and from the data
# partition's staging copy, and writes the marker that later boots check.
#
# Refuses (the signer then stays stopped): no provisioning volume, no signer.toml or certificates,
# a keystore without its password file, any failing step. Nothing is marked provisioned then, so
# the next boot tries again.
set -eu
DATA=/var/lib/keystake
SRC=/run/keystake-provision
SIGNER=/usr/local/bin/keystake-signer
as_signer() { setpriv --reuid=keystake --regid=keystake --init-groups --no-new-privs -- "$@"; }
say() { echo "keystake-provision: $*"; }

DEV=
for _ in $(seq 1 100); do
  DEV=$(blkid -L KSPROV 2>/dev/null || true)
  [ -n "$DEV" ] && break
  sleep 0.1
done
[ -n "$DEV" ] || { say "no provisioning volume (label KSPROV); the signer stays stopped"; exit 1; }
mkdir -p "$SRC"
mount -o rw,nodev,nosuid,noexec "$DEV" "$SRC"
trap 'umount "$SRC" 2>/dev/null || true' EXIT
for f in signer.toml certs/ca.pem certs/server.pem certs/server.key; do
  [ -f "$SRC/$f" ] || { say "missing $f on the provisioning volume"; exit 1; }
done

put() { install -m 0600 -o keystake -g keystake "$1" "$2"; }
install -d -m 0700 -o keystake -g keystake "$DATA/config" "$DATA/config/certs" "$DATA/staging" "$DATA/store" "$DATA/token"
put "$SRC/signer.toml" "$DATA/config/signer.toml"
put "$SRC/certs/ca.pem" "$DATA/config/certs/ca.pem"
put "$SRC/certs/server.pem" "$DATA/config/certs/server.pem"
put "$SRC/certs/server.key" "$DATA/config/certs/server.key"
[ -f "$SRC/policy.toml" ] && put "$SRC/policy.toml" "$DATA/config/policy.toml"
[ -f "$SRC/certs/crl.pem" ] && put "$SRC/certs/crl.pem" "$DATA/config/certs/crl.pem"

as_signer "$SIGNER" init --config "$DATA/config/signer.toml"
say "initialised the HSM token and the store"

imported=0
if [ -d "$SRC/keystores" ]; then
  for keystore in "$SRC"/keystores/*.json; do
    [ -e "$keystore" ] || continue
    name=$(basename "$keystore" .json)
    [ -f "$SRC/keystores/$name.pass" ] || { say "keystore $name has no $name.pass"; exit 1; }
    put "$keystore" "$DATA/staging/$name.json"
    put "$SRC/keystores/$name.pass" "$DATA/staging/$name.pass"
    as_signer "$SIGNER" keys import --config "$DATA/config/signer.toml" \
      --keystore "$DATA/staging/$name.json" --password-file "$DATA/staging/$name.pass"
    imported=$((imported + 1))
  done
fi
say "imported and sealed $imported keystore(s)"

# Wipe: overwrite, then delete. On flash or a copy-on-write host file the old blocks may survive;
# the provisioning volume is to be destroyed after first boot (docs/appliance.md).
wipe() { [ -f "$1" ] && { shred -z -n 1 "$1"; rm -f "$1"; }; }
for f in "$DATA"/staging/* "$SRC"/keystores/* "$SRC/certs/server.key"; do
  [ -e "$f" ] && wipe "$f"
done
rmdir "$DATA/staging" 2>/dev/null || true
sync
install -m 0600 -o keystake -g keystake /dev/null "$DATA/.provisioned"
say "provisioned; provisioning secrets wiped"
