// Reads lines {"hex": <msgpack of [nsp, data]>, "offset": <string>} on stdin and prints, for
// each, the packet a Node socket.io 4.8 server sends when connection state recovery adds the
// offset: notepack decoding, `packet.data.push(offset)` (ClusterAdapter.addOffsetIfNecessary),
// then the socket.io-parser Encoder.
// Output: one JSON line {"text": <packet text>, "attachments": [<hex>...]}.
"use strict";
const msgpack = require("notepack.io");
const { Encoder } = require("socket.io-parser");

const encoder = new Encoder();
const input = require("fs").readFileSync(0, "utf8");
for (const line of input.split("\n")) {
  if (!line.trim()) continue;
  const { hex, offset } = JSON.parse(line);
  const [nsp, data] = msgpack.decode(Buffer.from(hex, "hex"));
  data.push(offset);
  const [text, ...attachments] = encoder.encode({ type: 2, data, nsp });
  process.stdout.write(
    JSON.stringify({ text, attachments: attachments.map((b) => Buffer.from(b).toString("hex")) }) + "\n",
  );
}
