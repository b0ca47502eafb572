//! Streams mode under Redis trouble: two gateways with `redis.bus =
//! "streams"` and four clients (two per gateway) while the `broadcaster`
//! publishes a steady stream of events; meanwhile every Redis client
//! connection is dropped (`CLIENT KILL TYPE normal`) and then Redis itself is
//! SIGKILLed and restarted on its append-only file (`appendonly yes`,
//! `appendfsync always`, so what Redis acknowledged is on disk).
//!
//! Pass condition: every entry the stream holds at the end (every event
//! Redis accepted) reached every client exactly once and in stream order
//! (each event carries its entry id as the recovery offset, so the check is
//! by id), and every event the broadcaster saw accepted is among them. The
//! gateways' readers resumed from their last ids after each reconnect; with
//! pub/sub the events published while a subscription was down are lost.

#[allow(unused_imports)] // its re-exports serve the deploy tests
mod deploy_support;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use switchboard_broadcaster::{Broadcaster, BroadcasterConfig, StreamsOptions};
use switchboard_testkit::{
    GatewayOptions, GatewayProcess,
    jwt::Claims,
    node::{ConnectOptions, NodeDriver, Note},
    redis::{RedisOptions, RedisServer, Resp},
};

const SECRET: &str = "streams-chaos-secret-0123456789abcdef";
const T: Duration = Duration::from_secs(30);
/// Events published, one every 15 ms.
const EVENTS: u64 = 200;

/// The ids of the entries of `stream`, in order.
fn stream_ids(redis: &RedisServer, stream: &str) -> Vec<String> {
    let reply = redis
        .command(&["XRANGE", stream, "-", "+"])
        .expect("XRANGE");
    reply
        .as_array()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| match e {
            Resp::Array(Some(parts)) => parts.first().and_then(Resp::as_str),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_event_reaches_every_client_once_across_client_kill_and_restart() {
    tokio::time::timeout(Duration::from_secs(180), run())
        .await
        .expect("test exceeded 180 s");
}

async fn run() {
    let mut redis = tokio::task::spawn_blocking(|| {
        RedisServer::start_with(RedisOptions::default().args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]))
    })
    .await
    .unwrap()
    .expect("redis");
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let gw = GatewayProcess::start_async(
            GatewayOptions::new()
                .redis(redis.url())
                .secret(SECRET)
                .env("SWITCHBOARD_REDIS__BUS", "streams")
                .env("SWITCHBOARD_RECOVERY__ENABLED", "true")
                .env("SWITCHBOARD_REDIS__RECONNECT_MAX_MS", "500"),
        )
        .await
        .expect("gateway");
        gw.wait_for_log("reading the stream", T)
            .expect("the gateway reads the stream");
        gateways.push(gw);
    }
    let node = NodeDriver::start().await.expect("node driver");
    let mut clients = Vec::new();
    for (g, gw) in gateways.iter().enumerate() {
        for i in 0..2 {
            let name = format!("g{g}c{i}");
            let token = Claims::new().sub(&name).role("admin").sign_hs256(SECRET);
            node.connect(
                &name,
                &gw.url(),
                ConnectOptions::new().websocket_only().token(token),
            )
            .await
            .expect("connect");
            clients.push(name);
        }
    }

    let b = Broadcaster::from_config(BroadcasterConfig {
        redis_url: redis.url(),
        streams: Some(StreamsOptions::default()),
        publish_timeout: Duration::from_secs(3),
        ..Default::default()
    })
    .expect("broadcaster");
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let published = published.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut failed = 0u64;
            for n in 1..=EVENTS {
                match b.to_role("admin").emit("tick", &json!({ "n": n })).await {
                    Ok(d) => accepted.push(d.stream_id.expect("entry id")),
                    Err(_) => failed += 1,
                }
                published.store(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            (accepted, failed)
        })
    };
    let wait_for = |n: u64| {
        let published = published.clone();
        async move {
            let deadline = Instant::now() + T;
            while published.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "publisher stuck before {n}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(50).await;
    let killed = redis
        .command(&["CLIENT", "KILL", "TYPE", "normal"])
        .expect("CLIENT KILL");
    assert!(
        killed.as_int().unwrap_or(0) >= 2,
        "the gateways' connections were dropped: {killed:?}"
    );
    wait_for(110).await;
    let mut redis = tokio::task::spawn_blocking(move || {
        redis.restart().expect("restart redis");
        redis
    })
    .await
    .unwrap();
    let (accepted, failed) = publisher.await.expect("publisher");

    let ids = stream_ids(&redis, "socket.io");
    let in_stream: HashSet<&String> = ids.iter().collect();
    assert!(
        accepted.iter().all(|id| in_stream.contains(id)),
        "an entry Redis acknowledged is missing from the stream after the restart"
    );
    assert!(
        ids.len() as u64 >= EVENTS - failed,
        "{} entries for {} accepted publishes",
        ids.len(),
        EVENTS - failed
    );
    for c in &clients {
        let mut got = Vec::with_capacity(ids.len());
        while got.len() < ids.len() {
            let note = node
                .take_note(
                    c,
                    T,
                    |n| matches!(n, Note::Event { name, .. } if name == "tick"),
                )
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{c}: got {} of {} events: {e:#}\n{}",
                        got.len(),
                        ids.len(),
                        gateways
                            .iter()
                            .map(|g| g.logs())
                            .collect::<Vec<_>>()
                            .join("\n---\n")
                    )
                });
            if let Note::Event { args, .. } = note {
                got.push(
                    args.last()
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string(),
                );
            }
        }
        assert_eq!(got, ids, "{c}: every entry once, in stream order");
        node.expect_no_event_named(c, "tick", Duration::from_millis(300))
            .await
            .unwrap_or_else(|e| panic!("{c}: {e:#}"));
        assert!(
            !node
                .queued(c)
                .iter()
                .any(|n| matches!(n, Note::Disconnect { .. })),
            "{c} was disconnected"
        );
    }
    // The readers really lost their connections and resumed (else this
    // test would prove nothing).
    for gw in &gateways {
        assert!(
            gw.logs().contains("resuming from the last entry read"),
            "gateway {} never lost its stream reader's connection",
            gw.port()
        );
    }
    // Nothing was trimmed or reset under the readers: no loss counted.
    for gw in &gateways {
        let url = format!("{}/metrics", gw.url());
        let (_, page) = tokio::task::spawn_blocking(move || switchboard_testkit::http_get(&url))
            .await
            .unwrap()
            .expect("GET /metrics");
        assert_eq!(
            deploy_support::metric(&page, "switchboard_stream_lost_total", &[]),
            0.0,
            "gateway {} counted a loss",
            gw.port()
        );
    }
    eprintln!(
        "chaos: {} entries in the stream, {} publishes accepted, {failed} failed",
        ids.len(),
        accepted.len()
    );
    redis.kill();
}
