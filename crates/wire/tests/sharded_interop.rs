//! `@socket.io/redis-adapter` 8.3 `createShardedAdapter` interop (static and dynamic
//! subscription modes), against real Node servers and a private redis-server (Redis 7
//! sharded pub/sub):
//!
//! * `node_writes_*`: two Node servers run the whole cluster protocol
//!   (`golden/scripts/cluster-capture.js`); every message captured with SSUBSCRIBE decodes
//!   into the expected typed value, was published on the channel our `channel_for` /
//!   `response_channel` computes, and our `encode` reproduces it byte for byte (JSON, or
//!   notepack when binary).
//! * `node_accepts_*`: what we SPUBLISH (JSON and binary broadcasts, to a room, to a socket
//!   id, requests with acknowledgements, socketsLeave) is acted on by a Node server and reaches
//!   its stock socket.io-client.

mod support;

use rmpv::Value;
use serde_json::{Value as Json, json as j};
use support::*;
use switchboard_testkit::redis::RedisServer;
use switchboard_wire::cluster::{
    AckResponse, BroadcastClientCount, ClusterBody, ClusterBroadcast, ClusterMessage,
    ClusterPacket, FetchSockets, RoomsChange,
};
use switchboard_wire::sharded::{self, ShardedOptions, SubscriptionMode};
use switchboard_wire::{BroadcastFlags, BroadcastOptions};

fn text(v: &Json) -> String {
    v.as_str().expect("string").to_string()
}

fn node_writes(mode: SubscriptionMode) {
    let (lines, ids, _) = capture(&format!("sharded-{}", mode.as_str()));
    let options = ShardedOptions::new("socket.io", mode);
    let own_channel = options.response_channel("/", &ids.uid_a);

    let mut flow = Vec::new();
    for p in of_kind(&lines, "pubsub") {
        let (channel, payload) = (text(&p["channel"]), unhex(p["hex"].as_str().unwrap()));
        let msg = sharded::decode(&payload).unwrap();
        if channel == own_channel {
            assert!(msg.message_type().is_response(), "{msg:?}");
        } else {
            assert_eq!(options.channel_for(&msg), channel, "{msg:?}");
        }
        assert_eq!(sharded::is_json(&payload), !msg.has_binary());
        assert_eq!(sharded::encode(&msg), payload, "{msg:?}");
        flow.push(msg);
    }
    // Dynamic mode puts the one-room broadcasts on the room channel.
    let on_room_channel = of_kind(&lines, "pubsub")
        .iter()
        .filter(|p| p["channel"] == "socket.io#/#room1#")
        .count();
    assert_eq!(
        on_room_channel,
        if mode == SubscriptionMode::Dynamic {
            2
        } else {
            0
        }
    );

    let s = scenario(&ids, 1000);
    let mut expected = s.broadcasts;
    expected.extend([
        s.need_ack,
        s.client_count,
        s.broadcast_ack,
        s.join,
        s.leave,
        s.fetch,
        s.fetch_response,
        s.sse,
        s.sse_ack,
        s.sse_ack_response,
        s.sse_undefined,
        s.sse_undefined_response,
        s.disconnect,
    ]);
    assert_flow(&flow, expected);
    for (request, responses) in [(7, &[8, 9][..]), (12, &[13]), (15, &[16]), (17, &[18])] {
        for r in responses {
            assert_eq!(flow[*r].request_id(), flow[request].request_id());
        }
    }
    // Everything the client was sent arrived.
    for event in ["plain", "roomy", "multi", "to-sid", "bin", "need-ack"] {
        assert!(
            received(&lines, event).is_some(),
            "client never got {event}"
        );
    }
    assert!(received(&lines, "not-you").is_none());
}

#[test]
fn node_writes_static_mode() {
    node_writes(SubscriptionMode::Static);
}

#[test]
fn node_writes_dynamic_mode() {
    node_writes(SubscriptionMode::Dynamic);
}

/// The uid our messages carry (any 16 hex characters: the Node servers only compare it).
const OUR_UID: &str = "5157b1e2a7c0ffee";

fn spublish(redis: &RedisServer, channel: &str, msg: &ClusterMessage) {
    let payload = sharded::encode(msg);
    let reply = redis
        .command_bytes(&[b"SPUBLISH", channel.as_bytes(), &payload])
        .expect("SPUBLISH");
    // Someone listens on every channel we use: B (and, for room channels, only in dynamic mode).
    assert_eq!(reply.as_int(), Some(1), "SPUBLISH {channel}");
}

fn response(script: &mut NodeScript, lines: &mut Vec<Json>) -> ClusterMessage {
    let line = script.expect("pubsub", lines);
    sharded::decode(&unhex(line["hex"].as_str().unwrap())).unwrap()
}

