#!/usr/bin/env bash
# Switchboard benchmark suite: runs each scenario against the Switchboard
# gateway and the Node reference (socket.io 4 + @socket.io/redis-adapter),
# alternating which goes first, server pinned to CPU 0, load generator and
# Redis pinned to CPU 1, and writes the tables to docs/benchmarks.md.
#
#   bench/run.sh                      # memory connect fanout ceiling twogw
#   bench/run.sh memory fanout        # only these
#   bench/run.sh scale                # optional: 200k idle connections over 16 gateways, 5 min hold, 2 broadcasts, rolling restart
#   SCALE_CONNS=1000000 SCALE_NODE_CONNS=200000 bench/run.sh scale   # issue #17: a million (Node at 200k)
#   bench/run.sh publish              # issue #18: broadcaster crate vs @socket.io/redis-emitter, publishes/s and p50/p99
#   BASELINE_BIN=/tmp/gw-base/switchboard-gateway bench/run.sh http-publish
#                                     # issue #18: the gateway's HTTP publish API, this build vs BASELINE_BIN, requests/s and p50/p99
#   bench/run.sh shardtraffic         # issue #14: what Redis sends each of N gateways on a 3-master cluster,
#                                     # classic vs sharded-static vs sharded-dynamic, per-user rooms (docs/scaling.md)
#   bench/run.sh burst steady         # issue #10: open-loop burst (1M deliveries/s offered) and steady 25k/s,
#                                     # Switchboard, socketioxide, Node and the raw-write floor in one run
#   BURST_SERVERS="switchboard switchboard-streams node node-streams" BURST_FLOOR= bench/run.sh burst steady
#                                     # issue #13: the same on a Redis Streams bus (recovery on), published
#                                     # with the broadcaster crate's XADD, against pub/sub
#
# Knobs (environment): MEM_SIZES ("5000 19000"), CONNECT_COUNT (10000),
# CONNECT_CONCURRENCY (64), FANOUT_CLIENTS (5000), FANOUT_ROOMS (10),
# FANOUT_RATE (25000 deliveries/s), FANOUT_SECS (20), CEILING_SECS (15),
# SERVERS ("switchboard node"), REPEAT (1), SERVER_CPU (0), LOAD_CPU (1),
# SCALE_CONNS (200000), SCALE_SECS (300), SCALE_SERVERS ("switchboard node"),
# SCALE_NODE_CONNS (SCALE_CONNS, at most 200000), SCALE_READY_SECS (900: time allowed
# for connecting), SCALE_RESTART (5 gateways restarted), SCALE_WAVE (8 generators
# connecting at once), SCALE_MIN_AVAIL_MIB (2048: abort below), SCALE_GATEWAYS (unset:
# from `ulimit -Hn`), SCALE_PER_AFTER (sessions per gateway after the restarts, hard
# limit - 1000), SCALE_PROBE_RATE (2: probes per second during the rolling restart, each one
# broadcast naming 1% of the users' rooms; raised in a smaller reproduction so that the
# gateways' core decodes as many room names per second as at 1M), SCALE_PROBE_GRACE (30: seconds
# each generator keeps waiting, after the coordinator's `finish`, for probes still missing on
# clients of the gateways that were not restarted: late if they come, lost if not), SCALE_SERVER_QUOTA (unset:
# none; percent of one core that all the scale gateways together may use, restarted ones
# included, a cgroup v1 CFS quota as for burst), NO_BUILD (unset), NO_REPORT (unset),
# PUBLISH_COUNT (100000), PUBLISH_WARMUP (10000), PUBLISH_CONCURRENCY ("1 32 256"),
# HTTP_PUBLISH_SECS (10), HTTP_PUBLISH_CONCURRENCY ("1 32 256"), BASELINE_BIN (a gateway
# binary of another build, e.g. main's, measured as `baseline` in http-publish; unset: this build only),
# BURST_SERVERS ("switchboard socketioxide node"), BURST_CLIENTS (5000), BURST_ROOMS (10),
# BURST_RATE (1000000 deliveries/s offered), BURST_SECS (3), STEADY_RATE (25000), STEADY_SECS (10),
# BURST_FLOOR (floor-fanout; empty: no floor run), STEADY_FLOOR (the floors of
# `steady`; default BURST_FLOOR if set, else "floor-relay floor-fanout":
# floor-relay is `sb-floor --mode relay`, PSUBSCRIBEd to the gateway's pattern
# on the same Redis and published to by sb-load exactly as the servers are, so
# its latency is publish -> receive through Redis, the servers' measure;
# floor-fanout stamps each message itself just before its first write, so its
# latency is the write loop alone), BURST_SERVER_QUOTA (unset: none; percent of
# one core that each server may use during `burst`, the same CFS quota for every server, see
# below), BURST_QUOTA_PERIOD_US (10000), BURST_NODE_SECS (BURST_SECS: Node's burst length,
# shorter under a quota, where Node drains far slower), PERF_SENDS (set: count the server's send
# syscalls with perf during burst/steady), PERF_RECORD (set: `perf record -g` the server
# during burst/steady into bench/results/perf-<scenario>-<server>.data); `baseline`
# (BASELINE_BIN) may be one of BURST_SERVERS, for before/after figures in one run; so may
# `switchboard-streams` (redis.bus = "streams", recovery on) and `node-streams`
# (@socket.io/redis-streams-adapter, connection state recovery on), whose events sb-load
# XADDs with the broadcaster crate.
# BASELINE2_BIN: a second gateway build, measured as `baseline2` wherever it is named in
# SERVERS or BURST_SERVERS (with the limits lifted as for this build, so a build that
# knows those keys), for two baselines in one run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release

