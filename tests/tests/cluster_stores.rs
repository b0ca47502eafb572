//! What the gateway keeps in Redis besides pub/sub, on a real 3-master
//! Redis Cluster (issue #14 items 3 and 5), with official socket.io-client
//! clients through the Node driver:
//!
//! * Admin UI login sessions (`socket.io-admin#<id>`, one key each, single-key
//!   `SET EX` / `EXISTS`, so any slot is fine and no hash tag is needed),
//!   with sharded pub/sub: a session id handed out by one gateway logs in
//!   through another, and the UI on one gateway sees the other's sockets
//!   and stats over the sharded bus.
//! * The streams bus (`redis.bus = "streams"`): entries `XADD`ed by the
//!   broadcaster and by one gateway's API reach sockets on both gateways,
//!   and connection state recovery (the session record `sio:session:<pid>`,
//!   one key, `MULTI GET DEL`) restores a socket and replays what it missed.

mod admin_support;
mod common;

use admin_support::*;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

use switchboard_broadcaster::{
    Broadcaster, BroadcasterConfig, Mode, RedisSettings, StreamsOptions,
};
use switchboard_testkit::{
    GatewayProcess,
    cluster::RedisCluster,
    node::{ConnectOptions, NodeDriver, Note},
};

/// A gateway with the Admin UI on `cluster`, sharded pub/sub in dynamic mode.
async fn admin_gateway(cluster: &RedisCluster, hash: &str) -> GatewayProcess {
    let mut opts = base_opts()
        .env("SWITCHBOARD_REDIS__MODE", "cluster")
        .env("SWITCHBOARD_REDIS__NODES", cluster.addrs()[0].as_str())
        .env("SWITCHBOARD_REDIS__PUBSUB", "sharded")
        .env("SWITCHBOARD_REDIS__SUBSCRIPTION", "dynamic");
    for (k, v) in admin_env(hash) {
        opts = opts.env(k, v);
    }
    let gw = start(opts).await;
    wait_ready(&gw, T).await;
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_session_from_one_gateway_logs_in_through_another_on_a_cluster() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0)).unwrap();
    let hash = password_hash();
    let gw_a = admin_gateway(&cluster, &hash).await;
    let gw_b = admin_gateway(&cluster, &hash).await;
    let d = node().await;
    // An app socket on `b`, before the UI logs in through `a`.
    let bob = d
        .connect(
            "bob",
            &gw_b.url(),
            ConnectOptions::new().token(token("bob")),
        )
        .await
        .unwrap();

    d.connect("ui", &format!("{}/admin", gw_a.url()), ui_opts(login()))
        .await
        .unwrap();
    let session = d.expect_event("ui", "session", T).await.unwrap();
    let session = session[0].as_str().expect("session id").to_string();
    assert_eq!(session.len(), 16, "{session}");
    // Every socket of the fleet, `b`'s included (fetched over the sharded bus).
    let all = d.expect_event("ui", "all_sockets", T).await.unwrap();
    assert!(
        all[0]
            .as_array()
            .is_some_and(|all| all.iter().any(|s| s["id"] == bob.sid)),
        "bob ({}) missing from {all:?}",
        bob.sid
    );

    // The UI on `a` hears `b`'s stats, with its one app socket
    // (before any UI connects there: those count as clients too).
    let id_b = server_id(&gw_b);
    d.take_note("ui", T * 2, |n| {
        matches!(n, Note::Event { name, args } if name == "server_stats"
            && args[0]["serverId"] == id_b && args[0]["clientsCount"] == 1)
    })
    .await
    .unwrap_or_else(|e| panic!("server_stats of {id_b}: {e:#}"));

    // The session key lives on the master that owns its slot, for 24 h.
    let key = format!("socket.io-admin#{session}");
    let ttl = tokio::task::block_in_place(|| {
        let owner = cluster.slot_owner(cluster.key_slot(&key)?)?;
        cluster
            .node(owner)
            .ok_or_else(|| anyhow::anyhow!("no node on port {owner}"))?
            .command(&["TTL", &key])
    })
    .unwrap();
    let ttl = ttl.as_int().unwrap_or(-2);
    assert!((86_000..=86_400).contains(&ttl), "TTL of {key}: {ttl}");

    // The session id logs in through the other gateway, without a password.
    d.connect(
        "ui2",
        &format!("{}/admin", gw_b.url()),
        ui_opts(json!({"sessionId": session})),
    )
    .await
    .expect("session id accepted by the other gateway");
    d.expect_event("ui2", "config", T).await.unwrap();
    // A made-up one is refused there.
    let refused = d
        .connect(
            "ui3",
            &format!("{}/admin", gw_b.url()),
            ui_opts(json!({"sessionId": "0123456789abcdef"})),
        )
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("invalid credentials"),
        "{refused:#}"
    );
}

