#!/usr/bin/env bash
# Samples the gateways of a running `bench/run.sh scale` every few seconds and
# prints one line per sample: time, load average, how many gateways answered
# /metrics within the timeout, and, summed over those that answered, open
# sessions, sessions closed by reason, heartbeat steps run late by kind,
# engine requests refused by error, and Redis bus outages. It is what shows *when* a scale run went
# wrong (which phase, which reason), which the coordinator's end-of-run rows
# cannot.
#
#   bench/scale-sampler.sh [GATEWAYS] [INTERVAL_SECS] [MAX_SECS] > samples.txt
#
# GATEWAYS defaults to 58 (ports 4100..4157, bench/run.sh's BASE_PORT), the
# interval to 12 s; it stops by itself after MAX_SECS (default 3600) or when
# no gateway has answered for 10 samples in a row after one did.
set -u
gws=${1:-58}
interval=${2:-12}
max_secs=${3:-3600}
base=${BASE_PORT:-4100}
timeout_s=${SAMPLER_TIMEOUT:-2}

started=$(date +%s)
seen=0
silent=0
while [ $(( $(date +%s) - started )) -lt "$max_secs" ]; do
  tmp=$(mktemp -d)
  # All gateways at once: asked one after the other, an overloaded fleet
  # (each taking the whole timeout) stretched one sample to minutes.
  for g in $(seq 0 $((gws - 1))); do
    { curl -sf -m "$timeout_s" -o "$tmp/$g" "http://127.0.0.1:$((base + g))/metrics" 2>/dev/null || rm -f "$tmp/$g"; } &
  done
  wait
  answered=0
  for f in "$tmp"/*; do
    [ -s "$f" ] && answered=$((answered + 1))
  done
  load=$(cut -d' ' -f1 /proc/loadavg)
  # Sum every sample of a family by its one label (or none) across gateways.
  summary=$(awk '
    /^#/ { next }
    /^switchboard_connections\{/                  { s += $2 }
    /^switchboard_engine_sessions_closed_total\{/ { match($1, /reason="[^"]*"/); k = substr($1, RSTART + 8, RLENGTH - 9); c[k] += $2 }
    /^switchboard_heartbeat_late_total\{/         { match($1, /what="[^"]*"/);   k = substr($1, RSTART + 6, RLENGTH - 7); l[k] += $2 }
    /^switchboard_engine_errors_total\{/          { match($1, /error="[^"]*"/);  k = substr($1, RSTART + 7, RLENGTH - 8); e[k] += $2 }
    /^switchboard_bus_outages_total /             { o += $2 }
    END {
      printf "sessions=%d closed:", s
      for (k in c) printf " %s=%d", k, c[k]
      printf " late:"
      for (k in l) printf " %s=%d", k, l[k]
      printf " refused:"
      for (k in e) printf " %s=%d", k, e[k]
      printf " bus_outages=%d", o
    }' "$tmp"/* 2>/dev/null)
  rm -rf "$tmp"
  echo "$(date -u +%H:%M:%S) load=$load answered=$answered $summary"
  if [ "$answered" -gt 0 ]; then seen=1; silent=0; else silent=$((silent + 1)); fi
  [ "$seen" -eq 1 ] && [ "$silent" -ge 10 ] && break
  sleep "$interval"
done
