#!/usr/bin/env bash
# Instructions per idle heartbeat of one gateway, independent of the host's
# load: the gateway runs under `valgrind --tool=callgrind` (instrumentation
# off while the sessions connect), pinned to SERVER_CPU, with N idle
# authenticated websockets held by `sb-load connect` on LOAD_CPU at a short
# ping interval; instrumentation is switched on for HOLD seconds and the
# pongs the gateway counted in that window (`switchboard_heartbeat_rtt_seconds_count`
# from /metrics, read just outside it) divide the instructions.
#
#   GW=target/release/switchboard-gateway LOAD=target/debug/sb-load \
#     OUT=/tmp/cg/main LABEL=main bench/idle-callgrind.sh
#
# Instruction counts do not depend on the host's load, so this may run under
# the shared machine lock; the timeout is generous because a gateway under
# valgrind runs tens of times slower. It counts user space only: the
# kernel's share of a heartbeat is not in it.
#
# Knobs: N (1000 sessions), INTERVAL_MS (2000), TIMEOUT_MS (5000), HOLD (20 s),
# PORT (4290), REDIS_PORT (6397), SERVER_CPU (0), LOAD_CPU (1).
# Prints one line: label, Ir in the window, pongs, Ir per pong, sessions
# closed by the end (0 expected); keeps the callgrind profile of the window
# at $OUT.callgrind.1 and its `callgrind_annotate` at $OUT.annotate.txt.
set -euo pipefail
N=${N:-1000}; INTERVAL_MS=${INTERVAL_MS:-2000}; TIMEOUT_MS=${TIMEOUT_MS:-5000}; HOLD=${HOLD:-20}
PORT=${PORT:-4290}; REDIS_PORT=${REDIS_PORT:-6397}; SERVER_CPU=${SERVER_CPU:-0}; LOAD_CPU=${LOAD_CPU:-1}
: "${GW:?gateway binary}" "${LOAD:?sb-load binary}" "${OUT:?output prefix}"
export SWITCHBOARD_JWT_SECRET=bench-secret-0123456789abcdef0123456789
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
env SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP=0 SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_USER=0 \
  SWITCHBOARD_LIMITS__CONNECTS_PER_SEC=0 SWITCHBOARD_LIMITS__MAX_SESSIONS=0 SWITCHBOARD_SERVER__MAX_CONNECTIONS=1000000 \
  SWITCHBOARD_ENGINE__PING_INTERVAL_MS="$INTERVAL_MS" SWITCHBOARD_ENGINE__PING_TIMEOUT_MS="$TIMEOUT_MS" \
  SWITCHBOARD_LISTEN=127.0.0.1:$PORT SWITCHBOARD_REDIS_URL=redis://127.0.0.1:$REDIS_PORT SWITCHBOARD_LOG_LEVEL=warn \
  taskset -c "$SERVER_CPU" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT.callgrind" \
  "$GW" >"$OUT.gw.log" 2>&1 &
gw=$!; pids+=($gw)
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
pongs() { curl -sf "http://127.0.0.1:$PORT/metrics" | awk '/^switchboard_heartbeat_rtt_seconds_count/ {print $2}'; }
settle=$((HOLD + 3 * INTERVAL_MS / 1000 + 60))
taskset -c "$LOAD_CPU" "$LOAD" --threads 1 connect --addr "127.0.0.1:$PORT" --count "$N" --concurrency 32 \
  --settle-secs "$settle" >"$OUT.load.log" 2>&1 &
pids+=($!)
# Connected, then two intervals so that every session is in its steady cycle.
for _ in $(seq 600); do
  open=$(curl -sf "http://127.0.0.1:$PORT/metrics" | awk '/^switchboard_connections(\{| )/ {s+=$NF} END {print s+0}')
  [ "${open:-0}" -ge "$N" ] && break; sleep 0.5
done
sleep $((2 * INTERVAL_MS / 1000 + 2))
p0=$(pongs)
timeout 60 callgrind_control -i on "$gw" >&2
sleep "$HOLD"
timeout 60 callgrind_control -i off "$gw" >&2
p1=$(pongs)
closed=$(curl -sf "http://127.0.0.1:$PORT/metrics" | awk '/^switchboard_engine_sessions_closed_total/ {s+=$NF} END {print s+0}')
timeout 60 callgrind_control -d "$gw" >&2
sleep 2
set +e
f=$(ls -t "$OUT".callgrind.* | head -1)
callgrind_annotate "$f" >"$OUT.annotate.txt" 2>/dev/null
ir=$(awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}' "$OUT.annotate.txt")
pong=$(awk -v a="$p0" -v b="$p1" 'BEGIN {print b - a}')
echo "label=${LABEL:-} sessions=$N interval_ms=$INTERVAL_MS timeout_ms=$TIMEOUT_MS hold_s=$HOLD ir=$ir pongs=$pong ir_per_pong=$(awk -v i="$ir" -v p="$pong" 'BEGIN {printf "%.0f", i / p}') open_at_start=$open closed_by_end=$closed profile=$f"
