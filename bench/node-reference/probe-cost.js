// What one rolling-restart probe of the `scale` scenario costs a gateway
// (issue #17): publishes COUNT probes, RATE per second, each ONE broadcast
// to ROOMS `user:...` rooms (the coordinator names 1% of the users, so
// 10,000 at 1M), through @socket.io/redis-emitter, as the coordinator does.
// Every gateway receives and decodes every probe. Run by
// bench/probe-cost.sh, which reads the gateway's CPU time around it.
//
// Environment: REDIS_URL, COUNT (200), RATE (20), ROOMS (10000).
"use strict";

const { createClient } = require("redis");
const { Emitter } = require("@socket.io/redis-emitter");

const url = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const count = Number(process.env.COUNT || 200);
const rate = Number(process.env.RATE || 20);
const roomCount = Number(process.env.ROOMS || 10000);

async function main() {
  const client = createClient({ url });
  await client.connect();
  const emitter = new Emitter(client);
  // The coordinator's names: user:u<tag>-<generator>-<index>, every 100th.
  const rooms = [];
  for (let i = 0; i < roomCount; i++) {
    rooms.push(`user:u1234-${Math.floor(i / 172)}-${(i % 172) * 100}`);
  }
  for (let s = 0; s < count; s++) {
    emitter.to(rooms).emit("bench", { t: Date.now() * 1000, s, r: 1000003 });
    await client.ping();
    await new Promise((r) => setTimeout(r, 1000 / rate));
  }
  await client.quit();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
