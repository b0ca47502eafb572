//! `@socket.io/redis-streams-adapter` 0.3 interop, against real Node servers and a private
//! redis-server:
//!
//! * `node_writes_what_we_decode_and_encode`: two Node servers run the whole cluster protocol
//!   (`golden/scripts/cluster-capture.js streams`); every stream entry (XRANGE), every XADD
//!   and SET command (MONITOR), every pub/sub message (PSUBSCRIBE) and the CSR session record
//!   (GET) decode into the expected typed values, and our encoders reproduce them byte for
//!   byte, routing included. The offsets the stock client received are the entry ids.
//! * `node_accepts_what_we_write`: our XADDed broadcasts reach a stock socket.io-client with
//!   their entry ids as offsets; our pub/sub requests get answers; our session record lets
//!   the Node server restore a session (`recovered === true`, our sid, rooms and data) and
//!   replay exactly the entries our `replayed_event` predicts.

mod support;

use std::num::NonZeroU32;

use rmpv::Value;
use serde_json::{Value as Json, json as j};
use support::*;
use switchboard_testkit::redis::{RedisServer, Resp};
use switchboard_wire::cluster::{
    AckResponse, BroadcastClientCount, ClusterBody, ClusterBroadcast, ClusterMessage,
    ClusterPacket, FetchSockets, RoomsChange, ServerSideEmit,
};
use switchboard_wire::recovery::{self, Session, StreamId};
use switchboard_wire::streams::{self, Outgoing, StreamsOptions};
use switchboard_wire::{BroadcastFlags, BroadcastOptions};

fn text(v: &Json) -> String {
    v.as_str().expect("string").to_string()
}

fn unhex_str(v: &Json) -> String {
    String::from_utf8(unhex(v.as_str().expect("hex"))).expect("UTF-8 argument")
}