MEM_SIZES=${MEM_SIZES:-"5000 19000"}
CONNECT_COUNT=${CONNECT_COUNT:-10000}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-64}
FANOUT_CLIENTS=${FANOUT_CLIENTS:-5000}
FANOUT_ROOMS=${FANOUT_ROOMS:-10}
FANOUT_RATE=${FANOUT_RATE:-25000}
FANOUT_SECS=${FANOUT_SECS:-20}
CEILING_SECS=${CEILING_SECS:-15}
SERVERS=${SERVERS:-"switchboard node"}
REPEAT=${REPEAT:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SCALE_CONNS=${SCALE_CONNS:-200000}
SCALE_SECS=${SCALE_SECS:-300}
SCALE_SERVERS=${SCALE_SERVERS:-"switchboard node"}
SCALE_NODE_CONNS=${SCALE_NODE_CONNS:-$((SCALE_CONNS < 200000 ? SCALE_CONNS : 200000))}
SCALE_READY_SECS=${SCALE_READY_SECS:-900}
SCALE_RESTART=${SCALE_RESTART:-5}
SCALE_WAVE=${SCALE_WAVE:-8}
SCALE_MIN_AVAIL_MIB=${SCALE_MIN_AVAIL_MIB:-2048}
SCALE_PROBE_RATE=${SCALE_PROBE_RATE:-2}
SCALE_PROBE_GRACE=${SCALE_PROBE_GRACE:-30}
SCALE_SERVER_QUOTA=${SCALE_SERVER_QUOTA:-}
PUBLISH_COUNT=${PUBLISH_COUNT:-100000}
PUBLISH_WARMUP=${PUBLISH_WARMUP:-10000}
PUBLISH_CONCURRENCY=${PUBLISH_CONCURRENCY:-"1 32 256"}
HTTP_PUBLISH_SECS=${HTTP_PUBLISH_SECS:-10}
HTTP_PUBLISH_CONCURRENCY=${HTTP_PUBLISH_CONCURRENCY:-"1 32 256"}
BASELINE_BIN=${BASELINE_BIN:-}
BASELINE2_BIN=${BASELINE2_BIN:-}
BURST_SERVERS=${BURST_SERVERS:-"switchboard socketioxide node"}
BURST_CLIENTS=${BURST_CLIENTS:-5000}
BURST_ROOMS=${BURST_ROOMS:-10}
BURST_RATE=${BURST_RATE:-1000000}
BURST_SECS=${BURST_SECS:-3}
BURST_SERVER_QUOTA=${BURST_SERVER_QUOTA:-}
BURST_QUOTA_PERIOD_US=${BURST_QUOTA_PERIOD_US:-10000}
BURST_NODE_SECS=${BURST_NODE_SECS:-$BURST_SECS}
STEADY_RATE=${STEADY_RATE:-25000}
STEADY_SECS=${STEADY_SECS:-10}

REDIS_PORT=6390
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
BASE_PORT=4100
export SWITCHBOARD_JWT_SECRET=${SWITCHBOARD_JWT_SECRET:-bench-secret-0123456789abcdef0123456789}
BENCH_API_KEY=bench-api-key-0123456789abcdef

# Issue #14 item 6: N gateways (release build) on a 3-master Redis Cluster, U
# users each (one websocket per user, room user:<id>, held by one sb-shardhold
# process per gateway), and a steady rate of per-user events published with
# the broadcaster crate; per gateway, the messages and payload bytes Redis sent
# it (switchboard_bus_received*_total) and its CPU above an idle baseline, in
# classic, sharded-static and sharded-dynamic modes. Runs the ignored test
# tests/tests/shard_traffic.rs (the testkit starts the cluster and the
# gateways) with `cargo test` (nextest would stop it after 4 minutes), bounded
# by SHARD_TIMEOUT seconds (1500). Sizes: SHARD_GATEWAYS (3),
# SHARD_USERS_PER_GATEWAY (1000), SHARD_EVENTS_PER_USER (2), SHARD_RATE
# (events/s, 2000), SHARD_IDLE_SECS (5), SHARD_MODES (all three). Full size:
#   SHARD_GATEWAYS=11 SHARD_USERS_PER_GATEWAY=18182 SHARD_EVENTS_PER_USER=1 SHARD_RATE=4000 SHARD_IDLE_SECS=15 bench/run.sh shardtraffic
# Prints and saves the TRAFFIC lines; writes no report.
if [ "${1:-}" = shardtraffic ]; then
  log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
  if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -q -p switchboard-gateway -p switchboard-bench --bin switchboard-gateway --bin sb-shardhold
    cargo test -q -p switchboard-tests --test shard_traffic --no-run
  fi
  ulimit -n "$(ulimit -Hn)"
  mkdir -p bench/results
  out=bench/results/shardtraffic-$(date -u +%Y%m%d-%H%M%S).txt
  {
    echo "# $(date -u '+%Y-%m-%d %H:%M:%S') UTC commit $(git rev-parse --short HEAD)$(git status --porcelain | grep -q . && echo +dirty)"
    echo "# SHARD_GATEWAYS=${SHARD_GATEWAYS:-3} SHARD_USERS_PER_GATEWAY=${SHARD_USERS_PER_GATEWAY:-1000} SHARD_EVENTS_PER_USER=${SHARD_EVENTS_PER_USER:-2} SHARD_RATE=${SHARD_RATE:-2000} SHARD_IDLE_SECS=${SHARD_IDLE_SECS:-5} SHARD_MODES=${SHARD_MODES:-all}"
    echo "# load before: $(cat /proc/loadavg)"
  } | tee "$out"
  log "shardtraffic: ${SHARD_GATEWAYS:-3} gateways x ${SHARD_USERS_PER_GATEWAY:-1000} users"
  set +e
  SWITCHBOARD_GATEWAY_BIN=$CARGO_TARGET_DIR/release/switchboard-gateway \
  SB_SHARDHOLD_BIN=$CARGO_TARGET_DIR/release/sb-shardhold \
    timeout -k 10 "${SHARD_TIMEOUT:-1500}" cargo test -q -p switchboard-tests --test shard_traffic -- \
    --ignored --exact bus_traffic_per_gateway_by_pubsub_mode --nocapture 2>&1 \
    | grep -E '^TRAFFIC|panicked|assertion|left:|right:' | tee -a "$out"
  rc=${PIPESTATUS[0]}
  set -e
  echo "# load after: $(cat /proc/loadavg); exit $rc" | tee -a "$out"
  log "wrote $out"
  exit "$rc"
fi

if [ $# -gt 0 ]; then SCENARIOS=("$@"); else SCENARIOS=(memory connect fanout ceiling twogw); fi
for s in "${SCENARIOS[@]}"; do
  case $s in memory|connect|fanout|ceiling|twogw|scale|publish|http-publish|burst|steady) ;; *) echo "unknown scenario: $s" >&2; exit 2 ;; esac