/// A gateway on `cluster` with the streams bus and connection state recovery.
async fn streams_gateway(cluster: &RedisCluster) -> GatewayProcess {
    let gw = start(
        base_opts()
            .env("SWITCHBOARD_REDIS__MODE", "cluster")
            .env("SWITCHBOARD_REDIS__NODES", cluster.addrs()[1].as_str())
            .env("SWITCHBOARD_REDIS__BUS", "streams")
            .env("SWITCHBOARD_RECOVERY__ENABLED", "true")
            .env("SWITCHBOARD_RECOVERY__MAX_DISCONNECTION_MS", "60000"),
    )
    .await;
    wait_ready(&gw, T).await;
    gw
}

/// Takes the next connect note of `client`: `socket.recovered`.
async fn next_connect(d: &NodeDriver, client: &str) -> bool {
    match d
        .take_note(client, T, |n| matches!(n, Note::Connect { .. }))
        .await
        .unwrap_or_else(|e| panic!("{client} did not (re)connect: {e:#}"))
    {
        Note::Connect { recovered, .. } => recovered,
        other => unreachable!("{other:?}"),
    }
}

/// `news` `{n}` with its stream offset (the last argument): the offset.
async fn expect_news(d: &NodeDriver, client: &str, n: u64) -> String {
    let args = d
        .expect_event(client, "news", T)
        .await
        .unwrap_or_else(|e| panic!("{client}: news {n}: {e:#}"));
    assert_eq!(args.first(), Some(&json!({ "n": n })), "{client}: {args:?}");
    args.get(1)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("news {n} without its offset: {args:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_bus_and_recovery_work_on_a_cluster() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0)).unwrap();
    let gw_a = streams_gateway(&cluster).await;
    let gw_b = streams_gateway(&cluster).await;
    let bc = Broadcaster::from_config(BroadcasterConfig {
        redis: RedisSettings {
            mode: Mode::Cluster,
            nodes: vec![cluster.addrs()[2].clone()],
            ..Default::default()
        },
        streams: Some(StreamsOptions::default()),
        ..Default::default()
    })
    .expect("broadcaster");
    let d = node().await;
    // Websocket only, so a session stays on its gateway; a fixed
    // reconnection delay, long enough to publish while u1 is away.
    let opts = |user: &str| {
        ConnectOptions::new()
            .websocket_only()
            .token(token(user))
            .reconnection(true)
            .opt("reconnectionDelay", json!(1500))
            .opt("reconnectionDelayMax", json!(1500))
            .opt("randomizationFactor", json!(0))
    };
    d.connect("c1", &gw_a.url(), opts("u1")).await.unwrap();
    assert!(
        !next_connect(&d, "c1").await,
        "a first connect is not a recovery"
    );
    d.connect("c2", &gw_b.url(), opts("u2")).await.unwrap();
    next_connect(&d, "c2").await;

    // The broadcaster's XADD and gateway b's API both reach u1 on gateway a.
    let published = bc
        .to_user("u1")
        .emit("news", &json!({"n": 1}))
        .await
        .expect("XADD on the cluster");
    let id = published.stream_id.expect("a stream entry id");
    assert_eq!(expect_news(&d, "c1", 1).await, id);
    api_emit_ok(
        &gw_b,
        json!({"event": "news", "data": {"n": 2}, "users": ["u1"]}),
    )
    .await;
    expect_news(&d, "c1", 2).await;
    // And gateway a's API reaches u2 on gateway b.
    api_emit_ok(
        &gw_a,
        json!({"event": "news", "data": {"n": 1}, "users": ["u2"]}),
    )
    .await;
    expect_news(&d, "c2", 1).await;

    // u1's network goes away; an event is published while it is gone; the
    // client reconnects to the same gateway and is recovered, the missed
    // event replayed from the stream.
    d.request("dropTransport", json!({ "client": "c1" }), T)
        .await
        .expect("drop transport");
    d.expect_disconnect("c1", T).await.expect("disconnect seen");
    // The session record is written on the disconnect: wait for it before
    // publishing, so the replay has a stored offset to start from.
    tokio::time::sleep(Duration::from_millis(300)).await;
    bc.to_user("u1")
        .emit("news", &json!({"n": 3}))
        .await
        .expect("XADD while u1 is away");
    assert!(
        next_connect(&d, "c1").await,
        "u1's session was not recovered"
    );
    expect_news(&d, "c1", 3).await;
}
