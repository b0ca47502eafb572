// Shared helpers of the cluster capture / acceptance scripts: Socket.IO servers on
// the streams adapter or the sharded adapter, stock clients, a MONITOR reader,
// and JSON-lines output (binary as {"$bin": hex}).
"use strict";
const net = require("net");
const { createServer } = require("http");
const { Server } = require("socket.io");
const { io: ioc } = require("socket.io-client");
const { createClient } = require("redis");
const { createAdapter: createStreamsAdapter } = require("@socket.io/redis-streams-adapter");
const { createShardedAdapter } = require("@socket.io/redis-adapter");

/** One JSON line on stdout. */
function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

/** A JSON-safe copy of a value: Buffers / typed arrays become {"$bin": hex}, functions "$fn". */
function plain(v) {
  if (Buffer.isBuffer(v)) return { $bin: v.toString("hex") };
  if (v instanceof ArrayBuffer) return { $bin: Buffer.from(v).toString("hex") };
  if (ArrayBuffer.isView(v)) return { $bin: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("hex") };
  if (typeof v === "function") return "$fn";
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === "object") {
    const o = {};
    for (const k of Object.keys(v)) o[k] = plain(v[k]);
    return o;
  }
  return v;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 20 ms until it is truthy or `ms` elapsed (then throws `what`). */
async function waitFor(what, cond, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * A Socket.IO server on a free port with the adapter of `mode`:
 * "streams" (redis-streams-adapter, connection state recovery on) or
 * "sharded-static" / "sharded-dynamic" (createShardedAdapter).
 */
async function startServer(url, mode, extra = {}) {
  const pub = createClient({ url });
  pub.on("error", () => {});
  await pub.connect();
  const opts = {};
  if (mode === "streams") {
    opts.adapter = createStreamsAdapter(pub, extra.adapterOpts || {});
    opts.connectionStateRecovery = { maxDisconnectionDuration: 60000 };
  } else {
    const sub = pub.duplicate();
    sub.on("error", () => {});
    await sub.connect();
    opts.adapter = createShardedAdapter(pub, sub, { subscriptionMode: mode.replace("sharded-", "") });
  }
  const http = createServer();
  const io = new Server(http, opts);
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  return { io, pub, port: http.address().port, uid: io.of("/").adapter.uid };
}

/** A stock socket.io-client on `port` (websocket only, no automatic reconnection). */
async function connectClient(port, received) {
  const socket = ioc(`http://127.0.0.1:${port}`, {
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
  });
  socket.onAny((event, ...args) => {
    received.push({ event, args: plain(args) });
    out({ kind: "received", event, args: plain(args) });
  });
  socket.on("connect", () => out({ kind: "client-connect", id: socket.id, recovered: socket.recovered }));
  await waitFor("client connect", () => socket.connected);
  return socket;
}

/** Reads the backslash escapes of one MONITOR argument (Redis' sdscatrepr) into bytes. */
function unrepr(s) {
  const bytes = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c !== "\\") {
      bytes.push(...Buffer.from(c, "latin1"));
      continue;
    }
    const n = s[++i];
    const simple = { "\\": 0x5c, '"': 0x22, n: 0x0a, r: 0x0d, t: 0x09, a: 0x07, b: 0x08 };
    if (n in simple) bytes.push(simple[n]);
    else if (n === "x") {
      bytes.push(parseInt(s.substr(i + 1, 2), 16));
      i += 2;
    } else throw new Error(`bad escape \\${n} in MONITOR line`);
  }
  return Buffer.from(bytes);
}

/**
 * Runs MONITOR on a raw connection and calls `onCommand(args)` (an array of
 * Buffers) for every command any client sends. Returns a function that stops it.
 */
async function monitor(port, onCommand) {
  const sock = net.connect(port, "127.0.0.1");
  await new Promise((r, e) => sock.once("connect", r).once("error", e));
  let buf = "";
  sock.setEncoding("latin1");
  sock.on("data", (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\r\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 2);
      if (!line.startsWith("+") || line === "+OK") continue;
      const args = [];
      const re = /"((?:[^"\\]|\\.)*)"/g;
      let m;
      const start = line.indexOf("]");
      re.lastIndex = start;
      while ((m = re.exec(line))) args.push(unrepr(m[1]));
      onCommand(args);
    }
  });
  sock.write("MONITOR\r\n");
  await sleep(100);
  return () => sock.destroy();
}

module.exports = { out, plain, sleep, waitFor, startServer, connectClient, monitor, createClient };
