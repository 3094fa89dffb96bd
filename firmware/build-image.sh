#!/usr/bin/env bash
# Builds the appliance disk image from Debian packages only, without loop mounts or root-only
# tricks beyond chroot:
#
#   firmware/build-image.sh OUT_DIR
#
#   OUT_DIR/keystake-appliance.img  raw GPT disk: 1 keystake-root (ext4, mounted read-only),
#                                   2 keystake-data (ext4, empty; nodev,nosuid,noexec at
#                                   /var/lib/keystake: HSM token, store, provisioned config)
#   OUT_DIR/vmlinuz, initrd.img     the image's own kernel and initrd, for direct kernel boot
#   OUT_DIR/cmdline                 the kernel command line (root by PARTUUID, ro)
#   OUT_DIR/packages.lock           every package and version in the root file system
#   OUT_DIR/SHA256SUMS              of all the above
#
# Boot (what firmware/boot-test.sh does, TCG):
#   qemu-system-x86_64 -m 1024 -nographic -kernel OUT_DIR/vmlinuz -initrd OUT_DIR/initrd.img \
#     -append "$(cat OUT_DIR/cmdline)" -drive file=COPY.img,format=raw,if=virtio \
#     -drive file=PROVISION.img,format=raw,if=virtio
#
# Direct kernel boot (no boot loader, no ESP): the kernel and initrd travel beside the image and
# the hypervisor loads them, so the disk carries no boot code to tamper with and no UEFI
# variables are involved. Real hardware would need a unified kernel image on an ESP instead
# (docs/appliance.md).
#
# The image holds no key, certificate, PIN or token: first boot provisions them from a
# provisioning volume (firmware/rootfs/usr/local/lib/keystake/provision.sh).
#
# Reproducibility: SOURCE_DATE_EPOCH (default: the last commit's time) fixes every timestamp,
# file system UUIDs and hash seeds and the GPT GUIDs are derived from it, and the debootstrap
# tree is cached (KEYSTAKE_APPLIANCE_CACHE, default target/appliance) keyed by the package list,
# the version lock, suite and mirror, so two builds from the same inputs give the same bytes
# (firmware/ci.sh checks it). Versions: firmware/debian-tree.sh refuses a tree whose packages are
# not exactly those of firmware/packages.lock, and this script checks the finished root against
# it again (written to OUT_DIR/packages.lock); any difference fails the build
# (firmware/update-lock.sh refreshes the lock on purpose, docs/appliance.md).
set -euo pipefail
OUT=${1:?usage: build-image.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${KEYSTAKE_APPLIANCE_CACHE:-$REPO/target/appliance}
# 1. The release signer (the appliance build: default features, no developer tools). Built before
# the reproducibility variables below are exported: a changed environment makes cargo rebuild.
BIN=${BIN:-}
if [ -z "$BIN" ]; then
  (cd "$REPO" && cargo build --release --locked --bin keystake-signer)
  BIN=$REPO/target/release/keystake-signer
fi
[ -x "$BIN" ] || { echo "no signer binary at $BIN" >&2; exit 1; }

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 1700000000)}
export LC_ALL=C TZ=UTC
# e2fsprogs: superblock and inode times of files it creates itself.
export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
# Sizes (MiB).
DATA_MB=${DATA_MB:-256}
T0=$(date +%s)

"$REPO/scripts/install-deps.sh" fdisk e2fsprogs

# 2. The Debian tree (debootstrap + a small initrd), cached by firmware/debian-tree.sh.
TREE_TAR=$("$HERE/debian-tree.sh")

