//! Golden byte tests against the official Node packages.
//!
//! `crates/wire/golden/scripts/emitter-golden.js` runs `@socket.io/redis-emitter` 5.x with a
//! capturing fake Redis client and prints `{name, channel, hex}` for a table of calls; this test
//! builds the same calls with the broadcaster and compares channel and bytes exactly.
//!
//! `parser-golden.js` then feeds bus messages through notepack + socket.io-parser (what a Node
//! socket.io server sends its clients) and this test compares `switchboard_wire::encode_event`.
//!
//! Needs `node` and `npm`; installs the pinned packages with `npm ci` when `node_modules` is
//! missing or does not match `package-lock.json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use rmpv::Value;
use serde::Serialize;
use switchboard_broadcaster::{Broadcaster, BroadcasterConfig, Encoded};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/wire/golden")
}

/// Installs the golden scripts' npm packages when `node_modules` does not match the lock
/// file (the testkit's `npm ci` under a file lock, shared with switchboard-wire's tests).
fn ensure_node_modules() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        switchboard_testkit::node::ensure_npm_ci(&golden_dir())
            .expect("npm ci in crates/wire/golden (needs Node.js 18+ and npm)");
    });
}

fn node(script: &str, stdin: Option<&str>) -> String {
    ensure_node_modules();
    let mut child = Command::new("node")
        .arg(format!("scripts/{script}"))
        .current_dir(golden_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is required for the golden tests (install Node.js 18+)");
    {
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("node output");
    assert!(out.status.success(), "node {script} failed");
    String::from_utf8(out.stdout).expect("utf8 output")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[derive(Serialize)]
struct TicketRef {
    id: u32,
}

#[derive(Serialize)]
struct Nested {
    nested: serde_bytes::ByteBuf,
}

#[derive(Serialize)]
struct Announcement<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct From<'a> {
    from: &'a str,
}

/// `[event, ...args]` from a JSON text (keeps key order, like a JS object literal).
fn values(json: &str) -> Value {
    switchboard_wire::json_str_to_msgpack(json).expect("valid JSON")
}

fn ts64(ms: i64) -> Value {
    let s = ms.div_euclid(1000) as u64;
    let ns = (ms.rem_euclid(1000) * 1_000_000) as u64;
    if ns == 0 && s <= u64::from(u32::MAX) {
        Value::Ext(-1, (s as u32).to_be_bytes().to_vec())
    } else {
        Value::Ext(-1, ((ns << 34) | s).to_be_bytes().to_vec())
    }
}

fn ts96(ms: i64) -> Value {
    let s = ms.div_euclid(1000);
    let ns = (ms.rem_euclid(1000) * 1_000_000) as u32;
    let mut b = ns.to_be_bytes().to_vec();
    b.extend_from_slice(&s.to_be_bytes());
    Value::Ext(-1, b)
}

/// The broadcaster's version of every case of `emitter-golden.js`.
fn rust_cases() -> BTreeMap<&'static str, Encoded> {
    let b = Broadcaster::connect("redis://127.0.0.1:1").expect("broadcaster");
    let custom = Broadcaster::from_config(BroadcasterConfig {
        key: "myapp".into(),
        ..Default::default()
    })
    .expect("broadcaster");
    let mut c = BTreeMap::new();
    let op = b.operator();
    c.insert(
        "room_one",
        b.to_role("admin")
            .encode("ticket_updated", &TicketRef { id: 7 })
            .unwrap(),
    );
    c.insert(
        "rooms_several",
        b.to_user(1)
            .to_user(2)
            .to_role("admin")
            .encode("ping", &())
            .unwrap(),
    );
    c.insert(
        "rooms_except",
        b.to("room1")
            .except("room2")
            .except_rooms(["socket-abc"])
            .encode("ev", &(1, "two"))
            .unwrap(),
    );
    c.insert("except_only", b.except("user:9").encode("ev", &()).unwrap());
    c.insert("volatile", b.volatile().to("r").encode("tick", &1).unwrap());
    c.insert(
        "volatile_compress",
        b.volatile().compress(false).encode("tick", &()).unwrap(),
    );
    c.insert(
        "namespace",
        b.of("/admin").to("ops").encode("alert", &"disk").unwrap(),
    );
    c.insert(
        "namespace_no_slash",
        b.of("chat").encode("hello", &()).unwrap(),
    );
    c.insert(
        "custom_key",
        custom.to("r1").encode("x", &None::<u8>).unwrap(),
    );
    c.insert(
        "nested_json",
        op.encode_values(values(
            r#"["nested",{"a":[1,{"b":null,"c":true,"d":false}],"e":"str","f":{},"g":[],"":0}]"#,
        ))
        .unwrap(),
    );
    c.insert(
        "integers",
        op.encode(
            "ints",
            &(
                0u8,
                127u8,
                128u16,
                255u32,
                256u64,
                65535i32,
                65536i64,
                4294967295u32,
                4294967296u64,
                9007199254740991u64,
            ),
        )
        .unwrap(),
    );
    c.insert(
        "negatives",
        op.encode(
            "neg",
            &(
                -1i8,
                -32i16,
                -33i32,
                -128i64,
                -129i16,
                -32768i16,
                -32769i32,
                -2147483648i32,
                -2147483649i64,
                -9007199254740991i64,
            ),
        )
        .unwrap(),
    );
    c.insert(
        "floats",
        op.encode(
            "floats",
            &(1.5f64, -0.25f32, 2.0f64, -0.0f64, 0.1f64, 1e-7, 123456.789),
        )
        .unwrap(),
    );
    c.insert("float_1e21", op.encode("big", &1e21).unwrap());
    c.insert("float_huge", op.encode("huge", &1e300).unwrap());
    c.insert(
        "float_nonfinite",
        op.encode("nonfinite", &(f64::NAN, f64::INFINITY, f64::NEG_INFINITY))
            .unwrap(),
    );
    c.insert(
        "binary",
        b.to("files")
            .encode(
                "file",
                &(
                    bytes::Bytes::from_static(&[0, 1, 2, 255]),
                    Nested {
                        nested: serde_bytes::ByteBuf::from(vec![7u8; 300]),
                    },
                ),
            )
            .unwrap(),
    );
    let mut unicode_map = BTreeMap::new();
    unicode_map.insert("ключ", "値");
    c.insert(
        "unicode",
        b.to("salle-é")
            .encode("msg", &("héllo wörld ✓ 😀", unicode_map))
            .unwrap(),
    );
    c.insert(
        "strings_lengths",
        op.encode(
            "s",
            &(
                "a".repeat(31),
                "b".repeat(32),
                "c".repeat(255),
                "d".repeat(256),
                "e".repeat(65536),
            ),
        )
        .unwrap(),
    );
    c.insert(
        "array_lengths",
        op.encode(
            "arr",
            &((0..15).collect::<Vec<u8>>(), (0..16).collect::<Vec<u8>>()),
        )
        .unwrap(),
    );
    let map: String = (0..16)
        .map(|i| format!("\"k{i}\":{i}"))
        .collect::<Vec<_>>()
        .join(",");
    c.insert(
        "map_lengths",
        op.encode_values(values(&format!(r#"["map",{{{map}}}]"#)))
            .unwrap(),
    );
    c.insert(
        "dates",
        op.encode_values(Value::Array(vec![
            Value::from("date"),
            ts64(1_700_000_000_123),
            ts64(0),
            ts96(-1000),
        ]))
        .unwrap(),
    );
    c.insert(
        "broadcast_all",
        op.encode(
            "announcement",
            &Announcement {
                text: "maintenance at 22:00",
            },
        )
        .unwrap(),
    );
    c.insert(
        "sockets_join",
        b.to_user(42).encode_sockets_join(["room:new"]),
    );
    c.insert(
        "sockets_join_many",
        b.to("a").except("b").encode_sockets_join(["x", "y"]),
    );
    c.insert(
        "sockets_leave",
        b.to_user(42).encode_sockets_leave(["room:old"]),
    );
    c.insert("disconnect", b.to_user(42).encode_disconnect_sockets(false));
    c.insert(
        "disconnect_close",
        b.of("/admin").to_user(42).encode_disconnect_sockets(true),
    );
    c.insert(
        "server_side_emit",
        op.encode_server_side_emit("hello", &(From { from: "api" }, 1.5, vec![1, 2]))
            .unwrap(),
    );
    c
}

/// Cases where this crate deliberately differs from notepack: integer-valued numbers at or
/// beyond 2^64, which notepack wraps modulo 2^64 (silently changing the value).
const DEVIATIONS: &[(&str, &str, &str)] = &[
    // (case, node's bytes of the argument, ours)
    ("float_1e21", "cf35c9adc5dea00000", "cb444b1ae4d6e2ef50"),
    ("float_huge", "cf0000000000000000", "cb7e37e43c8800759c"),
];

#[test]
fn broadcaster_bytes_match_redis_emitter() {
    let out = node("emitter-golden.js", None);
    let rust = rust_cases();
    let mut seen = 0;
    for line in out.lines() {
        let case: serde_json::Value = serde_json::from_str(line).expect("json line");
        let name = case["name"].as_str().expect("name");
        let channel = case["channel"].as_str().expect("channel");
        let node_hex = case["hex"].as_str().expect("hex");
        let ours = rust
            .get(name)
            .unwrap_or_else(|| panic!("no Rust version of golden case {name}"));
        assert_eq!(ours.channel, channel, "channel of {name}");
        let ours_hex = hex(&ours.payload);
        if let Some((_, node_arg, our_arg)) = DEVIATIONS.iter().find(|(n, _, _)| *n == name) {
            assert!(
                node_hex.contains(node_arg),
                "{name}: notepack changed: {node_hex}"
            );
            assert_eq!(
                ours_hex,
                node_hex.replace(node_arg, our_arg),
                "{name}: deviation"
            );
        } else {
            assert_eq!(ours_hex, node_hex, "bytes of {name}");
        }
        seen += 1;
    }
    assert_eq!(seen, rust.len(), "every Rust case has a Node counterpart");
}

#[test]
fn encode_event_matches_socket_io_parser() {
    // Every broadcast the emitter produced, plus messages built to stress JSON.stringify.
    let mut inputs: Vec<String> = node("emitter-golden.js", None)
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let ch = v["channel"].as_str()?;
            (!ch.contains("-request#")).then(|| v["hex"].as_str().map(str::to_string))?
        })
        .collect();
    inputs.extend(node("tricky-messages.js", None).lines().map(str::to_string));
    let out = node("parser-golden.js", Some(&inputs.join("\n")));
    let mut checked = 0;
    for line in out.lines() {
        let expected: serde_json::Value = serde_json::from_str(line).expect("json line");
        let bytes = unhex(expected["hex"].as_str().expect("hex"));
        let msg = switchboard_wire::decode_broadcast(&bytes).expect("decodes");
        let packet = switchboard_wire::encode_event(&msg.packet.nsp, &msg.packet.data, None)
            .expect("encodes");
        assert_eq!(
            Some(packet.text.as_str()),
            expected["text"].as_str(),
            "packet text for {}",
            expected["hex"]
        );
        let attachments: Vec<String> = packet.attachments.iter().map(|a| hex(a)).collect();
        let expected_att: Vec<String> = expected["attachments"]
            .as_array()
            .expect("attachments")
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            attachments, expected_att,
            "attachments for {}",
            expected["hex"]
        );
        checked += 1;
    }
    assert_eq!(checked, inputs.len());
    assert!(checked > 30);
}