done

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# --- build -----------------------------------------------------------------
if [ -z "${NO_BUILD:-}" ]; then
  log "building (release)"
  cargo build --release -q -p switchboard-gateway -p switchboard-bench
  if printf '%s\n' "${SCENARIOS[@]}" | grep -qx -e burst -e steady; then
    log "building the socketioxide reference (its own lock file)"
    cargo build --release -q --manifest-path bench/socketioxide-reference/Cargo.toml
  fi
  if [ ! -d bench/node-reference/node_modules/@socket.io/redis-streams-adapter ]; then
    log "installing the Node reference (npm ci)"
    (cd bench/node-reference && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
ulimit -n "$(ulimit -Hn)"

RESULTS_DIR=$ROOT/bench/results
mkdir -p "$RESULTS_DIR"
RUN_RESULTS=$RESULTS_DIR/run-$(date +%Y%m%d-%H%M%S).jsonl
touch "$RUN_RESULTS"   # a scenario that aborts writes no line; the report step still runs
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain 2>/dev/null | grep -q . && echo "+dirty" || true)
export SB_RUN="$(date -u +%Y-%m-%d) commit $COMMIT$DIRTY"

# --- processes ---------------------------------------------------------------
PIDS=()
REDIS_PID=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  quota_remove
}

# Issue #10, burst under a CPU quota. On this 2-core machine the generator
# and Redis need the other core, and at 1M deliveries/s offered every server
# kept up with what the generator could publish and read, so the generator
# was the bound and no server's capacity showed. A CFS quota caps each
# server at the same fraction of a core (BURST_SERVER_QUOTA percent, every
# BURST_QUOTA_PERIOD_US; a short period keeps the throttled gaps short), so
# that each saturates well below what the generator sustains: the figures
# then compare capacity, and `loadgen_cores_busy` (sb-load) shows the
# generator's core was not the bound. cgroup v1 (`cpu` controller), run as root.
# The same group serves `scale` (SCALE_SERVER_QUOTA): all its gateways together,
# restarted ones included, capped at that percent of one core, to put the gateways'
# core under the load of a larger run (issue #17's 1M restart phase) at a smaller size.
QUOTA_CG=
# quota_setup PERCENT LABEL
quota_setup() {
  local percent=$1 label=$2
  [ -n "$percent" ] || return 0
  local root=/sys/fs/cgroup/cpu
  if [ ! -w "$root/cgroup.procs" ]; then
    log "a $label server quota needs a writable cgroup v1 cpu controller at $root (root)"; exit 2
  fi
  QUOTA_CG=$root/sb-bench-$$
  mkdir "$QUOTA_CG"
  echo "$BURST_QUOTA_PERIOD_US" >"$QUOTA_CG/cpu.cfs_period_us"
  echo $((BURST_QUOTA_PERIOD_US * percent / 100)) >"$QUOTA_CG/cpu.cfs_quota_us"
  log "$label servers capped at ${percent}% of one core ($(cat "$QUOTA_CG/cpu.cfs_quota_us") us every ${BURST_QUOTA_PERIOD_US} us)"
}
# quota_add PID: the process and all its threads (cgroup.procs, not tasks).
quota_add() { echo "$1" >"$QUOTA_CG/cgroup.procs"; }
# Seconds the group has been throttled so far.
quota_throttled_s() { awk '$1 == "throttled_time" {printf "%.3f", $2 / 1e9}' "$QUOTA_CG/cpu.stat"; }
quota_remove() {
  [ -n "$QUOTA_CG" ] && [ -d "$QUOTA_CG" ] || return 0
  local t
  while read -r t; do echo "$t" >/sys/fs/cgroup/cpu/cgroup.procs 2>/dev/null || true; done <"$QUOTA_CG/cgroup.procs"
  rmdir "$QUOTA_CG" 2>/dev/null || log "could not remove $QUOTA_CG"
  QUOTA_CG=
}

