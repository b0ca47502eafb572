//! Engine.IO behaviours pinned at the official `socket.io-protocol` test
//! suite's settings (pingInterval 300 ms, pingTimeout 200 ms,
//! connectTimeout 1000 ms): heartbeat precision over both transports, a
//! session closed on time after a missed pong, `6` (noop) to the pending GET
//! when the client closes over polling, and the reference server's handling
//! of extra websockets for one sid (accepted, then closed), and a server
//! close between two polls reaching the next one. Raw websockets and raw
//! HTTP, no client library in between.

mod common;
mod hardening_support;

use std::time::{Duration, Instant};

use common::*;
use hardening_support::*;
use serde_json::json;
use switchboard_testkit::{
    GatewayProcess,
    jwt::{Claims, now_secs},
};

const PING_INTERVAL: Duration = Duration::from_millis(300);
const PING_TIMEOUT: Duration = Duration::from_millis(200);
/// The promised precision: max(5 ms, 2% of the interval).
const BOUND: Duration = Duration::from_millis(6);
/// Heartbeat cycles measured per transport.
const CYCLES: usize = 8;

async fn suite_gateway() -> GatewayProcess {
    embedded_gateway(&[
        ("SWITCHBOARD_ENGINE__PING_INTERVAL_MS", "300"),
        ("SWITCHBOARD_ENGINE__PING_TIMEOUT_MS", "200"),
        ("SWITCHBOARD_SOCKETIO__CONNECT_TIMEOUT_MS", "1000"),
    ])
    .await
}

/// Where each ping fell against an exact schedule: its arrival minus
/// `k` intervals after the open packet, in ms. An exact server gives about
/// the same value for every ping plus this machine's delays; a server whose
/// deadlines drift or round up gives values that grow from cycle to cycle.
fn offsets_ms(arrivals: &[Instant]) -> Vec<f64> {
    let interval = PING_INTERVAL.as_secs_f64() * 1000.0;
    arrivals[1..]
        .iter()
        .enumerate()
        .map(|(k, t)| (*t - arrivals[0]).as_secs_f64() * 1000.0 - (k + 1) as f64 * interval)
        .collect()
}

/// What this shared test machine adds on top of the server's promise: both
/// the gateway's timer and this test's reads are scheduled among other
/// processes (under a load of 14 on 2 cores the least delayed of four pings
/// still arrived ~5 ms late). The grid this test guards against was ~50 ms
/// late per cycle and drifted ~200 ms over eight cycles, far outside either.
const SCHEDULING_SLACK_MS: f64 = 10.0;

