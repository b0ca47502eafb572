// Switchboard interop driver: one long-running node process, controlled over
// stdin/stdout with JSON lines, that drives many official socket.io clients,
// the official @socket.io/redis-emitter and Node socket.io servers with the
// official @socket.io/redis-adapter.
//
// Requests:  {"id":N,"op":"...",...}
// Responses: {"id":N,"ok":true,"result":...} | {"id":N,"ok":false,"error":"..."}
// Notes:     {"note":"connect","client":"c1","sid":"...","transport":"polling"}
//            {"note":"connect_error","client":"c1","message":"...","data":...}
//            {"note":"event","client":"c1","name":"ev","args":[...]}
//            {"note":"disconnect","client":"c1","reason":"...","description":...}
//            {"note":"transport","client":"c1","name":"websocket"}
//            {"note":"server_event","port":P,"nsp":"/","sid":"...","name":"ev","args":[...]}
//            {"note":"server_side_event","port":P,"name":"ev","args":[...]}
// Binary values anywhere in args are {"$bin":"<base64>"} in both directions.
// The process exits when stdin closes.

import { createInterface } from "node:readline";
import { createServer } from "node:http";
import { io as ioClient } from "socket.io-client";
import { Server } from "socket.io";
import { createAdapter, createShardedAdapter } from "@socket.io/redis-adapter";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient, createCluster } from "redis";

// stdout carries the protocol only: route any library console output to stderr.
console.log = (...a) => console.error(...a);
console.info = (...a) => console.error(...a);
console.warn = (...a) => console.error(...a);

process.on("unhandledRejection", (e) => console.error("driver: unhandled rejection:", e));
process.on("uncaughtException", (e) => console.error("driver: uncaught exception:", e));

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function note(obj) {
  send(obj);
}

// ---------------------------------------------------------------- binary codec

function encode(v) {
  if (v === null || v === undefined) return v ?? null;
  if (Buffer.isBuffer(v)) return { $bin: v.toString("base64") };
  if (v instanceof ArrayBuffer) return { $bin: Buffer.from(v).toString("base64") };
  if (ArrayBuffer.isView(v)) {
    return { $bin: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") };
  }
  if (Array.isArray(v)) return v.map(encode);
  if (typeof v === "function") return null;
  if (typeof v === "object") {
    const out = {};
    for (const [k, x] of Object.entries(v)) {
      if (typeof x !== "function" && x !== undefined) out[k] = encode(x);
    }
    return out;
  }
  return v;
}

function decode(v) {
  if (v === null || v === undefined) return v;
  if (Array.isArray(v)) return v.map(decode);
  if (typeof v === "object") {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === "$bin" && typeof v.$bin === "string") {
      return Buffer.from(v.$bin, "base64");
    }
    const out = {};
    for (const [k, x] of Object.entries(v)) out[k] = decode(x);
    return out;
  }
  return v;
}

function stripAck(args) {
  if (args.length > 0 && typeof args[args.length - 1] === "function") {
    return { args: args.slice(0, -1), ack: args[args.length - 1] };
  }
  return { args, ack: null };
}

function errMessage(e) {
  if (e instanceof Error) return e.message || String(e);
  return typeof e === "string" ? e : JSON.stringify(e);
}

// ---------------------------------------------------------------- clients

const clients = new Map(); // name -> socket

function need(cond, msg) {
  if (!cond) throw new Error(msg);
}

function getClient(name) {
  const s = clients.get(name);
  need(s, `unknown client ${name}`);
  return s;
}

