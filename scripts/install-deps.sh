#!/usr/bin/env bash
# Installs the system packages the signer and its tests need on a fresh Debian machine
# (idempotent; installs only what is missing). Needs root or sudo for apt-get.
set -euo pipefail

need=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v openssl >/dev/null 2>&1 || need+=(openssl)   # PKCS#12 checks (tests/interop.rs)
command -v node >/dev/null 2>&1 || need+=(nodejs)       # Lodestar devnet (tests/interop.rs)
command -v npm >/dev/null 2>&1 || need+=(npm)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
for extra in "$@"; do
  dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done

if [ ${#need[@]} -gt 0 ]; then
  SUDO=()
  [ "$(id -u)" = 0 ] || SUDO=(sudo)
  echo "installing: ${need[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install the Rust toolchain (https://rustup.rs, Rust >= 1.85)" >&2
  exit 1
fi

# py_ecc (pinned, scripts/py-ecc-requirements.txt) in a venv under target/, for
# scripts/verify-deposits.py (tests/dkg.rs checks deposits with code that is not ours). Cached:
# reinstalled only when the requirements change; the stamp is written last.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY_ECC_VENV="$ROOT/target/py-ecc/venv"
if ! cmp -s "$ROOT/scripts/py-ecc-requirements.txt" "$PY_ECC_VENV/requirements.stamp" ||
  ! "$PY_ECC_VENV/bin/python" -c 'import py_ecc.bls' 2>/dev/null; then
  echo "installing py_ecc into $PY_ECC_VENV"
  rm -rf "$PY_ECC_VENV"
  mkdir -p "$(dirname "$PY_ECC_VENV")"
  python3 -m venv "$PY_ECC_VENV"
  "$PY_ECC_VENV/bin/pip" install --quiet --disable-pip-version-check \
    -r "$ROOT/scripts/py-ecc-requirements.txt"
  cp "$ROOT/scripts/py-ecc-requirements.txt" "$PY_ECC_VENV/requirements.stamp"
fi
