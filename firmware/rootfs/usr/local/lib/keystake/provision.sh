#!/bin/sh
# First-boot provisioning of the appliance (keystake-provision.service, as root).
#
# Reads the provisioning volume (a disk labelled KSPROV, vfat or ext4):
#   signer.toml                       the signer configuration (paths under /var/lib/keystake);
#                                     it must not name a [tls] server_key: the TLS key is the one
#                                     `init` generates inside the HSM token
#   certs/ca.pem                      the CA client certificates must chain to
#   server-names                      names clients use to reach the appliance (DNS or IP), one
#                                     a line: the server certificate's SANs
#   issuing-ca/ca.pem, ca.key         (a) a CA that issues the server certificate for the token's
#                                     TLS key, used once; its key is wiped with the other secrets
#   certs/server.crt                  (b) or: the certificate an operator's CA issued for the
#                                     server.csr an earlier first boot wrote (installed only if
#                                     it certifies the token's key)
#   policy.toml                       the authorization policy (serve refuses to start without one
#                                     unless signer.toml sets allow_any_client = true)
#   keystores/NAME.json + NAME.pass   EIP-2335 keystores to import, with their passwords
# and then, as the unprivileged keystake user: `keystake-signer init` (SoftHSM2 token with the
# sealing, enrolment and TLS keys, random PINs, store), the server certificate for the token's
# TLS key — (a) `certs generate --ca-dir --config` with the issuing CA, or (b) `certs install` of
# certs/server.crt, or, with neither, `certs csr`: server.csr is written to the volume and
# provisioning stops (the signer stays stopped; return the volume with certs/server.crt and boot
# again) — then `keys import` of each keystore (sealed by the HSM). Finally it wipes the secrets
# (issuing CA key, keystores, passwords) from the provisioning volume and the data partition's
# staging copies, and writes the marker that later boots check. No private key file exists on
# the appliance at any point.
#
# Refuses (the signer then stays stopped): no provisioning volume, no signer.toml or CA, a
# signer.toml naming a server key file or a certs/server.key on the volume, no server-names, a
# certificate not for the token's key, a keystore without its password file, any failing step.
# Nothing is marked provisioned then, so the next boot tries again (`init` keeps what exists:
# the token and its TLS key stay those of the first attempt).
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
# Wipe: overwrite, then delete. On flash or a copy-on-write host file the old blocks may survive;
# the provisioning volume is to be destroyed after first boot (docs/appliance.md).
wipe() { [ -f "$1" ] && { shred -z -n 1 "$1"; rm -f "$1"; }; }
# Whatever happens, no staged secret (issuing CA key, keystore, password) stays on the data
# partition; the volume keeps its copies until provisioning succeeds.
wipe_staging() {
  for f in $(find "$DATA/staging" -type f 2>/dev/null); do wipe "$f"; done
  rm -rf "$DATA/staging"
}
trap 'wipe_staging; umount "$SRC" 2>/dev/null || true' EXIT
for f in signer.toml certs/ca.pem server-names; do
  [ -f "$SRC/$f" ] || { say "missing $f on the provisioning volume"; exit 1; }
done
if grep -Eq '^[[:space:]]*server_key[[:space:]]*=' "$SRC/signer.toml"; then
  say "signer.toml names a [tls] server_key file: the appliance's TLS key is the token's; remove the line"
  exit 1
fi
if [ -e "$SRC/certs/server.key" ]; then
  say "certs/server.key on the provisioning volume: the TLS key is generated in the token, no key file is taken; remove it"
  exit 1
fi
NAMES=
while read -r name _; do
  case $name in ''|'#'*) continue ;; esac
  NAMES="$NAMES --server-name $name"
done < "$SRC/server-names"
[ -n "$NAMES" ] || { say "server-names on the provisioning volume names no server"; exit 1; }

put() { install -m 0600 -o keystake -g keystake "$1" "$2"; }
install -d -m 0700 -o keystake -g keystake "$DATA/config" "$DATA/config/certs" "$DATA/staging" "$DATA/store" "$DATA/token"
put "$SRC/signer.toml" "$DATA/config/signer.toml"
put "$SRC/certs/ca.pem" "$DATA/config/certs/ca.pem"
[ -f "$SRC/policy.toml" ] && put "$SRC/policy.toml" "$DATA/config/policy.toml"
[ -f "$SRC/certs/crl.pem" ] && put "$SRC/certs/crl.pem" "$DATA/config/certs/crl.pem"
CONFIG=$DATA/config/signer.toml

as_signer "$SIGNER" init --config "$CONFIG"
say "initialised the HSM token (sealing, enrolment and TLS keys) and the store"

# The server certificate, for the TLS key inside the token.
# shellcheck disable=SC2086 # NAMES is a list of arguments, split on purpose
if [ -f "$SRC/issuing-ca/ca.pem" ] && [ -f "$SRC/issuing-ca/ca.key" ]; then
  install -d -m 0700 -o keystake -g keystake "$DATA/staging/issuing-ca"
  put "$SRC/issuing-ca/ca.pem" "$DATA/staging/issuing-ca/ca.pem"
  put "$SRC/issuing-ca/ca.key" "$DATA/staging/issuing-ca/ca.key"
  as_signer "$SIGNER" certs generate --ca-dir "$DATA/staging/issuing-ca" --config "$CONFIG" \
    --out "$DATA/staging/issued" $NAMES >/dev/null
  as_signer "$SIGNER" certs install --config "$CONFIG" --cert "$DATA/staging/issued/server.pem" >/dev/null
  say "issued the server certificate to the token's TLS key (issuing CA from the volume)"
elif [ -f "$SRC/certs/server.crt" ]; then
  put "$SRC/certs/server.crt" "$DATA/staging/server.crt"
  as_signer "$SIGNER" certs install --config "$CONFIG" --cert "$DATA/staging/server.crt" >/dev/null \
    || { say "certs/server.crt does not certify the token's TLS key (see server.csr); the signer stays stopped"; exit 1; }
  say "installed certs/server.crt for the token's TLS key"
else
  rm -f "$DATA/staging/server.csr"
  as_signer "$SIGNER" certs csr --config "$CONFIG" $NAMES --out "$DATA/staging/server.csr" >/dev/null
  cp "$DATA/staging/server.csr" "$SRC/server.csr"
  sync
  say "no issuing CA and no certs/server.crt: wrote server.csr to the provisioning volume; have your CA sign it, put the certificate on the volume as certs/server.crt and boot again; the signer stays stopped"
  exit 1
fi

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

# Success: the secrets go from the volume too.
wipe_staging
for f in $(find "$SRC/keystores" -type f 2>/dev/null) "$SRC/issuing-ca/ca.key"; do
  [ -e "$f" ] && wipe "$f"
done
sync
install -m 0600 -o keystake -g keystake /dev/null "$DATA/.provisioned"
say "provisioned; provisioning secrets wiped"
