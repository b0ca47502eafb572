//! One Redis Streams fleet of a gateway (`redis.bus = "streams"`, recovery
//! on) and a Node socket.io 4.8 server on the official
//! `@socket.io/redis-streams-adapter` 0.3.1 (connection state recovery on):
//!
//! * Node `io.to(room).emit` reaches the gateway's clients (from the
//!   stream), with the stream entry id as their offset;
//! * the `broadcaster` crate and the gateway's HTTP API, in the streams
//!   format, reach the Node server's clients, whose offset (added by Node)
//!   is the same entry id the publisher got back;
//! * Node's `fetchSockets()` lists the gateway's sockets (answered over the
//!   adapter's pub/sub);
//! * a Node broadcast with acks gets the gateway clients' acks.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_broadcaster::{Broadcaster, BroadcasterConfig, StreamsOptions};
use switchboard_testkit::{
    GatewayOptions, GatewayProcess, free_port,
    jwt::Claims,
    net::http_request,
    node::{ConnectOptions, NodeDriver, ServerTarget, StartServer},
    redis::RedisServer,
};

mod common;

const SECRET: &str = "mixed-streams-secret-0123456789abcdef";
const API_KEY: &str = "mixed-streams-api-key-0123456789";
const T: Duration = Duration::from_secs(20);

