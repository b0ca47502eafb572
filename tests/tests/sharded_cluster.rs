//! Sharded pub/sub on a real 3-master Redis Cluster (issue #14 item 3):
//! two gateways with `redis.pubsub = "sharded"` deliver broadcasts to
//! `role:admin` and `user:u1` exactly once on both, in dynamic mode (one
//! shard channel per local room, followed across a slot migration) and in
//! static mode, and a Node server on `@socket.io/redis-adapter`'s
//! `createShardedAdapter` in the same cluster exchanges broadcasts (and
//! `fetchSockets`) with them. Official socket.io-client clients through the
//! Node driver; the cluster from the testkit. Also: the sid-owner registry
//! (one hash, single-key commands) works on the cluster, so a polling
//! request that lands on the wrong gateway is forwarded to its owner.

mod common;
mod hardening_support;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use switchboard_testkit::{
    GatewayProcess,
    cluster::RedisCluster,
    gateway::bin_path,
    node::{ConnectOptions, NodeDriver, ServerTarget, StartServer},
};

/// Starts a gateway on `cluster` in sharded mode with `subscription`.
async fn sharded_gateway(cluster: &RedisCluster, subscription: &str) -> GatewayProcess {
    let gw = start(
        base_opts()
            .env("SWITCHBOARD_REDIS__MODE", "cluster")
            // One seed: the rest of the cluster is discovered.
            .env("SWITCHBOARD_REDIS__NODES", cluster.addrs()[0].as_str())
            .env("SWITCHBOARD_REDIS__PUBSUB", "sharded")
            .env("SWITCHBOARD_REDIS__SUBSCRIPTION", subscription),
    )
    .await;
    wait_ready(&gw, T).await;
    gw
}

/// Subscribers of shard channel `channel` on the master that owns it.
fn shard_subscribers(cluster: &RedisCluster, channel: &str) -> i64 {
    let slot = cluster.key_slot(channel).unwrap();
    let owner = cluster.slot_owner(slot).unwrap();
    cluster
        .node(owner)
        .unwrap()
        .command(&["PUBSUB", "SHARDNUMSUB", channel])
        .unwrap()
        .as_array()
        .unwrap()[1]
        .as_int()
        .unwrap()
}