function opConnect(req) {
  const name = req.client;
  need(typeof name === "string" && name, "connect needs client");
  need(typeof req.url === "string", "connect needs url");
  const old = clients.get(name);
  if (old) {
    need(!old.connected, `client ${name} is already connected`);
    old.removeAllListeners();
    old.io.removeAllListeners?.();
    old.disconnect();
    old.io.engine?.close?.();
  }
  const opts = { forceNew: true, reconnection: false, ...decode(req.opts || {}) };
  const socket = ioClient(req.url, opts);
  clients.set(name, socket);

  const hookEngine = () => {
    const engine = socket.io.engine;
    if (engine && !engine.__sbHooked) {
      engine.__sbHooked = true;
      engine.on("upgrade", (transport) => {
        note({ note: "transport", client: name, name: transport?.name ?? String(transport) });
      });
    }
  };
  socket.io.on("open", hookEngine);
  hookEngine();

  socket.onAny((ev, ...raw) => {
    const { args } = stripAck(raw);
    note({ note: "event", client: name, name: ev, args: encode(args) });
  });
  socket.on("disconnect", (reason, details) => {
    const description = details ? encode({ message: details.message, description: details.description }) : null;
    note({ note: "disconnect", client: name, reason, description });
  });

  return new Promise((resolve, reject) => {
    let settled = false;
    socket.on("connect", () => {
      hookEngine();
      const transport = socket.io.engine?.transport?.name ?? null;
      note({ note: "connect", client: name, sid: socket.id, transport, recovered: socket.recovered === true });
      if (!settled) {
        settled = true;
        resolve({ sid: socket.id, transport });
      }
    });
    socket.on("connect_error", (err) => {
      const message = errMessage(err);
      note({
        note: "connect_error",
        client: name,
        message,
        data: encode(err?.data ?? null),
        description: encode(err?.description?.message ?? err?.description ?? null),
      });
      if (!settled && (!opts.reconnection || !socket.active)) {
        settled = true;
        reject(new Error(message));
      }
    });
  });
}

async function opEmit(req) {
  const s = getClient(req.client);
  let target = s;
  if (req.volatile) target = target.volatile;
  target.emit(req.name, ...decode(req.args || []));
  return true;
}

function opEmitWithAck(req) {
  const s = getClient(req.client);
  const timeoutMs = req.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    s.timeout(timeoutMs).emit(req.name, ...decode(req.args || []), (err, ...ackArgs) => {
      if (err) reject(new Error(`ack timeout after ${timeoutMs} ms`));
      else resolve(encode(ackArgs));
    });
  });
}

function opDisconnect(req) {
  const s = getClient(req.client);
  s.disconnect();
  return true;
}

// The network goes away under the client (not a client disconnect): the
// transport closes, socket.io-client reports "transport close" and, with
// reconnection on, reconnects with its pid and last offset.
function opDropTransport(req) {
  const s = getClient(req.client);
  s.io.engine?.close();
  return true;
}

function opClientState(req) {
  const s = getClient(req.client);
  return {
    connected: s.connected,
    sid: s.id ?? null,
    transport: s.io.engine?.transport?.name ?? null,
  };
}

// ---------------------------------------------------------------- emitter

const redisClients = new Map(); // url -> Promise<client>

function redisFor(url) {
  let p = redisClients.get(url);
  if (!p) {
    const client = createClient({ url });
    client.on("error", (e) => console.error(`driver: redis ${url}: ${errMessage(e)}`));
    p = client.connect().then(() => client);
    p.catch(() => redisClients.delete(url));
    redisClients.set(url, p);
  }
  return p;
}

async function emitterFor(req) {
  need(typeof req.redisUrl === "string", "needs redisUrl");
  const client = await redisFor(req.redisUrl);
  const opts = {};
  if (req.key) opts.key = req.key;
  let emitter = new Emitter(client, opts, req.nsp || "/");
  let op = emitter;
  if (req.to && req.to.length) op = op.to(req.to);
  if (req.except && req.except.length) op = op.except(req.except);
  if (req.volatile) op = op.volatile;
  return { client, op };
}

// Commands on one redis connection run in order: once PING answers, the
// PUBLISH the emitter sent before it has been processed by the server.
async function flushed(client) {
  await client.ping();
}

async function opEmitterPublish(req) {
  need(typeof req.name === "string", "emitterPublish needs name");
  const { client, op } = await emitterFor(req);
  op.emit(req.name, ...decode(req.args || []));
  await flushed(client);
  return true;
}

async function opEmitterJoin(req) {
  const { client, op } = await emitterFor(req);
  op.socketsJoin(req.rooms || []);
  await flushed(client);
  return true;
}

async function opEmitterLeave(req) {
  const { client, op } = await emitterFor(req);
  op.socketsLeave(req.rooms || []);
  await flushed(client);
  return true;
}

async function opEmitterDisconnect(req) {
  const { client, op } = await emitterFor(req);
  op.disconnectSockets(!!req.close);
  await flushed(client);
  return true;
}

async function opEmitterServerSideEmit(req) {
  const { client } = await emitterFor(req);
  const opts = {};
  if (req.key) opts.key = req.key;
  new Emitter(client, opts, req.nsp || "/").serverSideEmit(req.name, ...decode(req.args || []));
  await flushed(client);
  return true;
}

