//! The gateway's bus in the Redis setups teams run (issues #14 and #18):
//! what each publish costs Redis (one PUBLISH, no PING), TLS with an ACL
//! user for the gateway and the `switchboard` CLI, clear failures on a
//! wrong CA or password, `/readyz` following the publishing side (an ACL
//! user that loses `PUBLISH`, writes paused), and a Sentinel failover under
//! a steady publish rate. Real `redis-server` processes from the testkit, the official
//! socket.io-client through the Node driver.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use futures_util::future::join_all;
use serde_json::json;
use switchboard_testkit::{
    GatewayOptions, GatewayProcess,
    cluster::RedisCluster,
    gateway::bin_path,
    node::ConnectOptions,
    redis::{RedisOptions, RedisServer},
    sentinel::{MASTER_NAME, SentinelSet},
    tls::TestPki,
};

/// Connects the websocket client `u1` (room `user:u1`).
async fn connect_u1(node: &switchboard_testkit::node::NodeDriver, gw: &GatewayProcess) {
    let opts = ConnectOptions::new().websocket_only().token(token("u1"));
    connect(node, "u1", gw, opts).await;
}

/// Publishes `via-cli` (data 2) with the `switchboard` CLI (`args`: the
/// Redis, `publish` and the target), expects it once on `client`, then
/// checks that an event `client` emits is published (its ack says ok).
async fn cli_then_client_event(
    node: &switchboard_testkit::node::NodeDriver,
    client: &str,
    args: &[&str],
    env: &[(&str, &str)],
) {
    let mut cli = Command::new(bin_path("switchboard").unwrap());
    cli.args(args)
        .args(["--event", "via-cli", "--data", "2"])
        .env_remove("SWITCHBOARD_REDIS_URL");
    for (k, v) in env {
        cli.env(k, v);
    }
    let out = cli.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(expect_once(node, client, "via-cli").await, vec![json!(2)]);
    let ack = node
        .emit_with_ack(client, "up", vec![json!(3)], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["ok"], json!(true), "{ack}");
}

