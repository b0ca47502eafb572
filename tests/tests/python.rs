//! The official `python-socketio` client receives an event published by the
//! official `@socket.io/redis-emitter`, over websocket and over polling.

mod common;

use common::*;
use serde_json::json;
use switchboard_testkit::{
    node::{EmitterPublish, as_bin, bin},
    python::{PyClientOptions, PythonClient},
};

async fn python_case(transport: &str) {
    let redis = redis();
    let gw = redis_gateway(&redis, &[]).await;
    let node = node().await;
    let user = format!("py-{transport}");
    let client = PythonClient::spawn(
        &PyClientOptions::new(gw.url(), "py-event")
            .token(token_role(&user, "admin"))
            .transports(&[transport])
            .timeout(T),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.logs()));
    assert!(!client.sid.is_empty());
    assert_eq!(client.transport, transport);

    let payload = rich_json();
    node.emitter_publish(
        EmitterPublish::new(
            redis.url(),
            "py-event",
            vec![payload.clone(), bin([0xde, 0xad, 0xbe, 0xef]), json!(1.5)],
        )
        .to(format!("user:{user}")),
    )
    .await
    .unwrap();
    let args = client
        .wait_event()
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.logs()));
    assert_eq!(args.len(), 3, "{args:?}");
    assert_eq!(args[0], payload);
    assert_eq!(
        as_bin(&args[1]).as_deref(),
        Some(&[0xde, 0xad, 0xbe, 0xef][..])
    );
    assert_eq!(args[2], json!(1.5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_websocket() {
    python_case("websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_polling() {
    python_case("polling").await;
}
