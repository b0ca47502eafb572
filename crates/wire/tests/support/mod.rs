//! Shared pieces of the cluster interop tests: the Node scripts in `golden/scripts`, the
//! messages the scripts' scenario produces, and small value helpers.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rmpv::Value;
use serde_json::Value as Json;
use switchboard_wire::cluster::{
    AckResponse, BroadcastClientCount, ClusterBody, ClusterBroadcast, ClusterMessage,
    ClusterPacket, DisconnectSockets, FetchSockets, FetchSocketsResponse, RoomsChange,
    ServerSideEmit,
};
use switchboard_wire::request::FetchedSocket;
use switchboard_wire::{BroadcastFlags, BroadcastOptions, json_str_to_msgpack};

/// Bound for any single wait on a script's output (the machine may be loaded).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// `crates/wire/golden`, with its pinned npm packages installed.
pub fn golden_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden");
    switchboard_testkit::node::ensure_npm_ci(&dir).expect("npm ci in crates/wire/golden");
    dir
}

/// A `node golden/scripts/<script>` child whose stdout JSON lines are read on a thread.
/// Killed when dropped.
pub struct NodeScript {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Json>,
    name: String,
}

impl NodeScript {
    /// Starts `script` with `args`.
    pub fn start(script: &str, args: &[&str]) -> NodeScript {
        let mut child = Command::new("node")
            .arg(format!("scripts/{script}"))
            .args(args)
            .current_dir(golden_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is required for the interop tests (install Node.js 18+)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(e) => eprintln!("unparsable script output {line:?}: {e}"),
                }
            }
        });
        let stdin = child.stdin.take();
        NodeScript {
            child,
            stdin,
            lines,
            name: script.to_string(),
        }
    }

    /// The next line of `kind`, skipping (and returning through `skipped`) the others.
    pub fn expect(&mut self, kind: &str, skipped: &mut Vec<Json>) -> Json {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line["kind"] == kind => return line,
                Ok(line) => skipped.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no {kind:?} line within {STEP_TIMEOUT:?}", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    panic!("{}: exited ({status:?}) before a {kind:?} line", self.name)
                }
            }
        }
    }

    /// Reads lines until `done(&lines_so_far)` holds; returns them all.
    pub fn collect_until(&mut self, what: &str, done: impl Fn(&[Json]) -> bool) -> Vec<Json> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut lines = Vec::new();
        while !done(&lines) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => panic!(
                    "{}: {what} not seen within {STEP_TIMEOUT:?}; got {lines:#?}",
                    self.name
                ),
            }
        }
        lines
    }

    /// Sends one command line to the script.
    pub fn send(&mut self, cmd: Json) {
        let stdin = self.stdin.as_mut().expect("script stdin");
        writeln!(stdin, "{cmd}").expect("write to the script");
        stdin.flush().expect("flush the script's stdin");
    }
}

