#!/usr/bin/env bash
# Builds the minimal Debian base the Dockerfile starts FROM, with debootstrap (from Debian's
# package mirror; no container registry needed), and imports it into podman.
#   usage: firmware/build-base.sh [TAG]   (default localhost/keystake-base:bookworm)
set -euo pipefail
TAG=${1:-localhost/keystake-base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null && command -v podman >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap podman
}
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
tar -C "$ROOT" -c . | podman import - "$TAG"
echo "imported $TAG"