trap cleanup EXIT

wait_port() {
  local port=$1 i
  for i in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  log "nothing listens on $port"; return 1
}

start_redis() {
  taskset -c "$LOAD_CPU" redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' \
    --appendonly no --loglevel warning --client-output-buffer-limit "pubsub 256mb 64mb 60" \
    >"$RESULTS_DIR/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_port $REDIS_PORT
}

# Every load client comes from 127.0.0.1: the per-address, per-user,
# admission and session limits (on by default) are lifted here.
LIFT_ENV=(SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP=0 SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_USER=0
  SWITCHBOARD_LIMITS__CONNECTS_PER_SEC=0 SWITCHBOARD_LIMITS__MAX_SESSIONS=0
  SWITCHBOARD_SERVER__MAX_CONNECTIONS=1000000)

# start_server KIND PORT [extra args] -> appends the pid to SERVER_PIDS
SERVER_PIDS=()
start_server() {
  local kind=$1 port=$2; shift 2
  case $kind in
    switchboard|baseline|baseline2)
      # Limits lifted (LIFT_ENV). A BASELINE_BIN may predate these keys
      # (and had the limits off).
      local bin=$BIN/switchboard-gateway
      local lift=("${LIFT_ENV[@]}")
      if [ "$kind" = baseline ]; then bin=$BASELINE_BIN; lift=(); fi
      if [ "$kind" = baseline2 ]; then bin=$BASELINE2_BIN; fi
      env "${lift[@]}" SWITCHBOARD_LISTEN=127.0.0.1:$port SWITCHBOARD_REDIS_URL=$REDIS_URL SWITCHBOARD_LOG_LEVEL=warn \
        SWITCHBOARD_API_KEYS=$BENCH_API_KEY \
        taskset -c "$SERVER_CPU" "$bin" >>"$RESULTS_DIR/server.log" 2>&1 &
      ;;
    switchboard-streams)
      # Issue #13: the streams bus with recovery on (why one picks streams).
      env "${LIFT_ENV[@]}" SWITCHBOARD_LISTEN=127.0.0.1:$port SWITCHBOARD_REDIS_URL=$REDIS_URL SWITCHBOARD_LOG_LEVEL=warn \
        SWITCHBOARD_API_KEYS=$BENCH_API_KEY SWITCHBOARD_REDIS__BUS=streams SWITCHBOARD_RECOVERY__ENABLED=true \
        taskset -c "$SERVER_CPU" "$BIN/switchboard-gateway" >>"$RESULTS_DIR/server.log" 2>&1 &
      ;;
    node|node-streams)
      local adapter=pubsub; [ "$kind" = node-streams ] && adapter=streams
      PORT=$port REDIS_URL=$REDIS_URL JWT_SECRET=$SWITCHBOARD_JWT_SECRET ADAPTER=$adapter \
        taskset -c "$SERVER_CPU" node bench/node-reference/server.js >>"$RESULTS_DIR/server.log" 2>&1 &
      ;;
    socketioxide)
      PORT=$port REDIS_URL=$REDIS_URL JWT_SECRET=$SWITCHBOARD_JWT_SECRET \
        taskset -c "$SERVER_CPU" "$BIN/socketioxide-reference" >>"$RESULTS_DIR/server.log" 2>&1 &
      ;;
    floor-tcp) taskset -c "$SERVER_CPU" "$BIN/sb-floor" --mode tcp --listen 127.0.0.1:$port >>"$RESULTS_DIR/server.log" 2>&1 & ;;
    floor-ws) taskset -c "$SERVER_CPU" "$BIN/sb-floor" --mode ws --listen 127.0.0.1:$port >>"$RESULTS_DIR/server.log" 2>&1 & ;;
    floor-fanout) taskset -c "$SERVER_CPU" "$BIN/sb-floor" --mode fanout --listen 127.0.0.1:$port "$@" >>"$RESULTS_DIR/server.log" 2>&1 & ;;
    floor-relay) taskset -c "$SERVER_CPU" "$BIN/sb-floor" --mode relay --listen 127.0.0.1:$port --redis-url "$REDIS_URL" "$@" >>"$RESULTS_DIR/server.log" 2>&1 & ;;
  esac
  local pid=$!
  PIDS+=("$pid"); SERVER_PIDS+=("$pid")
  wait_port "$port"
  sleep 1
}

