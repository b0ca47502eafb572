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
