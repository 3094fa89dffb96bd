#!/usr/bin/env bash
# Issue 16's figures in one sitting (docs/performance.md): distinct-message load at 16 and 64
# connections, 1,000 req/s latency, the mainnet mix with 10,000 keys — unseal cache off (the
# default) and on (issue 14's unseal policy) — a 10,000-key slot burst, and combine with
# verification vs optimistic (criterion). Each `bench load` line measures raw blst in the same
# run. Prints a GOALS block at the end with every goal figure. Not part of CI; runs unattended.
#   usage: issue16.sh WORKDIR [SECONDS]        (WORKDIR is created; ports 9160/9161/9162)
#   SKIP_COMBINE=1 leaves out the criterion run (it builds the core's benches: minutes).
set -euo pipefail
WORK=$1; SECS=${2:-15}
BIN=${BIN:-./target/release/keystake-signer}   # cargo build --release --features tools --bin keystake-signer
mkdir -p "$WORK"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for d in a b c; do
  port=$((9160 + $(printf '%d' "'$d") - 97))
  "$BIN" demo --dir "$WORK/$d" --listen 127.0.0.1:$port --no-serve > /dev/null
  # The load tool's duties start far above the wall clock (never slashable against an earlier
  # run), which a production appliance refuses (issue 17: future_margin_epochs, default 1):
  # benchmark appliances lift the margin.
  printf '\n[slashing]\nfuture_margin_epochs = 1000000000000000000\n' >> "$WORK/$d/signer.toml"
done
# c = b with the unseal cache on (every one of the 10,000 shares fits; 5-minute TTL).
sed -i '/^\[hsm\]/a unseal_cache = { ttl_secs = 300, max_entries = 20000 }' "$WORK/c/signer.toml"
"$BIN" bench populate --config "$WORK/b/signer.toml" --keys 9997 > /dev/null 2>&1 || true
"$BIN" bench populate --config "$WORK/c/signer.toml" --keys 9997 > /dev/null 2>&1 || true
pids=()
for d in a b c; do "$BIN" serve --config "$WORK/$d/signer.toml" > "$WORK/$d.log" 2>&1 & pids+=($!); done
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
sleep 3
OUT="$WORK/results.txt"; : > "$OUT"
load() { local name=$1; shift; echo "== $name: $*" | tee -a "$OUT"; "$BIN" bench load "$@" | tail -4 | tee -a "$OUT";
         echo "   (load average after: $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT"; }
load distinct16 --config "$WORK/a/signer.toml" --duration "$SECS" --connections 16
load distinct64 --config "$WORK/a/signer.toml" --duration "$SECS" --connections 64
load rate1000 --config "$WORK/a/signer.toml" --duration "$SECS" --connections 16 --rate 1000
load mainnet --config "$WORK/b/signer.toml" --duration "$SECS" --connections 64 --mix mainnet --keys 10000
load mainnet-cache --config "$WORK/c/signer.toml" --duration "$SECS" --connections 64 --mix mainnet --keys 10000
# "Sent at once": one kept-alive connection per request of the slot (631), opened before the
# burst as a validator client's pool holds them between slots. The first burst of a fresh
# `serve` on c is what mainnet sees even with the unseal cache on (the slot's attesters last
# signed an epoch ago, beyond the 300-s TTL); burst-warm repeats it with those shares cached.
load burst --config "$WORK/b/signer.toml" --connections 640 --mix mainnet --keys 10000 --burst 1
load burst-cache --config "$WORK/c/signer.toml" --connections 640 --mix mainnet --keys 10000 --burst 1
load burst-warm --config "$WORK/c/signer.toml" --connections 640 --mix mainnet --keys 10000 --burst 1

# field NAME KEY: the value of KEY= on the summary (or burst) line of run NAME.
field() { awk -v run="== $1:" -v key="$2" '
  index($0, run) == 1 { on = 1; next } /^== / { on = 0 }
  on { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) { print kv[2]; exit } } }' "$OUT"; }

if [ -z "${SKIP_COMBINE:-}" ]; then
  echo "== combine (criterion)" | tee -a "$OUT"
  cargo bench -q -p keystake-core --bench threshold -- --warm-up-time 1 --measurement-time 3 combine \
    2>/dev/null | tee "$WORK/combine.txt" | grep -E '^combine|time:' | tee -a "$OUT" || true
fi
# crit GROUP/MODE/T: criterion's middle time estimate in µs.
crit() { awk -v id="$1" '
  $1 == id { want = 1; if ($2 == "time:") { line = $0 } else next }
  want && /time:/ { line = $0 }
  want && line != "" { sub(/.*\[/, "", line); split(line, v, " "); t = v[3]; u = v[4];
    if (u == "ms") t *= 1000; if (u == "s") t *= 1000000; if (u == "ns") t /= 1000; print t; exit }' "$WORK/combine.txt" 2>/dev/null; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == 0) print "n/a"; else printf "%.3f", b / a }'; }

echo
echo "GOALS (one run; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
echo "mainnet 10k keys ratio (goal >= 1.6): cache off $(field mainnet ratio) (cpu_efficiency $(field mainnet cpu_efficiency)), cache on $(field mainnet-cache ratio) (cpu_efficiency $(field mainnet-cache cpu_efficiency))"
echo "distinct 16 conn cpu_efficiency (goal >= 0.85): $(field distinct16 cpu_efficiency) (ratio $(field distinct16 ratio))"
echo "distinct 64 conn ratio (goal >= 0.8): $(field distinct64 ratio) (cpu_efficiency $(field distinct64 cpu_efficiency))"
echo "1000 req/s p50 / p99 ms (goal <= 1 / <= 5): $(field rate1000 p50_ms) / $(field rate1000 p99_ms)"
echo "10k-key slot burst vs naive raw (goal <= 0.6): cache off $(field burst burst_vs_raw), cache on (cold, as on mainnet) $(field burst-cache burst_vs_raw), shares cached $(field burst-warm burst_vs_raw); cores busy $(field burst cores_busy) / $(field burst-cache cores_busy) / $(field burst-warm cores_busy), load tool CPU-µs per request $(field burst load_cpu_per_req_us) / $(field burst-cache load_cpu_per_req_us) / $(field burst-warm load_cpu_per_req_us)"
if [ -s "$WORK/combine.txt" ]; then
  for t in 3 7 16; do
    echo "combine t=$t verified/optimistic rate (goal >= 0.9): stateless $(ratio "$(crit combine/verify-partials/$t)" "$(crit combine/optimistic/$t)"), checked keys $(ratio "$(crit combine_with_keys/verify-partials/$t)" "$(crit combine_with_keys/optimistic/$t)"), gRPC Combine (key sets cached) $(ratio "$(crit combine_cached/verify-partials/$t)" "$(crit combine_cached/optimistic/$t)")"
  done
fi