stop_servers() {
  for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${SERVER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  SERVER_PIDS=()
  sleep 1
}

# Each load-generator run binds to its own block of 64 source addresses.
SRC_BLOCK=0
next_src() { SRC_BLOCK=$((SRC_BLOCK + 1)); echo "127.$((SRC_BLOCK % 250 + 1)).0.1"; }

load() {
  local pidargs=() p
  for p in "${SERVER_PIDS[@]}"; do pidargs+=(--server-pid "$p"); done
  # LOAD_TIMEOUT (seconds) bounds one run; unset, the scenario's own bounds apply.
  timeout "${LOAD_TIMEOUT:-0}" taskset -c "$LOAD_CPU" "$BIN/sb-load" "$1" "${@:2}" "${pidargs[@]}" \
    --src-base "$(next_src)" --results "$RUN_RESULTS"
}

# Server order alternates between consecutive measurements. `next_order`
# sets ORDERED (not a `$(...)` that prints it: a command substitution runs in
# a subshell, where the flip would never advance, and every round ran in the
# same order).
ORDER_FLIP=0
ORDERED=()
next_order() {
  local s=($SERVERS)
  if [ $((ORDER_FLIP % 2)) -eq 1 ]; then
    local r=() i; for ((i=${#s[@]}-1; i>=0; i--)); do r+=("${s[i]}"); done; s=("${r[@]}")
  fi
  ORDER_FLIP=$((ORDER_FLIP + 1))
  ORDERED=("${s[@]}")
}

# --- scenarios ---------------------------------------------------------------
scenario_memory() {
  local n srv rep
  for n in $MEM_SIZES; do
    for rep in $(seq 1 "$REPEAT"); do
      next_order; for srv in "${ORDERED[@]}" floor-ws floor-tcp; do
        log "memory: $n idle connections -> $srv"
        start_server "$srv" $BASE_PORT
        local raw=(); [ "$srv" = floor-tcp ] && raw=(--raw-tcp)
        load connect --addr 127.0.0.1:$BASE_PORT --server "$srv" --scenario memory \
          --count "$n" --concurrency 64 --settle-secs 5 "${raw[@]}" >/dev/null
        stop_servers
      done
    done
  done
}

scenario_connect() {
  local srv rep
  for rep in $(seq 1 "$REPEAT"); do
    next_order; for srv in "${ORDERED[@]}" floor-ws; do
      log "connect: $CONNECT_COUNT authenticated connects -> $srv"
      start_server "$srv" $BASE_PORT
      load connect --addr 127.0.0.1:$BASE_PORT --server "$srv" --scenario connect \
        --count "$CONNECT_COUNT" --concurrency "$CONNECT_CONCURRENCY" --settle-secs 0 >/dev/null
      stop_servers
    done
  done
}

fanout_args() {
  echo --clients "$FANOUT_CLIENTS" --rooms "$FANOUT_ROOMS" --rate "$FANOUT_RATE" --redis-url "$REDIS_URL"
}

scenario_fanout() {
  local srv rep
  for rep in $(seq 1 "$REPEAT"); do
    next_order; for srv in "${ORDERED[@]}" floor-fanout; do
      log "fanout: $FANOUT_CLIENTS clients, $FANOUT_RATE deliveries/s for ${FANOUT_SECS}s -> $srv"
      if [ "$srv" = floor-fanout ]; then
        start_server floor-fanout $BASE_PORT --rooms "$FANOUT_ROOMS" --rate "$FANOUT_RATE" --secs "$FANOUT_SECS"
        load fanout --addr 127.0.0.1:$BASE_PORT --server "$srv" --scenario fanout $(fanout_args) \
          --secs "$FANOUT_SECS" --floor >/dev/null
      else
        start_server "$srv" $BASE_PORT
        load fanout --addr 127.0.0.1:$BASE_PORT --server "$srv" --scenario fanout $(fanout_args) \
          --secs "$FANOUT_SECS" >/dev/null
      fi
      stop_servers
    done
  done
}

scenario_ceiling() {
  local srv rep
  for rep in $(seq 1 "$REPEAT"); do
    next_order; for srv in "${ORDERED[@]}"; do
      log "ceiling: $FANOUT_CLIENTS clients, closed-loop publishing for ${CEILING_SECS}s -> $srv"
      start_server "$srv" $BASE_PORT
      load fanout --addr 127.0.0.1:$BASE_PORT --server "$srv" --scenario ceiling $(fanout_args) \
        --secs "$CEILING_SECS" --ceiling >/dev/null
      stop_servers
    done
  done
}

scenario_twogw() {
  local srv rep
  for rep in $(seq 1 "$REPEAT"); do
    next_order; for srv in "${ORDERED[@]}"; do
      log "twogw: fanout split over two $srv servers on one Redis"
      start_server "$srv" $BASE_PORT
      start_server "$srv" $((BASE_PORT + 1))
      load fanout --addr 127.0.0.1:$BASE_PORT --addr 127.0.0.1:$((BASE_PORT + 1)) --server "$srv" \
        --scenario twogw $(fanout_args) --secs "$FANOUT_SECS" >/dev/null
      stop_servers
    done
  done
}

# Issue #10: open-loop fan-out at a fixed offered rate (the publisher does
# not wait for deliveries), every delivery accounted per client (loss and
# duplicates), for each of BURST_SERVERS and the raw-write floor, the order
# alternating between rounds. `burst` offers far more than any server
# sustains; `steady` a rate every server keeps up with (CPU per delivery and
# p99 against the floor). With PERF_SENDS set, `perf stat` counts the
# server's send syscalls during the run (deliveries per send).
run_open_loop() {
  local label=$1 rate=$2 base_secs=$3 srv rep secs
  local quota=; [ "$label" = burst ] && [ -n "$QUOTA_CG" ] && quota=1
  local saved=$SERVERS; SERVERS=$BURST_SERVERS
  # The floors, run last in each round. `steady` has two (see STEADY_FLOOR
  # above): the relay floor, driven through Redis like the servers, and the
  # self-stamped write loop.
  local floors=${BURST_FLOOR-floor-fanout}
  [ "$label" = steady ] && floors=${STEADY_FLOOR-${BURST_FLOOR-floor-relay floor-fanout}}
  for rep in $(seq 1 "$REPEAT"); do
    next_order; for srv in "${ORDERED[@]}" $floors; do
      secs=$base_secs
      case $srv in node*) [ "$label" = burst ] && secs=$BURST_NODE_SECS ;; esac
      local args=(--clients "$BURST_CLIENTS" --rooms "$BURST_ROOMS" --rate "$rate" --redis-url "$REDIS_URL" --secs "$secs")
      log "$label: $BURST_CLIENTS clients in $BURST_ROOMS rooms, $rate deliveries/s offered for ${secs}s -> $srv (load $(cut -d' ' -f1 /proc/loadavg))${quota:+, server capped at ${BURST_SERVER_QUOTA}% of a core}"
      local extra=()
      case $srv in *-streams) extra=(--bus streams) ;; esac
      if [ "$srv" = floor-fanout ]; then
        start_server floor-fanout $BASE_PORT --rooms "$BURST_ROOMS" --rate "$rate" --secs "$secs"
        extra=(--floor)
      elif [ "$srv" = floor-relay ]; then
        # Published to like the servers (no --floor): loss is counted too.
        start_server floor-relay $BASE_PORT --rooms "$BURST_ROOMS"
      else
        start_server "$srv" $BASE_PORT
      fi
      local throttled0=
      if [ -n "$quota" ]; then quota_add "${SERVER_PIDS[0]}"; throttled0=$(quota_throttled_s); fi
      local perf_out= perf_pid=
      if [ -n "${PERF_SENDS:-}" ]; then
        perf_out=$(mktemp "$RESULTS_DIR/perf.XXXXXX")
        # Started once the clients are connected would be better; counting
        # from the start adds only the handshakes (a few per client).
        perf stat -x, -e syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_write \
          -p "${SERVER_PIDS[0]}" -o "$perf_out" &
        perf_pid=$!
      fi
      local rec_pid=
      if [ -n "${PERF_RECORD:-}" ]; then
        perf record -q -g -p "${SERVER_PIDS[0]}" -o "$RESULTS_DIR/perf-$label-$srv.data" >/dev/null 2>&1 &
        rec_pid=$!
      fi
      local before; before=$(wc -l <"$RUN_RESULTS" 2>/dev/null || echo 0)
      LOAD_TIMEOUT=$((${secs%.*} + 301)) load fanout --addr 127.0.0.1:$BASE_PORT --server "$srv" --scenario "$label" \
        "${args[@]}" "${extra[@]}" >/dev/null || log "$label: the load generator failed for $srv"
      if [ -n "$rec_pid" ]; then
        kill -INT "$rec_pid" 2>/dev/null || true; wait "$rec_pid" 2>/dev/null || true
      fi
      # The quota and how long it held the server back (over the whole
      # run, connects included) go on the result line.
      if [ -n "$quota" ] && [ "$(wc -l <"$RUN_RESULTS")" -gt "$before" ]; then
        local throttled line
        throttled=$(awk -v a="$throttled0" -v b="$(quota_throttled_s)" 'BEGIN {printf "%.3f", b - a}')
        line=$(tail -n1 "$RUN_RESULTS" | jq -c --argjson t "$throttled" --argjson q "$BURST_SERVER_QUOTA" \
          '.figures.server_quota_pct = $q | .figures.server_throttled_s = $t')
        head -n -1 "$RUN_RESULTS" >"$RUN_RESULTS.tmp"; echo "$line" >>"$RUN_RESULTS.tmp"; mv "$RUN_RESULTS.tmp" "$RUN_RESULTS"
      fi
      if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" 2>/dev/null || true
        local sends; sends=$(awk -F, '$1 ~ /^[0-9]+$/ {n += $1} END {print n + 0}' "$perf_out")
        rm -f "$perf_out"
        local after; after=$(wc -l <"$RUN_RESULTS")
        if [ "$after" -gt "$before" ] && [ "$sends" -gt 0 ]; then
          # Adds the send count to the result line just written.
          local last; last=$(tail -n1 "$RUN_RESULTS" | jq -c --argjson s "$sends" \
            '.figures.send_syscalls = $s | .figures.deliveries_per_send = (.figures.deliveries / $s)')
          head -n -1 "$RUN_RESULTS" >"$RUN_RESULTS.tmp"; echo "$last" >>"$RUN_RESULTS.tmp"; mv "$RUN_RESULTS.tmp" "$RUN_RESULTS"
        fi
      fi
      stop_servers
    done
  done
  SERVERS=$saved
}

scenario_burst() { run_open_loop burst "$BURST_RATE" "$BURST_SECS"; }
scenario_steady() { run_open_loop steady "$STEADY_RATE" "$STEADY_SECS"; }

# Issue #17: SCALE_CONNS idle sessions over as many gateway processes as the
# open-files limit requires (sized so that, after the rolling restart moves
# SCALE_RESTART gateways' clients onto the others, no process holds more
# than SCALE_PER_AFTER sessions), one generator per gateway on its own block
# of 64 loopback source addresses, all sharing one Redis. `sb-load
# scale-coord` starts the generators in waves of SCALE_WAVE, reports
# progress, measures the idle hold (gateway CPU and RSS, kernel socket
# memory), publishes one broadcast to everyone and one to role:r0 (10% of
# users), then restarts gateways 0..SCALE_RESTART-1 one at a time (SIGTERM,
# their clients reconnect to the others, a new process takes the port) while
# probes go to 1% of users. Every process is bounded by `timeout`; the
# coordinator aborts the run if MemAvailable drops below SCALE_MIN_AVAIL_MIB.

# scale_layout CONNS -> "GATEWAYS PER_GATEWAY"
scale_layout() {
  local conns=$1 hard g g2
  hard=$(ulimit -Hn)
  local cap=$((hard - 1500)) after=$((hard - 1000))
  [ -n "${SCALE_PER_AFTER:-}" ] && after=$SCALE_PER_AFTER
  g=$(( (conns + cap - 1) / cap ))
  g2=$(( (conns + after - 1) / after + SCALE_RESTART ))
  [ "$g2" -gt "$g" ] && g=$g2
  [ -n "${SCALE_GATEWAYS:-}" ] && g=$SCALE_GATEWAYS
  echo "$g $(( (conns + g - 1) / g ))"
}

# The command that starts one scale gateway of KIND on port {port} (also
# given to the coordinator, which starts restarted gateways again).
scale_server_cmd() {
  case $1 in
    switchboard)
      echo "env ${LIFT_ENV[*]} SWITCHBOARD_LISTEN=127.0.0.1:{port} SWITCHBOARD_REDIS_URL=$REDIS_URL" \
        "SWITCHBOARD_LOG_LEVEL=warn SWITCHBOARD_API_KEYS=$BENCH_API_KEY taskset -c $SERVER_CPU $BIN/switchboard-gateway" \
        ">>$RESULTS_DIR/server.log 2>&1" ;;
    node)
      echo "env PORT={port} REDIS_URL=$REDIS_URL JWT_SECRET=$SWITCHBOARD_JWT_SECRET taskset -c $SERVER_CPU" \
        "node $ROOT/bench/node-reference/server.js >>$RESULTS_DIR/server.log 2>&1" ;;
  esac
}