impl Drop for NodeScript {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cluster-capture.js` in `mode` against a fresh redis-server to the end; returns all
/// its lines, the ids it reported and its `meta` line.
pub fn capture(mode: &str) -> (Vec<Json>, Ids, Json) {
    let redis = switchboard_testkit::redis::RedisServer::start().expect("redis-server");
    let port = redis.port().to_string();
    let mut script = NodeScript::start("cluster-capture.js", &[&port, mode]);
    let mut lines = Vec::new();
    let meta = script.expect("meta", &mut lines);
    lines.extend(script.collect_until("done", |l| l.last().is_some_and(|l| l["kind"] == "done")));
    let text = |k: &str| meta[k].as_str().expect("meta id").to_string();
    let ids = Ids {
        uid_a: text("uidA"),
        uid_b: text("uidB"),
        sid: text("sid"),
    };
    (lines, ids, meta)
}

/// Lines of `kind`.
pub fn of_kind<'a>(lines: &'a [Json], kind: &str) -> Vec<&'a Json> {
    lines.iter().filter(|l| l["kind"] == kind).collect()
}

/// The `received` line for `event`, if the client got it.
pub fn received<'a>(lines: &'a [Json], event: &str) -> Option<&'a Json> {
    lines
        .iter()
        .find(|l| l["kind"] == "received" && l["event"] == event)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A msgpack value from JSON text (key order kept).
pub fn json(text: &str) -> Value {
    json_str_to_msgpack(text).expect("test JSON")
}

/// The client-side view of a value (what the capture scripts print): binary as
/// `{"$bin": hex}`, everything else as JSON.
pub fn client_view(v: &Value) -> Json {
    match v {
        Value::Binary(b) => serde_json::json!({ "$bin": hex(b) }),
        Value::Array(items) => Json::Array(items.iter().map(client_view).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), client_view(v)))
                .collect(),
        ),
        other => switchboard_wire::msgpack_to_json(other),
    }
}

pub fn opts(rooms: &[&str], except: &[&str], flags: BroadcastFlags) -> BroadcastOptions {
    BroadcastOptions {
        rooms: rooms.iter().map(|s| s.to_string()).collect(),
        except: except.iter().map(|s| s.to_string()).collect(),
        flags,
    }
}

pub fn timeout(ms: u64) -> BroadcastFlags {
    BroadcastFlags {
        timeout: Some(ms),
        ..Default::default()
    }
}

pub fn msg(uid: &str, body: ClusterBody) -> ClusterMessage {
    ClusterMessage::new(uid, "/", body)
}

pub fn broadcast(uid: &str, data: Value, opts: BroadcastOptions) -> ClusterMessage {
    msg(
        uid,
        ClusterBody::Broadcast(ClusterBroadcast::new(data, opts)),
    )
}

/// The ids a capture run hands out (the nondeterministic parts of its messages).
pub struct Ids {
    pub uid_a: String,
    pub uid_b: String,
    pub sid: String,
}

/// The messages `cluster-capture.js` makes its servers send, in the order they send them,
/// without the `requestId`s (random: [`adopt_ids`] copies them from the capture) and with
/// an empty handshake in the fetched socket (also copied). `ack_timeout` is the timeout flag
/// of the ack broadcast and of fetchSockets.
pub struct Scenario {
    /// plain .. bin: broadcasts without acks, in order.
    pub broadcasts: Vec<ClusterMessage>,
    pub need_ack: ClusterMessage,
    pub client_count: ClusterMessage,
    pub broadcast_ack: ClusterMessage,
    pub join: ClusterMessage,
    pub leave: ClusterMessage,
    pub fetch: ClusterMessage,
    pub fetch_response: ClusterMessage,
    pub sse: ClusterMessage,
    pub sse_ack: ClusterMessage,
    pub sse_ack_response: ClusterMessage,
    pub sse_undefined: ClusterMessage,
    pub sse_undefined_response: ClusterMessage,
    pub disconnect: ClusterMessage,
    /// `socket.emit("direct", 5)` on B (only through the adapter with CSR on).
    pub direct: ClusterMessage,
    /// `socket.timeout(5000).emitWithAck("direct-ack", 6)` on B.
    pub direct_ack: ClusterMessage,
}

pub fn scenario(ids: &Ids, ack_timeout: u64) -> Scenario {
    let (a, b, sid) = (ids.uid_a.as_str(), ids.uid_b.as_str(), ids.sid.as_str());
    let none = BroadcastFlags::default;
    let volatile = BroadcastFlags {
        volatile: true,
        ..Default::default()
    };
    let bin_data = Value::Array(vec![
        "bin".into(),
        Value::Binary(vec![1, 2, 3]),
        Value::Map(vec![("nested".into(), Value::Binary(vec![7, 7, 7]))]),
    ]);
    Scenario {
        broadcasts: vec![
            broadcast(
                a,
                json(r#"["plain",1,"two",{"three":3,"nested":[true,null,"é"]},1.5,-7]"#),
                opts(&[], &[], none()),
            ),
            broadcast(
                a,
                json(r#"["roomy",[1,2]]"#),
                opts(&["room1"], &["room2"], none()),
            ),
            broadcast(
                a,
                json(r#"["multi","x"]"#),
                opts(&["room1", "room3"], &[], none()),
            ),
            broadcast(
                a,
                json(r#"["to-sid","only you"]"#),
                opts(&[sid], &[], none()),
            ),
            broadcast(a, json(r#"["not-you"]"#), opts(&[], &[sid], none())),
            broadcast(a, json(r#"["vol",1]"#), opts(&[], &[], volatile)),
            broadcast(a, bin_data, opts(&["room1"], &[], none())),
        ],
        need_ack: msg(
            a,
            ClusterBody::Broadcast(ClusterBroadcast {
                packet: ClusterPacket::event(json(r#"["need-ack","q"]"#)),
                request_id: Some(String::new()),
                opts: opts(&["room1"], &[], timeout(ack_timeout)),
            }),
        ),
        client_count: msg(
            b,
            ClusterBody::BroadcastClientCount(BroadcastClientCount {
                request_id: String::new(),
                client_count: 1,
            }),
        ),
        broadcast_ack: msg(
            b,
            ClusterBody::BroadcastAck(AckResponse {
                request_id: String::new(),
                packet: Some(json(r#"{"got":"q"}"#)),
            }),
        ),
        join: msg(
            a,
            ClusterBody::SocketsJoin(RoomsChange {
                opts: opts(&["room1"], &[], none()),
                rooms: vec!["room9".into(), "room10".into()],
            }),
        ),
        leave: msg(
            a,
            ClusterBody::SocketsLeave(RoomsChange {
                opts: opts(&["room9"], &[], none()),
                rooms: vec!["room10".into()],
            }),
        ),
        fetch: msg(
            a,
            ClusterBody::FetchSockets(FetchSockets {
                opts: opts(&[], &[], timeout(ack_timeout)),
                request_id: String::new(),
            }),
        ),
        fetch_response: msg(
            b,
            ClusterBody::FetchSocketsResponse(FetchSocketsResponse {
                request_id: String::new(),
                sockets: vec![FetchedSocket {
                    id: sid.into(),
                    handshake: Value::Nil,
                    rooms: vec![sid.into(), "room1".into(), "room9".into()],
                    data: json(r#"{"user":"alice"}"#),
                }],
            }),
        ),
        sse: msg(
            a,
            ClusterBody::ServerSideEmit(ServerSideEmit {
                request_id: None,
                packet: vec!["sse".into(), json(r#"{"a":1}"#), Value::Binary(vec![9])],
            }),
        ),
        sse_ack: msg(
            a,
            ClusterBody::ServerSideEmit(ServerSideEmit {
                request_id: Some(String::new()),
                packet: vec!["sse-ack".into(), 2.into()],
            }),
        ),
        sse_ack_response: msg(
            b,
            ClusterBody::ServerSideEmitResponse(AckResponse {
                request_id: String::new(),
                packet: Some(json(r#"{"pong":2}"#)),
            }),
        ),
        sse_undefined: msg(
            a,
            ClusterBody::ServerSideEmit(ServerSideEmit {
                request_id: Some(String::new()),
                packet: vec!["sse-undefined".into()],
            }),
        ),
        sse_undefined_response: msg(
            b,
            ClusterBody::ServerSideEmitResponse(AckResponse {
                request_id: String::new(),
                packet: None,
            }),
        ),
        disconnect: msg(
            a,
            ClusterBody::DisconnectSockets(DisconnectSockets {
                opts: opts(&["room-nobody"], &[], none()),
                close: true,
            }),
        ),
        direct: broadcast(b, json(r#"["direct",5]"#), opts(&[sid], &[], none())),
        direct_ack: msg(
            b,
            ClusterBody::Broadcast(ClusterBroadcast {
                packet: ClusterPacket {
                    id: Some(1),
                    ..ClusterPacket::event(json(r#"["direct-ack",6]"#))
                },
                request_id: None,
                opts: opts(&[sid], &[], timeout(5000)),
            }),
        ),
    }
}

/// Fills the nondeterministic parts of `expected` from `captured`: a `requestId` left empty,
/// and the handshake of fetched sockets (checked to be a handshake object first).
pub fn adopt_ids(expected: &mut ClusterMessage, captured: &ClusterMessage) {
    let Some(id) = captured.request_id() else {
        return;
    };
    let id = id.to_string();
    match &mut expected.body {
        ClusterBody::Broadcast(b) if b.request_id.as_deref() == Some("") => b.request_id = Some(id),
        ClusterBody::ServerSideEmit(e) if e.request_id.as_deref() == Some("") => {
            e.request_id = Some(id)
        }
        ClusterBody::FetchSockets(f) if f.request_id.is_empty() => f.request_id = id,
        ClusterBody::FetchSocketsResponse(r) => {
            if r.request_id.is_empty() {
                r.request_id = id;
            }
            if let ClusterBody::FetchSocketsResponse(c) = &captured.body {
                for (mine, theirs) in r.sockets.iter_mut().zip(&c.sockets) {
                    assert_handshake(&theirs.handshake);
                    mine.handshake = theirs.handshake.clone();
                }
            }
        }
        ClusterBody::ServerSideEmitResponse(r) | ClusterBody::BroadcastAck(r)
            if r.request_id.is_empty() =>
        {
            r.request_id = id
        }
        ClusterBody::BroadcastClientCount(c) if c.request_id.is_empty() => c.request_id = id,
        _ => {}
    }
}

/// socket.io's `handshake` object, in its key order.
fn assert_handshake(v: &Value) {
    let Value::Map(entries) = v else {
        panic!("handshake is not a map: {v}")
    };
    let keys: Vec<&str> = entries.iter().filter_map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "headers", "time", "address", "xdomain", "secure", "issued", "url", "query", "auth"
        ]
    );
}

/// Asserts that `captured` (decoded from what Node wrote) equals `expected` once the random
/// ids are adopted, and that requests and their responses share their `requestId`.
pub fn assert_flow(captured: &[ClusterMessage], mut expected: Vec<ClusterMessage>) {
    assert_eq!(
        captured.len(),
        expected.len(),
        "captured {captured:#?}\nexpected {expected:#?}"
    );
    for (want, got) in expected.iter_mut().zip(captured) {
        adopt_ids(want, got);
        assert_eq!(got, want);
    }
}