#[test]
fn node_writes_what_we_decode_and_encode() {
    let (lines, ids, meta) = capture("streams");
    let pid = text(&meta["pid"]);
    let s = scenario(&ids, 5000);
    let options = StreamsOptions::default();
    let four = StreamsOptions {
        stream_count: NonZeroU32::new(4).unwrap(),
        ..Default::default()
    };

    // Stream entries: decode, re-encode byte for byte.
    let mut main_stream = Vec::new();
    let mut entry_ids = Vec::new();
    for entry in of_kind(&lines, "entry") {
        let fields: Vec<(String, String)> = entry["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (text(&f[0]), text(&f[1])))
            .collect();
        let msg = streams::decode_entry(fields.iter().map(|(k, v)| (k, v))).unwrap();
        let ours: Vec<(String, String)> = streams::encode_fields(&msg, false)
            .pairs()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(ours, fields, "re-encoding {msg:?}");
        let stream = text(&entry["stream"]);
        match stream.as_str() {
            "socket.io" => {
                entry_ids.push(text(&entry["id"]));
                main_stream.push(msg);
            }
            // The 4-stream server: "/" hashes to 3, "/notifications" to -3 (the quirk).
            other => {
                assert_eq!(four.stream_for(&msg.nsp), other);
                assert_eq!(four.is_read(&msg.nsp), other == "socket.io-3");
            }
        }
    }
    let mut expected = s.broadcasts.clone();
    expected.extend([s.join.clone(), s.leave.clone(), s.disconnect.clone()]);
    expected.extend([s.direct.clone(), s.direct_ack.clone()]);
    assert_flow(&main_stream, expected);
    assert!(main_stream.iter().all(|m| !streams::is_ephemeral(m)));

    // Offsets: the client got the entry id as last argument exactly when socket.io adds one.
    for (msg, id) in main_stream.iter().zip(&entry_ids) {
        let ClusterBody::Broadcast(b) = &msg.body else {
            continue;
        };
        let event = b.packet.data.as_array().unwrap()[0].as_str().unwrap();
        let Some(got) = received(&lines, event) else {
            continue; // not-you: excluded
        };
        let last = got["args"].as_array().unwrap().last().cloned();
        let with_offset = recovery::should_add_offset(&b.packet, &b.opts);
        assert_eq!(
            last == Some(Json::String(id.clone())),
            with_offset,
            "{event}"
        );
        assert!(recovery::is_valid_offset(id));
        if with_offset {
            // The rest of the arguments are the packet's.
            let args = got["args"].as_array().unwrap();
            let data = client_view(&b.packet.data);
            assert_eq!(&args[..args.len() - 1], &data.as_array().unwrap()[1..]);
        }
    }
    for event in ["plain", "roomy", "multi", "to-sid", "bin", "direct"] {
        assert!(
            received(&lines, event).is_some(),
            "client never got {event}"
        );
    }

    // XADD commands as MONITOR saw them: layout, stream key and bytes.
    let commands: Vec<Vec<String>> = of_kind(&lines, "command")
        .into_iter()
        .map(|c| {
            c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(unhex_str)
                .collect()
        })
        .collect();
    let xadds: Vec<&Vec<String>> = commands.iter().filter(|c| c[0] == "XADD").collect();
    assert_eq!(xadds.len(), main_stream.len() + 2);
    for args in xadds {
        let pairs: Vec<(&str, &str)> = args[6..]
            .chunks(2)
            .map(|p| (p[0].as_str(), p[1].as_str()))
            .collect();
        let msg = streams::decode_entry(pairs).unwrap();
        let opts = if args[1] == "socket.io" {
            &options
        } else {
            &four
        };
        let Outgoing::Xadd(xadd) = opts.encode_message(&msg) else {
            panic!("{msg:?} should go to the stream");
        };
        assert_eq!(&xadd.args(), args);
    }

    // Pub/sub: routing and bytes of every message, then the typed flow.
    let mut flow = Vec::new();
    let own_channel = options.channels.server("/", &ids.uid_a);
    for p in of_kind(&lines, "pubsub") {
        let (channel, payload) = (text(&p["channel"]), unhex(p["hex"].as_str().unwrap()));
        let msg = streams::decode_pubsub(&payload).unwrap();
        assert!(streams::is_ephemeral(&msg));
        let ours = if channel == own_channel {
            assert!(msg.message_type().is_response());
            options.encode_response(&ids.uid_a, &msg)
        } else {
            options.encode_message(&msg)
        };
        assert_eq!(
            ours,
            Outgoing::Publish {
                channel,
                payload,
                sharded: false
            },
            "{msg:?}"
        );
        flow.push(msg);
    }
    // `cb()` without arguments: @msgpack/msgpack writes `packet: nil`, which reads back as
    // null; encoding `undefined` (None) gives the same bytes.
    let undefined_response = flow.last().unwrap();
    let mut as_undefined = undefined_response.clone();
    if let ClusterBody::ServerSideEmitResponse(r) = &mut as_undefined.body {
        assert_eq!(r.packet, Some(Value::Nil));
        r.packet = None;
    }
    assert_eq!(
        streams::encode_pubsub(&as_undefined),
        streams::encode_pubsub(undefined_response)
    );
    let mut sse_undefined_response = s.sse_undefined_response.clone();
    if let ClusterBody::ServerSideEmitResponse(r) = &mut sse_undefined_response.body {
        r.packet = Some(Value::Nil);
    }
    assert_flow(
        &flow,
        vec![
            s.need_ack,
            s.client_count,
            s.broadcast_ack,
            s.fetch,
            s.fetch_response,
            s.sse,
            s.sse_ack,
            s.sse_ack_response,
            s.sse_undefined,
            sse_undefined_response,
        ],
    );
    // Responses carry their request's id.
    for (request, responses) in [(0, &[1, 2][..]), (3, &[4]), (6, &[7]), (8, &[9])] {
        for r in responses {
            assert_eq!(flow[*r].request_id(), flow[request].request_id());
        }
    }

    // The session record B stored when the client's transport closed, and its SET.
    let session_line = of_kind(&lines, "session")[0];
    let record = text(&session_line["value"]);
    let session = Session::decode(record.as_bytes()).unwrap();
    assert_eq!(
        session,
        Session {
            sid: ids.sid.clone(),
            pid: pid.clone(),
            rooms: vec![ids.sid.clone(), "room1".into(), "room9".into()],
            data: json(r#"{"user":"alice"}"#),
        }
    );
    assert_eq!(session.encode(), record);
    assert_eq!(text(&session_line["key"]), options.session_key(&pid));
    let pttl = session_line["pttl"].as_i64().unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    let set = commands.iter().find(|c| c[0] == "SET").unwrap();
    assert_eq!(
        set,
        &session.set_command(recovery::DEFAULT_SESSION_KEY_PREFIX, 60_000)
    );
}

/// The uid our messages carry (any 16 hex characters: the Node servers only compare it).
const OUR_UID: &str = "5157b1e2a7c0ffee";

fn run(redis: &RedisServer, args: &[String]) -> Resp {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reply = redis.command(&args).expect("redis command");
    assert!(!matches!(reply, Resp::Error(_)), "{args:?}: {reply:?}");
    reply
}

/// Runs an [`Outgoing`]; returns the entry id of an XADD.
fn send(redis: &RedisServer, out: Outgoing) -> Option<String> {
    match out {
        Outgoing::Xadd(xadd) => run(redis, &xadd.args()).as_str(),
        Outgoing::Publish {
            channel, payload, ..
        } => {
            redis
                .command_bytes(&[b"PUBLISH", channel.as_bytes(), &payload])
                .expect("PUBLISH");
            None
        }
    }
}

/// The entries of `stream` after `after`, decoded.
fn entries_after(redis: &RedisServer, stream: &str, after: &str) -> Vec<(String, ClusterMessage)> {
    let start = after
        .parse::<StreamId>()
        .unwrap()
        .next()
        .unwrap()
        .to_string();
    let reply = redis.command(&["XRANGE", stream, &start, "+"]).unwrap();
    reply
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let e = e.as_array().unwrap();
            let fields: Vec<Vec<u8>> = e[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| match f {
                    Resp::Bulk(Some(b)) => b.clone(),
                    other => panic!("{other:?}"),
                })
                .collect();
            let pairs = fields.chunks(2).map(|p| (p[0].clone(), p[1].clone()));
            (
                e[0].as_str().unwrap(),
                streams::decode_entry(pairs).unwrap(),
            )
        })
        .collect()
}

