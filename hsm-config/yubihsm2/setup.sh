#!/usr/bin/env bash
# Least-capability objects for keystake-signer on a YubiHSM2, with Yubico's yubihsm-shell.
#
# NOT RUN HERE: CI has no YubiHSM2 (the signer's tests use the yubihsm crate's mock device), so
# these commands are written from Yubico's yubihsm-shell documentation; check them against
# `yubihsm-shell --help` for your version, and run them from an administrator's machine.
#
# Usage:   ADMIN_KEY_ID=0x0001 ADMIN_PASSWORD_FILE=admin.pass \
#          SIGNER_PASSWORD_FILE=yubihsm.password hsm-config/yubihsm2/setup.sh
#
# Creates (idempotently refuses to overwrite: yubihsm-shell fails on an existing id):
#   0x0064  HMAC-SHA256 sealing key        capability sign-hmac only, domain 1, generated on device
#   0x0103  HMAC-SHA256 enrolment key      capability sign-hmac only: the P-256 enrolment scalar
#           that opens share packages is derived from it per package (docs/security.md)
#   0x0101  ecp256 TLS key                 capability sign-ecdsa only, not exportable under wrap
#   0x0102  ecp256 identity key            capability sign-ecdsa only (DKG broadcasts, audit head)
#   0x0002  the signer's authentication key: sign-hmac + sign-ecdsa, delegated nothing,
#           domain 1 — it cannot generate, delete, export or import anything. The signer checks
#           these capabilities and the domain at every start and names what is missing.
# The signer's `init` then finds and checks these keys and creates nothing; `enrolment show`
# prints the enrolment public key derived from 0x0103.
set -euo pipefail

die() { echo "yubihsm2-setup: $*" >&2; exit 1; }
command -v yubihsm-shell >/dev/null || die "yubihsm-shell not found (install yubihsm2-sdk)"
: "${ADMIN_KEY_ID:?set ADMIN_KEY_ID (an administrator authentication key)}"
: "${ADMIN_PASSWORD_FILE:?set ADMIN_PASSWORD_FILE}"
: "${SIGNER_PASSWORD_FILE:?set SIGNER_PASSWORD_FILE (the password_file of the signer)}"
CONNECTOR=${CONNECTOR:-http://127.0.0.1:12345}
DOMAIN=${DOMAIN:-1}

[[ -r $ADMIN_PASSWORD_FILE ]] || die "cannot read $ADMIN_PASSWORD_FILE"
if [[ ! -e $SIGNER_PASSWORD_FILE ]]; then
    umask 077
    head -c 24 /dev/urandom | base64 | tr -d '\n' >"$SIGNER_PASSWORD_FILE"
    echo "yubihsm2-setup: wrote a new signer password to $SIGNER_PASSWORD_FILE" >&2
fi
[[ $(stat -c %a "$SIGNER_PASSWORD_FILE") == 600 ]] || die "$SIGNER_PASSWORD_FILE must be mode 0600"

# Passwords are read from files by the shell wrapper below, never typed on this command line.
shell() {
    yubihsm-shell --connector "$CONNECTOR" --authkey "$ADMIN_KEY_ID" \
        --password "$(cat "$ADMIN_PASSWORD_FILE")" "$@"
}

shell -a generate-hmac-key -i 0x0064 -l keystake-sealing-key -d "$DOMAIN" \
    -c sign-hmac -A hmac-sha256
shell -a generate-hmac-key -i 0x0103 -l keystake-enrolment-key -d "$DOMAIN" \
    -c sign-hmac -A hmac-sha256
shell -a generate-asymmetric-key -i 0x0101 -l keystake-tls-key -d "$DOMAIN" \
    -c sign-ecdsa -A ecp256
shell -a generate-asymmetric-key -i 0x0102 -l keystake-identity-key -d "$DOMAIN" \
    -c sign-ecdsa -A ecp256
shell -a put-authentication-key -i 0x0002 -l keystake-signer -d "$DOMAIN" \
    -c sign-hmac,sign-ecdsa --delegated none \
    --new-password "$(cat "$SIGNER_PASSWORD_FILE")"

echo "yubihsm2-setup: done. Configure [hsm] backend = \"yubihsm\", auth_key_id = 0x0002," >&2
echo "  key_id = 0x0064, password_file = $SIGNER_PASSWORD_FILE; then keystake-signer init + hsm check" >&2
