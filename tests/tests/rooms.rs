//! Rooms from claims, targeted by the official `@socket.io/redis-emitter`:
//! the default `user:{sub}` / `role:{role}` templates (role string and roles
//! array), a custom template set, `except`, and socket ids as rooms.

mod common;

use common::*;
use serde_json::json;
use switchboard_testkit::{
    jwt::Claims,
    node::{ConnectOptions, EmitterPublish, NodeDriver},
    redis::RedisServer,
};

/// Publishes `name` to `to` (except `except`) and checks exactly `yes`
/// receive it once and `no` receive nothing.
async fn publish_and_check(
    node: &NodeDriver,
    redis: &RedisServer,
    name: &str,
    to: &[&str],
    except: &[&str],
    yes: &[&str],
    no: &[&str],
) {
    let mut p = EmitterPublish::new(redis.url(), name, vec![json!({"event": name})]);
    for r in to {
        p = p.to(*r);
    }
    for r in except {
        p = p.except(*r);
    }
    node.emitter_publish(p).await.unwrap();
    for c in yes {
        assert_eq!(
            expect_once(node, c, name).await,
            vec![json!({"event": name})],
            "{c}"
        );
    }
    for c in no {
        expect_none(node, c, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_user_and_role_rooms() {
    let redis = redis();
    let gw = redis_gateway(&redis, &[]).await;
    let node = node().await;
    // alice: role string; bob: roles array; carol: other role; dave: none.
    let clients = [
        ("alice", Claims::new().sub("alice").role("admin")),
        ("bob", Claims::new().sub("bob").roles(["admin", "ops"])),
        ("carol", Claims::new().sub("carol").role("viewer")),
        ("dave", Claims::new().sub("dave")),
    ];
    for (name, claims) in clients {
        connect(
            &node,
            name,
            &gw,
            ConnectOptions::new()
                .websocket_only()
                .token(claims.sign_hs256(SECRET)),
        )
        .await;
    }
    let all = ["alice", "bob", "carol", "dave"];
    let except =
        |yes: &[&str]| -> Vec<&str> { all.iter().copied().filter(|c| !yes.contains(c)).collect() };

    let yes = ["alice", "bob"];
    publish_and_check(
        &node,
        &redis,
        "admins",
        &["role:admin"],
        &[],
        &yes,
        &except(&yes),
    )
    .await;
    let yes = ["bob"];
    publish_and_check(
        &node,
        &redis,
        "ops",
        &["role:ops"],
        &[],
        &yes,
        &except(&yes),
    )
    .await;
    let yes = ["carol"];
    publish_and_check(
        &node,
        &redis,
        "viewers",
        &["role:viewer"],
        &[],
        &yes,
        &except(&yes),
    )
    .await;
    for user in all {
        let room = format!("user:{user}");
        let yes = [user];
        publish_and_check(&node, &redis, &room, &[&room], &[], &yes, &except(&yes)).await;
    }
    // Several rooms: the union, each socket once.
    let yes = ["alice", "bob", "dave"];
    publish_and_check(
        &node,
        &redis,
        "union",
        &["role:admin", "user:dave", "user:bob"],
        &[],
        &yes,
        &except(&yes),
    )
    .await;
    // A room nobody is in.
    publish_and_check(&node, &redis, "nobody", &["role:ghost"], &[], &[], &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_room_templates() {
    let redis = redis();
    let gw = redis_gateway(
        &redis,
        &[(
            "SWITCHBOARD_AUTH__ROOMS",
            "user:{sub},role_{role},company:{company_id}",
        )],
    )
    .await;
    let node = node().await;
    let clients = [
        (
            "a",
            Claims::new().sub("a").role("admin").claim("company_id", 7),
        ),
        (
            "b",
            Claims::new()
                .sub("b")
                .role("viewer")
                .claim("company_id", "7"),
        ),
        (
            "c",
            Claims::new()
                .sub("c")
                .roles(["admin", "billing"])
                .claim("company_id", 8),
        ),
        ("d", Claims::new().sub("d")),
    ];
    for (name, claims) in clients {
        connect(
            &node,
            name,
            &gw,
            ConnectOptions::new()
                .websocket_only()
                .token(claims.sign_hs256(SECRET)),
        )
        .await;
    }
    let all = ["a", "b", "c", "d"];
    let rest =
        |yes: &[&str]| -> Vec<&str> { all.iter().copied().filter(|c| !yes.contains(c)).collect() };

    let yes = ["a", "c"];
    publish_and_check(
        &node,
        &redis,
        "admins",
        &["role_admin"],
        &[],
        &yes,
        &rest(&yes),
    )
    .await;
    let yes = ["a", "b"];
    publish_and_check(&node, &redis, "co7", &["company:7"], &[], &yes, &rest(&yes)).await;
    let yes = ["c"];
    publish_and_check(&node, &redis, "co8", &["company:8"], &[], &yes, &rest(&yes)).await;
    let yes = ["c"];
    publish_and_check(
        &node,
        &redis,
        "billing",
        &["role_billing"],
        &[],
        &yes,
        &rest(&yes),
    )
    .await;
    let yes = ["d"];
    publish_and_check(&node, &redis, "user-d", &["user:d"], &[], &yes, &rest(&yes)).await;
    // The default role template is not in effect.
    publish_and_check(&node, &redis, "old-style", &["role:admin"], &[], &[], &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn except_excludes_rooms() {
    let redis = redis();
    let gw = redis_gateway(&redis, &[]).await;
    let node = node().await;
    for (name, role) in [("alice", "admin"), ("bob", "admin"), ("carol", "viewer")] {
        connect(
            &node,
            name,
            &gw,
            ConnectOptions::new()
                .websocket_only()
                .token(token_role(name, role)),
        )
        .await;
    }
    // Room minus a user.
    publish_and_check(
        &node,
        &redis,
        "admins-but-alice",
        &["role:admin"],
        &["user:alice"],
        &["bob"],
        &["alice", "carol"],
    )
    .await;
    // Broadcast minus a role.
    publish_and_check(
        &node,
        &redis,
        "all-but-admins",
        &[],
        &["role:admin"],
        &["carol"],
        &["alice", "bob"],
    )
    .await;
    // Except everyone's rooms: nobody.
    publish_and_check(
        &node,
        &redis,
        "none",
        &["role:admin"],
        &["role:admin"],
        &[],
        &["alice", "bob", "carol"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_socket_id() {
    let redis = redis();
    let gw = redis_gateway(&redis, &[]).await;
    let node = node().await;
    // Two sockets of the same user: the socket id picks exactly one.
    let one = connect(
        &node,
        "one",
        &gw,
        ConnectOptions::new().websocket_only().token(token("same")),
    )
    .await;
    let two = connect(
        &node,
        "two",
        &gw,
        ConnectOptions::new().polling_only().token(token("same")),
    )
    .await;
    assert_ne!(one.sid, two.sid);
    publish_and_check(
        &node,
        &redis,
        "to-one",
        &[&one.sid],
        &[],
        &["one"],
        &["two"],
    )
    .await;
    publish_and_check(
        &node,
        &redis,
        "to-two",
        &[&two.sid],
        &[],
        &["two"],
        &["one"],
    )
    .await;
    // The user room has both; except by socket id removes one.
    publish_and_check(
        &node,
        &redis,
        "user-but-one",
        &["user:same"],
        &[&one.sid],
        &["two"],
        &["one"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_targets_users_and_roles_in_embedded_mode() {
    let gw = embedded_gateway(&[]).await;
    let node = node().await;
    for (name, role) in [("alice", "admin"), ("bob", "viewer")] {
        connect(
            &node,
            name,
            &gw,
            ConnectOptions::new()
                .websocket_only()
                .token(token_role(name, role)),
        )
        .await;
    }
    api_emit_ok(&gw, json!({"event": "r", "data": 1, "roles": ["admin"]})).await;
    expect_once(&node, "alice", "r").await;
    expect_none(&node, "bob", "r").await;
    api_emit_ok(&gw, json!({"event": "u", "data": 1, "users": ["bob"]})).await;
    expect_once(&node, "bob", "u").await;
    expect_none(&node, "alice", "u").await;
    api_emit_ok(
        &gw,
        json!({"event": "b", "data": 1, "broadcast": true, "except": ["role:viewer"]}),
    )
    .await;
    expect_once(&node, "alice", "b").await;
    expect_none(&node, "bob", "b").await;
}
