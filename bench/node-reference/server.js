// Node.js reference server for bench/run.sh: what a team would run instead of
// the Switchboard gateway. socket.io 4.x + @socket.io/redis-adapter (classic
// PUBLISH/PSUBSCRIBE mode, the one @socket.io/redis-emitter talks to),
// the same HS256 JWT check at CONNECT (token in the CONNECT auth payload) and
// the same rooms: `user:{sub}` and `role:{role}` for each of `role`/`roles`.
// With ADAPTER=streams: @socket.io/redis-streams-adapter 0.3 (broadcasts read
// from the `socket.io` stream, what a gateway with `redis.bus = "streams"`
// and the broadcaster crate in streams mode write) with connection state
// recovery on, as one runs it for recovery (offsets on every event, sessions
// in Redis).
//
// Environment: PORT (default 3002), REDIS_URL (default redis://127.0.0.1:6379),
// JWT_SECRET (required), ADAPTER (`pubsub`, the default, or `streams`).
"use strict";

const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const streamsAdapter = require("@socket.io/redis-streams-adapter");
const { createClient } = require("redis");
const jwt = require("jsonwebtoken");

const port = Number(process.env.PORT || 3002);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const secret = process.env.JWT_SECRET;
if (!secret) {
  console.error("JWT_SECRET is required");
  process.exit(2);
}
const streams = (process.env.ADAPTER || "pubsub") === "streams";
if (!streams && (process.env.ADAPTER || "pubsub") !== "pubsub") {
  console.error(`ADAPTER must be pubsub or streams, not ${process.env.ADAPTER}`);
  process.exit(2);
}

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);

  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    // The streams adapter duplicates `pub` for its stream readers and its
    // pub/sub subscriber; `sub` stays unused.
    adapter: streams ? streamsAdapter.createAdapter(pub) : createAdapter(pub, sub),
    // socket.io's defaults (120 s window, middlewares skipped on recovery).
    ...(streams ? { connectionStateRecovery: {} } : {}),
    serveClient: false,
  });

  io.use((socket, next) => {
    const token = socket.handshake.auth && socket.handshake.auth.token;
    if (typeof token !== "string") return next(new Error("unauthorized"));
    jwt.verify(token, secret, { algorithms: ["HS256"], clockTolerance: 30 }, (err, claims) => {
      if (err || typeof claims.sub !== "string") return next(new Error("unauthorized"));
      const rooms = [`user:${claims.sub}`];
      for (const key of ["role", "roles"]) {
        const v = claims[key];
        const roles = Array.isArray(v) ? v : v === undefined ? [] : [v];
        for (const r of roles) if (typeof r === "string") rooms.push(`role:${r}`);
      }
      socket.data.rooms = rooms;
      next();
    });
  });

  io.on("connection", (socket) => {
    socket.join(socket.data.rooms);
  });

  httpServer.listen(port, "127.0.0.1", () => {
    console.log(`node-reference listening on 127.0.0.1:${port}`);
  });

  const stop = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).finally(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
