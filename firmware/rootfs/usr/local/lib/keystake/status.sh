#!/bin/sh
# Prints one KEYSTAKE-STATUS line on the console once the signer listens on 9000 (or after two
# minutes without): mount options of / and of the data partition, the TCP ports anything listens
# on, the state of the firewall and the signer, and how many PEM private key files the data
# partition holds (none: the TLS key is inside the token). firmware/boot-test.sh checks this line.
listening() {
  for table in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$table" ] || continue
    while read -r _ local _ state _; do
      [ "$state" = 0A ] && printf '%d\n' "0x${local##*:}"
    done < "$table"
  done | sort -un | paste -sd, -
}
for _ in $(seq 1 240); do
  case ",$(listening)," in *,9000,*) break ;; esac
  sleep 0.5
done
echo "KEYSTAKE-STATUS root=$(findmnt -no OPTIONS /) data=$(findmnt -no OPTIONS /var/lib/keystake) listening=$(listening) nftables=$(systemctl is-active nftables) signer=$(systemctl is-active keystake-signer) provisioned=$([ -e /var/lib/keystake/.provisioned ] && echo yes || echo no) keyfiles=$(grep -rlsE -- '-----BEGIN ([A-Z]+ )?PRIVATE KEY' /var/lib/keystake | wc -l)"
