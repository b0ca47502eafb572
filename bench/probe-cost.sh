#!/usr/bin/env bash
# What a gateway pays for a broadcast naming many rooms it mostly does not
# hold (issue #17's rolling-restart probes: one message to 1% of the users,
# 10,000 `user:` rooms at 1M, received and decoded by every gateway). Starts
# a private redis-server (CPU 1) and one gateway with no sessions (CPU 0),
# publishes COUNT probes of ROOMS rooms with bench/node-reference/probe-cost.js,
# and prints the gateway's CPU time per probe, from /proc/<pid>/stat.
#
#   bench/probe-cost.sh                 # 200 probes of 10,000 rooms, then of 1 room
#   ROOMS_LIST="10000 1" COUNT=200 RATE=20 BIN=target/release/switchboard-gateway bench/probe-cost.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/switchboard-gateway}
COUNT=${COUNT:-200}
RATE=${RATE:-20}
ROOMS_LIST=${ROOMS_LIST:-"10000 1"}
RPORT=${RPORT:-6477}
GPORT=${GPORT:-4477}
tmp=$(mktemp -d)
cleanup() {
  kill "${gw:-}" "${rs:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
taskset -c 1 redis-server --port "$RPORT" --save '' --appendonly no --dir "$tmp" >/dev/null &
rs=$!
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
SWITCHBOARD_JWT_SECRET=${SWITCHBOARD_JWT_SECRET:-bench-secret-0123456789abcdef0123456789} \
  SWITCHBOARD_LISTEN=127.0.0.1:$GPORT SWITCHBOARD_REDIS_URL=redis://127.0.0.1:$RPORT \
  SWITCHBOARD_LOG_LEVEL=warn taskset -c 0 "$BIN" >"$tmp/gw.log" 2>&1 &
gw=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$GPORT/metrics" && break; sleep 0.1; done
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
hz=$(getconf CLK_TCK)
for rooms in $ROOMS_LIST; do
  a=$(ticks)
  REDIS_URL=redis://127.0.0.1:$RPORT COUNT=$COUNT RATE=$RATE ROOMS=$rooms \
    taskset -c 1 node "$ROOT/bench/node-reference/probe-cost.js"
  sleep 0.5
  b=$(ticks)
  awk -v a="$a" -v b="$b" -v hz="$hz" -v n="$COUNT" -v r="$rooms" 'BEGIN {
    ms = (b - a) * 1000 / hz
    printf "rooms=%d probes=%d gateway_cpu_ms=%.0f per_probe_ms=%.3f\n", r, n, ms, ms / n }'
done
