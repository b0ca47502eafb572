// Runs two real Socket.IO servers (A and B) on one adapter and makes them do
// everything the cluster protocol carries, then prints what they wrote to
// Redis, one JSON line each:
//   {"kind":"meta", uidA, uidB, sid, pid}
//   {"kind":"entry", stream, id, fields: [[name, value], ...]}   (XRANGE, streams mode)
//   {"kind":"pubsub", channel, hex}     (PSUBSCRIBE / SSUBSCRIBE capture)
//   {"kind":"command", args: [hex, ...]}  (MONITOR: XADD and SET, streams mode)
//   {"kind":"session", key, value, pttl}  (GET of the CSR session, streams mode)
//   {"kind":"received", event, args}      (what the stock client on B received)
//   {"kind":"result", name, value}        (ack callbacks, fetchSockets)
//
// usage: node cluster-capture.js <redis-port> streams|sharded-static|sharded-dynamic
"use strict";
const { out, plain, sleep, waitFor, startServer, connectClient, monitor, createClient } = require("./cluster-common");

const port = Number(process.argv[2]);
const mode = process.argv[3];
const url = `redis://127.0.0.1:${port}`;
const streams = mode === "streams";

async function main() {
  const commands = [];
  const stopMonitor = streams
    ? await monitor(port, (args) => {
        const name = args[0].toString().toUpperCase();
        if (name === "XADD" || (name === "SET" && args[1].toString().startsWith("sio:session:"))) {
          commands.push(args.map((a) => a.toString("hex")));
        }
      })
    : () => {};

  const A = await startServer(url, mode);
  const B = await startServer(url, mode);

  // What went over pub/sub. PSUBSCRIBE (streams) is not counted by PUBSUB NUMSUB;
  // SSUBSCRIBE (sharded) has no pattern form and is counted by SHARDNUMSUB, so
  // requests that wait for every server's answer time out (and are bounded here).
  const pubsub = [];
  const sub = createClient({ url });
  await sub.connect();
  const record = (msg, channel) => pubsub.push({ channel: channel.toString(), hex: msg.toString("hex") });
  if (streams) {
    await sub.pSubscribe("socket.io#/#*", record, true);
  } else {
    for (const ch of ["socket.io#/#", `socket.io#/#${A.uid}#`, `socket.io#/#${B.uid}#`, "socket.io#/#room1#"]) {
      await sub.sSubscribe(ch, record, true);
    }
  }
  const seen = (pred) => () => pubsub.some(pred);

  B.io.on("connection", (socket) => {
    socket.join("room1");
    socket.data = { user: "alice" };
  });
  B.io.on("sse-ack", (n, cb) => cb({ pong: n }));
  B.io.on("sse-undefined", (cb) => cb());
  const received = [];
  const client = await connectClient(B.port, received);
  client.on("need-ack", (arg, cb) => cb({ got: arg }));
  client.on("direct-ack", (arg, cb) => cb("ok"));
  const sid = client.id;
  const pid = client._pid || null;
  out({ kind: "meta", uidA: A.uid, uidB: B.uid, sid, pid });
  if (!streams) {
    // The dynamic room channel exists once B's socket joined room1.
    await waitFor("room channel subscription", async () => {
      const r = await A.pub.sendCommand(["PUBSUB", "SHARDNUMSUB", "socket.io#/#room1#"]);
      return Number(r[1]) >= (mode === "sharded-dynamic" ? 2 : 1);
    });
  }
  const got = (event) => () => received.some((r) => r.event === event);

  A.io.emit("plain", 1, "two", { three: 3, nested: [true, null, "é"] }, 1.5, -7);
  await waitFor("plain", got("plain"));
  A.io.to("room1").except("room2").emit("roomy", [1, 2]);
  await waitFor("roomy", got("roomy"));
  A.io.to("room1").to("room3").emit("multi", "x");
  await waitFor("multi", got("multi"));
  A.io.to(sid).emit("to-sid", "only you");
  await waitFor("to-sid", got("to-sid"));
  A.io.except(sid).emit("not-you");
  A.io.volatile.emit("vol", 1);
  A.io.to("room1").emit("bin", Buffer.from([1, 2, 3]), { nested: Buffer.alloc(3, 7) });
  await waitFor("bin", got("bin"));

  // In sharded mode the capture subscriber counts as a server that never answers:
  // wait for B's two responses (client count, then the ack) on the wire.
  const responses = () => pubsub.filter((p) => p.channel === `socket.io#/#${A.uid}#`).length;
  let before = responses();
  A.io
    .to("room1")
    .timeout(streams ? 5000 : 1000)
    .emit("need-ack", "q", (err, res) => out({ kind: "result", name: "need-ack", value: plain(res) }));
  await waitFor("need-ack responses", () => responses() >= before + 2);

  A.io.in("room1").socketsJoin(["room9", "room10"]);
  await waitFor("join", () => B.io.of("/").adapter.rooms.has("room10"));
  A.io.in("room9").socketsLeave("room10");
  await waitFor("leave", () => !B.io.of("/").adapter.rooms.has("room10"));

  try {
    const sockets = await A.io.timeout(streams ? 5000 : 1000).fetchSockets();
    out({ kind: "result", name: "fetchSockets", value: sockets.map((s) => ({ id: s.id, rooms: [...s.rooms], data: s.data })) });
  } catch (e) {
    out({ kind: "result", name: "fetchSockets", value: e.message });
  }
  await waitFor("fetch response", seen((p) => Buffer.from(p.hex, "hex").includes("sockets")));

  const sse = new Promise((r) => B.io.on("sse", (...args) => r(args)));
  A.io.serverSideEmit("sse", { a: 1 }, Buffer.from([9]));
  out({ kind: "result", name: "sse", value: plain(await sse) });
  // With an ack: wait for B's response on the wire, not for the callback.
  before = responses();
  A.io.serverSideEmit("sse-ack", 2, (err, res) => out({ kind: "result", name: "sse-ack", value: plain(res) }));
  await waitFor("sse-ack response", () => responses() > before);
  before = responses();
  A.io.serverSideEmit("sse-undefined", () => {});
  await waitFor("sse-undefined response", () => responses() > before);

  A.io.in("room-nobody").disconnectSockets(true);

  // socket.emit on B: with connection state recovery it goes through the adapter.
  const bSocket = B.io.of("/").sockets.get(sid);
  bSocket.emit("direct", 5);
  await waitFor("direct", got("direct"));
  const directAck = await bSocket.timeout(5000).emitWithAck("direct-ack", 6);
  out({ kind: "result", name: "direct-ack", value: directAck });

  if (streams) {
    // A server with 4 streams, to see where namespaces go (started last: it
    // would count as a server that answers nothing above).
    const C = await startServer(url, mode, { adapterOpts: { streamCount: 4 } });
    C.io.of("/notifications").emit("note", 1);
    C.io.emit("root", 1);
  }
  await sleep(300);

  if (streams) {
    for (const stream of ["socket.io", "socket.io-3", "socket.io--3"]) {
      const entries = await A.pub.xRange(stream, "-", "+");
      for (const e of entries) {
        out({ kind: "entry", stream, id: e.id, fields: Object.entries(e.message) });
      }
    }
    // Connection state recovery: a transport close makes B persist the session.
    client.io.engine.close();
    const key = `sio:session:${pid}`;
    const value = await waitFor("session record", () => A.pub.get(key));
    out({ kind: "session", key, value, pttl: await A.pub.pTTL(key) });
    await waitFor("SET in MONITOR", () => commands.some((c) => Buffer.from(c[0], "hex").toString() === "SET"));
  }
  stopMonitor();
  for (const p of pubsub) out({ kind: "pubsub", ...p });
  for (const c of commands) out({ kind: "command", args: c });
  out({ kind: "done" });
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
