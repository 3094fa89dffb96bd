#!/usr/bin/env bash
# Prints the path of a tarball of the appliance's Debian tree, making it when it is not cached:
# debootstrap (minbase + firmware/packages.txt) from Debian's mirror, then an initrd with only
# the modules in firmware/initramfs-modules. Cached in KEYSTAKE_APPLIANCE_CACHE (default
# target/appliance), keyed by the package list, the module list, the suite and the mirror; the
# downloaded .debs are kept there too, so a rebuild after a list change downloads only what is new.
# Used by build-image.sh (the disk image) and build-base.sh (the container base).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${KEYSTAKE_APPLIANCE_CACHE:-$REPO/target/appliance}
export LC_ALL=C TZ=UTC
"$REPO/scripts/install-deps.sh" debootstrap >&2
PACKAGES=$(grep -v '^#' "$HERE/packages.txt" | paste -sd, -)
KEY=$( { cat "$HERE/packages.txt" "$HERE/initramfs-modules"; echo "$SUITE $MIRROR stage1-v1"; } | sha256sum | cut -c1-16)
mkdir -p "$CACHE/debs"
TREE_TAR=$CACHE/rootfs-$SUITE-$KEY.tar
if [ ! -f "$TREE_TAR" ]; then
  echo "== debootstrap $SUITE ($PACKAGES) -> $TREE_TAR" >&2
  STAGE=$(mktemp -d -p "$CACHE" stage1.XXXXXX)
  trap 'rm -rf "$STAGE"' EXIT
  debootstrap --variant=minbase --cache-dir="$(cd "$CACHE/debs" && pwd)" --include="$PACKAGES" \
    "$SUITE" "$STAGE/root" "$MIRROR" >&2
  # An initrd with only the drivers needed to find the root file system (virtio, SATA, NVMe):
  # far smaller than MODULES=most, which matters when qemu TCG decompresses it.
  sed -i 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=gzip/' "$STAGE/root/etc/initramfs-tools/initramfs.conf"
  grep -v '^#' "$HERE/initramfs-modules" > "$STAGE/root/etc/initramfs-tools/modules"
  chroot "$STAGE/root" update-initramfs -u -k all >&2
  rm -rf "$STAGE"/root/var/cache/apt/archives/*.deb "$STAGE"/root/var/lib/apt/lists/*
  tar -C "$STAGE/root" --numeric-owner --xattrs -cf "$TREE_TAR.tmp" .
  mv "$TREE_TAR.tmp" "$TREE_TAR"
fi
echo "$TREE_TAR"
