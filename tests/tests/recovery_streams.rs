//! Connection state recovery on the Redis Streams bus (issue #13), end to
//! end: two gateways with `redis.bus = "streams"` and `[recovery]` behind a
//! REAL nginx (the shipped site, plain round robin), the stock
//! socket.io-client 4.8 (it sends `{pid, offset}` on reconnect by itself),
//! events published with the `broadcaster` crate in the streams format.
//!
//! * the client's gateway is SIGKILLed (then, in a second test, SIGTERMed):
//!   events 6-10 are published while the client is away; it reconnects
//!   through nginx to the other gateway with `recovered === true`, the same
//!   socket id and rooms, and gets 6-10 exactly once, in order, each with its
//!   stream entry id as the offset;
//! * a reconnect after `recovery.max_disconnection_ms`, or after the missed
//!   entries were trimmed from the stream, gives a fresh session
//!   (`recovered === false`) and counts the outcome in
//!   `switchboard_recoveries_total`.

mod deploy_support;

use std::time::Duration;

use deploy_support::*;
use serde_json::json;
use switchboard_broadcaster::{Broadcaster, BroadcasterConfig, StreamsOptions};
use switchboard_testkit::{
    GatewayOptions, GatewayProcess, free_port, http_get,
    jwt::Claims,
    node::{ConnectOptions, NodeDriver, Note},
    redis::RedisServer,
};

const SECRET: &str = "recovery-streams-secret-0123456789abcdef";
/// Bound of every single wait.
const T: Duration = Duration::from_secs(20);

async fn metrics_of(gw: &GatewayProcess) -> String {
    let url = format!("{}/metrics", gw.url());
    let (status, body) = tokio::task::spawn_blocking(move || http_get(&url))
        .await
        .unwrap()
        .expect("GET /metrics");
    assert_eq!(status, 200);
    body
}

/// Sums a metric over the gateways still running.
async fn fleet_metric(gws: &[Option<GatewayProcess>], name: &str, filter: &[&str]) -> f64 {
    let mut sum = 0.0;
    for gw in gws.iter().flatten() {
        sum += metric(&metrics_of(gw).await, name, filter);
    }
    sum
}

/// Two streams-mode gateways with recovery behind nginx.
struct Fleet {
    redis: RedisServer,
    gateways: Vec<Option<GatewayProcess>>,
    nginx: Nginx,
    broadcaster: Broadcaster,
}

async fn fleet(nginx_bin: &std::path::Path, max_disconnection_ms: u64) -> Fleet {
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .expect("redis");
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let opts = GatewayOptions::new()
            .redis(redis.url())
            .secret(SECRET)
            .env("SWITCHBOARD_REDIS__BUS", "streams")
            .env("SWITCHBOARD_RECOVERY__ENABLED", "true")
            .env(
                "SWITCHBOARD_RECOVERY__MAX_DISCONNECTION_MS",
                max_disconnection_ms.to_string(),
            )
            .env("SWITCHBOARD_SERVER__TRUSTED_PROXIES", "127.0.0.1")
            .env("SWITCHBOARD_ENGINE__PING_INTERVAL_MS", "1000")
            .env("SWITCHBOARD_ENGINE__PING_TIMEOUT_MS", "1000")
            .env("SWITCHBOARD_SERVER__SHUTDOWN_DEADLINE_MS", "2000");
        let gw = GatewayProcess::start_async(opts).await.expect("gateway");
        wait_ready(&gw).await;
        gateways.push(Some(gw));
    }
    let nginx_port = free_port();
    let site = adapt_site(
        &deploy_file("nginx/switchboard.conf"),
        &gateways
            .iter()
            .flatten()
            .map(|g| format!("127.0.0.1:{}", g.port()))
            .collect::<Vec<_>>(),
        // No API behind /api/ in this test.
        &format!("127.0.0.1:{}", free_port()),
        Some(&format!("127.0.0.1:{nginx_port}")),
    );
    let nginx = {
        let (b, s) = (nginx_bin.to_path_buf(), site.clone());
        tokio::task::spawn_blocking(move || Nginx::start(&b, &s, nginx_port))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("start nginx: {e:#}\n--- site ---\n{site}"))
    };
    let broadcaster = Broadcaster::from_config(BroadcasterConfig {
        redis_url: redis.url(),
        streams: Some(StreamsOptions::default()),
        ..Default::default()
    })
    .expect("broadcaster");
    Fleet {
        redis,
        gateways,
        nginx,
        broadcaster,
    }
}

impl Fleet {
    /// The index of the gateway holding the (one) socket.
    async fn holder(&self) -> usize {
        for (i, gw) in self.gateways.iter().enumerate() {
            if let Some(gw) = gw
                && metric(&metrics_of(gw).await, "switchboard_sockets", &[]) >= 1.0
            {
                return i;
            }
        }
        panic!("no gateway holds the socket");
    }
}