fn node_accepts(mode: SubscriptionMode) {
    let redis = RedisServer::start().expect("redis-server");
    let port = redis.port().to_string();
    let arg = format!("sharded-{}", mode.as_str());
    let mut script = NodeScript::start("cluster-accept.js", &[&port, &arg, OUR_UID]);
    let mut lines = Vec::new();
    let ready = script.expect("ready", &mut lines);
    let sid = text(&ready["sid"]);
    let options = ShardedOptions::new("socket.io", mode);
    let none = BroadcastFlags::default;
    let publish = |msg: &ClusterMessage| spublish(&redis, &options.channel_for(msg), msg);

    // JSON broadcast to one room: the room channel in dynamic mode.
    let to_room = broadcast(
        OUR_UID,
        json(r#"["from-rust",{"n":1,"s":"é"},[1.5,null,true]]"#),
        opts(&["room1"], &[], none()),
    );
    let room_channel = options.channel_for(&to_room);
    assert_eq!(
        room_channel == "socket.io#/#room1#",
        mode == SubscriptionMode::Dynamic
    );
    publish(&to_room);
    let got = script.expect("received", &mut lines);
    assert_eq!(got["event"], "from-rust");
    assert_eq!(got["args"], j!([{"n":1,"s":"é"}, [1.5, null, true]]));

    // Binary (notepack) broadcast to the same room.
    let bin = broadcast(
        OUR_UID,
        Value::Array(vec!["rust-bin".into(), Value::Binary(vec![1, 2, 3])]),
        opts(&["room1"], &[], none()),
    );
    assert!(!sharded::is_json(&sharded::encode(&bin)));
    publish(&bin);
    let got = script.expect("received", &mut lines);
    assert_eq!(got["event"], "rust-bin");
    assert_eq!(got["args"], j!([{"$bin": "010203"}]));

    // To the socket id: looks like one, so the namespace channel.
    let to_sid = broadcast(OUR_UID, json(r#"["to-sid",2]"#), opts(&[&sid], &[], none()));
    assert_eq!(options.channel_for(&to_sid), "socket.io#/#");
    publish(&to_sid);
    let got = script.expect("received", &mut lines);
    assert_eq!(got["event"], "to-sid");

    // fetchSockets: B answers on our channel.
    let ours = |body| ClusterMessage::new(OUR_UID, "/", body);
    publish(&ours(ClusterBody::FetchSockets(FetchSockets {
        opts: BroadcastOptions::default(),
        request_id: "rust-fetch-1".into(),
    })));
    let r = response(&mut script, &mut lines);
    let ClusterBody::FetchSocketsResponse(r) = &r.body else {
        panic!("{r:?}")
    };
    assert_eq!(r.request_id, "rust-fetch-1");
    assert_eq!(r.sockets[0].id, sid);
    assert_eq!(r.sockets[0].rooms, [sid.as_str(), "room1"]);

    // A broadcast with acknowledgements: the namespace channel even for one room.
    let ack = ours(ClusterBody::Broadcast(ClusterBroadcast {
        packet: ClusterPacket::event(json(r#"["rust-ack",1]"#)),
        request_id: Some("rust-ack-1".into()),
        opts: opts(&["room1"], &[], timeout(5000)),
    }));
    assert_eq!(options.channel_for(&ack), "socket.io#/#");
    publish(&ack);
    assert_eq!(
        response(&mut script, &mut lines).body,
        ClusterBody::BroadcastClientCount(BroadcastClientCount {
            request_id: "rust-ack-1".into(),
            client_count: 1,
        })
    );
    assert_eq!(
        response(&mut script, &mut lines).body,
        ClusterBody::BroadcastAck(AckResponse {
            request_id: "rust-ack-1".into(),
            packet: Some(json(r#"{"got":1}"#)),
        })
    );

    // socketsLeave: the socket leaves room1 (in dynamic mode B unsubscribes its channel),
    // so a later room1 broadcast reaches nobody while one to the socket id still arrives.
    publish(&ours(ClusterBody::SocketsLeave(RoomsChange {
        opts: opts(&[&sid], &[], none()),
        rooms: vec!["room1".into()],
    })));
    publish(&ours(ClusterBody::FetchSockets(FetchSockets {
        opts: BroadcastOptions::default(),
        request_id: "rust-fetch-2".into(),
    })));
    let r = response(&mut script, &mut lines);
    let ClusterBody::FetchSocketsResponse(r) = &r.body else {
        panic!("{r:?}")
    };
    assert_eq!(r.sockets[0].rooms, [sid.as_str()]);
    let late = broadcast(
        OUR_UID,
        json(r#"["late-room"]"#),
        opts(&["room1"], &[], none()),
    );
    let payload = sharded::encode(&late);
    redis
        .command_bytes(&[b"SPUBLISH", options.channel_for(&late).as_bytes(), &payload])
        .expect("SPUBLISH");
    publish(&broadcast(
        OUR_UID,
        json(r#"["after-leave"]"#),
        opts(&[&sid], &[], none()),
    ));
    let got = script.expect("received", &mut lines);
    assert_eq!(got["event"], "after-leave");
    assert!(received(&lines, "late-room").is_none());
    script.send(j!({"cmd": "exit"}));
}

#[test]
fn node_accepts_static_mode() {
    node_accepts(SubscriptionMode::Static);
}

#[test]
fn node_accepts_dynamic_mode() {
    node_accepts(SubscriptionMode::Dynamic);
}
