//! A gateway that stalls must not close the clients that answer its pings
//! (issue #17: at a million connections a broadcast to everyone kept the
//! gateways' core busy for longer than `ping_timeout`, and 11.7% of the
//! sessions were closed for ping timeout while every client was healthy).
//!
//! The stall is made deterministic with SIGSTOP/SIGCONT of the gateway for
//! longer than `ping_timeout`, several times, with a broadcast to everyone
//! published into Redis while the gateway is stopped (it fans out on
//! resume). The clients are real websocket clients that answer every ping
//! at once; one more client never answers. The answering clients must all
//! stay connected and get every broadcast exactly once; the silent one
//! must still be closed for ping timeout, and a silent client connected
//! once the gateway runs normally again must be closed within
//! `ping_interval + ping_timeout` (plus the late-check grace bound,
//! `ping_timeout`, and scheduling slack).

mod common;
mod hardening_support;

use std::time::{Duration, Instant};

use common::*;
use hardening_support::*;
use switchboard_testkit::ws::Live;

const INTERVAL_MS: u64 = 1_000;
const TIMEOUT_MS: u64 = 500;
/// Answering clients, connected over one ping interval so that their pings
/// fall due all through each stop.
const CLIENTS: usize = 80;
/// Each stop is longer than `ping_timeout` (and than interval + timeout
/// minus a little, so every session has a ping due in it).
const STOP: Duration = Duration::from_millis(1_400);
const STOPS: usize = 4;
/// Running time between two stops.
const RUN: Duration = Duration::from_millis(1_100);

const CLOSED: &str = "switchboard_engine_sessions_closed_total{reason=\"ping_timeout\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_gateway_keeps_answering_clients_and_closes_a_silent_one() {
    let redis = redis();
    let gw = redis_gateway(
        &redis,
        &[
            (
                "SWITCHBOARD_ENGINE__PING_INTERVAL_MS",
                &INTERVAL_MS.to_string(),
            ),
            (
                "SWITCHBOARD_ENGINE__PING_TIMEOUT_MS",
                &TIMEOUT_MS.to_string(),
            ),
            ("SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP", "0"),
        ],
    )
    .await;
    let port = gw.port();

    let spacing = Duration::from_millis(INTERVAL_MS) / CLIENTS as u32;
    let mut clients: Vec<Live> = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let ws = RawWs::connected(port, &token_role(&format!("hb{i}"), "all"))
            .await
            .expect("client connects");
        clients.push(ws.into_live());
        tokio::time::sleep(spacing).await;
    }
    // Connected, then never read again: its pings stay unanswered.
    let mut silent = RawWs::connected(port, &token_role("silent", "all"))
        .await
        .expect("silent client connects");

    // One normal cycle first: the answering clients are healthy.
    tokio::time::sleep(Duration::from_millis(INTERVAL_MS + TIMEOUT_MS)).await;
    assert!(
        clients.iter().all(|c| c.end().is_none()),
        "a client was closed before any stall"
    );

    for stop in 0..STOPS {
        gw.signal(libc::SIGSTOP).expect("SIGSTOP the gateway");
        // Published while the gateway is stopped: Redis holds it in the
        // gateway's subscriber socket, and the gateway fans it out to
        // every client as it resumes, with its timers all overdue.
        let (channel, payload) =
            emitter_message("role:all", "stall", vec![rmpv::Value::from(stop as u64)]);
        let receivers = redis_publish(redis.port(), &channel, &payload);
        tokio::time::sleep(STOP).await;
        gw.signal(libc::SIGCONT).expect("SIGCONT the gateway");
        assert_eq!(receivers.expect("PUBLISH"), 1, "the gateway is subscribed");
        tokio::time::sleep(RUN).await;
    }

    let closed: Vec<usize> = (0..CLIENTS)
        .filter(|&i| clients[i].end().is_some())
        .collect();
    assert!(
        closed.is_empty(),
        "{} of {CLIENTS} answering clients were closed by a gateway that was only late \
         (clients {closed:?}, first end {:?}); gateway logs:\n{}",
        closed.len(),
        closed.first().map(|&i| clients[i].end()),
        gw.logs()
    );
    // Every broadcast published during a stop reached every client once.
    let want: Vec<i64> = (0..STOPS as i64).collect();
    for (i, c) in clients.iter().enumerate() {
        let ok = c
            .wait(T, |s| {
                s.events.iter().filter(|(n, _)| n == "stall").count() >= STOPS
            })
            .await;
        assert!(ok, "client {i} did not get all {STOPS} broadcasts");
        assert_eq!(
            c.seqs("stall"),
            want,
            "client {i}: each broadcast exactly once"
        );
    }

    // The client that never answered was closed for it, stalls or not.
    match silent
        .expect_closed(Duration::from_millis(3 * (INTERVAL_MS + TIMEOUT_MS)))
        .await
    {
        Ok(End::Close(4000, reason)) => assert_eq!(reason, "ping timeout"),
        other => panic!("the silent client was not closed for ping timeout: {other:?}"),
    }
    let text = metrics(&gw).await;
    assert_eq!(
        metric_or_zero(&text, CLOSED),
        1.0,
        "only the silent client is closed for ping timeout"
    );

    // With the gateway running normally, a client that stops answering is
    // closed after its ping interval and timeout, within the bound.
    let started = Instant::now();
    let mut late_silent = RawWs::connected(port, &token_role("silent2", "all"))
        .await
        .expect("second silent client connects");
    let end = late_silent
        .expect_closed(Duration::from_millis(2 * (INTERVAL_MS + 2 * TIMEOUT_MS)))
        .await
        .expect("the second silent client is closed");
    let took = started.elapsed();
    assert!(
        matches!(end, End::Close(4000, _)),
        "closed for ping timeout: {end:?}"
    );
    let at_least = Duration::from_millis(INTERVAL_MS + TIMEOUT_MS);
    let at_most = Duration::from_millis(INTERVAL_MS + 2 * TIMEOUT_MS + 1_000);
    assert!(
        took >= at_least - Duration::from_millis(50) && took <= at_most,
        "closed {took:?} after connecting; expected {at_least:?}..{at_most:?}"
    );
    assert_eq!(metric_or_zero(&metrics(&gw).await, CLOSED), 2.0);
    // The stalls were seen and counted as the gateway's lateness.
    let late = metric_or_zero(
        &metrics(&gw).await,
        "switchboard_heartbeat_late_total{what=\"ping\"}",
    );
    assert!(late > 0.0, "no late ping counted after {STOPS} stops");
    drop(clients);
}