// ---------------------------------------------------------------- servers

const servers = new Map(); // port -> { io, http, pub, sub }

function onConnection(port, socket) {
  const rooms = socket.handshake.auth?.rooms;
  if (Array.isArray(rooms)) socket.join(rooms.map(String));
  socket.on("echo", (...raw) => {
    const { args, ack } = stripAck(raw);
    if (ack) ack(...args);
    else socket.emit("echo", ...args);
  });
  socket.on("join", (...raw) => {
    const { args, ack } = stripAck(raw);
    socket.join(args.flat().map(String));
    if (ack) ack(true);
  });
  socket.onAny((ev, ...raw) => {
    const { args } = stripAck(raw);
    note({ note: "server_event", port, nsp: socket.nsp.name, sid: socket.id, name: ev, args: encode(args) });
  });
}

async function opStartServer(req) {
  need(typeof req.redisUrl === "string" || Array.isArray(req.clusterNodes), "startServer needs redisUrl or clusterNodes");
  // A Redis Cluster (node-redis createCluster) or one server.
  const pub = Array.isArray(req.clusterNodes)
    ? createCluster({ rootNodes: req.clusterNodes.map((url) => ({ url })) })
    : createClient({ url: req.redisUrl });
  const sub = pub.duplicate();
  pub.on("error", (e) => console.error(`driver: server pub redis: ${errMessage(e)}`));
  sub.on("error", (e) => console.error(`driver: server sub redis: ${errMessage(e)}`));
  await Promise.all([pub.connect(), sub.connect()]);
  const adapterOpts = {};
  if (req.key) adapterOpts.key = req.key;
  if (req.requestsTimeout) adapterOpts.requestsTimeout = req.requestsTimeout;
  const http = createServer();
  let adapter;
  if (req.adapter === "streams") {
    // @socket.io/redis-streams-adapter 0.3 (one client; it duplicates its readers).
    const streams = await import("@socket.io/redis-streams-adapter");
    adapter = streams.createAdapter(pub, decode(req.adapterOpts || {}));
  } else if (req.sharded) {
    adapter = createShardedAdapter(pub, sub, { subscriptionMode: req.sharded, ...(req.key ? { channelPrefix: req.key } : {}) });
  } else {
    adapter = createAdapter(pub, sub, adapterOpts);
  }
  const io = new Server(http, {
    adapter,
    path: req.path || "/socket.io",
    ...(decode(req.serverOpts || {})),
  });
  await new Promise((resolve, reject) => {
    http.once("error", reject);
    http.listen(req.port || 0, "127.0.0.1", () => resolve());
  });
  if (req.adminUi) {
    // The official Admin UI server side, as an app would instrument it.
    const mod = await import("@socket.io/admin-ui");
    const instrument = mod.instrument ?? mod.default.instrument;
    instrument(io, {
      auth: { type: "basic", username: req.adminUi.username, password: req.adminUi.passwordHash },
      serverId: req.adminUi.serverId,
      mode: req.adminUi.mode || "development",
      readonly: !!req.adminUi.readonly,
    });
  }
  const port = http.address().port;
  const entry = { io, http, pub, sub };
  servers.set(port, entry);

  const hookNsp = (nsp) => {
    if (nsp.__sbHooked) return;
    nsp.__sbHooked = true;
    nsp.on("connection", (socket) => onConnection(port, socket));
    const orig = nsp._onServerSideEmit;
    if (typeof orig === "function") {
      nsp._onServerSideEmit = function (args) {
        const { args: plain, ack } = stripAck(args.slice(1));
        note({ note: "server_side_event", port, nsp: nsp.name, name: args[0], args: encode(plain) });
        if (ack) ack({ port });
        return orig.call(this, args);
      };
    }
  };
  hookNsp(io.of("/"));
  io.on("new_namespace", hookNsp);
  for (const n of req.namespaces || []) hookNsp(io.of(n));
  return { port };
}

function getServer(req) {
  const s = servers.get(req.port);
  need(s, `no server on port ${req.port}`);
  return s;
}

function target(io, req) {
  let op = io.of(req.nsp || "/");
  if (req.to && req.to.length) op = op.to(req.to);
  if (req.except && req.except.length) op = op.except(req.except);
  if (req.local) op = op.local;
  if (req.volatile) op = op.volatile;
  return op;
}

