#!/usr/bin/env bash
# Wall time and memory of one reshare between real appliances on this machine (issue 13;
# docs/performance.md "Resharing on loopback"): N `demo` appliances (own SoftHSM2 token, own CA,
# own `serve` over mutual TLS) first run a T-of-N DKG for V validators (set-up, not timed; its
# figures are printed too), then M−N fresh appliances join and all M run `dkg reshare` at once
# to a T2-of-M group holding the same validators (old members 1..N keep their seats, new ones
# are N+1..M). Prints wall time (first run started → last new lock.json written), load average,
# per-appliance peak RSS and CPU of the ceremony process and of `serve`; checks the new locks are
# identical and `dkg verify --previous` accepts them against the DKG's lock. A benchmark, not a
# test; unattended; cleans up on exit (KEEP=1 keeps the temporary directory).
# usage: reshare-loopback.sh N V M [T2]   T defaults to ⌊2N/3⌋+1, T2 to T (4 → 5: 3-of-4 → 3-of-5)
source "$(dirname "$0")/dkg-lib.sh"
USAGE="usage: reshare-loopback.sh N V M [T2]"
N=${1:?$USAGE}; V=${2:?$USAGE}; M=${3:?$USAGE}
T=$((2 * N / 3 + 1)); T2=${4:-$T}
[ "$M" -ge "$N" ] || { echo "M must be at least N (this script adds members)" >&2; exit 2; }

appliances "$M" # the joining ones too: every policy must grant every peer before serve starts
dkg_definition "$N" "$T" "$V"
echo "set-up: DKG $T-of-$N, V=$V (not the figure this script is for)"
ceremony dkg 1 "$N" dkg run --definition "$W/definition.json"

ids=(); for i in $(seq "$M"); do ids+=("$W/id$i.json"); done
"$BIN" dkg reshare-definition --lock "$W/dkg-out1/lock.json" --threshold "$T2" \
  --identity "${ids[@]}" --out "$W/reshare.json" > /dev/null
echo
echo "reshare $T-of-$N → $T2-of-$M, V=$V, $BIN"
ceremony reshare 1 "$M" dkg reshare --definition "$W/reshare.json"
"$BIN" dkg verify --lock "$W/reshare-out1/lock.json" --previous "$W/dkg-out1/lock.json" > /dev/null
echo "dkg verify --previous: the new lock verifies against the DKG's; all $M new locks identical"
