//! Operator surface: `/healthz`, `/readyz` (embedded and Redis, through a
//! Redis outage), `/metrics` series, and graceful shutdown on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use switchboard_testkit::node::{ConnectOptions, EmitterPublish};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_embedded() {
    let gw = embedded_gateway(&[]).await;
    let (status, body) = get_json(format!("{}/healthz", gw.url())).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_json(format!("{}/readyz", gw.url())).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], json!(true), "{body}");
    assert_eq!(body["bus"]["mode"], json!("embedded"), "{body}");
    assert_eq!(body["bus"]["subscribed"], json!(true), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_redis_outage() {
    let mut redis = redis();
    let gw = redis_gateway(&redis, &[]).await;
    let body = wait_ready(&gw, T).await;
    assert_eq!(body["bus"]["mode"], json!("redis"), "{body}");
    assert_eq!(body["bus"]["subscribed"], json!(true), "{body}");
    let node = node().await;
    connect(
        &node,
        "c",
        &gw,
        ConnectOptions::new().websocket_only().token(token("u1")),
    )
    .await;

    redis.kill();
    let url = format!("{}/readyz", gw.url());
    let deadline = Instant::now() + T;
    let down = loop {
        let (status, body) = get_json(url.clone()).await.unwrap();
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} {body} after Redis was killed\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(down["ready"], json!(false), "{down}");
    assert_eq!(down["bus"]["subscribed"], json!(false), "{down}");
    assert_eq!(down["bus"]["mode"], json!("redis"), "{down}");
    // Liveness is not readiness: /healthz stays 200.
    let (status, _) = get(format!("{}/healthz", gw.url())).await.unwrap();
    assert_eq!(status, 200);
    let text = metrics(&gw).await;
    assert_eq!(metric(&text, "switchboard_bus_up"), Some(0.0), "{text}");
    // A client event cannot be published now: its ack says so, in time.
    let started = Instant::now();
    let ack = node
        .emit_with_ack("c", "while-down", vec![json!(1)], T)
        .await
        .expect("an ack even while Redis is down");
    assert_eq!(ack[0]["ok"], json!(false), "{ack}");
    assert!(ack[0]["error"].is_string(), "{ack}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failure ack took {:?} (publish_timeout_ms is 2000)",
        started.elapsed()
    );
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_bus_publish_errors_total{origin=\"client_event\"}"
        ),
        Some(1.0),
        "{text}"
    );

    tokio::task::block_in_place(|| redis.restart()).unwrap();
    let body = wait_ready(&gw, Duration::from_secs(15)).await;
    assert_eq!(body["bus"]["subscribed"], json!(true), "{body}");
    let text = metrics(&gw).await;
    assert_eq!(metric(&text, "switchboard_bus_up"), Some(1.0), "{text}");

    // Delivery works again after the resubscribe (the emitter's own
    // connection may need a moment to reconnect too).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let _ = node
            .emitter_publish(EmitterPublish::new(redis.url(), "back", vec![]).to("user:u1"))
            .await;
        if node
            .expect_event("c", "back", Duration::from_millis(500))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery after Redis came back\n{}",
            gw.logs()
        );
    }
    // The client connection survived the outage.
    let state = node.client_state("c").await.unwrap();
    assert_eq!(state["connected"], json!(true), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_messages_and_decode_errors() {
    let redis = redis();
    let gw = redis_gateway(&redis, &[]).await;
    let node = node().await;
    connect(
        &node,
        "ws",
        &gw,
        ConnectOptions::new().websocket_only().token(token("u1")),
    )
    .await;
    connect(
        &node,
        "poll",
        &gw,
        ConnectOptions::new().polling_only().token(token("u2")),
    )
    .await;

    let text = metrics(&gw).await;
    assert_eq!(
        metric(&text, "switchboard_connections{transport=\"websocket\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "switchboard_connections{transport=\"polling\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "switchboard_connects_total{namespace=\"/\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(metric_or_zero(&text, "switchboard_messages_out_total"), 0.0);
    assert_eq!(metric_or_zero(&text, "switchboard_bytes_out_total"), 0.0);

    node.emitter_publish(EmitterPublish::new(
        redis.url(),
        "hello",
        vec![json!({"text": "0123456789"})],
    ))
    .await
    .unwrap();
    expect_once(&node, "ws", "hello").await;
    expect_once(&node, "poll", "hello").await;
    let text = metrics(&gw).await;
    assert_eq!(
        metric(&text, "switchboard_bus_messages_total{kind=\"broadcast\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "switchboard_messages_out_total"),
        Some(2.0),
        "{text}"
    );
    let bytes = metric_or_zero(&text, "switchboard_bytes_out_total");
    // Two copies of at least `42["hello",{"text":"0123456789"}]` (33 bytes).
    assert!(bytes >= 2.0 * 33.0, "bytes_out {bytes}:\n{text}");

    // Garbage on the broadcast channel is counted, not delivered.
    let decode = "switchboard_bus_decode_errors_total{kind=\"broadcast\"}";
    assert_eq!(metric_or_zero(&text, decode), 0.0);
    let n = redis
        .command_bytes(&[b"PUBLISH", b"socket.io#/#", b"\xc1\xff not msgpack"])
        .unwrap();
    assert_eq!(
        n.as_int(),
        Some(1),
        "gateway subscribed to the broadcast pattern"
    );
    wait_metric(&gw, decode, T, |v| v == 1.0).await;
    redis
        .command(&["PUBLISH", "socket.io#/#", "also garbage"])
        .unwrap();
    wait_metric(&gw, decode, T, |v| v == 2.0).await;
    // Garbage on the request channel has its own label.
    redis
        .command_bytes(&[b"PUBLISH", b"socket.io-request#/#", b"\xc1"])
        .unwrap();
    wait_metric(
        &gw,
        "switchboard_bus_decode_errors_total{kind=\"request\"}",
        T,
        |v| v == 1.0,
    )
    .await;
    expect_none(&node, "ws", "hello").await;
    // The gateway still delivers.
    node.emitter_publish(EmitterPublish::new(redis.url(), "after", vec![]))
        .await
        .unwrap();
    expect_once(&node, "ws", "after").await;
    // Every core series is exported (labelled counters appear once they
    // have a value, as the prometheus crate renders them).
    let text = metrics(&gw).await;
    for name in [
        "switchboard_connections",
        "switchboard_connects_total",
        "switchboard_bus_messages_total",
        "switchboard_messages_out_total",
        "switchboard_bytes_out_total",
        "switchboard_bus_decode_errors_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "/metrics lacks {name}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_transports_and_exits_zero() {
    const DEADLINE_MS: u64 = 3000;
    let redis = redis();
    let mut gw = redis_gateway(
        &redis,
        &[(
            "SWITCHBOARD_SERVER__SHUTDOWN_DEADLINE_MS",
            &DEADLINE_MS.to_string(),
        )],
    )
    .await;
    let node = node().await;
    let clients = ["ws", "poll", "upgraded"];
    for (name, opts) in [
        ("ws", ConnectOptions::new().websocket_only()),
        ("poll", ConnectOptions::new().polling_only()),
        ("upgraded", ConnectOptions::new()),
    ] {
        connect(&node, name, &gw, opts.token(token(name))).await;
    }
    node.expect_upgrade("upgraded", T).await.unwrap();

    let started = Instant::now();
    let term = tokio::task::spawn_blocking(move || {
        let status = gw.terminate_timeout(Duration::from_secs(20));
        (status, gw)
    });
    let mut reasons = Vec::new();
    for c in clients {
        reasons.push((c, node.expect_disconnect(c, T).await));
    }
    let (status, gw) = term.await.unwrap();
    let elapsed = started.elapsed();
    let status = status.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        status.success(),
        "gateway exit status {status}; logs:\n{}",
        gw.logs()
    );
    assert!(
        elapsed < Duration::from_millis(DEADLINE_MS + 2000),
        "gateway took {elapsed:?} to exit (deadline {DEADLINE_MS} ms)"
    );
    for (c, reason) in reasons {
        let reason = reason.unwrap_or_else(|e| panic!("{c}: {e:#}\n{}", gw.logs()));
        assert_eq!(
            reason, "transport close",
            "{c} must see a reconnectable transport close"
        );
    }
}