async function opServerEmit(req) {
  const { io } = getServer(req);
  target(io, req).emit(req.name, ...decode(req.args || []));
  return true;
}

async function opServerFetchSockets(req) {
  const { io } = getServer(req);
  const sockets = await target(io, req).fetchSockets();
  return sockets.map((s) => ({
    id: s.id,
    rooms: [...s.rooms],
    data: encode(s.data ?? null),
  }));
}

async function opServerAllRooms(req) {
  const { io } = getServer(req);
  const rooms = await io.of(req.nsp || "/").adapter.allRooms();
  return [...rooms];
}

async function opServerSocketsJoin(req) {
  const { io } = getServer(req);
  target(io, req).socketsJoin(req.rooms || []);
  return true;
}

async function opServerSocketsLeave(req) {
  const { io } = getServer(req);
  target(io, req).socketsLeave(req.rooms || []);
  return true;
}

async function opServerDisconnectSockets(req) {
  const { io } = getServer(req);
  target(io, req).disconnectSockets(!!req.close);
  return true;
}

async function opServerSideEmit(req) {
  const { io } = getServer(req);
  const nsp = io.of(req.nsp || "/");
  if (req.withAck) {
    const timeoutMs = req.timeoutMs ?? 5000;
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`serverSideEmit ack timeout after ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const replies = await Promise.race([nsp.serverSideEmitWithAck(req.name, ...decode(req.args || [])), timeout]);
      return encode(replies);
    } finally {
      clearTimeout(timer);
    }
  }
  nsp.serverSideEmit(req.name, ...decode(req.args || []));
  return true;
}

async function closeServer(entry) {
  await new Promise((resolve) => entry.io.close(() => resolve()));
  await Promise.allSettled([entry.pub.quit(), entry.sub.quit()]);
}

async function opStopServer(req) {
  const entry = getServer(req);
  servers.delete(req.port);
  await closeServer(entry);
  return true;
}

// ---------------------------------------------------------------- dispatch

async function shutdown() {
  for (const s of clients.values()) {
    try {
      s.disconnect();
    } catch {}
  }
  clients.clear();
  const closing = [...servers.values()].map((e) => closeServer(e).catch(() => {}));
  servers.clear();
  await Promise.race([Promise.allSettled(closing), new Promise((r) => setTimeout(r, 2000))]);
  for (const p of redisClients.values()) {
    try {
      const c = await p;
      await Promise.race([c.quit(), new Promise((r) => setTimeout(r, 500))]);
    } catch {}
  }
  redisClients.clear();
}

const ops = {
  ping: async () => "pong",
  connect: opConnect,
  emit: opEmit,
  emitWithAck: opEmitWithAck,
  disconnect: opDisconnect,
  clientState: opClientState,
  dropTransport: opDropTransport,
  emitterPublish: opEmitterPublish,
  emitterJoin: opEmitterJoin,
  emitterLeave: opEmitterLeave,
  emitterDisconnect: opEmitterDisconnect,
  emitterServerSideEmit: opEmitterServerSideEmit,
  startServer: opStartServer,
  stopServer: opStopServer,
  serverEmit: opServerEmit,
  serverFetchSockets: opServerFetchSockets,
  serverAllRooms: opServerAllRooms,
  serverSocketsJoin: opServerSocketsJoin,
  serverSocketsLeave: opServerSocketsLeave,
  serverDisconnectSockets: opServerDisconnectSockets,
  serverSideEmit: opServerSideEmit,
  shutdown: async () => {
    await shutdown();
    setTimeout(() => process.exit(0), 50);
    return true;
  },
};

async function handle(line) {
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    console.error(`driver: bad request line: ${line}`);
    return;
  }
  const id = req.id;
  const fn = ops[req.op];
  if (!fn) {
    send({ id, ok: false, error: `unknown op ${req.op}` });
    return;
  }
  try {
    const result = await fn(req);
    send({ id, ok: true, result: result === undefined ? null : result });
  } catch (e) {
    send({ id, ok: false, error: errMessage(e) });
  }
}

const rl = createInterface({ input: process.stdin, terminal: false });
rl.on("line", (line) => {
  if (line.trim()) handle(line);
});
rl.on("close", async () => {
  await shutdown().catch(() => {});
  process.exit(0);
});

send({ note: "ready", pid: process.pid });
