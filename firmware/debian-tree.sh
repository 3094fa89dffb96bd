#!/usr/bin/env bash
# Prints the path of a tarball of the appliance's Debian tree, making it when it is not cached:
# debootstrap (minbase + firmware/packages.txt) from Debian's mirror, then an initrd with only
# the modules in firmware/initramfs-modules. Cached under target/ (KEYSTAKE_APPLIANCE_CACHE,
# default target/appliance), keyed by the package list, the module list, the version lock
# (firmware/packages.lock), the suite and the mirror; the downloaded .debs are kept there too
# (target/appliance/debs), so a rebuild after a list change downloads only what is new.
# Used by build-image.sh (the disk image) and build-base.sh (the container base).
#
# Pinned versions: every package debootstrap installed must be exactly the version in
# firmware/packages.lock, and no package may be missing from it or added to it; otherwise this
# refuses (naming each package, the locked and the resolved version) and caches nothing. A tree
# in the cache was checked against the very lock its key names, so every image built from it is
# built from the locked versions. After a Debian point release or security update the mirror
# serves newer versions and this refuses until the lock is refreshed on purpose:
#   firmware/update-lock.sh      (KEYSTAKE_LOCK_UPDATE=1 firmware/debian-tree.sh: debootstrap,
#                                 write firmware/packages.lock from what it installed)
# then review `git diff firmware/packages.lock` and commit it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${KEYSTAKE_APPLIANCE_CACHE:-$REPO/target/appliance}
LOCK=$HERE/packages.lock
# The tree's own timestamp: the initrd is made with it (mkinitramfs clamps and uses cpio
# --reproducible then) and no file of the tree is newer, so two debootstraps of the same locked
# versions, on different days, give the same tree (build-image.sh clamps to the commit's time).
TREE_EPOCH=1700000000
UPDATE=${KEYSTAKE_LOCK_UPDATE:-0}
export LC_ALL=C TZ=UTC
PACKAGES=$(grep -v '^#' "$HERE/packages.txt" | paste -sd, -)
tree_key() {
  { cat "$HERE/packages.txt" "$HERE/initramfs-modules" "$LOCK"; echo "$SUITE $MIRROR stage1-v3 $TREE_EPOCH"; } | sha256sum | cut -c1-16
}
[ -f "$LOCK" ] || { [ "$UPDATE" = 1 ] && : > "$LOCK"; } || { echo "no $LOCK: make one with firmware/update-lock.sh" >&2; exit 1; }
mkdir -p "$CACHE/debs"
TREE_TAR=$CACHE/rootfs-$SUITE-$(tree_key).tar
if [ -f "$TREE_TAR" ] && [ "$UPDATE" != 1 ]; then
  echo "$TREE_TAR"
  exit 0
fi
"$REPO/scripts/install-deps.sh" debootstrap >&2
echo "== debootstrap $SUITE ($PACKAGES) -> $CACHE" >&2
STAGE=$(mktemp -d -p "$CACHE" stage1.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
T0=$(date +%s)
debootstrap --variant=minbase --cache-dir="$(cd "$CACHE/debs" && pwd)" --include="$PACKAGES" \
  "$SUITE" "$STAGE/root" "$MIRROR" >&2
echo "debootstrap took $(( $(date +%s) - T0 )) s" >&2
chroot "$STAGE/root" dpkg-query -W -f '${Package}=${Version}\n' | sort > "$STAGE/resolved.lock"
if [ "$UPDATE" = 1 ]; then
  if ! cmp -s "$LOCK" "$STAGE/resolved.lock"; then
    diff -u "$LOCK" "$STAGE/resolved.lock" >&2 || true
    cp "$STAGE/resolved.lock" "$LOCK"
    echo "wrote $LOCK ($(wc -l < "$LOCK") packages): review and commit it" >&2
  fi
  TREE_TAR=$CACHE/rootfs-$SUITE-$(tree_key).tar
elif ! cmp -s "$LOCK" "$STAGE/resolved.lock"; then
  echo "refusing: the packages debootstrap resolved from $MIRROR ($SUITE) are not the locked versions:" >&2
  awk -F= 'NR == FNR { locked[$1] = $2; next } { resolved[$1] = $2 }
    END {
      for (p in locked) if (!(p in resolved)) printf "  %s: locked %s, not installed\n", p, locked[p]
      for (p in resolved) {
        if (!(p in locked)) printf "  %s: not in the lock, resolved %s\n", p, resolved[p]
        else if (locked[p] != resolved[p]) printf "  %s: locked %s, resolved %s\n", p, locked[p], resolved[p]
      }
    }' "$LOCK" "$STAGE/resolved.lock" | sort >&2
  echo "(a Debian point release or security update moved them; firmware/update-lock.sh refreshes" >&2
  echo " firmware/packages.lock from the mirror: review the diff and commit it, docs/appliance.md)" >&2
  exit 1
fi
# An initrd with only the drivers needed to find the root file system (virtio, SATA, NVMe):
# far smaller than MODULES=most, which matters when qemu TCG decompresses it.
sed -i 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=gzip/' "$STAGE/root/etc/initramfs-tools/initramfs.conf"
grep -v '^#' "$HERE/initramfs-modules" > "$STAGE/root/etc/initramfs-tools/modules"
chroot "$STAGE/root" env SOURCE_DATE_EPOCH=$TREE_EPOCH update-initramfs -u -k all >&2
rm -rf "$STAGE"/root/var/cache/apt/archives/*.deb "$STAGE"/root/var/lib/apt/lists/* \
  "$STAGE"/root/var/log/* "$STAGE"/root/var/cache/debconf/*-old "$STAGE"/root/boot/initrd.img-*.old-dkms
find "$STAGE/root" -newermt "@$TREE_EPOCH" -print0 | xargs -0r touch -h -d "@$TREE_EPOCH"
tar -C "$STAGE/root" --numeric-owner --xattrs -cf "$TREE_TAR.tmp" .
mv "$TREE_TAR.tmp" "$TREE_TAR"
# One tree per cache: trees of an older list or lock are not used again (≈ 600 MB each).
find "$CACHE" -maxdepth 1 -name "rootfs-$SUITE-*.tar" ! -name "$(basename "$TREE_TAR")" -delete
echo "$TREE_TAR"
