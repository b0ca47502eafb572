//! Two gateways on one Redis, driven by the official
//! `@socket.io/redis-emitter`: one publish reaches every target socket on
//! both gateways exactly once, and the request channel (`socketsJoin`,
//! `socketsLeave`, `disconnectSockets`) acts on both.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard_testkit::node::{ConnectOptions, EmitterPublish, EmitterTarget, NodeDriver, Note};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_reaches_admins_on_both_gateways_exactly_once() {
    let redis = redis();
    let gw1 = redis_gateway(&redis, &[]).await;
    let gw2 = redis_gateway(&redis, &[]).await;
    let node = node().await;

    // Per gateway: two admins (websocket and polling), one viewer.
    let mut admins = Vec::new();
    let mut others = Vec::new();
    for (g, gw) in [("g1", &gw1), ("g2", &gw2)] {
        let a_ws = format!("{g}-admin-ws");
        let a_poll = format!("{g}-admin-poll");
        let viewer = format!("{g}-viewer");
        connect(
            &node,
            &a_ws,
            gw,
            ConnectOptions::new()
                .websocket_only()
                .token(token_role(&a_ws, "admin")),
        )
        .await;
        connect(
            &node,
            &a_poll,
            gw,
            ConnectOptions::new()
                .polling_only()
                .token(token_role(&a_poll, "admin")),
        )
        .await;
        connect(
            &node,
            &viewer,
            gw,
            ConnectOptions::new()
                .websocket_only()
                .token(token_role(&viewer, "viewer")),
        )
        .await;
        admins.extend([a_ws, a_poll]);
        others.push(viewer);
    }

    node.emitter_publish(
        EmitterPublish::new(redis.url(), "alert", vec![json!({"level": "high", "n": 1})])
            .to("role:admin"),
    )
    .await
    .unwrap();
    for a in &admins {
        let args = node
            .expect_event(a, "alert", T)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(args, vec![json!({"level": "high", "n": 1})], "{a}");
    }
    // Grace period: no duplicates anywhere, nothing for the viewers.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for a in &admins {
        let dups: Vec<_> = node
            .queued(a)
            .into_iter()
            .filter(|n| matches!(n, Note::Event { name, .. } if name == "alert"))
            .collect();
        assert!(dups.is_empty(), "{a} got duplicates: {dups:?}");
    }
    for o in &others {
        expect_none(&node, o, "alert").await;
    }

    // Each gateway counted its own deliveries only: 2 admins each.
    for gw in [&gw1, &gw2] {
        let text = metrics(gw).await;
        assert_eq!(
            metric(&text, "switchboard_messages_out_total"),
            Some(2.0),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_join_and_leave_across_gateways() {
    let redis = redis();
    let gw1 = redis_gateway(&redis, &[]).await;
    let gw2 = redis_gateway(&redis, &[]).await;
    let node = node().await;
    connect(
        &node,
        "a",
        &gw1,
        ConnectOptions::new().websocket_only().token(token("a")),
    )
    .await;
    connect(
        &node,
        "b",
        &gw2,
        ConnectOptions::new().websocket_only().token(token("b")),
    )
    .await;
    connect(
        &node,
        "c",
        &gw2,
        ConnectOptions::new().polling_only().token(token("c")),
    )
    .await;

    // Nobody is in "team" yet.
    node.emitter_publish(EmitterPublish::new(redis.url(), "before", vec![]).to("team"))
        .await
        .unwrap();
    for c in ["a", "b", "c"] {
        expect_none(&node, c, "before").await;
    }

    // a (gw1) and b (gw2) join "team" by emitter request.
    node.emitter_join(
        EmitterTarget::new(redis.url()).to("user:a").to("user:b"),
        &["team"],
    )
    .await
    .unwrap();
    // No wait: the driver returns once Redis ran the request's PUBLISH, so
    // it reaches each gateway's subscriber connection before the emit below,
    // and the gateway applies a request before it reads the next message.
    node.emitter_publish(EmitterPublish::new(redis.url(), "joined", vec![json!(1)]).to("team"))
        .await
        .unwrap();
    expect_once(&node, "a", "joined").await;
    expect_once(&node, "b", "joined").await;
    expect_none(&node, "c", "joined").await;

    // b leaves; a stays.
    node.emitter_leave(EmitterTarget::new(redis.url()).to("user:b"), &["team"])
        .await
        .unwrap();
    node.emitter_publish(EmitterPublish::new(redis.url(), "after-leave", vec![]).to("team"))
        .await
        .unwrap();
    expect_once(&node, "a", "after-leave").await;
    expect_none(&node, "b", "after-leave").await;
    expect_none(&node, "c", "after-leave").await;

    // Everyone joins (no target), then everyone except a leaves.
    node.emitter_join(EmitterTarget::new(redis.url()), &["all-hands"])
        .await
        .unwrap();
    node.emitter_leave(
        EmitterTarget::new(redis.url()).except("user:a"),
        &["all-hands"],
    )
    .await
    .unwrap();
    node.emitter_publish(EmitterPublish::new(redis.url(), "hands", vec![]).to("all-hands"))
        .await
        .unwrap();
    expect_once(&node, "a", "hands").await;
    expect_none(&node, "b", "hands").await;
    expect_none(&node, "c", "hands").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_sockets_across_gateways() {
    let redis = redis();
    let gw1 = redis_gateway(&redis, &[]).await;
    let gw2 = redis_gateway(&redis, &[]).await;
    let node = node().await;
    for (name, gw, role, opts) in [
        (
            "admin1",
            &gw1,
            "admin",
            ConnectOptions::new().websocket_only(),
        ),
        (
            "admin2",
            &gw2,
            "admin",
            ConnectOptions::new().polling_only(),
        ),
        (
            "viewer1",
            &gw1,
            "viewer",
            ConnectOptions::new().websocket_only(),
        ),
        ("viewer2", &gw2, "viewer", ConnectOptions::new()),
    ] {
        connect(&node, name, gw, opts.token(token_role(name, role))).await;
    }

    node.emitter_disconnect(EmitterTarget::new(redis.url()).to("role:admin"), false)
        .await
        .unwrap();
    for a in ["admin1", "admin2"] {
        let reason = node
            .expect_disconnect(a, T)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(reason, "io server disconnect", "{a}");
    }
    // Viewers are untouched and still receive events.
    for v in ["viewer1", "viewer2"] {
        expect_still_connected(&node, v).await;
    }
    node.emitter_publish(EmitterPublish::new(redis.url(), "still-here", vec![]))
        .await
        .unwrap();
    expect_once(&node, "viewer1", "still-here").await;
    expect_once(&node, "viewer2", "still-here").await;
    expect_none(&node, "admin1", "still-here").await;
    expect_none(&node, "admin2", "still-here").await;

    // close=true disconnects the rest, on both gateways.
    node.emitter_disconnect(EmitterTarget::new(redis.url()), true)
        .await
        .unwrap();
    for v in ["viewer1", "viewer2"] {
        let reason = node
            .expect_disconnect(v, T)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(reason, "io server disconnect", "{v}");
    }
    // Both gateways end up with no sockets.
    for gw in [&gw1, &gw2] {
        wait_metric(gw, "switchboard_sockets", T, |v| v == 0.0).await;
    }
}

/// Fails if `client` disconnects within [`QUIET`]; checks it is still
/// connected.
async fn expect_still_connected(node: &NodeDriver, client: &str) {
    tokio::time::sleep(QUIET).await;
    let queued = node.queued(client);
    assert!(
        !queued.iter().any(|n| matches!(n, Note::Disconnect { .. })),
        "{client} was disconnected: {queued:?}"
    );
    let state = node.client_state(client).await.unwrap();
    assert_eq!(state["connected"], json!(true), "{client}: {state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_namespace_fanout_requests_and_upstream() {
    use futures_util::StreamExt;
    let redis = redis();
    let env = [("SWITCHBOARD_SOCKETIO__NAMESPACES", "/,/admin")];
    let gw1 = redis_gateway(&redis, &env).await;
    let gw2 = redis_gateway(&redis, &env).await;
    let node = node().await;

    let upstream_client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = upstream_client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe("socket.io-upstream#/admin#")
        .await
        .unwrap();
    let mut upstream = pubsub.into_on_message();

    let t = token_role("boss", "admin");
    for (name, gw, path, opts) in [
        ("main1", &gw1, "", ConnectOptions::new().websocket_only()),
        (
            "admin1",
            &gw1,
            "/admin",
            ConnectOptions::new().websocket_only(),
        ),
        (
            "admin2",
            &gw2,
            "/admin",
            ConnectOptions::new().polling_only(),
        ),
    ] {
        node.connect(
            name,
            &format!("{}{path}", gw.url()),
            opts.token(t.clone()).timeout(Duration::from_secs(8)),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:#}\n{}", gw.logs()));
    }

    // The emitter on /admin reaches /admin sockets on both gateways only.
    node.emitter_publish(
        EmitterPublish::new(redis.url(), "nsp-event", vec![json!({"nsp": "admin"})])
            .nsp("/admin")
            .to("role:admin"),
    )
    .await
    .unwrap();
    expect_once(&node, "admin1", "nsp-event").await;
    expect_once(&node, "admin2", "nsp-event").await;
    expect_none(&node, "main1", "nsp-event").await;
    // And the emitter on / reaches only the main namespace.
    node.emitter_publish(EmitterPublish::new(redis.url(), "main-event", vec![]).to("role:admin"))
        .await
        .unwrap();
    expect_once(&node, "main1", "main-event").await;
    expect_none(&node, "admin1", "main-event").await;
    expect_none(&node, "admin2", "main-event").await;

    // Client events in /admin go to the /admin upstream channel.
    let ack = node
        .emit_with_ack("admin2", "from-admin", vec![json!(1)], T)
        .await
        .unwrap();
    assert_eq!(ack, json!([{"ok": true, "receivers": 1}]));
    let msg = tokio::time::timeout(T, upstream.next())
        .await
        .expect("upstream message")
        .expect("pubsub open");
    let env: serde_json::Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
    assert_eq!(env["nsp"], json!("/admin"), "{env}");
    assert_eq!(env["event"], json!("from-admin"), "{env}");
    assert_eq!(env["user"], json!("boss"), "{env}");

    // disconnectSockets on /admin leaves the main namespace alone.
    node.emitter_disconnect(EmitterTarget::new(redis.url()).nsp("/admin"), false)
        .await
        .unwrap();
    for c in ["admin1", "admin2"] {
        assert_eq!(
            node.expect_disconnect(c, T).await.unwrap(),
            "io server disconnect",
            "{c}"
        );
    }
    expect_still_connected(&node, "main1").await;
}
