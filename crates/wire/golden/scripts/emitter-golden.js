// Runs the official @socket.io/redis-emitter against a capturing fake Redis
// client and prints one JSON line per published message:
//   {"name": <case name>, "channel": <channel>, "hex": <payload bytes as hex>}
// The emitter only ever calls `client.publish(channel, message)`, so a plain
// object with that method is enough (no Redis needed).
"use strict";
const { Emitter } = require("@socket.io/redis-emitter");

let current = null;
const captured = [];
const fakeClient = {
  publish(channel, msg) {
    const buf = Buffer.isBuffer(msg) ? msg : Buffer.from(String(msg), "utf8");
    captured.push({ name: current, channel, hex: buf.toString("hex") });
    return Promise.resolve(1);
  },
  // The emitter never subscribes; present for clients that probe for it.
  on() {},
};

const io = new Emitter(fakeClient);
const custom = new Emitter(fakeClient, { key: "myapp" });

const cases = [
  ["room_one", () => io.to("role:admin").emit("ticket_updated", { id: 7 })],
  ["rooms_several", () => io.to(["user:1", "user:2"]).to("role:admin").emit("ping")],
  ["rooms_except", () => io.to("room1").except("room2").except(["socket-abc"]).emit("ev", 1, "two")],
  ["except_only", () => io.except("user:9").emit("ev")],
  ["volatile", () => io.volatile.to("r").emit("tick", 1)],
  ["volatile_compress", () => io.volatile.compress(false).emit("tick")],
  ["namespace", () => io.of("/admin").to("ops").emit("alert", "disk")],
  ["namespace_no_slash", () => io.of("chat").emit("hello")],
  ["custom_key", () => custom.to("r1").emit("x", null)],
  ["nested_json", () => io.emit("nested", { a: [1, { b: null, c: true, d: false }], e: "str", f: {}, g: [], "": 0 })],
  ["integers", () => io.emit("ints", 0, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296, 9007199254740991)],
  ["negatives", () => io.emit("neg", -1, -32, -33, -128, -129, -32768, -32769, -2147483648, -2147483649, -9007199254740991)],
  ["floats", () => io.emit("floats", 1.5, -0.25, 2.0, -0, 0.1, 1e-7, 123456.789)],
  // notepack encodes integer-valued numbers >= 2^64 as uint64 modulo 2^64 (documented deviation)
  ["float_1e21", () => io.emit("big", 1e21)],
  ["float_huge", () => io.emit("huge", 1e300)],
  ["float_nonfinite", () => io.emit("nonfinite", NaN, Infinity, -Infinity)],
  ["binary", () => io.to("files").emit("file", Buffer.from([0, 1, 2, 255]), { nested: Buffer.alloc(300, 7) })],
  ["unicode", () => io.to("salle-é").emit("msg", "héllo wörld ✓ 😀", { "ключ": "値" })],
  ["strings_lengths", () => io.emit("s", "a".repeat(31), "b".repeat(32), "c".repeat(255), "d".repeat(256), "e".repeat(65536))],
  ["array_lengths", () => io.emit("arr", Array.from({ length: 15 }, (_, i) => i), Array.from({ length: 16 }, (_, i) => i))],
  ["map_lengths", () => io.emit("map", Object.fromEntries(Array.from({ length: 16 }, (_, i) => ["k" + i, i])))],
  ["dates", () => io.emit("date", new Date(1700000000123), new Date(0), new Date(-1000))],
  ["broadcast_all", () => io.emit("announcement", { text: "maintenance at 22:00" })],
  ["sockets_join", () => io.to("user:42").socketsJoin("room:new")],
  ["sockets_join_many", () => io.in("a").except("b").socketsJoin(["x", "y"])],
  ["sockets_leave", () => io.to("user:42").socketsLeave(["room:old"])],
  ["disconnect", () => io.to("user:42").disconnectSockets()],
  ["disconnect_close", () => io.of("/admin").to("user:42").disconnectSockets(true)],
  ["server_side_emit", () => io.serverSideEmit("hello", { from: "api" }, 1.5, [1, 2])],
];

for (const [name, fn] of cases) {
  current = name;
  fn();
}
for (const c of captured) {
  process.stdout.write(JSON.stringify(c) + "\n");
}
