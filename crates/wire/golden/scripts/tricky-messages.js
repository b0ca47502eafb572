// Prints hex bus messages (one per line) with values that stress the Socket.IO text encoding:
// Dates, Buffers in nested objects, integer-like keys, duplicate keys, unicode, control
// characters, -0, big numbers, empty strings, NaN.
"use strict";
const msgpack = require("notepack.io");
const data = [
  ["dates", new Date(1700000000123), new Date(0), new Date(-62198755200000), { at: new Date(253402300800000) }],
  ["bin", Buffer.from([1, 2, 3]), [Buffer.alloc(0), { deep: { deeper: Buffer.from("hi") } }], "after"],
  ["keys", { b: 1, 10: 2, a: 3, 2: 4, "01": 5, 4294967295: 6, 4294967294: 7 }],
  ["str", "quote\" backslash\\ nl\n tab\t cr\r bs\b ff\f nul\u0000 us\u001f del\u007f ls\u2028 é 😀 日本"],
  ["nums", -0, 0.1, 1e-7, 1e21, 1.7976931348623157e308, 5e-324, 9007199254740993, -1e-7, 123456789.123],
  ["misc", null, true, false, "", [], {}, [null, [null]], NaN, Infinity],
  ["nested", { a: [1, { b: null, c: true }], e: "str" }],
];
const out = [];
for (const d of data) {
  out.push(msgpack.encode(["emitter", { type: 2, data: d, nsp: "/" }, { rooms: [], flags: {}, except: [] }]));
}
// hand-made: duplicate keys, non-string keys, ext types, timestamps, u64 beyond 2^53, nsp
const hand = [
  // ["dup", {"a":1,"a":2}]
  "93a7656d697474657283a474797065" + "02" + "a464617461" + "92a3647570" + "82a16101a16102" + "a36e7370a12f" + "80",
  // ["keys2", {1:"one", null:"n", true:"t", 1.5:"f"}]
  "93a7656d697474657283a474797065" + "02" + "a464617461" + "92a56b65797332" + "84" + "01a36f6e65" + "c0a16e" + "c3a174" + "cb3ff8000000000000a166" + "a36e7370a12f" + "80",
  // ["ext", ext5, ts32, ts64, ts96, fixext1 type0 (undefined), ext8 type0 (ArrayBuffer)]
  "93a7656d697474657283a474797065" + "02" + "a464617461" + "97a3657874" + "d40501" + "d6ff00000001" + "d7ff" + "773594000000000a" + "c70cff" + "00000000ffffffffffffffff" + "d40000" + "c70300010203" + "a36e7370a12f" + "80",
  // ["u64", 2^64-1, -2^63]
  "93a7656d697474657283a474797065" + "02" + "a464617461" + "93a3753634" + "cfffffffffffffffff" + "d38000000000000000" + "a36e7370a12f" + "80",
  // namespace "/admin" with binary
  "93a7656d697474657283a474797065" + "02" + "a464617461" + "92a2657" + "6c40101" + "a36e7370a62f61646d696e" + "80",
  // float32 values
  "93a7656d697474657283a474797065" + "02" + "a464617461" + "93a3663332" + "ca3dcccccd" + "ca7f800000" + "a36e7370a12f" + "80",
  // invalid utf-8 inside a string argument
  "93a7656d697474657283a474797065" + "02" + "a464617461" + "92a3626164" + "a461ff62c3" + "a36e7370a12f" + "80",
];
for (const o of out) process.stdout.write(o.toString("hex") + "\n");
for (const h of hand) process.stdout.write(h + "\n");
