#!/usr/bin/env bash
# Builds the appliance disk image: a minimal Debian (debootstrap) with a kernel, systemd,
# SoftHSM2 and the signer as a sandboxed service (firmware/keystake-signer.service), as a raw ext4
# image made with `mkfs.ext4 -d` (no loop mounts needed), plus the kernel and initrd to boot it.
#
#   cargo build --release --locked --bin keystake-signer
#   firmware/build-image.sh OUT_DIR            # OUT_DIR/{rootfs.img,vmlinuz,initrd.img}
#   qemu-system-x86_64 -m 1024 -nographic -kernel OUT_DIR/vmlinuz -initrd OUT_DIR/initrd.img \
#     -append 'root=/dev/vda rw console=ttyS0' -drive file=OUT_DIR/rootfs.img,format=raw,if=virtio
#
# The image holds no keys, certificates or PINs: /etc/keystake is provisioned per appliance
# (see firmware/README.md).
set -euo pipefail
OUT=${1:?usage: build-image.sh OUT_DIR}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SIZE=${SIZE:-2G}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$HERE/../target/release/keystake-signer}
[ -x "$BIN" ] || { echo "build the signer first: cargo build --release --bin keystake-signer" >&2; exit 1; }
command -v debootstrap >/dev/null && command -v mkfs.ext4 >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap e2fsprogs
}
mkdir -p "$OUT"
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase \
  --include=linux-image-amd64,systemd-sysv,udev,softhsm2,ca-certificates,iproute2,ifupdown,isc-dhcp-client \
  "$SUITE" "$ROOT" "$MIRROR"
install -m 0755 "$BIN" "$ROOT/usr/local/bin/keystake-signer"
install -m 0644 "$HERE/keystake-signer.service" "$ROOT/etc/systemd/system/keystake-signer.service"
chroot "$ROOT" useradd --system --home-dir /var/lib/keystake --shell /usr/sbin/nologin keystake
install -d -m 0700 -o "$(chroot "$ROOT" id -u keystake)" "$ROOT/var/lib/keystake"
install -d -m 0750 "$ROOT/etc/keystake"
ln -sf /etc/systemd/system/keystake-signer.service "$ROOT/etc/systemd/system/multi-user.target.wants/keystake-signer.service"
echo keystake-appliance > "$ROOT/etc/hostname"
printf 'auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n' > "$ROOT/etc/network/interfaces"
# No root password and no login over the network: the console is the only way in.
chroot "$ROOT" passwd -l root
cp -L "$ROOT/vmlinuz" "$OUT/vmlinuz"
cp -L "$ROOT/initrd.img" "$OUT/initrd.img"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
rm -f "$OUT/rootfs.img"
truncate -s "$SIZE" "$OUT/rootfs.img"
mkfs.ext4 -q -L keystake-root -d "$ROOT" "$OUT/rootfs.img"
echo "built $OUT/rootfs.img ($(du -h --apparent-size "$OUT/rootfs.img" | cut -f1)), $OUT/vmlinuz, $OUT/initrd.img"
