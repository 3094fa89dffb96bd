#!/usr/bin/env bash
# Wall time and memory of one DKG ceremony between N real appliances on this machine (issue 12;
# docs/performance.md "DKG ceremonies on loopback"): N `demo` appliances (each its own SoftHSM2
# token and CA, its own `serve` on 127.0.0.1 over mutual TLS, peers pinned by the definition),
# a T-of-N definition for V validators, `dkg run` started on all N at once. Prints the wall time
# (first run started → last lock.json written), the load average, and per appliance the peak RSS
# and CPU of the ceremony process (`dkg run`, which runs the protocol and the HSM work) and of
# its `serve` (which answers the peers' fetches); checks every lock is identical and verifies
# it with `dkg verify --deposit-data`. A benchmark, not a test; unattended; cleans up on exit
# (KEEP=1 keeps the temporary directory).
# usage: dkg-loopback.sh N V [T]        T defaults to ⌊2N/3⌋+1
source "$(dirname "$0")/dkg-lib.sh"
N=${1:?usage: dkg-loopback.sh N V [T]}; V=${2:?usage: dkg-loopback.sh N V [T]}
T=${3:-$((2 * N / 3 + 1))}

appliances "$N"
dkg_definition "$N" "$T" "$V"
echo "DKG $T-of-$N, V=$V, $BIN"
ceremony dkg 1 "$N" dkg run --definition "$W/definition.json"
"$BIN" dkg verify --lock "$W/dkg-out1/lock.json" --deposit-data "$W/dkg-out1/deposit-data.json" > /dev/null
echo "dkg verify: lock and deposit data verify; all $N locks identical"