/// The event's arguments without the trailing offset, and the offset.
fn split_offset(mut args: Vec<Value>) -> (Vec<Value>, String) {
    let offset = args
        .pop()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no offset in {args:?}"));
    assert!(
        switchboard_wire::recovery::is_valid_offset(&offset),
        "{offset:?} is not a stream id"
    );
    (args, offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_node_streams_adapter_share_one_fleet() {
    tokio::time::timeout(Duration::from_secs(120), run())
        .await
        .expect("test exceeded 120 s");
}

async fn run() {
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .expect("redis");
    let gw = GatewayProcess::start_async(
        GatewayOptions::new()
            .redis(redis.url())
            .secret(SECRET)
            .env("SWITCHBOARD_API_KEYS", API_KEY)
            .env("SWITCHBOARD_REDIS__BUS", "streams")
            .env("SWITCHBOARD_RECOVERY__ENABLED", "true"),
    )
    .await
    .expect("gateway");
    gw.wait_for_log("reading the stream", T)
        .expect("the gateway reads the stream");
    let node = NodeDriver::start().await.expect("node driver");
    let port = node
        .start_server_with(StartServer {
            redis_url: redis.url(),
            adapter: Some("streams".into()),
            server_opts: Some(json!({ "connectionStateRecovery": {} })),
            ..StartServer::default()
        })
        .await
        .expect("node server on the streams adapter");

    let token = Claims::new().sub("g1").role("admin").sign_hs256(SECRET);
    let g = node
        .connect(
            "g",
            &gw.url(),
            ConnectOptions::new().websocket_only().token(token),
        )
        .await
        .expect("gateway client");
    node.connect(
        "n",
        &format!("http://127.0.0.1:{port}"),
        ConnectOptions::new()
            .websocket_only()
            .auth(json!({ "rooms": ["role:admin"] })),
    )
    .await
    .expect("node client");

    // Node -> gateway (through the stream).
    node.server_emit(
        ServerTarget {
            port,
            to: vec!["role:admin".into()],
            ..Default::default()
        },
        "from_node",
        vec![json!({ "a": 1 })],
    )
    .await
    .expect("node emit");
    let (args, from_node_offset) =
        split_offset(node.expect_event("g", "from_node", T).await.expect("g"));
    assert_eq!(args, vec![json!({ "a": 1 })]);
    let (args, node_side) = split_offset(node.expect_event("n", "from_node", T).await.expect("n"));
    assert_eq!(args, vec![json!({ "a": 1 })]);
    assert_eq!(
        node_side, from_node_offset,
        "the gateway's offset is the entry id Node's own client got"
    );

    // Broadcaster (streams format) -> Node's client and the gateway's.
    let b = Broadcaster::from_config(BroadcasterConfig {
        redis_url: redis.url(),
        streams: Some(StreamsOptions::default()),
        ..Default::default()
    })
    .expect("broadcaster");
    let d = b
        .to_role("admin")
        .emit("from_rust", &json!({ "b": 2 }))
        .await
        .expect("publish");
    assert!(d.reached_anyone());
    let id = d.stream_id.expect("entry id");
    for c in ["n", "g"] {
        let (args, offset) = split_offset(node.expect_event(c, "from_rust", T).await.expect(c));
        assert_eq!(args, vec![json!({ "b": 2 })], "{c}");
        assert_eq!(offset, id, "{c}: offset = the entry id the broadcaster got");
    }

    // The gateway's HTTP API, in streams mode: XADD, the entry id in the answer.
    let url = format!("{}/api/v1/emit", gw.url());
    let body = json!({ "event": "from_api", "roles": ["admin"], "data": { "c": 3 } }).to_string();
    let resp = tokio::task::spawn_blocking(move || {
        http_request(
            "POST",
            &url,
            &[
                ("Authorization", &format!("Bearer {API_KEY}")),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
            T,
        )
    })
    .await
    .unwrap()
    .expect("POST /api/v1/emit");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let answer: Value = serde_json::from_str(&resp.text()).expect("JSON");
    let id = answer["id"].as_str().expect("entry id").to_string();
    for c in ["n", "g"] {
        let (args, offset) = split_offset(node.expect_event(c, "from_api", T).await.expect(c));
        assert_eq!(args, vec![json!({ "c": 3 })], "{c}");
        assert_eq!(offset, id, "{c}");
    }

    // Node's fetchSockets() sees the gateway's socket (pub/sub request and
    // response, as the adapter sends them).
    let sockets = node
        .server_fetch_sockets(ServerTarget {
            port,
            to: vec!["role:admin".into()],
            ..Default::default()
        })
        .await
        .expect("fetchSockets");
    assert!(
        sockets.iter().any(|s| s.id == g.sid),
        "gateway socket {} missing from {sockets:?}",
        g.sid
    );
    node.expect_no_event_named("g", "from_rust", Duration::from_millis(300))
        .await
        .expect("exactly once");
}

/// A Node server on the streams adapter broadcasts with acks
/// (`io.to(room).timeout(..).emitWithAck`): the gateway delivers the event
/// with an ack id, answers its client count and relays each client's ack on
/// the requester's channel, so the Node callback gets the gateway clients'
/// acks next to its own client's (all of a room, one user's room, and a
/// timeout with only Node's ack when the gateway's clients stay silent).
/// Runs tests/node/scripts/streams-broadcast-with-ack.mjs.
#[test]
fn node_streams_broadcast_with_acks_gets_gateway_client_acks() {
    let redis = RedisServer::start().expect("redis");
    let gw = GatewayProcess::start(
        GatewayOptions::new()
            .redis(redis.url())
            .secret(SECRET)
            .env("SWITCHBOARD_REDIS__BUS", "streams")
            .env("SWITCHBOARD_RECOVERY__ENABLED", "true"),
    )
    .expect("gateway");
    gw.wait_for_log("reading the stream", T)
        .expect("the gateway reads the stream");
    let token = |sub: &str| {
        Claims::new()
            .sub(sub)
            .role("admin")
            .expires_in(Duration::from_secs(600))
            .sign_hs256(SECRET)
    };
    let stdout = common::run_node_script(
        "scripts/streams-broadcast-with-ack.mjs",
        &[
            redis.url(),
            gw.url(),
            token("a"),
            token("b"),
            free_port().to_string(),
        ],
        &gw,
    );
    assert!(stdout.contains(r#""ok":true"#), "{stdout}");
}