/// Each arrival can only be delayed, never early, so the earliest arrivals
/// show the server's schedule: the earliest of all is within the bound of
/// exact, and the earliest of the last cycles is where the earliest of the
/// first ones was (no drift, no rounding up cycle after cycle).
fn assert_precise(transport: &str, arrivals: &[Instant]) {
    let offsets = offsets_ms(arrivals);
    let earliest = |part: &[f64]| part.iter().copied().fold(f64::INFINITY, f64::min);
    let (first, last) = offsets.split_at(offsets.len() / 2);
    let bound = BOUND.as_secs_f64() * 1000.0 + SCHEDULING_SLACK_MS;
    let late = earliest(&offsets);
    assert!(
        late <= bound,
        "{transport}: every ping was over {late:.1} ms late (bound {bound} ms); offsets per cycle: {offsets:?}"
    );
    let drift = earliest(last) - earliest(first);
    assert!(
        drift.abs() <= bound,
        "{transport}: pings drift {drift:.1} ms from an exact {PING_INTERVAL:?} schedule over {} cycles (bound {bound} ms); offsets per cycle: {offsets:?}",
        offsets.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_heartbeat_is_exact_at_suite_intervals() {
    let gw = suite_gateway().await;
    let mut ws = RawWs::connect(gw.port(), "").await.unwrap();
    ws.open_packet().await.unwrap();
    let mut arrivals = vec![Instant::now()];
    ws.send_text(&format!("40{}", json!({ "token": token("alice") })))
        .await
        .unwrap();
    while arrivals.len() <= CYCLES {
        let frame = ws.next_text(T).await.unwrap();
        if frame == "2" {
            arrivals.push(Instant::now());
            ws.send_text("3").await.unwrap();
        } else {
            assert!(frame.starts_with("40"), "unexpected frame {frame}");
        }
    }
    assert_precise("websocket", &arrivals);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_heartbeat_is_exact_at_suite_intervals() {
    let gw = suite_gateway().await;
    let port = gw.port();
    let sid = polling_open(port).await.unwrap();
    let mut arrivals = vec![Instant::now()];
    let connect = format!("40{}", json!({ "token": token("alice") }));
    assert_eq!(
        polling_post(port, &sid, connect.as_bytes())
            .await
            .unwrap()
            .status,
        200
    );
    while arrivals.len() <= CYCLES {
        let (status, body) = polling_get(port, &sid).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let packets: Vec<&str> = body.split('\u{1e}').collect();
        if packets.contains(&"2") {
            arrivals.push(Instant::now());
            assert_eq!(polling_post(port, &sid, b"3").await.unwrap().status, 200);
        }
        assert!(
            packets.iter().all(|p| *p == "2" || p.starts_with("40")),
            "unexpected payload {body}"
        );
    }
    assert_precise("polling", &arrivals);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_session_past_its_ping_timeout_is_gone() {
    let gw = suite_gateway().await;
    let port = gw.port();
    // As the suite does: open, never answer the ping, and poll once the
    // ping interval and timeout have passed. The bound covers the
    // precision promised plus this machine's scheduling of the request.
    let sid = polling_open(port).await.unwrap();
    tokio::time::sleep(PING_INTERVAL + PING_TIMEOUT + BOUND + Duration::from_millis(14)).await;
    let (status, body) = polling_get(port, &sid).await.unwrap();
    assert_eq!(
        status, 400,
        "session still answers after its ping timeout: {body}"
    );
    wait_metric(
        &gw,
        r#"switchboard_engine_sessions_closed_total{reason="ping_timeout"}"#,
        T,
        |v| v == 1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_packet_while_a_get_is_pending_answers_the_get_with_noop() {
    let gw = suite_gateway().await;
    let port = gw.port();
    // Whether the GET is waiting at the server when the close arrives
    // cannot be seen from here. When it is not, it shows: a GET that
    // arrives after the close finds the session gone (400), and one whose
    // close came only after the first ping (due at 300 ms) gets the `2`.
    // Such an attempt is not the case under test and is made again on a
    // new session; a `6` comes only from a GET that was waiting.
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let sid = polling_open(port).await.unwrap();
        let pending = {
            let sid = sid.clone();
            tokio::spawn(async move { polling_get(port, &sid).await.unwrap() })
        };
        // Let the GET reach the server and wait there.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = polling_post(port, &sid, b"1").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let (status, body) = pending.await.unwrap();
        if status == 400 || body.starts_with('2') {
            eprintln!(
                "attempt {attempt}: the GET was not waiting when the close arrived ({status} {body:?}); again"
            );
            continue;
        }
        assert_eq!((status, body.as_str()), (200, "6"));
        // The session is gone at once, not when its task gets to it.
        let (status, body) = polling_get(port, &sid).await.unwrap();
        assert_eq!(
            status, 400,
            "session still open after the client closed it: {body}"
        );
        return;
    }
    panic!("in {ATTEMPTS} attempts the GET was never waiting when the close arrived");
}

/// A polling client between two GETs when the server closes its session
/// still reads what it was sent last: the next GET gets the queued
/// CONNECT_ERROR, the one after it the close packet, and only then is the
/// session gone. The reference server does the same (it keeps a closing
/// session until it has been polled). Without it the client sees a 400
/// (`transport error`) instead of why it was dropped; with both in one
/// response it sees `transport close` (Socket.IO clients handle a packet on
/// the next tick, the close packet at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_between_two_polls_reaches_the_next_poll() {
    // Default heartbeat (25 s): no ping joins the responses read here.
    let gw = embedded_gateway(&[]).await;
    let port = gw.port();
    let short = Claims::new()
        .sub("short")
        .exp(now_secs() + 1)
        .sign_hs256(SECRET);
    let sid = polling_connected(port, &short).await.unwrap();
    // No GET is waiting: the expiry sweeper refuses the socket, the
    // session's only one, and so closes the session.
    wait_metric(
        &gw,
        r#"switchboard_server_disconnects_total{reason="token_expired"}"#,
        Duration::from_secs(6),
        |v| v == 1.0,
    )
    .await;
    let mut responses: Vec<String> = Vec::new();
    loop {
        let (status, body) = polling_get(port, &sid).await.unwrap();
        if status == 400 {
            assert!(body.contains("Session ID unknown"), "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        responses.push(body);
        assert!(responses.len() <= 2, "more than expected: {responses:?}");
    }
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert!(
        responses[0].starts_with("44") && responses[0].contains("token_expired"),
        "{responses:?}"
    );
    assert!(!responses[0].contains('\u{1e}'), "{responses:?}");
    assert_eq!(responses[1], "1", "{responses:?}");
}

/// A websocket for `sid`, probed: `2probe` sent; returns the socket.
async fn probe(gw: &GatewayProcess, sid: &str) -> RawWs {
    let mut ws = RawWs::connect(gw.port(), &format!("sid={sid}"))
        .await
        .unwrap();
    // The websocket that loses the race may be closed already.
    let _ = ws.send_text("2probe").await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_websocket_after_an_upgrade_is_accepted_then_closed() {
    let gw = suite_gateway().await;
    let sid = polling_open(gw.port()).await.unwrap();
    let mut first = probe(&gw, &sid).await;
    assert_eq!(first.next_text(T).await.unwrap(), "3probe");
    first.send_text("5").await.unwrap();
    // Upgraded: the heartbeat now runs on the websocket.
    assert_eq!(first.next_text(T).await.unwrap(), "2");
    first.send_text("3").await.unwrap();

    // The reference server accepts the second websocket and closes it
    // (`transport had already been upgraded`); no HTTP 400.
    let mut second = RawWs::connect(gw.port(), &format!("sid={sid}"))
        .await
        .expect("the websocket handshake succeeds");
    let end = second.expect_closed(T).await.unwrap();
    assert!(
        matches!(end, End::Close(..)),
        "ended without a close frame: {end:?}"
    );
    assert!(second.seen.is_empty(), "{:?}", second.seen);
    // The upgraded session is untouched.
    assert_eq!(first.next_text(T).await.unwrap(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_upgrades_of_one_sid_let_exactly_one_through() {
    let gw = suite_gateway().await;
    for round in 0..5 {
        let sid = polling_open(gw.port()).await.unwrap();
        let (a, b) = tokio::join!(probe(&gw, &sid), probe(&gw, &sid));
        let mut winners = Vec::new();
        for mut ws in [a, b] {
            match ws.next_text(Duration::from_secs(2)).await {
                Ok(frame) => {
                    assert_eq!(frame, "3probe", "round {round}");
                    winners.push(ws);
                }
                Err(err) => assert!(
                    !format!("{err:#}").contains("no frame in time"),
                    "round {round}: the other websocket was neither probed nor closed"
                ),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: both websockets probed");
        let mut ws = winners.pop().unwrap();
        ws.send_text("5").await.unwrap();
        assert_eq!(ws.next_text(T).await.unwrap(), "2", "round {round}");
    }
}
