//! The limits that are on by default (issue #15), against the real binary
//! with its default configuration: a flood of polling handshakes from one
//! address is refused past `limits.max_connections_per_ip` (refusals
//! counted, memory bounded), and a session that never sends an
//! authenticated CONNECT is closed after `socketio.connect_timeout_ms`.
//! And the smaller items: reserved event names on the publish API, failed
//! API-key attempts limited per address, a refused CONNECT retried on one
//! session, and the start-up checks on `auth.secret` and `auth.leeway_s`.

mod common;
mod hardening_support;

use std::time::Duration;

use common::*;
use hardening_support::{RawWs, http, polling_open, polling_url, rss_kib};
use serde_json::{Value, json};
use switchboard_testkit::{GatewayProcess, jwt::Claims};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_handshake_flood_from_one_address_is_limited_by_default() {
    let gw = embedded_gateway(&[]).await;
    let port = gw.port();
    let pid = gw.pid().expect("gateway pid");
    let before = rss_kib(pid).expect("rss");
    // 1,000 handshakes from 127.0.0.1, eight at a time.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut limited) = (0u32, 0u32);
            for _ in 0..125 {
                let r = http("GET", &polling_url(port, None), &[], None)
                    .await
                    .expect("handshake answered");
                match r.status {
                    200 => ok += 1,
                    429 => {
                        assert!(
                            r.text().contains("Too many connections from this address"),
                            "{}",
                            r.text()
                        );
                        limited += 1;
                    }
                    other => panic!("unexpected {other}: {}", r.text()),
                }
            }
            (ok, limited)
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (o, l) = t.await.unwrap();
        ok += o;
        limited += l;
    }
    assert_eq!(ok, 100, "sessions admitted from one address (default 100)");
    assert_eq!(limited, 900);
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_engine_errors_total{error=\"too_many_connections_ip\"}"
        ),
        Some(900.0),
        "{text}"
    );
    let after = rss_kib(pid).expect("rss");
    assert!(
        after.saturating_sub(before) < 20 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // Refusals are logged, but not once per request.
    let lines = gw
        .logs()
        .lines()
        .filter(|l| l.contains("engine.io request refused"))
        .count();
    assert!((1..=5).contains(&lines), "{lines} refusal log lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_session_is_closed_after_the_default_connect_timeout() {
    let gw = embedded_gateway(&[]).await;
    let port = gw.port();
    let sid = polling_open(port).await.expect("handshake");
    // Never CONNECT: the default socketio.connect_timeout_ms (10 s) closes it.
    wait_metric(
        &gw,
        "switchboard_connect_refused_total{reason=\"connect_timeout\"}",
        Duration::from_secs(25),
        |v| v >= 1.0,
    )
    .await;
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = http("GET", &polling_url(port, Some(&sid)), &[], None)
            .await
            .unwrap();
        // The pending close packet first, then the session is gone.
        if r.status == 400 {
            assert!(r.text().contains("Session ID unknown"), "{}", r.text());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "session still open: {} {}",
            r.status,
            r.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_api_refuses_reserved_event_names() {
    let gw = embedded_gateway(&[]).await;
    for event in switchboard_wire::RESERVED_EVENTS {
        let (status, body) =
            api_emit(&gw, json!({"event": event, "data": 1, "broadcast": true})).await;
        assert_eq!(status, 400, "{event}: {body}");
        assert_eq!(body["error"], json!("reserved_event"), "{body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains("reserved"),
            "{body}"
        );
    }
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_bus_publish_errors_total{origin=\"api_reserved_event\"}"
        ),
        Some(6.0),
        "{text}"
    );
    // An ordinary name still goes through.
    api_emit_ok(
        &gw,
        json!({"event": "connected", "data": 1, "broadcast": true}),
    )
    .await;
}

/// `POST /api/v1/emit` with `key`: status, `Retry-After`, JSON body.
async fn emit_with_key(gw: &GatewayProcess, key: &str) -> (u16, Option<String>, Value) {
    let url = format!("{}/api/v1/emit", gw.url());
    let r = http(
        "POST",
        &url,
        &[
            ("Authorization", format!("Bearer {key}").as_str()),
            ("Content-Type", "application/json"),
        ],
        Some(br#"{"event":"e","data":1,"broadcast":true}"#),
    )
    .await
    .unwrap();
    let retry = r.header("retry-after").map(str::to_string);
    (
        r.status,
        retry,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_api_key_attempts_are_limited_per_address() {
    let gw = embedded_gateway(&[]).await;
    for i in 0..10 {
        let (status, _, body) = emit_with_key(&gw, &format!("guess-{i}-0123456789abcdef")).await;
        assert_eq!(status, 401, "attempt {i}: {body}");
        assert_eq!(body["error"], json!("bad_api_key"));
    }
    // The 11th, even with the right key, is refused until the window ends.
    let (status, retry, body) = emit_with_key(&gw, API_KEY).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], json!("too_many_failed_keys"));
    let secs: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_bus_publish_errors_total{origin=\"api_too_many_failed_keys\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let lines = gw
        .logs()
        .lines()
        .filter(|l| l.contains("publish API request refused"))
        .count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} log lines for 11 refusals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connect_retried_on_one_session_closes_it_after_three() {
    let gw = embedded_gateway(&[]).await;
    let mut ws = RawWs::connect(gw.port(), "").await.unwrap();
    let expired = Claims::new().sub("old").expired(3600).sign_hs256(SECRET);
    let first = ws
        .sio_handshake(Some(json!({ "token": expired })))
        .await
        .unwrap();
    assert!(first.contains("\"reason\":\"expired\""), "{first}");
    ws.send_text(&format!("40{}", json!({ "token": expired })))
        .await
        .unwrap();
    let second = ws.next_reply(T).await.unwrap();
    assert!(second.contains("\"reason\":\"expired\""), "{second}");
    ws.send_text("40{\"token\":\"junk\"}").await.unwrap();
    let third = ws.next_reply(T).await.unwrap();
    assert!(third.starts_with("44"), "{third}");
    assert!(
        third.contains("\"reason\":\"too_many_refused_connects\""),
        "{third}"
    );
    // Then the session ends: the socket closes (a close packet or frame).
    let end = ws.next_reply(T).await;
    assert!(
        end.as_ref().map_or(true, |t| t == "1"),
        "session still open: {end:?}"
    );
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_connect_refused_total{reason=\"too_many_refused_connects\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_secrets_and_large_leeway_stop_the_start() {
    for (env, key) in [
        (
            ("SWITCHBOARD_JWT_SECRET", "only-sixteen-byt"),
            "auth.secret",
        ),
        (("SWITCHBOARD_AUTH__LEEWAY_S", "3600"), "auth.leeway_s"),
    ] {
        let opts = base_opts().env(env.0, env.1);
        let mut gw = GatewayProcess::spawn(&opts).expect("spawn");
        let status = gw.wait_exit(T).expect("exits");
        assert!(!status.success());
        let logs = gw.logs();
        assert!(logs.contains(key), "{key}: {logs}");
    }
}