/// Waits until `channel`'s owner counts `n` subscribers.
async fn wait_shard_subscribers(cluster: &RedisCluster, channel: &str, n: i64) {
    let deadline = Instant::now() + T;
    loop {
        let now = tokio::task::block_in_place(|| shard_subscribers(cluster, channel));
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel}: {now} shard subscribers on its owner, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects `admin` (role admin) and `u1` (user u1) websocket clients to
/// `gw`, named `<prefix>_admin` and `<prefix>_u1`.
async fn connect_pair(node: &NodeDriver, gw: &GatewayProcess, prefix: &str) {
    let admin = format!("{prefix}_admin");
    let opts = ConnectOptions::new()
        .websocket_only()
        .token(token_role(&admin, "admin"));
    connect(node, &admin, gw, opts).await;
    let opts = ConnectOptions::new().websocket_only().token(token("u1"));
    connect(node, &format!("{prefix}_u1"), gw, opts).await;
}

/// Publishes `event` to role `admin` and to user `u1` through `gw`'s API,
/// and checks each reaches exactly the clients of that room, once.
async fn roles_and_users_once(node: &NodeDriver, gw: &GatewayProcess, event: &str) {
    let to_admin = format!("{event}-admin");
    api_emit_ok(
        gw,
        json!({"event": to_admin, "data": 1, "roles": ["admin"]}),
    )
    .await;
    let to_u1 = format!("{event}-u1");
    api_emit_ok(gw, json!({"event": to_u1, "data": 2, "users": ["u1"]})).await;
    for prefix in ["a", "b"] {
        let admin = format!("{prefix}_admin");
        let u1 = format!("{prefix}_u1");
        assert_eq!(expect_once(node, &admin, &to_admin).await, vec![json!(1)]);
        assert_eq!(expect_once(node, &u1, &to_u1).await, vec![json!(2)]);
        expect_none(node, &admin, &to_u1).await;
        expect_none(node, &u1, &to_admin).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_mode_delivers_once_across_a_slot_migration_and_with_a_node_server() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0)).unwrap();
    let gw_a = sharded_gateway(&cluster, "dynamic").await;
    let gw_b = sharded_gateway(&cluster, "dynamic").await;
    let node = node().await;
    connect_pair(&node, &gw_a, "a").await;
    connect_pair(&node, &gw_b, "b").await;

    // Each gateway subscribed each room's channel on the master owning it.
    let admin_channel = "socket.io#/#role:admin#";
    let u1_channel = "socket.io#/#user:u1#";
    wait_shard_subscribers(&cluster, admin_channel, 2).await;
    wait_shard_subscribers(&cluster, u1_channel, 2).await;
    wait_shard_subscribers(&cluster, "socket.io#/#", 2).await;
    roles_and_users_once(&node, &gw_a, "before").await;

    // Move the admin room's slot to another master: both gateways follow it.
    let slot = cluster.key_slot(admin_channel).unwrap();
    let from = cluster.slot_owner(slot).unwrap();
    let to = cluster.other_master(from).unwrap();
    let moved = Instant::now();
    tokio::task::block_in_place(|| cluster.migrate_slot(slot, to)).unwrap();
    wait_shard_subscribers(&cluster, admin_channel, 2).await;
    eprintln!(
        "FIGURES sharded: both gateways subscribed {admin_channel} on its new owner {:?} after the migration started",
        moved.elapsed()
    );
    let old_owner = cluster.node(from).unwrap();
    let on_old = tokio::task::block_in_place(|| {
        old_owner
            .command(&["PUBSUB", "SHARDNUMSUB", admin_channel])
            .unwrap()
    });
    assert_eq!(on_old.as_array().unwrap()[1].as_int(), Some(0));
    roles_and_users_once(&node, &gw_b, "after").await;

    // The last local member leaving unsubscribes the room's channel.
    node.disconnect("a_u1").await.unwrap();
    wait_shard_subscribers(&cluster, u1_channel, 1).await;
    let opts = ConnectOptions::new().websocket_only().token(token("u1"));
    connect(&node, "a_u1", &gw_a, opts).await;
    wait_shard_subscribers(&cluster, u1_channel, 2).await;

    // A Node server on createShardedAdapter (dynamic) in the same cluster.
    let port = node
        .start_server_with(StartServer {
            cluster_nodes: vec![format!("redis://{}", cluster.addrs()[1])],
            sharded: Some("dynamic".into()),
            ..StartServer::default()
        })
        .await
        .unwrap();
    let node_url = format!("http://127.0.0.1:{port}");
    let opts = ConnectOptions::new()
        .websocket_only()
        .auth(json!({"rooms": ["role:admin"]}));
    node.connect("n_admin", &node_url, opts).await.unwrap();
    wait_shard_subscribers(&cluster, admin_channel, 3).await;
    wait_shard_subscribers(&cluster, "socket.io#/#", 3).await;

    // Gateway API -> the room channel only: the u1 channel has the two
    // gateways (the namespace channel has the Node server too).
    let r = api_emit_ok(&gw_a, json!({"event": "g2u1", "data": 0, "users": ["u1"]})).await;
    assert_eq!(r["receivers"], json!(2), "{r}");
    for client in ["a_u1", "b_u1"] {
        assert_eq!(expect_once(&node, client, "g2u1").await, vec![json!(0)]);
    }
    let r = api_emit_ok(
        &gw_a,
        json!({"event": "g2n", "data": 3, "roles": ["admin"]}),
    )
    .await;
    assert_eq!(r["receivers"], json!(3), "{r}");
    for client in ["a_admin", "b_admin", "n_admin"] {
        assert_eq!(expect_once(&node, client, "g2n").await, vec![json!(3)]);
    }
    // Node server -> gateways, to a room and to everyone.
    node.server_emit(
        ServerTarget {
            port,
            to: vec!["role:admin".into()],
            ..ServerTarget::default()
        },
        "n2g",
        vec![json!({"x": 4})],
    )
    .await
    .unwrap();
    for client in ["a_admin", "b_admin", "n_admin"] {
        assert_eq!(
            expect_once(&node, client, "n2g").await,
            vec![json!({"x": 4})]
        );
    }
    expect_none(&node, "a_u1", "n2g").await;
    node.server_emit(
        ServerTarget {
            port,
            ..ServerTarget::default()
        },
        "n2all",
        vec![json!(5)],
    )
    .await
    .unwrap();
    for client in ["a_admin", "a_u1", "b_admin", "b_u1", "n_admin"] {
        assert_eq!(expect_once(&node, client, "n2all").await, vec![json!(5)]);
    }
    // fetchSockets from Node: the gateways answer on its shard channel.
    let sockets = node
        .server_fetch_sockets(ServerTarget {
            port,
            to: vec!["role:admin".into()],
            ..ServerTarget::default()
        })
        .await
        .unwrap();
    assert_eq!(sockets.len(), 3, "{sockets:?}");

    // The `switchboard` CLI with --sharded: the sharded adapter's message
    // on the room's channel, which Node servers and gateways both act on
    // (the official emitter cannot reach this fleet).
    let out = std::process::Command::new(bin_path("switchboard").unwrap())
        .args(["--mode", "cluster", "--node", cluster.addrs()[2].as_str()])
        .args([
            "publish", "--role", "admin", "--event", "via-cli", "--data", "9",
        ])
        .args(["--sharded", "dynamic", "--require-delivery"])
        .env_remove("SWITCHBOARD_REDIS_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for client in ["a_admin", "b_admin", "n_admin"] {
        assert_eq!(expect_once(&node, client, "via-cli").await, vec![json!(9)]);
    }
    expect_none(&node, "a_u1", "via-cli").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mode_delivers_once_on_the_namespace_channel_with_a_node_server() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0)).unwrap();
    let gw_a = sharded_gateway(&cluster, "static").await;
    let gw_b = sharded_gateway(&cluster, "static").await;
    let node = node().await;
    connect_pair(&node, &gw_a, "a").await;
    connect_pair(&node, &gw_b, "b").await;
    wait_shard_subscribers(&cluster, "socket.io#/#", 2).await;
    roles_and_users_once(&node, &gw_a, "static").await;
    // No room channels in static mode.
    assert_eq!(
        tokio::task::block_in_place(|| shard_subscribers(&cluster, "socket.io#/#role:admin#")),
        0
    );

    let port = node
        .start_server_with(StartServer {
            cluster_nodes: vec![format!("redis://{}", cluster.addrs()[2])],
            sharded: Some("static".into()),
            ..StartServer::default()
        })
        .await
        .unwrap();
    let opts = ConnectOptions::new()
        .websocket_only()
        .auth(json!({"rooms": ["user:u1"]}));
    node.connect("n_u1", &format!("http://127.0.0.1:{port}"), opts)
        .await
        .unwrap();
    wait_shard_subscribers(&cluster, "socket.io#/#", 3).await;
    let r = api_emit_ok(&gw_b, json!({"event": "g2n", "data": 6, "users": ["u1"]})).await;
    assert_eq!(r["receivers"], json!(3), "{r}");
    for client in ["a_u1", "b_u1", "n_u1"] {
        assert_eq!(expect_once(&node, client, "g2n").await, vec![json!(6)]);
    }
    node.server_emit(
        ServerTarget {
            port,
            to: vec!["user:u1".into()],
            ..ServerTarget::default()
        },
        "n2g",
        vec![json!(7)],
    )
    .await
    .unwrap();
    for client in ["a_u1", "b_u1", "n_u1"] {
        assert_eq!(expect_once(&node, client, "n2g").await, vec![json!(7)]);
    }
    expect_none(&node, "a_admin", "n2g").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_requests_are_forwarded_between_gateways_on_a_cluster() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0)).unwrap();
    let a = sharded_gateway(&cluster, "dynamic").await;
    let b = sharded_gateway(&cluster, "dynamic").await;
    // Each gateway's directory holds both: the registry hash lives on the
    // master owning its slot, reached from either gateway.
    for gw in [&a, &b] {
        wait_metric(gw, "switchboard_peer_directory_entries", T, |v| v == 2.0).await;
    }
    let peers = tokio::task::block_in_place(|| {
        let key = "socket.io-switchboard#peers";
        let owner = cluster.slot_owner(cluster.key_slot(key).unwrap()).unwrap();
        cluster
            .node(owner)
            .unwrap()
            .command(&["HLEN", key])
            .unwrap()
    });
    assert_eq!(peers.as_int(), Some(2), "{peers:?}");

    // A polling session on `a`, every later request sent to `b`.
    let sid = hardening_support::polling_connected(a.port(), &token("u1"))
        .await
        .unwrap();
    let poll = tokio::spawn({
        let (port, sid) = (b.port(), sid.clone());
        async move { hardening_support::polling_get(port, &sid).await }
    });
    // Published through `b`'s API: SPUBLISH on user:u1's shard channel,
    // which `a` subscribed when u1 connected there.
    wait_shard_subscribers(&cluster, "socket.io#/#user:u1#", 1).await;
    api_emit_ok(&b, json!({"event": "fwd", "data": 8, "users": ["u1"]})).await;
    let (status, body) = tokio::time::timeout(T, poll)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"42["fwd",8]"#), "{body}");
    let r = hardening_support::polling_post(b.port(), &sid, b"41")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Reads a gateway's utime + stime in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the
    // 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// What Redis sent one gateway, all subscription kinds.