/// Websocket sessions held open (never read) by the admission test: more
/// than one burst (100 ms's worth) of the catch-up pace, so that after the
/// stop the pace holds pings back for a while.
const HELD: usize = 600;

/// Issue #17's reconnect storm: while a gateway's heartbeats run behind,
/// here right after a stop, while the pings that fell due during it are
/// still being paced out, a new session is refused before its token is
/// looked at: 503 with `Retry-After`, the reason in the body, counted in
/// `switchboard_engine_errors_total{error="overloaded"}`. Once the
/// heartbeats have caught up, the same request is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_behind_on_its_heartbeats_refuses_new_sessions_until_caught_up() {
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_ENGINE__PING_INTERVAL_MS", "2000"),
        ("SWITCHBOARD_ENGINE__PING_TIMEOUT_MS", "5000"),
        ("SWITCHBOARD_LIMITS__REFUSE_WHEN_BEHIND_MS", "100"),
        ("SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP", "0"),
    ])
    .await;
    let port = gw.port();
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        held.push(RawWs::connect(port, "").await.expect("session opens"));
    }
    // Every first ping falls due during the stop (2 s after its connect).
    gw.signal(libc::SIGSTOP).expect("SIGSTOP the gateway");
    tokio::time::sleep(Duration::from_millis(2_800)).await;
    gw.signal(libc::SIGCONT).expect("SIGCONT the gateway");

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refused = None;
    let mut admitted_after = false;
    while Instant::now() < deadline {
        let r = http("GET", &polling_url(port, None), &[], None)
            .await
            .expect("handshake answered");
        match r.status {
            503 => refused = Some(r),
            200 if refused.is_some() => {
                admitted_after = true;
                break;
            }
            200 => {}
            other => panic!("unexpected status {other}: {}", r.text()),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = refused.expect("a handshake refused while the heartbeats caught up");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&refused.body).expect("JSON body"),
        serde_json::json!({"code": 3, "message": "Gateway overloaded; retry later"})
    );
    assert_eq!(refused.header("retry-after"), Some("2"));
    assert!(admitted_after, "admitted again once caught up");
    let text = metrics(&gw).await;
    assert!(
        metric_or_zero(
            &text,
            "switchboard_engine_errors_total{error=\"overloaded\"}"
        ) >= 1.0
    );
    assert!(
        metric_or_zero(
            &text,
            "switchboard_heartbeat_late_total{what=\"ping_paced\"}"
        ) >= 100.0,
        "the overdue pings were paced"
    );
    drop(held);
}
