//! A burst larger than the per-connection queue bound (one batch publish)
//! must not cut clients that are reading: the bound that disconnects a slow
//! consumer applies once its writer has stalled.

mod common;

use std::time::Duration;

use common::{API_KEY, connect, embedded_gateway, node, token_role};
use serde_json::json;
use switchboard_testkit::{net::http_request, node::ConnectOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_burst_over_the_queue_bound_reaches_reading_clients() {
    let gw = embedded_gateway(&[("SWITCHBOARD_LIMITS__MAX_QUEUE_BYTES", "65536")]).await;
    let node = node().await;
    let clients: Vec<String> = (0..10).map(|i| format!("reader{i}")).collect();
    for (i, name) in clients.iter().enumerate() {
        connect(
            &node,
            name,
            &gw,
            ConnectOptions::new()
                .websocket_only()
                .token(token_role(&format!("u{i}"), "reader")),
        )
        .await;
    }
    // 20 messages of 8 KB each: 160 KB per client, over the 64 KiB bound.
    let filler = "x".repeat(8000);
    let messages: Vec<_> = (0..20)
        .map(|seq| json!({"event": "burst", "roles": ["reader"], "args": [seq, &filler]}))
        .collect();
    let body = json!({ "messages": messages }).to_string().into_bytes();
    let url = format!("{}/api/v1/emit/batch", gw.url());
    let auth = format!("Bearer {API_KEY}");
    let resp = tokio::task::spawn_blocking(move || {
        http_request(
            "POST",
            &url,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            Some(&body),
            Duration::from_secs(5),
        )
    })
    .await
    .expect("task")
    .expect("POST batch");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));

    for name in &clients {
        for seq in 0..20 {
            let args = node
                .expect_event(name, "burst", Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("{name} missed message {seq}: {e:#}\n{}", gw.logs()));
            assert_eq!(args[0], json!(seq), "{name} got messages out of order");
        }
    }
    let metrics = common::metrics(&gw).await;
    assert_eq!(
        common::metric_or_zero(
            &metrics,
            r#"switchboard_engine_sessions_closed_total{reason="slow_consumer"}"#
        ),
        0.0,
        "reading clients were cut as slow consumers"
    );
}

/// The websocket writer frames everything queued for a socket itself and
/// writes it in a few large writes: a thousand frames queued at once for one
/// socket, of sizes on both sides of each websocket length encoding (7-bit,
/// 16-bit, 64-bit) and over the writer's 64 KiB chunk, must reach the
/// official client complete, intact and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_queued_frames_reach_one_socket_complete_and_in_order() {
    let gw = embedded_gateway(&[]).await;
    let node = node().await;
    connect(
        &node,
        "solo",
        &gw,
        ConnectOptions::new()
            .websocket_only()
            .token(token_role("solo-user", "solo")),
    )
    .await;
    let size_of = |seq: usize| match seq {
        s if s % 250 == 0 => 70_000,
        s if s % 7 == 0 => 200,
        s if s % 11 == 0 => 126 - 30,
        _ => 10,
    };
    let messages: Vec<_> = (0..1000)
        .map(|seq| {
            json!({"event": "burst", "roles": ["solo"], "args": [seq, "y".repeat(size_of(seq))]})
        })
        .collect();
    let (status, resp) = common::api_post(
        gw.url(),
        "/api/v1/emit/batch",
        json!({ "messages": messages }),
    )
    .await;
    assert_eq!(status, 200, "{resp}");

    for seq in 0..1000 {
        let args = node
            .expect_event("solo", "burst", Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("missed message {seq}: {e:#}\n{}", gw.logs()));
        assert_eq!(args[0], json!(seq), "messages out of order");
        assert_eq!(
            args[1].as_str().map(str::len),
            Some(size_of(seq)),
            "message {seq} arrived cut or padded"
        );
    }
}