/// A stock client with recovery-friendly reconnection: websocket only (so
/// a session lives on one gateway), a fixed reconnection delay.
fn client_options(user: &str, reconnect_delay_ms: u64) -> ConnectOptions {
    ConnectOptions::new()
        .websocket_only()
        .token(Claims::new().sub(user).role("admin").sign_hs256(SECRET))
        .reconnection(true)
        .opt("reconnectionDelay", json!(reconnect_delay_ms))
        .opt("reconnectionDelayMax", json!(reconnect_delay_ms))
        .opt("randomizationFactor", json!(0))
}

/// Waits for `news` number `n` and returns its offset (the last argument).
async fn expect_news(node: &NodeDriver, client: &str, n: u64) -> String {
    let args = node
        .expect_event(client, "news", T)
        .await
        .unwrap_or_else(|e| panic!("{client}: news {n}: {e:#}"));
    assert_eq!(args.len(), 2, "news {n} with its offset: {args:?}");
    assert_eq!(args[0], json!({ "n": n }), "{client}: events out of order");
    args[1]
        .as_str()
        .unwrap_or_else(|| panic!("news {n}: the offset is not a string: {args:?}"))
        .to_string()
}

/// Publishes `news {n}` to `room` in the streams format; the entry id.
async fn publish(b: &Broadcaster, room: &str, n: u64) -> String {
    let d = b
        .to(room)
        .emit("news", &json!({ "n": n }))
        .await
        .expect("broadcaster publish");
    d.stream_id.expect("a stream entry id")
}

/// Takes the next connect note of `client` (other notes stay queued):
/// its socket id and `socket.recovered`.
async fn expect_connect(node: &NodeDriver, client: &str) -> (String, bool) {
    match node
        .take_note(client, T, |n| matches!(n, Note::Connect { .. }))
        .await
        .unwrap_or_else(|e| panic!("{client} did not (re)connect: {e:#}"))
    {
        Note::Connect { sid, recovered, .. } => (sid, recovered),
        other => unreachable!("{other:?}"),
    }
}

/// The fleet and a node driver, or `None` (test skipped) without nginx.
async fn setup(max_disconnection_ms: u64) -> Option<(Fleet, NodeDriver)> {
    let Some(nginx_bin) = find_tool("nginx") else {
        skip("recovery through nginx", "nginx is not installed");
        return None;
    };
    let f = fleet(&nginx_bin, max_disconnection_ms).await;
    let node = NodeDriver::start().await.expect("node driver");
    Some((f, node))
}

/// The client's network goes away (its transport closes under it); waits
/// until it has noticed.
async fn drop_transport(node: &NodeDriver, client: &str) {
    node.request("dropTransport", json!({ "client": client }), T)
        .await
        .expect("drop transport");
    node.expect_disconnect(client, T)
        .await
        .expect("disconnect seen");
}

/// Connects `client` (user `user`) through nginx, checks one event reaches
/// it with its offset, then drops its transport; the first socket id.
async fn connect_one_event_then_drop(
    f: &Fleet,
    node: &NodeDriver,
    client: &str,
    user: &str,
    opts: ConnectOptions,
) -> String {
    node.connect(client, &f.nginx.url(), opts)
        .await
        .expect("connect");
    let (sid, _) = expect_connect(node, client).await;
    let id = publish(&f.broadcaster, &format!("user:{user}"), 1).await;
    assert_eq!(expect_news(node, client, 1).await, id);
    drop_transport(node, client).await;
    sid
}

/// `switchboard_recoveries_total{outcome}` over the running gateways is at least 1.
async fn counted(f: &Fleet, outcome: &str) {
    let filter = format!("outcome=\"{outcome}\"");
    assert!(
        fleet_metric(&f.gateways, "switchboard_recoveries_total", &[&filter]).await >= 1.0,
        "no recovery counted as {outcome}"
    );
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Kill,
    Term,
}

