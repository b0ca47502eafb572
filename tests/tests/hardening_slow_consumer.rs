//! Slow consumer: one client that completes the handshake and then never
//! reads (a raw websocket over a TCP socket with a tiny receive buffer),
//! in a room with a few hundred clients that read normally. A burst of
//! large-ish messages to the room must get the frozen client disconnected
//! as a slow consumer (its outbound queue is bounded by
//! `limits.max_queue_bytes`), must reach every other client completely and
//! in order, and must not grow the gateway's memory without bound.

mod common;
mod hardening_support;

use std::time::{Duration, Instant};

use common::*;
use hardening_support::*;
use serde_json::json;
use tokio_tungstenite::MaybeTlsStream;

/// Clients that read normally.
const ACTIVE: usize = 200;
/// Messages in the burst, and the size of each one's padding.
const BURST: usize = 120;
const PAD: usize = 4 * 1024;
/// Pause between two publishes of the burst.
const PACE: Duration = Duration::from_millis(10);
/// Size of each message sent to the frozen client alone.
const FILL: usize = 60 * 1024;
const MAX_QUEUE_BYTES: usize = 64 * 1024;
/// Generous bound on how much the gateway may grow during the burst.
const RSS_BOUND_KIB: u64 = 200 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_client_is_cut_off_others_get_everything_memory_bounded() {
    let gw = embedded_gateway(&[
        (
            "SWITCHBOARD_LIMITS__MAX_QUEUE_BYTES",
            &MAX_QUEUE_BYTES.to_string(),
        ),
        // Every client of this test comes from 127.0.0.1; the default
        // per-address bound (100) is lifted.
        ("SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP", "0"),
    ])
    .await;
    let port = gw.port();
    let pid = gw.pid().expect("gateway pid");

    let started = Instant::now();
    let active = connect_many(port, ACTIVE, 25, |i| token_role(&format!("u{i}"), "crowd"))
        .await
        .expect("active clients connect");
    println!(
        "{ACTIVE} active clients connected in {:?}",
        started.elapsed()
    );

    // The frozen client: a 4 KiB receive buffer, and after the CONNECT
    // nobody polls its stream, so nothing is read from the socket.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("tcp connect");
    let (ws, _) = tokio_tungstenite::client_async(ws_url(port, ""), MaybeTlsStream::Plain(stream))
        .await
        .expect("websocket handshake");
    let mut frozen = RawWs::from(ws);
    let reply = frozen
        .sio_handshake(Some(json!({"token": token_role("frozen", "crowd")})))
        .await
        .unwrap();
    assert!(reply.starts_with("40"), "frozen client admitted: {reply}");

    let slow = "switchboard_engine_sessions_closed_total{reason=\"slow_consumer\"}";
    assert_eq!(metric_or_zero(&metrics(&gw).await, slow), 0.0);
    let rss_before = rss_kib(pid).expect("gateway RSS");

    // The burst: one publish per message, paced so that a client that reads
    // keeps its queue far below the bound (a single batch bigger than
    // `max_queue_bytes` would overflow every queue at once, see
    // docs/reliability.md).
    let pad = "x".repeat(PAD);
    // Between two room messages, a large one for the frozen client's user
    // room only, so that its socket buffers (which loopback TCP autotunes up
    // to several MiB) fill within the burst without sending hundreds of MiB
    // to everyone else.
    let fill = "y".repeat(FILL);
    let burst_started = Instant::now();
    for i in 0..BURST {
        api_emit_ok(
            &gw,
            json!({"event": "big", "args": [i, pad], "roles": ["crowd"]}),
        )
        .await;
        api_emit_ok(
            &gw,
            json!({"event": "fill", "args": [i, fill], "users": ["frozen"]}),
        )
        .await;
        tokio::time::sleep(PACE).await;
    }
    let published_in = burst_started.elapsed();

    // The frozen client is cut off as a slow consumer.
    wait_metric(&gw, slow, Duration::from_secs(20), |v| v >= 1.0).await;
    let cut_after = burst_started.elapsed();
    let mut rss_peak = rss_kib(pid).unwrap_or(0);

    // Everyone else gets the whole burst, once each, in order.
    let expected: Vec<i64> = (0..BURST as i64).collect();
    for (i, c) in active.iter().enumerate() {
        let done = c
            .wait(Duration::from_secs(30), |s| {
                s.events.iter().filter(|(n, _)| n == "big").count() >= BURST || s.end.is_some()
            })
            .await;
        rss_peak = rss_peak.max(rss_kib(pid).unwrap_or(0));
        assert!(done, "client {i} did not get the burst: {}", c.summary());
        assert_eq!(c.seqs("big"), expected, "client {i}: {}", c.summary());
        assert!(
            c.end().is_none(),
            "client {i} was disconnected: {}",
            c.summary()
        );
    }
    let delivered_in = burst_started.elapsed();
    let rss_after = rss_kib(pid).unwrap_or(0);
    rss_peak = rss_peak.max(rss_after);

    let text = metrics(&gw).await;
    assert_eq!(
        metric(&text, slow),
        Some(1.0),
        "only the frozen client:\n{text}"
    );
    assert_eq!(
        metric(&text, "switchboard_sockets"),
        Some(ACTIVE as f64),
        "the frozen socket is gone, the others remain"
    );
    println!(
        "SLOW CONSUMER: {ACTIVE} active clients + 1 frozen; burst of {BURST} x {} KiB published in {published_in:?}; \
         frozen client's cut-off seen in /metrics {cut_after:?} after the burst started; all active clients had the whole burst after {delivered_in:?}; \
         gateway RSS {} MiB before, peak {} MiB, after {} MiB",
        PAD / 1024,
        rss_before / 1024,
        rss_peak / 1024,
        rss_after / 1024
    );
    assert!(
        rss_peak.saturating_sub(rss_before) < RSS_BOUND_KIB,
        "gateway RSS grew from {rss_before} KiB to {rss_peak} KiB"
    );

    // When the frozen client finally reads, it finds what the kernel had
    // buffered and then the end: close code 4008, or a reset/EOF when the
    // close frame could not be written to its full socket.
    frozen.seen.clear();
    let end = match frozen.expect_closed(Duration::from_secs(10)).await {
        Err(e) => panic!("frozen client's connection still open after reading: {e:#}"),
        Ok(End::Close(code, _)) => {
            assert_eq!(code, 4008, "slow consumer close code");
            "close 4008".to_string()
        }
        Ok(End::Dropped(why)) => why,
    };
    let big = frozen
        .seen
        .iter()
        .filter(|t| t.starts_with("42[\"big\""))
        .count();
    println!("frozen client read {big} of {BURST} room messages, then {end}");
    assert!(
        big < BURST,
        "the frozen client cannot have received the whole burst"
    );
}