fn pubsub_message(line: &Json) -> ClusterMessage {
    streams::decode_pubsub(&unhex(line["hex"].as_str().unwrap())).unwrap()
}

#[test]
fn node_accepts_what_we_write() {
    let redis = RedisServer::start().expect("redis-server");
    let port = redis.port().to_string();
    let mut script = NodeScript::start("cluster-accept.js", &[&port, "streams", OUR_UID]);
    let mut lines = Vec::new();
    let ready = script.expect("ready", &mut lines);
    let (sid, pid) = (text(&ready["sid"]), text(&ready["pid"]));
    let options = StreamsOptions::default();
    let ours = |body| ClusterMessage::new(OUR_UID, "/", body);

    // Broadcasts into the stream reach the client with our entry ids as offsets.
    let hello = broadcast(
        OUR_UID,
        json(r#"["from-rust",{"n":1,"s":"é"},[1.5,null,true]]"#),
        opts(&["room1"], &[], BroadcastFlags::default()),
    );
    let id1 = send(&redis, options.encode_message(&hello)).unwrap();
    let got = script.expect("received", &mut lines);
    assert_eq!(got["event"], "from-rust");
    assert_eq!(got["args"], j!([{"n":1,"s":"é"}, [1.5, null, true], id1]));
    let bin = broadcast(
        OUR_UID,
        Value::Array(vec!["rust-bin".into(), Value::Binary(vec![1, 2, 3])]),
        BroadcastOptions::default(),
    );
    let id2 = send(&redis, options.encode_message(&bin)).unwrap();
    let got = script.expect("received", &mut lines);
    assert_eq!(got["event"], "rust-bin");
    assert_eq!(got["args"], j!([{"$bin": "010203"}, id2]));

    // socketsJoin through the stream, then fetchSockets over pub/sub sees the new room.
    let join = ours(ClusterBody::SocketsJoin(RoomsChange {
        opts: opts(&[&sid], &[], BroadcastFlags::default()),
        rooms: vec!["joined-by-rust".into()],
    }));
    send(&redis, options.encode_message(&join)).unwrap();
    let fetch = ours(ClusterBody::FetchSockets(FetchSockets {
        opts: BroadcastOptions::default(),
        request_id: "rust-fetch-1".into(),
    }));
    send(&redis, options.encode_message(&fetch));
    let response = pubsub_message(&script.expect("pubsub", &mut lines));
    let ClusterBody::FetchSocketsResponse(r) = &response.body else {
        panic!("{response:?}")
    };
    assert_eq!(r.request_id, "rust-fetch-1");
    assert_eq!(r.sockets.len(), 1);
    assert_eq!(r.sockets[0].id, sid);
    assert_eq!(
        r.sockets[0].rooms,
        [sid.as_str(), "room1", "joined-by-rust"]
    );
    assert_eq!(r.sockets[0].data, json(r#"{"user":"node"}"#));

    // serverSideEmit with an ack.
    let sse = ours(ClusterBody::ServerSideEmit(ServerSideEmit {
        request_id: Some("rust-sse-1".into()),
        packet: vec!["rust-sse".into(), "hi".into()],
    }));
    send(&redis, options.encode_message(&sse));
    let response = pubsub_message(&script.expect("pubsub", &mut lines));
    assert_eq!(
        response.body,
        ClusterBody::ServerSideEmitResponse(AckResponse {
            request_id: "rust-sse-1".into(),
            packet: Some(json(r#"{"echo":"hi"}"#)),
        })
    );

    // A broadcast with acknowledgements, over pub/sub.
    let ack = ours(ClusterBody::Broadcast(ClusterBroadcast {
        packet: ClusterPacket::event(json(r#"["rust-ack",1]"#)),
        request_id: Some("rust-ack-1".into()),
        opts: opts(&["room1"], &[], timeout(5000)),
    }));
    assert!(streams::is_ephemeral(&ack));
    send(&redis, options.encode_message(&ack));
    let count = pubsub_message(&script.expect("pubsub", &mut lines));
    let acked = pubsub_message(&script.expect("pubsub", &mut lines));
    assert_eq!(
        count.body,
        ClusterBody::BroadcastClientCount(BroadcastClientCount {
            request_id: "rust-ack-1".into(),
            client_count: 1,
        })
    );
    assert_eq!(
        acked.body,
        ClusterBody::BroadcastAck(AckResponse {
            request_id: "rust-ack-1".into(),
            packet: Some(json(r#"{"got":1}"#)),
        })
    );
    let rust_ack = received(&lines, "rust-ack").expect("client got rust-ack");
    assert_eq!(
        rust_ack["args"],
        j!([1, "$fn"]),
        "no offset on an ack event"
    );

    // Recovery from OUR session record. The client drops its transport; Node stores its
    // session; we replace it with ours (another sid, other rooms and data) and write events
    // while the client is away.
    script.send(j!({"cmd": "drop"}));
    script.expect("dropped", &mut lines);
    let our_sid = "rust-restored-sid-01";
    let session = Session {
        sid: our_sid.into(),
        pid: pid.clone(),
        rooms: vec![our_sid.into(), "room1".into(), "rust-room".into()],
        data: json(r#"{"from":"rust","n":1}"#),
    };
    run(
        &redis,
        &session.set_command(recovery::DEFAULT_SESSION_KEY_PREFIX, 60_000),
    );
    let none = BroadcastFlags::default;
    let away = [
        broadcast(
            OUR_UID,
            json(r#"["missed-1",1]"#),
            opts(&["rust-room"], &[], none()),
        ),
        broadcast(
            OUR_UID,
            json(r#"["not-for-you"]"#),
            opts(&["elsewhere"], &[], none()),
        ),
        broadcast(
            OUR_UID,
            json(r#"["excepted"]"#),
            opts(&[], &[our_sid], none()),
        ),
        broadcast(
            OUR_UID,
            json(r#"["missed-volatile"]"#),
            opts(
                &[],
                &[],
                BroadcastFlags {
                    volatile: true,
                    ..none()
                },
            ),
        ),
        broadcast(
            OUR_UID,
            json(r#"["missed-2",{"k":[2]}]"#),
            opts(&[], &["room2"], none()),
        ),
    ];
    for msg in &away {
        send(&redis, options.encode_message(msg)).unwrap();
    }
    // What the adapter should replay, by our rules: from the client's last offset (id2).
    let predicted: Vec<Json> = entries_after(&redis, "socket.io", &id2)
        .iter()
        .filter_map(|(id, msg)| recovery::replayed_event(msg, id, "/", &session))
        .map(|data| client_view(&data))
        .collect();
    assert_eq!(predicted.len(), 3, "{predicted:?}");

    script.send(j!({"cmd": "reconnect"}));
    let mut after = script.collect_until("recovered connection", |l| {
        of_kind(l, "client-connect").len() == 1 && of_kind(l, "server-connect").len() == 1
    });
    let server = of_kind(&after, "server-connect")[0].clone();
    assert_eq!(server["recovered"], true, "{server}");
    assert_eq!(server["sid"], our_sid);
    assert_eq!(server["pid"], pid.as_str());
    assert_eq!(server["rooms"], j!([our_sid, "room1", "rust-room"]));
    assert_eq!(server["data"], j!({"from": "rust", "n": 1}));
    let client = of_kind(&after, "client-connect")[0].clone();
    assert_eq!(client["recovered"], true);
    assert_eq!(client["id"], our_sid);
    // The replayed events arrive before the connect event, in stream order.
    after.retain(|l| l["kind"] == "received");
    let replayed: Vec<Json> = after
        .iter()
        .map(|l| {
            let mut data = vec![l["event"].clone()];
            data.extend(l["args"].as_array().unwrap().iter().cloned());
            Json::Array(data)
        })
        .collect();
    assert_eq!(replayed, predicted);
    // The session was consumed.
    assert_eq!(
        redis
            .command(&["EXISTS", &options.session_key(&pid)])
            .unwrap()
            .as_int(),
        Some(0)
    );
    script.send(j!({"cmd": "exit"}));
}
