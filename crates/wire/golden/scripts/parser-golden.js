// Reads bus broadcast messages (hex msgpack, one per line) on stdin and prints, for each, what
// a Node socket.io 4.x server sends to its clients for it: notepack decoding, then the
// socket.io-parser Encoder on {type: EVENT, data, nsp} (what the in-memory adapter encodes).
// Output: one JSON line {"hex": <input>, "text": <packet text>, "attachments": [<hex>...]}
// or {"hex": <input>, "error": <message>}.
"use strict";
const msgpack = require("notepack.io");
const { Encoder } = require("socket.io-parser");

const encoder = new Encoder();
const input = require("fs").readFileSync(0, "utf8");
for (const line of input.split("\n")) {
  const hex = line.trim();
  if (!hex) continue;
  try {
    const [, packet] = msgpack.decode(Buffer.from(hex, "hex"));
    const encoded = encoder.encode({ type: 2, data: packet.data, nsp: packet.nsp || "/" });
    const [text, ...attachments] = encoded;
    process.stdout.write(
      JSON.stringify({ hex, text, attachments: attachments.map((b) => Buffer.from(b).toString("hex")) }) + "\n",
    );
  } catch (err) {
    process.stdout.write(JSON.stringify({ hex, error: String(err && err.message) }) + "\n");
  }
}
