// The Node side of bench/run.sh's `publish` scenario (issue #18): what an
// API service publishes with today. @socket.io/redis-emitter 5.x on
// node-redis 4, in its best case: WINDOW fire-and-forget emits (node-redis
// pipelines every command of a tick into one write), then one PING whose
// reply says the window reached Redis. Each emit's latency is its window's
// round trip (an emit gets no reply of its own).
//
// Environment: REDIS_URL (default redis://127.0.0.1:6379), COUNT (100000),
// WINDOW (1), WARMUP (COUNT / 10). Prints one JSON object:
// {"publishes": N, "seconds": s, "publishes_per_s": r, "p50_us": .., "p99_us": ..,
//  "cpu_us": CPU time over the measured publishes, "pings": windows}.
"use strict";

const { createClient } = require("redis");
const { Emitter } = require("@socket.io/redis-emitter");

const url = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const count = Number(process.env.COUNT || 100000);
const window = Math.max(1, Number(process.env.WINDOW || 1));
const warmup = Number(process.env.WARMUP || Math.floor(count / 10));

// The same small event the Rust side publishes.
const ticket = { id: 7, status: "open", title: "Printer on fire", assignee: 42 };

async function run(client, emitter, n, latencies) {
  let pings = 0;
  for (let sent = 0; sent < n; ) {
    const w = Math.min(window, n - sent);
    const started = process.hrtime.bigint();
    for (let i = 0; i < w; i++) {
      emitter.to("role:admin").emit("ticket_updated", ticket);
    }
    await client.ping();
    pings++;
    if (latencies) {
      const us = Number(process.hrtime.bigint() - started) / 1000;
      for (let i = 0; i < w; i++) latencies.push(us);
    }
    sent += w;
  }
  return pings;
}

function quantile(sorted, q) {
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[rank - 1];
}

async function main() {
  const client = createClient({ url });
  client.on("error", (e) => {
    console.error(`redis: ${e.message}`);
    process.exit(3);
  });
  await client.connect();
  const emitter = new Emitter(client);
  await run(client, emitter, warmup, null);
  const latencies = [];
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  const pings = await run(client, emitter, count, latencies);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const used = process.cpuUsage(cpu);
  latencies.sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      publishes: count,
      seconds,
      publishes_per_s: count / seconds,
      p50_us: quantile(latencies, 0.5),
      p99_us: quantile(latencies, 0.99),
      cpu_us: used.user + used.system,
      pings,
    }),
  );
  await client.quit();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
