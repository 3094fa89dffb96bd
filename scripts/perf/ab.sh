#!/usr/bin/env bash
# Interleaved A/B of appliance binaries (docs/performance.md, issue 16): the same appliance
# directories, `serve` of each binary in turn, the same load generator binary, round after round,
# so a machine whose speed drifts affects every binary alike. Not part of CI.
#   usage: ab.sh WORKDIR ROUNDS SECONDS BINARY...
#     WORKDIR: a directory issue16.sh made (a/ = 3 keys, c/ = 10,000 keys with the unseal cache)
#     MODES="mainnet distinct rate burst" (default) picks the runs; LOADGEN= the load generator
#     binary (default: the first BINARY). Prints one line per run: round, binary, mode, summary.
set -euo pipefail
WORK=$1; ROUNDS=$2; SECS=$3; shift 3
LOADGEN=${LOADGEN:-$1}
LOG=$(mktemp)
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2> /dev/null || true; fi; rm -f "$LOG"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    for mode in ${MODES:-mainnet distinct rate burst}; do
      case $mode in
        mainnet) dir=c; args=(--duration "$SECS" --connections 64 --mix mainnet --keys 10000) ;;
        distinct) dir=a; args=(--duration "$SECS" --connections 16) ;;
        rate) dir=a; args=(--duration "$SECS" --connections 16 --rate 1000) ;;
        burst) dir=c; args=(--connections 640 --mix mainnet --keys 10000 --burst 1) ;;
        *) echo "unknown mode $mode" >&2; exit 2 ;;
      esac
      "$bin" serve --config "$WORK/$dir/signer.toml" > "$LOG" 2>&1 & pid=$!
      for _ in $(seq 1 200); do
        grep -q 'listening on' "$LOG" && break
        kill -0 "$pid" 2> /dev/null || { echo "serve of $bin exited:" >&2; tail -3 "$LOG" >&2; exit 1; }
        sleep 0.1
      done
      # The measured burst is the second one: its shares are cached (burst-warm in issue16.sh).
      if [ "$mode" = burst ]; then "$LOADGEN" bench load --config "$WORK/$dir/signer.toml" "${args[@]}" > /dev/null; fi
      summary=$("$LOADGEN" bench load --config "$WORK/$dir/signer.toml" "${args[@]}" | grep -E "^(throughput=|burst:)" | tr "\n" " " || true)
      kill "$pid"; wait "$pid" 2> /dev/null || true; pid=
      echo "r$round $(basename "$bin") $mode $summary"
    done
  done
done
