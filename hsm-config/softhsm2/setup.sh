#!/usr/bin/env bash
# Prepare a SoftHSM2 software token directory for keystake-signer (development, CI, demos).
#
# Usage:   hsm-config/softhsm2/setup.sh DIR
#          eval "$(hsm-config/softhsm2/setup.sh /var/lib/keystake/softhsm)"
#
# What it does (non-interactive, idempotent):
#   1. installs the `softhsm2` package with apt-get if the module is missing (needs root; on other
#      distributions install SoftHSM2 2.6+ yourself and set SOFTHSM2_MODULE);
#   2. creates DIR/tokens (mode 0700) and writes DIR/softhsm2.conf from softhsm2.conf.template
#      (an existing softhsm2.conf is rewritten; existing tokens are left alone);
#   3. prints, on stdout, shell lines exporting SOFTHSM2_CONF and SOFTHSM2_MODULE.
#
# It does not create a token or a key: `keystake-signer init` does that through PKCS#11 (token
# label, SO PIN and user PIN from files or environment), so the same command works on a real HSM.
# Progress messages go to stderr, so stdout can be eval'ed.
set -euo pipefail

die() { echo "setup-softhsm: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 DIR"
target_dir=$1
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
template="$script_dir/softhsm2.conf.template"
[[ -r $template ]] || die "template not found: $template"

find_module() {
    local candidate
    for candidate in \
        "${SOFTHSM2_MODULE:-}" \
        /usr/lib/softhsm/libsofthsm2.so \
        /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/lib64/pkcs11/libsofthsm2.so \
        /usr/local/lib/softhsm/libsofthsm2.so; do
        if [[ -n $candidate && -e $candidate ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if ! module=$(find_module); then
    command -v apt-get >/dev/null 2>&1 \
        || die "SoftHSM2 is not installed and apt-get is not available: install SoftHSM2 and set SOFTHSM2_MODULE"
    [[ $(id -u) -eq 0 ]] || die "SoftHSM2 is not installed: run as root (apt-get install -y softhsm2)"
    echo "setup-softhsm: installing softhsm2" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq softhsm2 >&2
    module=$(find_module) || die "softhsm2 installed but libsofthsm2.so not found"
fi

mkdir -p "$target_dir/tokens"
target_dir=$(cd "$target_dir" && pwd)
chmod 0700 "$target_dir/tokens"
[[ $target_dir != *$'\n'* ]] || die "directory path contains a newline"

template_text=$(<"$template")
printf '%s\n' "${template_text//@TOKEN_DIR@/$target_dir/tokens}" > "$target_dir/softhsm2.conf.tmp"
mv "$target_dir/softhsm2.conf.tmp" "$target_dir/softhsm2.conf"
echo "setup-softhsm: wrote $target_dir/softhsm2.conf (tokens in $target_dir/tokens)" >&2

printf 'export SOFTHSM2_CONF=%q\n' "$target_dir/softhsm2.conf"
printf 'export SOFTHSM2_MODULE=%q\n' "$module"