# 3. The appliance's own files on top, in a scratch tree.
WORK=$(mktemp -d -p "$CACHE" work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
mkdir -p "$ROOT" "$WORK/data"
tar -C "$ROOT" --numeric-owner --xattrs -xf "$TREE_TAR"

# Fixed identifiers, derived from SOURCE_DATE_EPOCH (same inputs, same image).
uuid_of() { echo -n "$SOURCE_DATE_EPOCH-$1" | sha256sum | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-8\4-\5/'; }
ROOT_PART=$(uuid_of root-part) DATA_PART=$(uuid_of data-part) DISK_GUID=$(uuid_of disk)
ROOT_FS=$(uuid_of root-fs) DATA_FS=$(uuid_of data-fs)

install -m 0755 "$BIN" "$ROOT/usr/local/bin/keystake-signer"
cp -a "$HERE/rootfs/." "$ROOT/"
# Owner and mode of our files fixed, whatever the checkout's user and umask were.
(cd "$HERE/rootfs" && find . -mindepth 1 -printf '%y %P\n') | while read -r kind path; do
  chown -h 0:0 "$ROOT/$path"
  if [ "$kind" = d ]; then chmod 0755 "$ROOT/$path"; else chmod 0644 "$ROOT/$path"; fi
done
chmod 0755 "$ROOT/usr/local/lib/keystake/"*.sh
chroot "$ROOT" useradd --system --no-create-home --home-dir /var/lib/keystake --shell /usr/sbin/nologin keystake
KS_UID=$(chroot "$ROOT" id -u keystake) KS_GID=$(chroot "$ROOT" id -g keystake)
# No password anywhere: root is locked, the console only serves recovery (init=/bin/sh).
chroot "$ROOT" passwd -q -l root
# /etc/shadow's "last changed" field is the day each account was made (debootstrap's, passwd's):
# the build's own day unless set, so every entry gets SOURCE_DATE_EPOCH's day.
awk -F: -v day=$(( SOURCE_DATE_EPOCH / 86400 )) 'BEGIN { OFS = ":" } $3 != "" { $3 = day } { print }' \
  "$ROOT/etc/shadow" > "$WORK/shadow" && cat "$WORK/shadow" > "$ROOT/etc/shadow"
sed -i "s/@DATA_PART@/$DATA_PART/; s/@ROOT_PART@/$ROOT_PART/" "$ROOT/etc/fstab"
echo keystake-appliance > "$ROOT/etc/hostname"
# Empty machine-id: systemd makes a transient one on the read-only root at every boot.
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
systemctl --root="$ROOT" --quiet enable systemd-networkd.service nftables.service \
  keystake-provision.service keystake-signer.service keystake-status.service
# Nothing else runs: no apt timers (the root is read-only), no fsck or trim timers.
systemctl --root="$ROOT" --quiet mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer systemd-networkd-wait-online.service 2>/dev/null || true
rm -rf "$ROOT"/var/log/* "$ROOT"/var/cache/* "$ROOT"/tmp/* "$ROOT"/var/tmp/* \
  "$ROOT"/var/lib/apt/lists/* "$ROOT"/etc/ssh "$ROOT"/root/.bash_history
# The mount point of the data partition: empty on the root, owned by the signer's user.
install -d -m 0700 -o "$KS_UID" -g "$KS_GID" "$ROOT/var/lib/keystake"
install -d -m 0700 -o "$KS_UID" -g "$KS_GID" "$WORK/data/store" "$WORK/data/token" "$WORK/data/config"
chown "$KS_UID:$KS_GID" "$WORK/data" && chmod 0700 "$WORK/data"
printf 'root=PARTUUID=%s ro console=ttyS0 quiet loglevel=3 panic=10 no_timer_check\n' "$ROOT_PART" > "$WORK/cmdline"

# Reproducible metadata: every timestamp clamped to SOURCE_DATE_EPOCH, no per-build caches.
rm -f "$ROOT/var/cache/ldconfig/aux-cache" "$ROOT/etc/.pwd.lock" "$ROOT/etc/"*- 2>/dev/null || true
find "$ROOT" "$WORK/data" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
chroot "$ROOT" dpkg-query -W -f '${Package}=${Version}\n' | sort > "$WORK/packages.lock"

mkdir -p "$OUT"
cp -L "$ROOT/vmlinuz" "$OUT/vmlinuz"
cp -L "$ROOT/initrd.img" "$OUT/initrd.img"
# The kernel and initrd are outside the root file system's job at run time; keep them there too
# (the image is self-describing), but /boot is not needed to boot.

# 4. File systems (mkfs.ext4 -d: no mounts) and the GPT disk (sfdisk on a file).
ROOT_MB=$(( $(du -sm --apparent-size "$ROOT" | cut -f1) * 115 / 100 + 64 ))
rm -f "$WORK/root.ext4" "$WORK/data.ext4"
# The root has no journal (it is never written) and no reserved blocks.
mkfs.ext4 -q -F -L keystake-root -U "$ROOT_FS" -E "hash_seed=$ROOT_FS,root_owner=0:0" \
  -O ^has_journal -m 0 -d "$ROOT" "$WORK/root.ext4" "${ROOT_MB}M" >/dev/null
mkfs.ext4 -q -F -L keystake-data -U "$DATA_FS" -E "hash_seed=$DATA_FS,root_owner=$KS_UID:$KS_GID" \
  -m 0 -d "$WORK/data" "$WORK/data.ext4" "${DATA_MB}M" >/dev/null
# mke2fs 1.47.0 copies each file's ctime and atime from the scratch tree (the time of this build,
# and of the last read); set both to SOURCE_DATE_EPOCH with debugfs, inode by inode.
clamp_ctime() {
  python3 - "$1" "$SOURCE_DATE_EPOCH" > "$WORK/ctime.debugfs" <<'PY'
import os, sys
tree, epoch = sys.argv[1], sys.argv[2]
print(f'sif / ctime @{epoch}\nsif / atime @{epoch}')
for parent, dirs, files in os.walk(tree):
    for name in dirs + files:
        path = '/' + os.path.relpath(os.path.join(parent, name), tree)
        print(f'sif "{path}" ctime @{epoch}\nsif "{path}" atime @{epoch}')
PY
  debugfs -w -f "$WORK/ctime.debugfs" "$2" >/dev/null 2>&1
}
clamp_ctime "$ROOT" "$WORK/root.ext4"
clamp_ctime "$WORK/data" "$WORK/data.ext4"
IMG=$OUT/keystake-appliance.img
rm -f "$IMG"
truncate -s $(( (1 + ROOT_MB + DATA_MB + 1) * 1024 * 1024 )) "$IMG"
sfdisk -q --no-reread --no-tell-kernel "$IMG" <<EOF
label: gpt
label-id: $DISK_GUID
unit: sectors
first-lba: 2048
start=2048, size=$((ROOT_MB * 2048)), type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, uuid=$ROOT_PART, name=keystake-root, attrs="GUID:60"
start=$(( (1 + ROOT_MB) * 2048 )), size=$((DATA_MB * 2048)), type=0fc63daf-8483-4772-8e79-3d69d8477de4, uuid=$DATA_PART, name=keystake-data
EOF
dd if="$WORK/root.ext4" of="$IMG" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$WORK/data.ext4" of="$IMG" bs=1M seek=$((1 + ROOT_MB)) conv=notrunc,sparse status=none
cp "$WORK/cmdline" "$WORK/packages.lock" "$OUT/"

# 5. Versions: exactly the lock (debian-tree.sh checked the tree; nothing since installed any).
if ! diff -u "$HERE/packages.lock" "$OUT/packages.lock" > "$WORK/lock.diff"; then
  echo "refusing: the image's packages differ from firmware/packages.lock:" >&2
  grep '^[-+][^-+]' "$WORK/lock.diff" >&2 || true
  rm -f "$IMG"
  exit 1
fi
(cd "$OUT" && sha256sum keystake-appliance.img vmlinuz initrd.img cmdline packages.lock > SHA256SUMS)
echo "image $IMG: $(( $(stat -c %s "$IMG") / 1024 / 1024 )) MiB (root ${ROOT_MB} MiB read-only, data ${DATA_MB} MiB), built in $(( $(date +%s) - T0 )) s"
echo "sha256 $(cut -d' ' -f1 < <(grep ' keystake-appliance.img$' "$OUT/SHA256SUMS")) keystake-appliance.img"