scenario_scale() {
  local srv g p
  for srv in $SCALE_SERVERS; do
    local conns=$SCALE_CONNS
    [ "$srv" = node ] && conns=$SCALE_NODE_CONNS
    local layout gws per
    layout=$(scale_layout "$conns"); gws=${layout% *}; per=${layout#* }
    log "scale: $((per * gws)) idle connections over $gws $srv processes ($per each), ${SCALE_SECS}s hold, then broadcasts and a rolling restart of $SCALE_RESTART"
    local cmd; cmd=$(scale_server_cmd "$srv")
    local addrs=() gw_pids=()
    for g in $(seq 0 $((gws - 1))); do
      sh -c "exec ${cmd//\{port\}/$((BASE_PORT + g))}" &
      PIDS+=("$!"); SERVER_PIDS+=("$!"); gw_pids+=("$!")
      if [ -n "$QUOTA_CG" ]; then quota_add "$!"; fi
      addrs+=(--addr "127.0.0.1:$((BASE_PORT + g))")
    done
    for g in $(seq 0 $((gws - 1))); do wait_port $((BASE_PORT + g)); done
    sleep 2
    local pidargs=()
    for p in "${gw_pids[@]}"; do pidargs+=(--server-pid "$p"); done
    local sync; sync=$(mktemp -d "$RESULTS_DIR/scale-sync.XXXXXX")
    local tag=$((RANDOM % 10000))
    local limit=$((SCALE_READY_SECS + SCALE_SECS + 900))
    timeout "$limit" taskset -c "$LOAD_CPU" "$BIN/sb-load" scale-coord "${pidargs[@]}" "${addrs[@]}" \
      --server "$srv" --per "$per" --tag "$tag" --sync-dir "$sync" --hold-secs "$SCALE_SECS" \
      --ready-timeout-secs "$SCALE_READY_SECS" --wave "$SCALE_WAVE" --restart "$SCALE_RESTART" \
      --respawn-cmd "$cmd" --min-available-mib "$SCALE_MIN_AVAIL_MIB" --probe-rate "$SCALE_PROBE_RATE" \
      --redis-url "$REDIS_URL" --results "$RUN_RESULTS" >/dev/null &
    local coord=$!
    local qwatch=
    if [ -n "$QUOTA_CG" ]; then
      # Gateways the coordinator starts again join the group (within 0.5 s).
      ( while kill -0 "$coord" 2>/dev/null; do
          if [ -f "$sync/respawned-pids" ]; then
            while read -r p; do echo "$p" >"$QUOTA_CG/cgroup.procs" 2>/dev/null || true; done <"$sync/respawned-pids"
          fi
          sleep 0.5
        done ) &
      qwatch=$!
    fi
    for _ in $(seq 1 100); do [ -e "$sync/started" ] && break; sleep 0.1; done
    local loads=()
    for g in $(seq 0 $((gws - 1))); do
      # Niced: Redis shares LOAD_CPU with the generators, and a starved Redis
      # (round trips over the gateways' 2 s bound) is not what is measured.
      timeout "$limit" nice -n 10 taskset -c "$LOAD_CPU" "$BIN/sb-load" --threads 1 scale "${addrs[@]}" \
        --server "$srv" --count "$per" --index "$g" --sync-dir "$sync" --tag "$tag" \
        --restart "$SCALE_RESTART" --concurrency 32 --wait-secs $((limit - 30)) \
        --probe-grace-secs "$SCALE_PROBE_GRACE" \
        --src-base "$(next_src)" &
      loads+=($!); PIDS+=("$!")
    done
    local rc=0
    wait "$coord" || rc=$?
    [ "$rc" -eq 0 ] || log "scale: the coordinator failed (exit $rc) for $srv"
    if [ -n "$qwatch" ]; then
      wait "$qwatch" 2>/dev/null || true
      log "scale: $srv gateways throttled by the quota for $(quota_throttled_s) s in all"
    fi
    # Restarted gateways are the coordinator's children; if it was killed they remain.
    if [ -f "$sync/respawned-pids" ]; then
      while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$sync/respawned-pids"
    fi
    # A million sockets: no graceful goodbyes, kill everything at once
    # (`timeout` passes SIGTERM on to its generator; SIGKILL would orphan it).
    for p in "${loads[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${SERVER_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${loads[@]}" "${SERVER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    SERVER_PIDS=()
    log "scale: $srv done; waiting for the kernel to release the sockets"
    for _ in $(seq 1 120); do
      [ "$(awk '/^TCP:/ {print $3}' /proc/net/sockstat)" -lt 20000 ] && break
      sleep 1
    done
    rm -rf "$sync"
  done
}

# Issue #18: PUBLISH_COUNT small events to role:admin against the one Redis
# (on LOAD_CPU), the publisher on SERVER_CPU: the broadcaster crate from a
# one-thread Tokio program (C tasks awaiting one emit each) vs
# @socket.io/redis-emitter on node-redis 4 (C fire-and-forget emits per PING).
scenario_publish() {
  local c srv rep
  for rep in $(seq 1 "$REPEAT"); do
    for c in $PUBLISH_CONCURRENCY; do
      next_order; for srv in "${ORDERED[@]}"; do
        log "publish: $PUBLISH_COUNT publishes at concurrency $c -> $srv"
        taskset -c "$SERVER_CPU" "$BIN/sb-publish" --publisher "$srv" --redis-url "$REDIS_URL" \
          --count "$PUBLISH_COUNT" --warmup "$PUBLISH_WARMUP" --concurrency "$c" \
          --results "$RUN_RESULTS" >/dev/null
      done
    done
  done
}

# Issue #18: the gateway's HTTP publish API (POST /api/v1/emit, a small
# event to role:admin) on SERVER_CPU, under keep-alive closed-loop load from
# sb-http-publish (C connections, one request in flight each) on LOAD_CPU
# with Redis; this build (`switchboard`) and BASELINE_BIN (`baseline`) in
# alternating order.
scenario_http-publish() {
  local c srv rep flip=0 servers=(switchboard)
  if [ -n "$BASELINE_BIN" ]; then
    [ -x "$BASELINE_BIN" ] || { log "BASELINE_BIN=$BASELINE_BIN is not an executable"; exit 2; }
    servers=(switchboard baseline)
  fi
  for rep in $(seq 1 "$REPEAT"); do
    for c in $HTTP_PUBLISH_CONCURRENCY; do
      # Alternate which build goes first (a `$(...)` runs in a subshell
      # here, where its counter would not advance).
      local order=("${servers[@]}")
      if [ $((flip % 2)) -eq 1 ] && [ ${#servers[@]} -eq 2 ]; then order=(baseline switchboard); fi
      flip=$((flip + 1))
      for srv in "${order[@]}"; do
        log "http-publish: ${HTTP_PUBLISH_SECS}s at concurrency $c -> $srv"
        start_server "$srv" $BASE_PORT
        taskset -c "$LOAD_CPU" "$BIN/sb-http-publish" --addr 127.0.0.1:$BASE_PORT --pid "${SERVER_PIDS[0]}" \
          --server "$srv" --api-key "$BENCH_API_KEY" --redis-url "$REDIS_URL" --concurrency "$c" \
          --secs "$HTTP_PUBLISH_SECS" --results "$RUN_RESULTS" >/dev/null
        stop_servers
      done
    done
  done
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "$SCALE_SERVER_QUOTA" ] && [ -n "$BURST_SERVER_QUOTA" ]; then
  log "set BURST_SERVER_QUOTA or SCALE_SERVER_QUOTA, not both"; exit 2
fi
printf '%s\n' "${SCENARIOS[@]}" | grep -qx burst && quota_setup "$BURST_SERVER_QUOTA" burst
printf '%s\n' "${SCENARIOS[@]}" | grep -qx scale && quota_setup "$SCALE_SERVER_QUOTA" scale
start_redis
for s in "${SCENARIOS[@]}"; do "scenario_$s"; done

# --- report ------------------------------------------------------------------
ALL=$RESULTS_DIR/results.jsonl
touch "$ALL"
# Results of the (scenario, server) pairs just run replace earlier ones; the
# others stay (a Switchboard-only run keeps Node's figures).
ran=$(jq -sc 'map([.scenario, .server]) | unique' "$RUN_RESULTS")
jq -c --argjson ran "$ran" 'select([.scenario, .server] as $k | $ran | index([$k]) | not)' "$ALL" >"$ALL.tmp" || true
cat "$RUN_RESULTS" >>"$ALL.tmp"
mv "$ALL.tmp" "$ALL"

if [ -z "${NO_REPORT:-}" ]; then
  MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
  MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
  "$BIN/sb-load" report --results "$ALL" --doc docs/benchmarks.md \
    --line "Last run: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT$DIRTY, scenarios: ${SCENARIOS[*]}" \
    --line "Machine: $(nproc) CPUs ($MODEL), $MEM RAM, $(uname -sr); server on CPU $SERVER_CPU, load generator + Redis on CPU $LOAD_CPU" \
    --line "Machine load average (1/5/15 min) at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg) — anything above ~2 means other processes shared the cores" \
    --line "Versions: $(node --version 2>/dev/null || echo 'node ?') with socket.io $(node -p 'require("./bench/node-reference/node_modules/socket.io/package.json").version' 2>/dev/null || echo '?'), $(redis-server --version | awk '{print $3}')"
  log "wrote docs/benchmarks.md"
fi
