// A Node socket.io server on @socket.io/redis-streams-adapter 0.3 (connection
// state recovery on) asks for acks from clients of a Switchboard gateway in
// streams mode on the same Redis, and from its own client:
// `io.to(room).timeout(ms).emitWithAck(...)`. The adapter sends this
// broadcast over pub/sub with a requestId; every server answers with its
// client count (BROADCAST_CLIENT_COUNT) and relays each client's ack
// (BROADCAST_ACK) to the requester's channel. Exits 0 when the callback gets
// exactly the expected acks; prints what it saw otherwise.
//
// usage: node streams-broadcast-with-ack.mjs <redisUrl> <gatewayUrl> <jwtA> <jwtB> <nodePort>
// (jwtA: sub "a", role admin; jwtB: sub "b", role admin)
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import { createClient } from "redis";
import { io as ioc } from "socket.io-client";

const [redisUrl, gatewayUrl, tokenA, tokenB, nodePort] = process.argv.slice(2);
const fail = (msg) => { console.error(msg); process.exit(1); };
setTimeout(() => fail("timed out"), 20000).unref();

const redis = createClient({ url: redisUrl });
await redis.connect();
const io = new Server(Number(nodePort), {
  adapter: createAdapter(redis),
  connectionStateRecovery: {},
});
io.on("connection", (socket) => socket.join("role:admin"));

const connected = (socket) => new Promise((resolve, reject) => {
  socket.on("connect", resolve);
  socket.on("connect_error", (e) => reject(new Error("connect_error: " + e.message)));
});
const opts = { transports: ["websocket"], reconnection: false };
const a = ioc(gatewayUrl, { ...opts, auth: { token: tokenA } });
const b = ioc(gatewayUrl, { ...opts, auth: { token: tokenB } });
const n = ioc(`http://127.0.0.1:${nodePort}`, opts);
for (const [who, s] of [["a", a], ["b", b], ["n", n]]) {
  s.on("question", (x, cb) => {
    // An event with an ack carries no recovery offset: x is the only argument.
    if (typeof cb !== "function") fail(`${who} got the question without an ack id`);
    cb({ who, answer: x * 2 });
  });
}
await Promise.all([connected(a), connected(b), connected(n)]);

// The gateway must be counted by serverCount() (PUBSUB NUMSUB socket.io#/#).
const servers = await io.of("/").adapter.serverCount();
if (servers !== 2) fail(`serverCount() = ${servers}, expected 2 (Node + gateway)`);

const byWho = (acks) => [...acks].sort((x, y) => x.who.localeCompare(y.who));

// Everyone in the room: two gateway clients, one Node client.
const all = byWho(await io.to("role:admin").timeout(5000).emitWithAck("question", 21));
const expected = [
  { who: "a", answer: 42 },
  { who: "b", answer: 42 },
  { who: "n", answer: 42 },
];
if (JSON.stringify(all) !== JSON.stringify(expected)) fail("unexpected acks: " + JSON.stringify(all));

// One gateway user's room: the gateway counts 1 client, Node 0.
const one = await io.to("user:b").timeout(5000).emitWithAck("question", 5);
if (JSON.stringify(one) !== JSON.stringify([{ who: "b", answer: 10 }])) {
  fail("unexpected acks for user:b: " + JSON.stringify(one));
}

// Nobody on the gateway answers: the callback reports the timeout with the
// acks that did come (Node's own client only).
a.off("question");
b.off("question");
a.on("question", () => {});
b.on("question", () => {});
const partial = await new Promise((resolve) => {
  io.to("role:admin").timeout(1000).emit("question", 1, (err, acks) => resolve({ err: !!err, acks }));
});
if (!partial.err || JSON.stringify(partial.acks) !== JSON.stringify([{ who: "n", answer: 2 }])) {
  fail("unexpected timeout result: " + JSON.stringify(partial));
}

console.log(JSON.stringify({ ok: true, acks: all, one, partial }));
for (const s of [a, b, n]) s.close();
io.close();
await redis.quit().catch(() => {});
process.exit(0);