async fn bus_received(gw: &GatewayProcess) -> (f64, f64) {
    let text = metrics(gw).await;
    let sum = |name: &str| -> f64 {
        ["channel", "pattern", "shard"]
            .iter()
            .map(|k| metric_or_zero(&text, &format!("{name}{{subscription=\"{k}\"}}")))
            .sum()
    };
    (
        sum("switchboard_bus_received_total"),
        sum("switchboard_bus_received_bytes_total"),
    )
}

/// CPU seconds (user + sys) every node of the cluster has used so far.
fn redis_cpu_secs(cluster: &RedisCluster) -> f64 {
    cluster
        .nodes()
        .iter()
        .filter_map(|n| n.command(&["INFO", "cpu"]).ok()?.as_str())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| {
                    let (k, v) = l.trim().split_once(':')?;
                    matches!(k, "used_cpu_user" | "used_cpu_sys").then(|| v.parse::<f64>().ok())?
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Issue #14 item 6 at a small size (`bench/run.sh shardtraffic`): N
/// gateways on a 3-master cluster, U users each (one websocket per user,
/// in `user:<id>`), E per-user events published through one gateway's API;
/// per gateway, the messages and payload bytes Redis sent it and the CPU
/// it spent, in classic, sharded-static and sharded-dynamic modes. Sizes:
/// `SHARD_GATEWAYS` (3), `SHARD_USERS_PER_GATEWAY` (1000),
/// `SHARD_EVENTS_PER_USER` (2). Prints `TRAFFIC` lines; docs/scaling.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: bench/run.sh shardtraffic"]
async fn bus_traffic_per_gateway_by_pubsub_mode() {
    let gateways = env_usize("SHARD_GATEWAYS", 3);
    let users = env_usize("SHARD_USERS_PER_GATEWAY", 1000);
    let per_user = env_usize("SHARD_EVENTS_PER_USER", 2);
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0)).unwrap();
    // ~100 bytes of data per event, as a small notification.
    let data = json!({"kind": "ticket_updated", "id": 123456, "title": "a short notification title", "n": 0});
    for (mode, pubsub, subscription) in [
        ("classic", "classic", "dynamic"),
        ("sharded-static", "sharded", "static"),
        ("sharded-dynamic", "sharded", "dynamic"),
    ] {
        let mut gws = Vec::new();
        for _ in 0..gateways {
            let gw = start(
                base_opts()
                    .env("SWITCHBOARD_LOG_LEVEL", "warn")
                    .env("SWITCHBOARD_REDIS__MODE", "cluster")
                    .env("SWITCHBOARD_REDIS__NODES", cluster.addrs()[0].as_str())
                    .env("SWITCHBOARD_REDIS__PUBSUB", pubsub)
                    .env("SWITCHBOARD_REDIS__SUBSCRIPTION", subscription)
                    .env("SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP", "0")
                    .env("SWITCHBOARD_LIMITS__CONNECTS_PER_SEC", "0")
                    .env("SWITCHBOARD_LIMITS__MAX_SESSIONS", "0"),
            )
            .await;
            wait_ready(&gw, T).await;
            gws.push(gw);
        }
        let mut clients = Vec::new();
        for (g, gw) in gws.iter().enumerate() {
            let live = hardening_support::connect_many(gw.port(), users, 64, |i| {
                token(&format!("g{g}u{i}"))
            })
            .await
            .unwrap();
            clients.extend(live);
        }
        if subscription == "dynamic" && pubsub == "sharded" {
            for gw in &gws {
                wait_metric(gw, "switchboard_bus_shard_room_channels", T, |v| {
                    v == users as f64
                })
                .await;
            }
        }
        let before: Vec<_> = futures_util::future::join_all(gws.iter().map(bus_received)).await;
        let cpu_before: Vec<u64> = gws.iter().map(|g| cpu_ticks(g.pid().unwrap())).collect();
        let redis_before = tokio::task::block_in_place(|| redis_cpu_secs(&cluster));
        let total = gateways * users * per_user;
        let started = Instant::now();
        let mut batch = Vec::new();
        for round in 0..per_user {
            for g in 0..gateways {
                for i in 0..users {
                    let mut d = data.clone();
                    d["n"] = json!(round);
                    batch.push(json!({"event": "tick", "data": d, "users": [format!("g{g}u{i}")]}));
                    if batch.len() == 1000 {
                        let body = json!({ "messages": std::mem::take(&mut batch) });
                        let (status, v) = api_post(gws[0].url(), "/api/v1/emit/batch", body).await;
                        assert_eq!(status, 200, "{v}");
                    }
                }
            }
        }
        if !batch.is_empty() {
            let (status, v) = api_post(
                gws[0].url(),
                "/api/v1/emit/batch",
                json!({ "messages": batch }),
            )
            .await;
            assert_eq!(status, 200, "{v}");
        }
        // Every event delivered once.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got: usize = clients
                .iter()
                .map(|c| c.seen.lock().unwrap().events.len())
                .sum();
            if got >= total {
                assert_eq!(got, total, "{mode}: duplicates");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{mode}: {got} of {total} delivered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let elapsed = started.elapsed();
        let after: Vec<_> = futures_util::future::join_all(gws.iter().map(bus_received)).await;
        let redis_ms =
            (tokio::task::block_in_place(|| redis_cpu_secs(&cluster)) - redis_before) * 1000.0;
        eprintln!(
            "TRAFFIC mode={mode} redis_cpu_ms_all_nodes={redis_ms:.0} events={total} (includes the API's publishes and the cluster bus)"
        );
        let tick_ms = 1000 / 100; // USER_HZ
        for (g, gw) in gws.iter().enumerate() {
            let msgs = after[g].0 - before[g].0;
            let bytes = after[g].1 - before[g].1;
            let cpu_ms = (cpu_ticks(gw.pid().unwrap()) - cpu_before[g]) * tick_ms;
            eprintln!(
                "TRAFFIC mode={mode} gateways={gateways} connections={} events={total} gateway={g} redis_msgs={msgs} redis_payload_bytes={bytes} msgs_per_event={:.3} cpu_ms={cpu_ms} wall_ms={}",
                gateways * users,
                msgs / total as f64,
                elapsed.as_millis()
            );
        }
        drop(clients);
    }
}