/// Calls of `command` (lower case) in Redis' `INFO commandstats`.
fn calls(redis: &RedisServer, command: &str) -> u64 {
    redis
        .command_calls()
        .expect("INFO commandstats")
        .into_iter()
        .find(|(c, _)| c == command)
        .map(|(_, n)| n)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_is_one_publish_and_nothing_pings() {
    const N: u64 = 120;
    const BATCH: u64 = 5;
    let redis = redis();
    let pings_before = calls(&redis, "ping");
    // No per-socket event rate limit: N events in a row are the point.
    let gw = redis_gateway(
        &redis,
        &[("SWITCHBOARD_LIMITS__CLIENT_EVENTS_PER_SEC", "0")],
    )
    .await;
    let node = node().await;
    connect_u1(&node, &gw).await;
    // The one health check at start (Bus::connect), nothing else.
    assert_eq!(
        calls(&redis, "ping") - pings_before,
        1,
        "{:?}",
        redis.command_calls()
    );
    let publishes_before = calls(&redis, "publish");

    // N HTTP API publishes, 12 at a time (pipelined on one connection).
    for chunk in 0..N / 12 {
        let emits = (0..12).map(|i| {
            api_emit_ok(
                &gw,
                json!({"event": "api", "data": chunk * 12 + i, "rooms": ["user:u1"]}),
            )
        });
        join_all(emits).await;
    }
    // A batch: one pipeline, one PUBLISH per message.
    let batch: Vec<_> = (0..BATCH)
        .map(|i| json!({"event": "batch", "data": i, "rooms": ["user:u1"]}))
        .collect();
    let (status, v) = api_post(gw.url(), "/api/v1/emit/batch", json!({ "messages": batch })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["receivers"], json!([1, 1, 1, 1, 1]), "{v}");
    // N client events (each published upstream, acked with the count).
    for i in 0..N {
        let ack = node
            .emit_with_ack("u1", "from-client", vec![json!(i)], T)
            .await
            .unwrap();
        assert_eq!(ack[0]["ok"], json!(true), "{ack}");
    }
    // Every event came through Redis back to the client.
    for _ in 0..N {
        node.expect_event("u1", "api", T).await.unwrap();
    }
    for _ in 0..BATCH {
        node.expect_event("u1", "batch", T).await.unwrap();
    }

    let stats = redis.command_calls().unwrap();
    assert_eq!(
        calls(&redis, "publish") - publishes_before,
        N + BATCH + N,
        "{stats:?}"
    );
    assert_eq!(calls(&redis, "ping") - pings_before, 1, "{stats:?}");
    let text = metrics(&gw).await;
    assert_eq!(metric(&text, "switchboard_bus_up"), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "switchboard_bus_publish_up"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_bus_reports_up() {
    let gw = embedded_gateway(&[]).await;
    let text = metrics(&gw).await;
    assert_eq!(metric(&text, "switchboard_bus_up"), Some(1.0), "{text}");
}

/// The gateway's least-privilege ACL user: subscribe to the adapter's
/// channels, publish client events and responses, and the sid-owner
/// registry's keys (no PING: the start-up check then only warns).
const GATEWAY_USER: &str = "gateway on >gateway-secret resetchannels allchannels resetkeys ~socket.io-switchboard#* -@all +subscribe +psubscribe +publish +set +get +del";
/// The user API services and the CLI publish as.
const PUBLISHER_USER: &str =
    "publisher on >publisher-secret resetchannels &socket.io* -@all +publish +spublish";

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// A gateway over `rediss://` as the `gateway` ACL user: CA from a file,
/// user in the URL, password from `SWITCHBOARD_REDIS_PASSWORD`.
fn tls_gateway(server: &RedisServer, pki: &TestPki, ca: &Path, password: &str) -> GatewayOptions {
    base_opts()
        .redis(server.url().replace("rediss://", "rediss://gateway@"))
        .env("SWITCHBOARD_REDIS__TLS_CA_FILE", path(ca))
        .env(
            "SWITCHBOARD_REDIS__TLS_CERT_FILE",
            path(&pki.client_cert_file()),
        )
        .env(
            "SWITCHBOARD_REDIS__TLS_KEY_FILE",
            path(&pki.client_key_file()),
        )
        .env("SWITCHBOARD_REDIS_PASSWORD", password)
        .ready_timeout(Duration::from_secs(15))
}

/// Starts a gateway that must refuse to start; its exit and logs.
fn start_fails(opts: GatewayOptions) -> String {
    let mut gw = GatewayProcess::spawn(&opts).expect("spawn gateway");
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("the gateway exits");
    assert!(!status.success(), "{status:?}\n{}", gw.logs());
    gw.logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_acl_users_gateway_and_cli_deliver_and_refuse_clearly() {
    let pki = TestPki::generate().unwrap();
    let server = RedisServer::start_with(
        RedisOptions::default()
            .tls(&pki, true)
            .user(GATEWAY_USER)
            .user(PUBLISHER_USER),
    )
    .unwrap();
    let gw = start(tls_gateway(&server, &pki, &pki.ca_file(), "gateway-secret")).await;
    wait_ready(&gw, T).await;
    assert!(
        !gw.logs().contains("gateway-secret"),
        "the password reached the log:\n{}",
        gw.logs()
    );
    let node = node().await;
    connect(
        &node,
        "admin",
        &gw,
        ConnectOptions::new()
            .websocket_only()
            .token(token_role("42", "admin")),
    )
    .await;

    // The HTTP API publishes over TLS as the gateway user.
    api_emit_ok(
        &gw,
        json!({"event": "via-api", "data": 1, "rooms": ["role:admin"]}),
    )
    .await;
    assert_eq!(expect_once(&node, "admin", "via-api").await, vec![json!(1)]);

    // The CLI publishes as the publisher user: user in the URL, password
    // from the environment, TLS files as flags.
    let url = server.url().replace("rediss://", "rediss://publisher@");
    let (ca, cert, key) = (
        path(&pki.ca_file()),
        path(&pki.client_cert_file()),
        path(&pki.client_key_file()),
    );
    cli_then_client_event(
        &node,
        "admin",
        &[
            "--redis",
            &url,
            "--tls-ca-file",
            &ca,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "publish",
            "--role",
            "admin",
        ],
        &[("SWITCHBOARD_REDIS__PASSWORD", "publisher-secret")],
    )
    .await;

    // A CA that did not sign the server's certificate: no start, and why.
    let logs = start_fails(tls_gateway(
        &server,
        &pki,
        &pki.other_ca_file(),
        "gateway-secret",
    ));
    assert!(logs.contains("redis.tls_ca_file"), "{logs}");
    // A wrong password: no start, naming the keys to check, not the password.
    let logs = start_fails(tls_gateway(
        &server,
        &pki,
        &pki.ca_file(),
        "not-the-password",
    ));
    assert!(
        logs.contains("refused the credentials for user \"gateway\""),
        "{logs}"
    );
    assert!(logs.contains("redis.password"), "{logs}");
    assert!(!logs.contains("not-the-password"), "{logs}");
    // A CA file that is not a certificate: rejected with the config, exit 2.
    let junk = pki.dir().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let logs = start_fails(tls_gateway(&server, &pki, &junk, "gateway-secret"));
    assert!(logs.contains("`redis.tls_ca_file`"), "{logs}");
}

/// A gateway whose subscription is up but whose publishes Redis refuses
/// (its ACL user loses `PUBLISH`) is not ready: client events would not
/// reach the other instances. `/readyz` says why, `switchboard_bus_publish_up`
/// drops to 0, the log says so once; all come back when `PUBLISH` is granted
/// again, with no client traffic (`/readyz`'s own probe publish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_publishing_side_not_only_the_subscription() {
    let server =
        RedisServer::start_with(RedisOptions::default().user("gw on >gw-secret ~* &* +@all"))
            .unwrap();
    let gw = start(
        base_opts()
            .redis(server.url().replace("redis://", "redis://gw@"))
            .env("SWITCHBOARD_REDIS_PASSWORD", "gw-secret"),
    )
    .await;
    let ready = wait_ready(&gw, T).await;
    assert_eq!(ready["bus"]["publishing"], json!(true), "{ready}");
    let up = "switchboard_bus_publish_up";
    assert_eq!(metric(&metrics(&gw).await, up), Some(1.0));
    let node = node().await;
    connect_u1(&node, &gw).await;

    // The subscription stays up; every publish is refused.
    let revoked = server
        .command(&["ACL", "SETUSER", "gw", "-publish"])
        .unwrap();
    assert_eq!(revoked.as_str().as_deref(), Some("OK"), "{revoked:?}");
    let ack = node
        .emit_with_ack("u1", "up", vec![json!(1)], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["ok"], json!(false), "{ack}");
    let body = wait_readyz(&gw, 503, T).await;
    assert_eq!(body["ready"], json!(false), "{body}");
    assert_eq!(body["bus"]["subscribed"], json!(true), "{body}");
    assert_eq!(body["bus"]["publishing"], json!(false), "{body}");
    let reason = body["bus"]["publish_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no permissions to run the 'publish' command"),
        "{body}"
    );
    assert_eq!(metric(&metrics(&gw).await, up), Some(0.0));
    gw.wait_for_log("publishing to redis fails", T).unwrap();

    // Granted again: ready with no client event published meanwhile.
    server
        .command(&["ACL", "SETUSER", "gw", "+publish"])
        .unwrap();
    let ready = wait_ready(&gw, T).await;
    assert_eq!(ready["bus"]["publishing"], json!(true), "{ready}");
    assert_eq!(ready["bus"]["publish_error"], json!(null), "{ready}");
    assert_eq!(metric(&metrics(&gw).await, up), Some(1.0));
    gw.wait_for_log("publishing to redis works again", T)
        .unwrap();
    let ack = node
        .emit_with_ack("u1", "up", vec![json!(2)], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["ok"], json!(true), "{ack}");
}

/// Redis holding every write (`CLIENT PAUSE .. WRITE`, which holds
/// `PUBLISH` too) keeps the subscription up while publishes time out:
/// `/readyz`'s probe gives up after `redis.publish_timeout_ms` and says so,
/// and the gateway is ready again once the pause ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_publishes_that_time_out_while_subscribed() {
    let server = redis();
    let gw = redis_gateway(&server, &[("SWITCHBOARD_REDIS__PUBLISH_TIMEOUT_MS", "300")]).await;
    let paused = server
        .command(&["CLIENT", "PAUSE", "3000", "WRITE"])
        .unwrap();
    assert_eq!(paused.as_str().as_deref(), Some("OK"), "{paused:?}");
    let body = wait_readyz(&gw, 503, T).await;
    assert_eq!(body["bus"]["subscribed"], json!(true), "{body}");
    assert_eq!(
        body["bus"]["publish_error"],
        json!("redis did not answer within 300 ms"),
        "{body}"
    );
    assert_eq!(
        metric(&metrics(&gw).await, "switchboard_bus_publish_up"),
        Some(0.0)
    );
    let ready = wait_ready(&gw, T).await;
    assert_eq!(ready["bus"]["publishing"], json!(true), "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_under_a_steady_publish_rate_resumes_by_itself() {
    const INTERVAL: Duration = Duration::from_millis(20);
    let mut sentinels = SentinelSet::start().unwrap();
    let gw = start(
        base_opts()
            .env("SWITCHBOARD_REDIS__MODE", "sentinel")
            .env(
                "SWITCHBOARD_REDIS__SENTINELS",
                sentinels.sentinel_addrs().join(","),
            )
            .env("SWITCHBOARD_REDIS__MASTER_NAME", MASTER_NAME)
            .env("SWITCHBOARD_REDIS__PUBLISH_TIMEOUT_MS", "1000")
            // Retries at most 500 ms apart (default 3000): the subscriber
            // finds the new master soon after the sentinels name it.
            .env("SWITCHBOARD_REDIS__RECONNECT_MAX_MS", "500"),
    )
    .await;
    wait_ready(&gw, T).await;
    let node = node().await;
    connect_u1(&node, &gw).await;

    // Publish a numbered event every 20 ms through the gateway's API.
    let url = gw.url();
    let publisher = tokio::spawn(async move {
        let mut sent = Vec::new();
        let start = Instant::now();
        let mut next = start;
        for seq in 0u64.. {
            next += INTERVAL;
            tokio::time::sleep_until(next.into()).await;
            let body = json!({"event": "tick", "data": seq, "rooms": ["user:u1"]});
            let ok = api_post(url.clone(), "/api/v1/emit", body).await.0 == 200;
            sent.push((seq, start.elapsed(), ok));
            if start.elapsed() > Duration::from_secs(14) {
                break;
            }
        }
        sent
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let old = sentinels.kill_master().unwrap();
    let killed_at = Instant::now();
    let new =
        tokio::task::block_in_place(|| sentinels.wait_for_failover(old, Duration::from_secs(30)))
            .unwrap();
    let promoted_after = killed_at.elapsed();
    let sent = publisher.await.unwrap();

    // Everything the client got, in order of arrival.
    let mut received = Vec::new();
    while let Ok(args) = node
        .expect_event("u1", "tick", Duration::from_millis(1500))
        .await
    {
        received.push(args[0].as_u64().expect("a sequence number"));
    }
    let accepted: Vec<u64> = sent
        .iter()
        .filter(|(_, _, ok)| *ok)
        .map(|(s, _, _)| *s)
        .collect();
    let refused = sent.len() - accepted.len();
    // Nothing the API accepted twice; everything accepted after the gap arrived.
    let mut unique = received.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), received.len(), "duplicates: {received:?}");
    let last = *sent.last().map(|(s, _, _)| s).unwrap();
    assert!(
        received.contains(&last),
        "delivery did not resume: last {last} not received\n{}",
        gw.logs()
    );
    // The gap: the longest run of sequence numbers that did not arrive.
    let (mut gap, mut run) = (0u64, 0u64);
    for seq in 0..=last {
        if unique.binary_search(&seq).is_ok() {
            run = 0;
        } else {
            run += 1;
            gap = gap.max(run);
        }
    }
    let lost_accepted = accepted
        .iter()
        .filter(|s| unique.binary_search(s).is_err())
        .count();
    let gap_ms = gap * INTERVAL.as_millis() as u64;
    eprintln!(
        "sentinel failover: master {old} -> {new} promoted after {promoted_after:?}; {} publishes every {INTERVAL:?}, {refused} refused by the API (503), {lost_accepted} accepted but not delivered, longest gap {gap} events (~{gap_ms} ms)",
        sent.len()
    );
    // Pub/sub is at-most-once: what the new master accepted before the
    // gateway resubscribed there is lost; that window is short.
    assert!(
        lost_accepted < 50,
        "{lost_accepted} accepted publishes were not delivered"
    );
    assert!(
        gap_ms < promoted_after.as_millis() as u64 + 5_000,
        "delivery stopped for {gap_ms} ms, {promoted_after:?} after the kill"
    );
    let body = wait_ready(&gw, T).await;
    assert_eq!(body["bus"]["subscribed"], json!(true), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_with_classic_pubsub_delivers_api_cli_and_client_events() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0)).unwrap();
    let seed = cluster.addrs()[..1].join(",");
    let gw = start(
        base_opts()
            .env("SWITCHBOARD_REDIS__MODE", "cluster")
            .env("SWITCHBOARD_REDIS__NODES", seed.as_str()),
    )
    .await;
    wait_ready(&gw, T).await;
    let node = node().await;
    connect_u1(&node, &gw).await;

    // The HTTP API: PUBLISH on some node, forwarded over the cluster bus.
    api_emit_ok(&gw, json!({"event": "via-api", "data": 1, "users": ["u1"]})).await;
    assert_eq!(expect_once(&node, "u1", "via-api").await, vec![json!(1)]);
    // The CLI seeded with another node; client events go upstream.
    let seed2 = &cluster.addrs()[2];
    let args = [
        "--mode", "cluster", "--node", seed2, "publish", "--user", "u1",
    ];
    cli_then_client_event(&node, "u1", &args, &[]).await;
}
