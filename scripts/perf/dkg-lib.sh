# Shared by dkg-loopback.sh and reshare-loopback.sh (sourced, not run): real appliances on this
# machine — each its own `demo` directory (SoftHSM2 token, own CA, mTLS certificates), its own
# `keystake-signer serve` process on a free 127.0.0.1 port — and the timing and memory report of
# one ceremony run on all of them at once. Everything lives in one temporary directory, removed
# with every process this script started when it exits (also on error or Ctrl-C).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN=${BIN:-$PWD/target/release/keystake-signer} # build with: cargo build --release
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
PHASE_TIMEOUT=${PHASE_TIMEOUT:-900}
W=$(mktemp -d "${TMPDIR:-/tmp}/keystake-dkg-perf.XXXXXX")
PIDS=()
SERVE_PIDS=()
cleanup() {
  trap '' INT TERM # a second signal must not cut the clean-up short
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && { echo "kept $W" >&2; return; }
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export KEYSTAKE_LOG=${KEYSTAKE_LOG:-warn}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

# create I: appliance I (demo PKI + token) and its identity file, endpoint on a free port.
create() {
  local i=$1 port
  port=$(free_port)
  "$BIN" demo --dir "$W/a$i" --listen "127.0.0.1:$port" --no-serve > "$W/a$i.demo.log" 2>&1
  "$BIN" dkg identity --config "$W/a$i/signer.toml" --endpoint "https://127.0.0.1:$port" \
    --out "$W/id$i.json" > /dev/null
}

# grant_peers FROM TO: every appliance's policy grants the `dkg` operation to every other one's
# pinned certificate (docs/dkg.md "Granting the peers"), named by its SHA-256 fingerprint.
grant_peers() {
  local i j fp
  for j in $(seq "$1" "$2"); do
    fp=$(python3 -c 'import hashlib, json, sys; c = json.load(open(sys.argv[1]))["tls_certificate"]; print(hashlib.sha256(bytes.fromhex(c.removeprefix("0x"))).hexdigest())' "$W/id$j.json")
    for i in $(seq "$1" "$2"); do
      [ "$i" = "$j" ] && continue
      printf '\n[[client]]\nfingerprint = "%s"\n[[client.grant]]\nkeys = "all"\noperations = ["dkg"]\n' "$fp" >> "$W/a$i/policy.toml"
    done
  done
}

# serve_start I: start appliance I's `serve`, wait until it listens; records its PID.
serve_start() {
  local i=$1
  "$BIN" serve --config "$W/a$i/signer.toml" > "$W/serve$i.out" 2> "$W/serve$i.err" &
  PIDS+=($!)
  SERVE_PIDS[$i]=$!
  for _ in $(seq 300); do
    grep -q '^listening on' "$W/serve$i.out" 2>/dev/null && return 0
    kill -0 "${SERVE_PIDS[$i]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "appliance $i did not start:" >&2; cat "$W/serve$i.err" >&2; exit 1
}

# appliances COUNT: appliances 1..COUNT created, granting each other `dkg`, serving (set-up is
# not timed).
appliances() {
  local i
  for i in $(seq "$1"); do create "$i"; done
  grant_peers 1 "$1"
  for i in $(seq "$1"); do serve_start "$i"; done
}

# dkg_definition N T V: a T-of-N mainnet definition of appliances 1..N for V validators.
dkg_definition() {
  local ids=() i
  for i in $(seq "$1"); do ids+=("$W/id$i.json"); done
  "$BIN" dkg definition --threshold "$2" --validators "$3" --network mainnet \
    --withdrawal-address "0x$(printf 'ab%.0s' $(seq 20))" --fee-recipient "0x$(printf 'cd%.0s' $(seq 20))" \
    --identity "${ids[@]}" --out "$W/definition.json" > /dev/null
}

kib() { awk -v k="$1" 'BEGIN { printf "%.0f MB", k / 1024 }'; }
# Peak resident memory (VmHWM) of a live process, in KiB.
hwm() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
# CPU seconds (user+system) a live process has used.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$1/stat"; }

# ceremony NAME FROM TO CMD…: run `keystake-signer CMD --config … --out $W/NAME-out$i` on
# appliances FROM..TO at once (each under /usr/bin/time -v), wait for all, print the report.
# Wall time: from just before the first run starts to the newest lock.json written.
ceremony() {
  local name=$1 from=$2 to=$3 i start end rc=0 load0 load1
  shift 3
  local serve_cpu0=()
  for i in $(seq "$from" "$to"); do serve_cpu0[$i]=$(cpu_secs "${SERVE_PIDS[$i]}"); done
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  local runs=()
  start=$(now)
  for i in $(seq "$from" "$to"); do
    /usr/bin/time -v -o "$W/$name-time$i" "$BIN" "$@" --config "$W/a$i/signer.toml" \
      --out "$W/$name-out$i" --timeout-secs "$PHASE_TIMEOUT" > "$W/$name-run$i.out" 2> "$W/$name-run$i.err" &
    runs+=($!)
    PIDS+=($!)
  done
  for i in "${!runs[@]}"; do wait "${runs[$i]}" || rc=1; done
  end=$(now)
  load1=$(cut -d' ' -f1-3 /proc/loadavg)
  if [ "$rc" != 0 ]; then
    for i in $(seq "$from" "$to"); do echo "--- appliance $i:" >&2; tail -5 "$W/$name-run$i.err" >&2; done
    echo "FAILED: $name did not succeed on every appliance" >&2
    exit 1
  fi
  local last
  last=$(for i in $(seq "$from" "$to"); do stat -c '%.9Y' "$W/$name-out$i/lock.json"; done | sort -n | tail -1)
  for i in $(seq "$from" "$to"); do
    cmp -s "$W/$name-out$from/lock.json" "$W/$name-out$i/lock.json" \
      || { echo "FAILED: appliance $i's lock differs from appliance $from's" >&2; exit 1; }
  done
  printf '%s: wall %.1f s (first run started → last lock.json written; all runs exited after %.1f s)\n' \
    "$name" "$(sub "$last" "$start")" "$(sub "$end" "$start")"
  echo "load average (1/5/15 min) before: $load0, after: $load1; $(nproc) cores, all appliances on this machine"
  printf '%-4s %-30s %-28s\n' "app" "ceremony process (dkg …)" "serve process (during it)"
  local max_run=0 max_serve=0 rss cpu cpu_sum=0 serve_sum=0
  for i in $(seq "$from" "$to"); do
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$W/$name-time$i")
    cpu=$(awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.1f", u + s }' "$W/$name-time$i")
    local s_rss s_cpu
    s_rss=$(hwm "${SERVE_PIDS[$i]}")
    s_cpu=$(sub "$(cpu_secs "${SERVE_PIDS[$i]}")" "${serve_cpu0[$i]}")
    printf '%-4s %-30s %-28s\n' "$i" "peak RSS $(kib "$rss"), CPU ${cpu} s" "peak RSS $(kib "$s_rss"), CPU $(printf %.1f "$s_cpu") s"
    cpu_sum=$(awk -v a="$cpu_sum" -v b="$cpu" 'BEGIN { print a + b }')
    serve_sum=$(awk -v a="$serve_sum" -v b="$s_cpu" 'BEGIN { print a + b }')
    [ "$rss" -gt "$max_run" ] && max_run=$rss
    [ "$s_rss" -gt "$max_serve" ] && max_serve=$s_rss
  done
  awk -v c="$cpu_sum" -v s="$serve_sum" -v n=$((to - from + 1)) \
    'BEGIN { printf "CPU per appliance (mean): ceremony process %.1f s, serve %.1f s; all appliances together %.1f s\n", c / n, s / n, c + s }'
  echo "max peak RSS: ceremony process $(kib "$max_run"), serve $(kib "$max_serve") (serve's VmHWM covers its whole life)"
}