async fn recover_after(stop: Stop) {
    let Some((mut f, node)) = setup(120_000).await else {
        return;
    };
    let c = "c1";
    node.connect(c, &f.nginx.url(), client_options("u1", 1500))
        .await
        .expect("connect");
    let (sid, recovered) = expect_connect(&node, c).await;
    assert!(!recovered, "a first connect is not a recovery");
    // A room beyond the token's: joined through the stream (socketsJoin).
    f.broadcaster
        .to_user("u1")
        .sockets_join(["extra"])
        .await
        .expect("join");
    let mut offsets = Vec::new();
    for n in 1..=5u64 {
        let room = if n % 2 == 0 { "role:admin" } else { "extra" };
        // The join is an earlier entry of the same stream: applied first.
        let id = publish(&f.broadcaster, room, n).await;
        let got = expect_news(&node, c, n).await;
        assert_eq!(got, id, "the offset is the stream entry id");
        offsets.push(got);
    }
    let holder = f.holder().await;
    match stop {
        Stop::Kill => f.gateways[holder].as_mut().unwrap().kill(),
        Stop::Term => {
            f.gateways[holder]
                .as_mut()
                .unwrap()
                .terminate_timeout(T)
                .expect("SIGTERM");
        }
    }
    f.gateways[holder] = None;
    node.expect_disconnect(c, T).await.expect("disconnect seen");
    // While the client waits to reconnect (1.5 s), events 6-10.
    let mut missed = Vec::new();
    for n in 6..=10u64 {
        let room = if n % 2 == 0 { "role:admin" } else { "extra" };
        missed.push(publish(&f.broadcaster, room, n).await);
    }
    let (new_sid, recovered) = expect_connect(&node, c).await;
    assert!(recovered, "socket.recovered after {stop:?}");
    assert_eq!(new_sid, sid, "same socket id after recovery");
    for (n, id) in (6..=10u64).zip(&missed) {
        assert_eq!(&expect_news(&node, c, n).await, id, "replayed offset");
    }
    // The rooms came back: "extra" (joined over the bus) still reaches it.
    let id = publish(&f.broadcaster, "extra", 11).await;
    assert_eq!(expect_news(&node, c, 11).await, id);
    node.expect_no_event_named(c, "news", Duration::from_millis(800))
        .await
        .expect("each event exactly once");
    assert_eq!(
        fleet_metric(
            &f.gateways,
            "switchboard_recoveries_total",
            &["outcome=\"recovered\""]
        )
        .await,
        1.0
    );
    drop(f.redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_on_the_other_gateway_after_sigkill() {
    tokio::time::timeout(Duration::from_secs(180), recover_after(Stop::Kill))
        .await
        .expect("test exceeded 180 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_on_the_other_gateway_after_sigterm() {
    tokio::time::timeout(Duration::from_secs(180), recover_after(Stop::Term))
        .await
        .expect("test exceeded 180 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_late_or_trimmed_gives_a_fresh_session_and_counts_it() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let Some((f, node)) = setup(1_000).await else {
            return;
        };
        // Too late: back after 2.5 s, the session lived 1 s.
        let first =
            connect_one_event_then_drop(&f, &node, "late", "u2", client_options("u2", 2500)).await;
        let (sid, recovered) = expect_connect(&node, "late").await;
        assert!(!recovered, "recovered after max_disconnection_ms");
        assert_ne!(sid, first);
        counted(&f, "expired").await;

        // Trimmed: the offset the client holds left the stream meanwhile.
        let first =
            connect_one_event_then_drop(&f, &node, "trim", "u3", client_options("u3", 500)).await;
        f.redis
            .command(&["XTRIM", "socket.io", "MAXLEN", "0"])
            .expect("XTRIM");
        let (sid, recovered) = expect_connect(&node, "trim").await;
        assert!(!recovered, "recovered although the entries were trimmed");
        assert_ne!(sid, first);
        counted(&f, "trimmed").await;
        // A fresh session still gets events (with offsets).
        let id = publish(&f.broadcaster, "user:u3", 2).await;
        assert_eq!(expect_news(&node, "trim", 2).await, id);
    })
    .await
    .expect("test exceeded 180 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expired_meanwhile_is_refused() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let Some((f, node)) = setup(120_000).await else {
            return;
        };
        // The token expires 2 s from now; the client comes back after 3.5 s.
        let token = Claims::new()
            .sub("u4")
            .role("admin")
            .expires_in(Duration::from_secs(2))
            .sign_hs256(SECRET);
        connect_one_event_then_drop(
            &f,
            &node,
            "exp",
            "u4",
            client_options("u4", 3500).token(token),
        )
        .await;
        let note = node
            .take_note("exp", T, |n| {
                matches!(n, Note::ConnectError { .. } | Note::Connect { .. })
            })
            .await
            .expect("an answer to the reconnect");
        match note {
            Note::ConnectError { data, .. } => {
                assert_eq!(data["reason"], "expired", "{data}");
            }
            other => panic!("a session with an expired token was restored: {other:?}"),
        }
        counted(&f, "expired").await;
    })
    .await
    .expect("test exceeded 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_absence_is_replayed_page_by_page_while_events_keep_coming() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let Some((f, node)) = setup(120_000).await else {
            return;
        };
        let first =
            connect_one_event_then_drop(&f, &node, "long", "u5", client_options("u5", 1000)).await;
        // 250 events while it is away (three XRANGE pages of 100), then
        // more while it reconnects and is replayed: live ones are held back
        // during the replay and must neither be lost, doubled nor reordered.
        let b = f.broadcaster.clone();
        let publisher = tokio::spawn(async move {
            for n in 2..=400u64 {
                publish(&b, "user:u5", n).await;
                if n > 250 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        let (sid, recovered) = expect_connect(&node, "long").await;
        assert!(recovered, "not recovered after 250 missed events");
        assert_eq!(sid, first);
        publisher.await.expect("publisher");
        let mut last_offset = String::new();
        for n in 2..=400u64 {
            let offset = expect_news(&node, "long", n).await;
            let parse = |o: &str| -> (u64, u64) {
                let (a, b) = o.split_once('-').expect("offset");
                (a.parse().unwrap(), b.parse().unwrap())
            };
            if !last_offset.is_empty() {
                assert!(
                    parse(&offset) > parse(&last_offset),
                    "offsets in stream order"
                );
            }
            last_offset = offset;
        }
        node.expect_no_event_named("long", "news", Duration::from_millis(500))
            .await
            .expect("each event exactly once");
    })
    .await
    .expect("test exceeded 120 s");
}
