#!/usr/bin/env bash
# Imports the Debian tree the Dockerfile's builder stage starts FROM into podman, without any
# container registry: the appliance's own debootstrap tree (firmware/debian-tree.sh, cached
# under target/), so the container and the disk image are built from the same packages. Only
# the files the runtime stage collects (the signer, the SoftHSM2 module, their libraries) reach
# the final image, so the base's size does not matter there.
#   usage: firmware/build-base.sh [TAG]   (default localhost/keystake-base:bookworm)
# Skips the import when TAG already holds the same tree (label keystake.tree).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
TAG=${1:-localhost/keystake-base:bookworm}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/podman/containers.conf}
"$REPO/scripts/install-deps.sh" podman runc
TREE_TAR=$("$HERE/debian-tree.sh")
KEY=$(basename "$TREE_TAR" .tar)
if podman image exists "$TAG" \
  && [ "$(podman image inspect --format '{{index .Labels "keystake.tree"}}' "$TAG")" = "$KEY" ]; then
  echo "base $TAG is current ($KEY)"
  exit 0
fi
podman import --quiet --change "LABEL keystake.tree=$KEY" "$TREE_TAR" "$TAG" >/dev/null
echo "imported $TAG ($KEY)"
