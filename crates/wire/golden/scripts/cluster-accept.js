// A real Socket.IO server (B) on the streams or sharded adapter with one stock
// client, for tests that write OUR encodings into Redis and watch what Node does
// with them. Prints JSON lines:
//   {"kind":"ready", uid, sid, pid}      once the client is connected (and, in
//                                        dynamic mode, B subscribed to room1)
//   {"kind":"received", event, args}     every event the client receives
//   {"kind":"client-connect", id, recovered}
//   {"kind":"server-connect", sid, pid, recovered, rooms, data}
//   {"kind":"server-side-emit", args}    a serverSideEmit that reached B
//   {"kind":"pubsub", channel, hex}      what B publishes to the test's own server
//                                        channel socket.io#/#<testUid>#
//   {"kind":"dropped"}                   after a "drop" command: the transport is
//                                        closed (and, streams, the session stored)
// Commands on stdin, one JSON per line: {"cmd":"drop"}, {"cmd":"reconnect"}, {"cmd":"exit"}.
//
// usage: node cluster-accept.js <redis-port> streams|sharded-static|sharded-dynamic <testUid>
"use strict";
const readline = require("readline");
const { out, plain, waitFor, startServer, connectClient, createClient } = require("./cluster-common");

const port = Number(process.argv[2]);
const mode = process.argv[3];
const testUid = process.argv[4];
const url = `redis://127.0.0.1:${port}`;

async function main() {
  const B = await startServer(url, mode);
  const sub = createClient({ url });
  await sub.connect();
  const channel = `socket.io#/#${testUid}#`;
  const record = (msg, ch) => out({ kind: "pubsub", channel: ch.toString(), hex: msg.toString("hex") });
  if (mode === "streams") await sub.subscribe(channel, (msg) => record(msg, channel), true);
  else await sub.sSubscribe(channel, (msg) => record(msg, channel), true);

  B.io.on("connection", (socket) => {
    if (!socket.recovered) {
      socket.join("room1");
      socket.data = { user: "node" };
    }
    out({
      kind: "server-connect",
      sid: socket.id,
      pid: socket.pid || null,
      recovered: socket.recovered,
      rooms: [...socket.rooms],
      data: plain(socket.data),
    });
  });
  B.io.on("rust-sse", (arg, cb) => {
    out({ kind: "server-side-emit", args: plain([arg]) });
    cb({ echo: arg });
  });

  const client = await connectClient(B.port, []);
  client.on("rust-ack", (n, cb) => cb({ got: n }));
  if (mode === "sharded-dynamic") {
    await waitFor("room channel subscription", async () => {
      const r = await B.pub.sendCommand(["PUBSUB", "SHARDNUMSUB", "socket.io#/#room1#"]);
      return Number(r[1]) >= 1;
    });
  }
  out({ kind: "ready", uid: B.uid, sid: client.id, pid: client._pid || null });

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const { cmd } = JSON.parse(line);
    if (cmd === "drop") {
      const pid = client._pid;
      client.io.engine.close();
      await waitFor("client disconnect", () => !client.connected);
      if (mode === "streams") await waitFor("session record", () => B.pub.get(`sio:session:${pid}`));
      out({ kind: "dropped" });
    } else if (cmd === "reconnect") {
      client.connect();
    } else if (cmd === "exit") {
      break;
    }
  }
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
