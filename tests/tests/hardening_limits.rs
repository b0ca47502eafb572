//! Every limit that keeps one client from hurting the others, each with a
//! small configured value, asserting what the client sees and what is
//! counted: per-IP sessions (429), per-user sockets (CONNECT_ERROR
//! `too_many_connections`), gateway-wide admission rate (429), client event
//! rate (ack error + metric), connect timeout, `engine.max_payload` on both
//! transports, the origin allowlist on both transports (403 / CORS with
//! credentials / preflight), and token expiry (CONNECT_ERROR "token
//! expired" from the sweeper).

mod common;
mod hardening_support;

use std::time::{Duration, Instant};

use common::*;
use hardening_support::*;
use serde_json::{Value, json};
use switchboard_testkit::{
    jwt::{Claims, now_secs},
    node::{ConnectOptions, Note},
};

fn engine_error(r: &switchboard_testkit::net::HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_session_limit_is_429_with_a_visible_body() {
    let gw = embedded_gateway(&[("SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP", "2")]).await;
    let port = gw.port();
    let first = polling_open(port).await.expect("1st session");
    let _ws = RawWs::connected(port, &token("ip2"))
        .await
        .expect("2nd session");

    let r = http("GET", &polling_url(port, None), &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 429, "3rd polling handshake: {}", r.text());
    assert_eq!(
        engine_error(&r),
        json!({"code": 3, "message": "Too many connections from this address"})
    );
    assert_eq!(
        RawWs::connect_with(port, &[])
            .await
            .err()
            .map(|(status, _)| status),
        Some(429),
        "3rd websocket handshake"
    );
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_engine_errors_total{error=\"too_many_connections_ip\"}"
        ),
        Some(2.0),
        "{text}"
    );

    // Closing a session gives its place back.
    let r = polling_post(port, &first, b"1").await.unwrap();
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + T;
    loop {
        match polling_open(port).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "place not given back: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_socket_limit_refuses_with_too_many_connections() {
    let gw = embedded_gateway(&[("SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_USER", "2")]).await;
    let port = gw.port();
    let a = RawWs::connected(port, &token("alice"))
        .await
        .unwrap()
        .into_live();
    let _b = RawWs::connected(port, &token("alice"))
        .await
        .unwrap()
        .into_live();

    let mut ws = RawWs::connect(port, "").await.unwrap();
    let reply = ws
        .sio_handshake(Some(json!({"token": token("alice")})))
        .await
        .unwrap();
    let body: Value = serde_json::from_str(reply.strip_prefix("44").expect("CONNECT_ERROR"))
        .unwrap_or_else(|_| panic!("{reply}"));
    assert_eq!(
        body,
        json!({"message": "too many connections for this user", "data": {"reason": "too_many_connections"}})
    );
    // Another user is not affected.
    RawWs::connected(port, &token("bob"))
        .await
        .expect("bob admitted");
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_connect_refused_total{reason=\"too_many_connections\"}"
        ),
        Some(1.0),
        "{text}"
    );

    // Closing one of alice's sockets gives the place back.
    drop(a);
    let deadline = Instant::now() + T;
    loop {
        let mut ws = RawWs::connect(port, "").await.unwrap();
        let reply = ws
            .sio_handshake(Some(json!({"token": token("alice")})))
            .await
            .unwrap();
        if reply.starts_with("40") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's place not given back: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_rate_is_429_then_recovers() {
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_LIMITS__CONNECTS_PER_SEC", "2"),
        ("SWITCHBOARD_LIMITS__CONNECTS_BURST", "2"),
    ])
    .await;
    let port = gw.port();
    // Let the bucket fill (the gateway may have taken a token meanwhile).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut statuses = Vec::new();
    let mut refused_body = Value::Null;
    for _ in 0..4 {
        let r = http("GET", &polling_url(port, None), &[], None)
            .await
            .unwrap();
        if r.status == 429 {
            refused_body = engine_error(&r);
        }
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    assert_eq!(
        refused_body,
        json!({"code": 3, "message": "Too many connection attempts; retry later"})
    );
    assert!(
        metric_or_zero(
            &metrics(&gw).await,
            "switchboard_engine_errors_total{error=\"admission_rate_limited\"}"
        ) >= 1.0
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    polling_open(port)
        .await
        .expect("admitted again after a second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_event_rate_limit_acks_an_error_and_counts() {
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_LIMITS__CLIENT_EVENTS_PER_SEC", "5"),
        ("SWITCHBOARD_LIMITS__CLIENT_EVENTS_BURST", "5"),
    ])
    .await;
    let c = RawWs::connected(gw.port(), &token("chatty"))
        .await
        .unwrap()
        .into_live();
    const SENT: usize = 20;
    for id in 0..SENT {
        c.send(format!("42{id}[\"chat\",{id}]"));
    }
    let acked = c
        .wait(T, |s| {
            s.other.iter().filter(|t| t.starts_with("43")).count() >= SENT
        })
        .await;
    assert!(acked, "every event acked: {}", c.summary());
    let acks: Vec<String> = c.seen.lock().unwrap().other.clone();
    let refused = acks
        .iter()
        .filter(|t| t.contains(r#"{"ok":false,"error":"rate limited: too many events"}"#))
        .count();
    let accepted = acks.iter().filter(|t| t.contains(r#""ok":true"#)).count();
    assert_eq!(refused + accepted, SENT, "{acks:?}");
    assert!(
        (5..=7).contains(&accepted),
        "about the burst accepted: {acks:?}"
    );
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_client_events_refused_total{reason=\"rate_limited\"}"
        ),
        Some(refused as f64),
        "{text}"
    );
    // Being rate limited does not disconnect.
    assert!(c.end().is_none(), "{}", c.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_closes_sessions_that_never_connect() {
    let gw = embedded_gateway(&[("SWITCHBOARD_SOCKETIO__CONNECT_TIMEOUT_MS", "500")]).await;
    let port = gw.port();
    let good = RawWs::connected(port, &token("good"))
        .await
        .unwrap()
        .into_live();
    let mut silent = RawWs::connect(port, "").await.unwrap();
    let opened = Instant::now();
    silent.next_reply(STEP).await.unwrap(); // the open packet
    let silent = silent.into_live();
    let sid = polling_open(port).await.unwrap();

    let end = silent.wait_end(Duration::from_secs(5)).await;
    let took = opened.elapsed();
    assert!(end.is_some(), "silent websocket still open after {took:?}");
    assert!(took < Duration::from_millis(2500), "closed after {took:?}");
    assert!(
        polling_closed(port, &sid, Duration::from_secs(5)).await,
        "silent polling session closed"
    );
    assert!(
        good.end().is_none(),
        "connected client unaffected: {}",
        good.summary()
    );
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_connect_refused_total{reason=\"connect_timeout\"}"
        ),
        Some(2.0),
        "{text}"
    );
}

/// A polling session the server closes while its client is not polling
/// (here: no CONNECT within `socketio.connect_timeout_ms`, and the client
/// never comes back) stops counting at once: the connections gauge,
/// `/readyz` and its place under `limits.max_connections_per_ip` are given
/// back when it closes, not a ping timeout later when the wait for its last
/// poll ends. The close packet still waits for the client meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_polling_session_stops_counting_at_once() {
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_SOCKETIO__CONNECT_TIMEOUT_MS", "300"),
        ("SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP", "1"),
        // The bound of the wait for the last poll: far beyond the asserts.
        ("SWITCHBOARD_ENGINE__PING_TIMEOUT_MS", "20000"),
    ])
    .await;
    let port = gw.port();
    let polling = "switchboard_connections{transport=\"polling\"}";
    let sid = polling_open(port).await.expect("polling handshake");
    assert_eq!(metric(&metrics(&gw).await, polling), Some(1.0));

    // Closed by the server after 300 ms; the client does not poll.
    wait_metric(
        &gw,
        "switchboard_connect_refused_total{reason=\"connect_timeout\"}",
        Duration::from_secs(5),
        |v| v == 1.0,
    )
    .await;
    let closed = Instant::now();
    wait_metric(&gw, polling, Duration::from_secs(2), |v| v == 0.0).await;
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_engine_sessions_closed_total{reason=\"server_closed\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let (_, ready) = get_json(format!("{}/readyz", gw.url())).await.unwrap();
    assert_eq!(ready["connections"], json!(0), "{ready}");
    // The address's only place is free again.
    let second = polling_open(port)
        .await
        .expect("a new session from the same address");
    assert!(closed.elapsed() < Duration::from_secs(5));

    // The closed session's client still collects its close packet.
    assert_eq!(polling_get(port, &sid).await.unwrap(), (200, "1".into()));
    let (status, _) = polling_get(port, &sid).await.unwrap();
    assert_eq!(status, 400, "gone once its close packet was collected");
    assert_eq!(metric(&metrics(&gw).await, polling), Some(1.0));
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_payload_closes_the_offender_on_both_transports() {
    let gw = embedded_gateway(&[("SWITCHBOARD_ENGINE__MAX_PAYLOAD", "2000")]).await;
    let port = gw.port();
    let bystander = RawWs::connected(port, &token("bystander"))
        .await
        .unwrap()
        .into_live();

    // Polling: a POST body over the limit is 413 and ends the session.
    let sid = polling_connected(port, &token("poller")).await.unwrap();
    let body = format!("42[\"big\",\"{}\"]", "p".repeat(4000));
    let r = polling_post(port, &sid, body.as_bytes()).await.unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(
        engine_error(&r),
        json!({"code": 3, "message": "Payload too large"})
    );
    assert!(
        polling_closed(port, &sid, Duration::from_secs(5)).await,
        "oversize poster closed"
    );

    // Websocket: a message under the limit is fine, one over it closes.
    let ws = RawWs::connected(port, &token("wsbig"))
        .await
        .unwrap()
        .into_live();
    ws.send(format!("421[\"ok\",\"{}\"]", "s".repeat(1800)));
    assert!(
        ws.wait(T, |s| s.other.iter().any(|t| t.starts_with("431")))
            .await,
        "message under the limit acked: {}",
        ws.summary()
    );
    ws.send(format!("42[\"big\",\"{}\"]", "w".repeat(4000)));
    let end = ws.wait_end(Duration::from_secs(5)).await;
    assert!(
        end.is_some(),
        "oversize websocket message closes: {}",
        ws.summary()
    );

    assert!(
        bystander.end().is_none(),
        "bystander unaffected: {}",
        bystander.summary()
    );
    api_emit_ok(
        &gw,
        json!({"event": "still", "data": 1, "users": ["bystander"]}),
    )
    .await;
    assert!(
        bystander.wait_event("still", &json!(1), T).await,
        "{}",
        bystander.summary()
    );
    let text = metrics(&gw).await;
    assert!(
        metric_or_zero(
            &text,
            "switchboard_engine_errors_total{error=\"payload_too_large\"}"
        ) >= 1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_allowlist_on_polling_and_websocket() {
    const GOOD: &str = "https://app.example.com";
    const EVIL: &str = "https://evil.example.net";
    let gw = embedded_gateway(&[(
        "SWITCHBOARD_ALLOWED_ORIGINS",
        &format!("{GOOD},https://admin.example.com"),
    )])
    .await;
    let port = gw.port();
    let origin = |o: &'static str| vec![("Origin", o)];

    // Polling handshake from a foreign origin: 403, no CORS headers.
    let r = http("GET", &polling_url(port, None), &origin(EVIL), None)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        engine_error(&r),
        json!({"code": 4, "message": "Forbidden: origin not allowed"})
    );
    assert_eq!(r.header("access-control-allow-origin"), None);

    // From a listed origin: 200 with CORS for that origin, with credentials.
    let r = http("GET", &polling_url(port, None), &origin(GOOD), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(GOOD));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let sid = serde_json::from_str::<Value>(r.text().strip_prefix('0').unwrap()).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_string();

    // A foreign origin cannot use an existing session either.
    let r = http(
        "POST",
        &polling_url(port, Some(&sid)),
        &origin(EVIL),
        Some(b"40"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403, "POST from a foreign origin: {}", r.text());

    // Preflight: 204 for a listed origin, 403 for a foreign one.
    let mut pre = origin(GOOD);
    pre.push(("Access-Control-Request-Method", "POST"));
    let r = http("OPTIONS", &polling_url(port, Some(&sid)), &pre, None)
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(GOOD));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let r = http("OPTIONS", &polling_url(port, None), &origin(EVIL), None)
        .await
        .unwrap();
    assert_eq!(r.status, 403);

    // No Origin (not a browser): allowed.
    polling_open(port)
        .await
        .expect("no Origin header is allowed");

    // Websocket: refused from a foreign origin, admitted from a listed one.
    assert_eq!(
        RawWs::connect_with(port, &[("Origin", EVIL)])
            .await
            .err()
            .map(|(status, _)| status),
        Some(403)
    );
    let mut ws = RawWs::connect_with(port, &[("Origin", GOOD)])
        .await
        .expect("listed origin");
    let reply = ws
        .sio_handshake(Some(json!({"token": token("browser")})))
        .await
        .unwrap();
    assert!(reply.starts_with("40"), "{reply}");
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_engine_errors_total{error=\"origin_not_allowed\"}"
        ),
        Some(4.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_gets_connect_error_from_the_sweeper() {
    let gw = embedded_gateway(&[]).await;
    let node = node().await;
    let issued = Instant::now();
    let short = Claims::new()
        .sub("short")
        .exp(now_secs() + 2)
        .sign_hs256(SECRET);
    connect(
        &node,
        "short",
        &gw,
        ConnectOptions::new().websocket_only().token(short),
    )
    .await;
    connect(
        &node,
        "long",
        &gw,
        ConnectOptions::new().websocket_only().token(token("long")),
    )
    .await;

    let note = node
        .take_note("short", Duration::from_secs(6), |n| {
            matches!(n, Note::ConnectError { .. })
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.logs()));
    let took = issued.elapsed();
    let Note::ConnectError { message, data } = note else {
        unreachable!()
    };
    assert_eq!(message, "authentication failed: token expired");
    assert_eq!(data, json!({"reason": "token_expired"}));
    println!("TOKEN EXPIRY: token with exp = now + 2 s refused {took:?} after it was issued");
    // exp is whole seconds, the sweeper runs once a second, and a token is
    // valid up to and including its `exp` second: at most exp + 2 s.
    assert!(
        took < Duration::from_millis(4500),
        "expiry noticed after {took:?}"
    );
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_server_disconnects_total{reason=\"token_expired\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let state = node.client_state("long").await.unwrap();
    assert_eq!(
        state["connected"],
        json!(true),
        "the long-lived token stays: {state}"
    );
}
