//! The official `socket.io-client` over every transport, in both bus modes:
//! it connects, receives published events (JSON and binary) and gets acks for
//! its own emits.
//!
//! - embedded mode: no Redis; events are published through
//!   `POST /api/v1/emit` (JSON only: the API has no binary form);
//! - Redis mode: events are published by the official
//!   `@socket.io/redis-emitter`, JSON and binary.

mod common;

use common::*;
use serde_json::{Value, json};
use switchboard_testkit::node::{ConnectOptions, EmitterPublish, NodeDriver, as_bin, bin};

#[derive(Clone, Copy, Debug)]
enum Mode {
    WebsocketOnly,
    PollingOnly,
    PollingThenUpgrade,
}

impl Mode {
    fn options(self, token: &str) -> ConnectOptions {
        let o = ConnectOptions::new().token(token);
        match self {
            Mode::WebsocketOnly => o.websocket_only(),
            Mode::PollingOnly => o.polling_only(),
            Mode::PollingThenUpgrade => o.transports(&["polling", "websocket"]).upgrade(true),
        }
    }

    /// Connects and checks the transport the client ends up on.
    async fn connect(self, node: &NodeDriver, gw: &switchboard_testkit::GatewayProcess) {
        let c = connect(node, "c", gw, self.options(&token("alice"))).await;
        assert!(!c.sid.is_empty());
        match self {
            Mode::WebsocketOnly => assert_eq!(c.transport.as_deref(), Some("websocket")),
            Mode::PollingOnly => {
                assert_eq!(c.transport.as_deref(), Some("polling"));
                // Stays on polling.
                tokio::time::sleep(QUIET).await;
                let state = node.client_state("c").await.unwrap();
                assert_eq!(state["transport"], json!("polling"), "{state}");
                assert!(
                    node.queued("c")
                        .iter()
                        .all(|n| !matches!(n, switchboard_testkit::node::Note::Transport { .. })),
                    "polling-only client upgraded: {:?}",
                    node.queued("c")
                );
            }
            Mode::PollingThenUpgrade => {
                // The upgrade may finish before or after CONNECT is acked;
                // either way a transport note follows and the final
                // transport is websocket.
                let upgraded = node
                    .expect_upgrade("c", T)
                    .await
                    .unwrap_or_else(|e| panic!("{e:#}\ngateway logs:\n{}", gw.logs()));
                assert_eq!(upgraded, "websocket");
                let state = node.client_state("c").await.unwrap();
                assert_eq!(state["transport"], json!("websocket"), "{state}");
                assert_eq!(state["connected"], json!(true), "{state}");
            }
        }
    }
}

/// Client emits with an ack get `[{"ok":true,"receivers":N}]`.
async fn assert_ack(node: &NodeDriver) {
    let ack = node
        .emit_with_ack(
            "c",
            "client-event",
            vec![json!({"hello": "gateway"}), json!(7)],
            T,
        )
        .await
        .expect("ack for a client emit");
    let ack = ack.as_array().expect("ack args array");
    assert_eq!(ack.len(), 1, "{ack:?}");
    assert_eq!(ack[0]["ok"], json!(true), "{ack:?}");
    assert!(ack[0]["receivers"].is_u64(), "{ack:?}");
}

async fn embedded_case(mode: Mode) {
    let gw = embedded_gateway(&[]).await;
    let node = node().await;
    mode.connect(&node, &gw).await;

    let payload = rich_json();
    api_emit_ok(
        &gw,
        json!({"event": "news", "args": [payload, "second", 3], "users": ["alice"]}),
    )
    .await;
    let args = expect_once(&node, "c", "news").await;
    assert_eq!(args, vec![payload, json!("second"), json!(3)]);

    // `data` form and a room target the client is not in.
    api_emit_ok(
        &gw,
        json!({"event": "elsewhere", "data": 1, "rooms": ["user:bob"]}),
    )
    .await;
    api_emit_ok(
        &gw,
        json!({"event": "single", "data": {"k": "v"}, "rooms": ["user:alice"]}),
    )
    .await;
    assert_eq!(
        expect_once(&node, "c", "single").await,
        vec![json!({"k": "v"})]
    );
    expect_none(&node, "c", "elsewhere").await;

    assert_ack(&node).await;
    node.shutdown().await.ok();
}

async fn redis_case(mode: Mode) {
    let redis = redis();
    let gw = redis_gateway(&redis, &[]).await;
    let node = node().await;
    mode.connect(&node, &gw).await;

    let payload = rich_json();
    node.emitter_publish(
        EmitterPublish::new(redis.url(), "news", vec![payload.clone(), json!("second")])
            .to("user:alice"),
    )
    .await
    .unwrap();
    let args = expect_once(&node, "c", "news").await;
    assert_eq!(args, vec![payload, json!("second")]);

    // Binary: top-level, nested, and empty buffers arrive as binary.
    let blob: Vec<u8> = (0u8..=255).collect();
    node.emitter_publish(
        EmitterPublish::new(
            redis.url(),
            "file",
            vec![
                bin(&blob),
                json!({"name": "pic.png", "data": bin([0x89, 0x50, 0x4e, 0x47]), "n": 1}),
                bin(b""),
            ],
        )
        .to("user:alice"),
    )
    .await
    .unwrap();
    let args = expect_once(&node, "c", "file").await;
    assert_eq!(args.len(), 3, "{args:?}");
    assert_eq!(
        as_bin(&args[0]).as_deref(),
        Some(&blob[..]),
        "{:?}",
        args[0]
    );
    assert_eq!(args[1]["name"], json!("pic.png"));
    assert_eq!(args[1]["n"], json!(1));
    assert_eq!(
        as_bin(&args[1]["data"]).as_deref(),
        Some(&[0x89u8, 0x50, 0x4e, 0x47][..]),
        "{:?}",
        args[1]
    );
    assert_eq!(as_bin(&args[2]).as_deref(), Some(&[][..]), "{:?}", args[2]);

    // Broadcast to the whole namespace (no room).
    node.emitter_publish(EmitterPublish::new(
        redis.url(),
        "everyone",
        vec![Value::Null],
    ))
    .await
    .unwrap();
    assert_eq!(expect_once(&node, "c", "everyone").await, vec![Value::Null]);

    assert_ack(&node).await;
    node.shutdown().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_websocket_only() {
    embedded_case(Mode::WebsocketOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_polling_only() {
    embedded_case(Mode::PollingOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_polling_then_upgrade() {
    embedded_case(Mode::PollingThenUpgrade).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_websocket_only() {
    redis_case(Mode::WebsocketOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_polling_only() {
    redis_case(Mode::PollingOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_polling_then_upgrade() {
    redis_case(Mode::PollingThenUpgrade).await;
}
