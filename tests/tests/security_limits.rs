//! The limits that are on by default (issue #15), against the real binary
//! with its default configuration: a flood of polling handshakes from one
//! address is refused past `limits.max_connections_per_ip` (refusals
//! counted, memory bounded), and a session that never sends an
//! authenticated CONNECT is closed after `socketio.connect_timeout_ms`.

mod common;
mod hardening_support;

use std::time::Duration;

use common::*;
use hardening_support::{http, polling_open, polling_url};

/// Resident memory of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_handshake_flood_from_one_address_is_limited_by_default() {
    let gw = embedded_gateway(&[]).await;
    let port = gw.port();
    let pid = gw.pid().expect("gateway pid");
    let before = rss_kib(pid);
    // 1,000 handshakes from 127.0.0.1, eight at a time.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut limited) = (0u32, 0u32);
            for _ in 0..125 {
                let r = http("GET", polling_url(port, None), vec![], None)
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
    let after = rss_kib(pid);
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
        let r = http("GET", polling_url(port, Some(&sid)), vec![], None)
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
