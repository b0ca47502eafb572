//! The metrics the Grafana dashboard draws beyond counters move with real
//! traffic: publish API requests by route and status, the delivery latency
//! histogram (event received -> websocket / polling write) and the heartbeat
//! round-trip histogram, driven by the official socket.io-client.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard_testkit::{net::http_request, node::ConnectOptions};

/// `POST path` with `key` as the bearer token; the HTTP status.
async fn post(gw: &switchboard_testkit::GatewayProcess, path: &str, key: &str) -> u16 {
    let url = format!("{}{path}", gw.url());
    let auth = format!("Bearer {key}");
    tokio::task::spawn_blocking(move || {
        http_request(
            "POST",
            &url,
            &[("Authorization", auth.as_str())],
            Some(br#"{"event":"x","rooms":["nobody"]}"#),
            Duration::from_secs(5),
        )
        .expect("POST")
        .status
    })
    .await
    .expect("post task")
}

/// Connects `ws` (websocket only, user `u1`) and `poll` (polling only,
/// user `poll_user`).
async fn connect_ws_and_polling(
    node: &switchboard_testkit::node::NodeDriver,
    gw: &switchboard_testkit::GatewayProcess,
    poll_user: &str,
) {
    let ws = ConnectOptions::new().websocket_only().token(token("u1"));
    connect(node, "ws", gw, ws).await;
    let poll = ConnectOptions::new().polling_only().token(token(poll_user));
    connect(node, "poll", gw, poll).await;
}

#[tokio::test]
async fn api_requests_are_counted_by_route_and_status() {
    let gw = embedded_gateway(&[]).await;
    let before = metrics(&gw).await;
    assert_eq!(
        metric(
            &before,
            r#"switchboard_api_requests_total{route="emit",status="200"}"#
        ),
        Some(0.0),
        "the series is exported at start:\n{before}"
    );
    assert_eq!(
        post(&gw, "/api/v1/emit", "not-the-key-0123456789").await,
        401
    );
    assert_eq!(post(&gw, "/api/v1/emit", API_KEY).await, 200);
    assert_eq!(post(&gw, "/api/v1/emit", API_KEY).await, 200);
    assert_eq!(post(&gw, "/api/v9/nothing", API_KEY).await, 404);
    let text = metrics(&gw).await;
    for (series, want) in [
        (
            r#"switchboard_api_requests_total{route="emit",status="401"}"#,
            1.0,
        ),
        (
            r#"switchboard_api_requests_total{route="emit",status="200"}"#,
            2.0,
        ),
        (
            r#"switchboard_api_requests_total{route="other",status="404"}"#,
            1.0,
        ),
        (
            r#"switchboard_api_requests_total{route="emit_batch",status="200"}"#,
            0.0,
        ),
    ] {
        assert_eq!(metric(&text, series), Some(want), "{series}:\n{text}");
    }
}

#[tokio::test]
async fn delivered_events_land_in_the_latency_histogram_for_both_transports() {
    let gw = embedded_gateway(&[]).await;
    let node = node().await;
    connect_ws_and_polling(&node, &gw, "u1").await;
    let text = metrics(&gw).await;
    assert_eq!(
        metric(&text, "switchboard_delivery_latency_seconds_count"),
        Some(0.0),
        "no event delivered yet, but the histogram is exported:\n{text}"
    );
    api_emit_ok(&gw, json!({"event": "hello", "users": ["u1"], "data": 1})).await;
    expect_once(&node, "ws", "hello").await;
    expect_once(&node, "poll", "hello").await;
    // One observation per connection write: the websocket's and the
    // polling response's.
    wait_metric(&gw, "switchboard_delivery_latency_seconds_count", T, |v| {
        v >= 2.0
    })
    .await;
    let text = metrics(&gw).await;
    let sum = metric(&text, "switchboard_delivery_latency_seconds_sum").unwrap_or(-1.0);
    assert!(
        (0.0..10.0).contains(&sum),
        "latency sum is a duration: {sum}"
    );
    assert_eq!(
        metric(
            &text,
            r#"switchboard_delivery_latency_seconds_bucket{le="+Inf"}"#
        ),
        metric(&text, "switchboard_delivery_latency_seconds_count"),
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn heartbeats_land_in_the_round_trip_histogram() {
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_ENGINE__PING_INTERVAL_MS", "200"),
        ("SWITCHBOARD_ENGINE__PING_TIMEOUT_MS", "2000"),
    ])
    .await;
    let text = metrics(&gw).await;
    assert_eq!(
        metric(&text, "switchboard_heartbeat_rtt_seconds_count"),
        Some(0.0),
        "{text}"
    );
    let node = node().await;
    connect_ws_and_polling(&node, &gw, "u2").await;
    // Each client answers its pings; a few round trips each.
    wait_metric(&gw, "switchboard_heartbeat_rtt_seconds_count", T, |v| {
        v >= 4.0
    })
    .await;
    let text = metrics(&gw).await;
    let sum = metric(&text, "switchboard_heartbeat_rtt_seconds_sum").unwrap_or(-1.0);
    assert!((0.0..10.0).contains(&sum), "RTT sum is a duration: {sum}");
    node.shutdown().await.unwrap();
}
