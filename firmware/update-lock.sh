#!/usr/bin/env bash
# Refreshes firmware/packages.lock from Debian's mirror on purpose (after a point release or a
# security update, when firmware/debian-tree.sh refuses because the mirror's versions moved):
# debootstrap afresh, write the versions it installed to firmware/packages.lock, cache that tree
# under its new key. Review `git diff firmware/packages.lock` (docs/appliance.md) and commit it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KEYSTAKE_LOCK_UPDATE=1 "$HERE/debian-tree.sh" >/dev/null
git -C "$HERE/.." diff --stat -- firmware/packages.lock
