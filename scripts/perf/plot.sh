#!/usr/bin/env bash
# Installs matplotlib into a private venv (target/perf-venv) and runs plot.py with the given args.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=target/perf-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import matplotlib' 2>/dev/null || "$VENV/bin/pip" install -q 'matplotlib==3.9.2'
exec "$VENV/bin/python" scripts/perf/plot.py "$@"
