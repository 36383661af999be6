#!/usr/bin/env bash
# Instructions per delivered message, counted by callgrind: repeatable where seconds are
# not. Each server runs under `valgrind --tool=callgrind` twice, with the same workload
# for a short and a long time (10 pairs at 100 msg/s, 5 s and 15 s); the difference of
# the two totals divided by the difference in messages cancels start-up, handshakes and
# shutdown, leaving the cost of the extra messages (and of the extra idle seconds, which
# at this rate are a small share).
#
#   cargo build --profile production -p quichat -p benches --features quichat/jemalloc
#   benches/scripts/callgrind-per-message.sh            # quichat dev and mosquitto (TLS)
#
# Needs valgrind and (for the peer) mosquitto. Takes about two minutes.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BIN:-$root/target/production}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
short=5
long=15

# Total instructions of `quichat dev` under callgrind for a run of $1 seconds.
quichat_run() {
  local secs=$1 dir=$work/q$1
  mkdir -p "$dir"
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$bin/quichat" --threads 1 dev --data "$dir/data" --listen 127.0.0.1:0 \
    --send-per-second 100000 --send-burst 100000 >"$dir/log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 240); do [ -s "$dir/data/edge-addr" ] && break; sleep 0.5; done
  "$bin/quichat-load" --edge "$(cat "$dir/data/edge-addr")" --cert "$dir/data/ca.pem" \
    --token-secret "$dir/data/token-secret" --pairs 10 --rate 100 --duration "$secs" \
    --warmup 1 --quiet >"$dir/load.json" 2>/dev/null
  kill -INT "$pid"
  wait "$pid" || true
  local sent
  sent=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['lost']==0 and d['delivered']==d['sent']; print(d['delivered'])" "$dir/load.json")
  echo "$sent $(awk '/^summary:/{print $2}' "$dir/cg.out")"
}

# The same for mosquitto over TLS, through quichat-vs-mosquitto. The tool kills its broker
# with SIGKILL, which would lose callgrind's output, so the broker runs in the background
# of a wrapper script (the kill ends only the wrapper) and is stopped with SIGTERM after.
mosquitto_run() {
  local secs=$1 dir=$work/m$1
  mkdir -p "$dir"
  cat >"$dir/wrap.sh" <<WRAP
#!/usr/bin/env bash
valgrind --tool=callgrind --callgrind-out-file=$dir/cg.out $(command -v mosquitto) "\$@" &
wait
WRAP
  chmod +x "$dir/wrap.sh"
  "$bin/quichat-vs-mosquitto" --systems mosquitto-tls --rate 100 --pairs 10 \
    --duration "$secs" --warmup 1 --mosquitto "$dir/wrap.sh" >"$dir/run.json" 2>/dev/null
  pkill -TERM -f "callgrind-out-file=$dir/cg.out" || true
  for _ in $(seq 1 60); do grep -q '^summary:' "$dir/cg.out" 2>/dev/null && break; sleep 0.5; done
  local sent
  sent=$(python3 -c "
import json,sys
d=json.load(open(sys.argv[1]))
r=d['compare']['rows'][0]
assert r['lost']==0 and r['delivered']==r['sent']
print(r['delivered'])" "$dir/run.json")
  echo "$sent $(awk '/^summary:/{print $2}' "$dir/cg.out")"
}

per_message() {
  python3 -c "
import sys
(n1,i1),(n2,i2)=[tuple(map(int,s.split())) for s in sys.argv[1:3]]
print(f'{(i2-i1)/(n2-n1):,.0f} instructions per message ({n2-n1} messages, {i2-i1:,} instructions)')" "$1" "$2"
}

echo "quichat dev (edge + core):"
per_message "$(quichat_run $short)" "$(quichat_run $long)"
if command -v mosquitto >/dev/null; then
  echo "mosquitto (TLS):"
  per_message "$(mosquitto_run $short)" "$(mosquitto_run $long)"
fi
