// A Node socket.io server with the official Redis adapter asks for acks from
// every client, some of which are connected to a Switchboard gateway on the
// same Redis: `io.timeout(ms).emitWithAck(...)`. Exits 0 when the gateway's
// client count and acks arrive; prints what it saw otherwise.
//
// usage: node broadcast-with-ack.mjs <redisUrl> <gatewayUrl> <jwt> <nodePort>
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { io as ioc } from "socket.io-client";

const [redisUrl, gatewayUrl, token, nodePort] = process.argv.slice(2);
const fail = (msg) => { console.error(msg); process.exit(1); };
setTimeout(() => fail("timed out"), 15000).unref();

const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
await Promise.all([pub.connect(), sub.connect()]);
const io = new Server(Number(nodePort), { adapter: createAdapter(pub, sub) });

const client = ioc(gatewayUrl, { transports: ["websocket"], auth: { token }, reconnection: false });
client.on("question", (x, cb) => cb({ answer: x * 2 }));
await new Promise((resolve, reject) => {
  client.on("connect", resolve);
  client.on("connect_error", (e) => reject(new Error("connect_error: " + e.message)));
});

const sockets = await io.fetchSockets();
if (sockets.length !== 1 || !sockets[0].rooms.has("role:admin")) {
  fail("fetchSockets did not report the gateway's socket in role:admin: " +
    JSON.stringify(sockets.map((s) => [s.id, [...s.rooms]])));
}
const rooms = [...(await io.of("/").adapter.allRooms())];
if (!rooms.includes("role:admin")) fail("allRooms misses role:admin: " + JSON.stringify(rooms));

const acks = await io.to("role:admin").timeout(3000).emitWithAck("question", 21);
if (JSON.stringify(acks) !== JSON.stringify([{ answer: 42 }])) {
  fail("unexpected acks: " + JSON.stringify(acks));
}
console.log(JSON.stringify({ ok: true, acks, rooms }));
client.close();
io.close();
await Promise.allSettled([pub.quit(), sub.quit()]);
process.exit(0);
