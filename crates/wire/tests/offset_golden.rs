//! `recovery::append_offset` against socket.io 4.8 itself: `golden/scripts/offset-golden.js`
//! pushes the offset onto the packet data (as `ClusterAdapter.addOffsetIfNecessary` does) and
//! encodes it with socket.io-parser; appending the offset to our already encoded packet must
//! give the same text and attachments.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use rmpv::Value;
use support::{golden_dir, hex, json};
use switchboard_wire::recovery::append_offset;
use switchboard_wire::{encode_event, msgpack};

#[test]
fn append_offset_matches_socket_io() {
    let cases: Vec<(&str, Value)> = vec![
        ("/", json(r#"["plain",1,"two",{"three":3}]"#)),
        ("/", json(r#"["no-args"]"#)),
        ("/admin", json(r#"["nsp",[1,2],null]"#)),
        ("/", json(r#"["unicode","héllo ✓ 😀","\"quoted\" \\ \n"]"#)),
        (
            "/",
            Value::Array(vec![
                "bin".into(),
                Value::Binary(vec![1, 2, 3]),
                Value::Map(vec![("nested".into(), Value::Binary(vec![7; 300]))]),
            ]),
        ),
        (
            "/chat",
            Value::Array(vec!["bin-nsp".into(), Value::Binary(vec![])]),
        ),
    ];
    let offsets = [
        "1795784060600-0",
        "0-0",
        "18446744073709551615-18446744073709551615",
    ];
    let mut input = String::new();
    let mut ours = Vec::new();
    for (i, (nsp, data)) in cases.iter().enumerate() {
        let offset = offsets[i % offsets.len()];
        let bytes = msgpack::encode(&Value::Array(vec![(*nsp).into(), data.clone()]));
        input.push_str(&serde_json::json!({"hex": hex(&bytes), "offset": offset}).to_string());
        input.push('\n');
        let mut packet = encode_event(nsp, data, None).unwrap();
        append_offset(&mut packet, offset).unwrap();
        ours.push(packet);
    }
    let mut child = Command::new("node")
        .arg("scripts/offset-golden.js")
        .current_dir(golden_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node is required for the golden tests (install Node.js 18+)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "offset-golden.js failed");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ours.len());
    for (node, ours) in lines.iter().zip(&ours) {
        assert_eq!(node["text"], ours.text.as_str());
        let attachments: Vec<String> = ours.attachments.iter().map(|a| hex(a)).collect();
        assert_eq!(node["attachments"], serde_json::json!(attachments));
    }
}
