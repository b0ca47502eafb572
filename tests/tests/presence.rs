//! Presence across gateways sharing one Redis (issue #12), with the
//! official socket.io-client: online/offline announced exactly once per
//! transition fleet-wide, a second tab announcing nothing, the HTTP
//! queries, and a SIGKILLed gateway's users announced offline exactly once
//! within `ttl_s` + one refresh period.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use switchboard_broadcaster::Broadcaster;
use switchboard_testkit::{
    GatewayProcess,
    jwt::Claims,
    node::{ConnectOptions, NodeDriver, Note},
    redis::RedisServer,
};

/// Presence TTL of these tests (refreshed every second).
const TTL_S: u64 = 3;

fn company_token(sub: &str, company: &str) -> String {
    Claims::new()
        .sub(sub)
        .claim("company_id", company)
        .claim("name", format!("User {sub}"))
        .sign_hs256(SECRET)
}

/// A Redis gateway that announces online/offline to `company:{company_id}`
/// (and puts every socket in that room, so watchers hear them).
async fn presence_gateway(redis: &RedisServer, extra: &[(&str, &str)]) -> GatewayProcess {
    let ttl = TTL_S.to_string();
    let mut env = vec![
        ("SWITCHBOARD_AUTH__ROOMS", "user:{sub},company:{company_id}"),
        ("SWITCHBOARD_PRESENCE__ONLINE_ROOMS", "company:{company_id}"),
        ("SWITCHBOARD_PRESENCE__CLAIMS", "name"),
        ("SWITCHBOARD_PRESENCE__TTL_S", ttl.as_str()),
    ];
    env.extend_from_slice(extra);
    redis_gateway(redis, &env).await
}

async fn connect_user(
    node: &NodeDriver,
    name: &str,
    gw: &GatewayProcess,
    sub: &str,
    company: &str,
) {
    connect(
        node,
        name,
        gw,
        ConnectOptions::new()
            .websocket_only()
            .reconnection(false)
            .token(company_token(sub, company)),
    )
    .await;
}

/// Takes every `event` note about `user` that `client` has or receives
/// within `window`; returns their payloads.
async fn collect(
    node: &NodeDriver,
    client: &str,
    event: &str,
    user: &str,
    window: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        let note = node
            .take_note(client, left, |n| {
                matches!(n, Note::Event { name, args } if name == event && args.first().is_some_and(|a| a["user"] == json!(user)))
            })
            .await;
        match note {
            Ok(Note::Event { args, .. }) => out.push(args[0].clone()),
            _ => return out,
        }
    }
}

/// Waits for exactly one `event` about `user` on `client` (then watches
/// [`QUIET`] more for a second one); returns it.
async fn expect_one(
    node: &NodeDriver,
    client: &str,
    event: &str,
    user: &str,
    within: Duration,
) -> Value {
    expect_one_at(node, client, event, user, within).await.0
}

/// [`expect_one`], also returning when the event arrived.
async fn expect_one_at(
    node: &NodeDriver,
    client: &str,
    event: &str,
    user: &str,
    within: Duration,
) -> (Value, Instant) {
    let first = node
        .take_note(client, within, |n| {
            matches!(n, Note::Event { name, args } if name == event && args.first().is_some_and(|a| a["user"] == json!(user)))
        })
        .await
        .unwrap_or_else(|e| panic!("{client}: no {event} for {user}: {e:#}"));
    let arrived = Instant::now();
    let Note::Event { args, .. } = first else {
        unreachable!()
    };
    let more = collect(node, client, event, user, QUIET).await;
    assert!(
        more.is_empty(),
        "{client}: {event} for {user} twice: {more:?}"
    );
    (args[0].clone(), arrived)
}

async fn api_get(gw: &GatewayProcess, path: &str) -> (u16, Value) {
    let resp = tokio::task::spawn_blocking({
        let url = format!("{}{path}", gw.url());
        move || {
            switchboard_testkit::net::http_request(
                "GET",
                &url,
                &[("authorization", &format!("Bearer {API_KEY}"))],
                None,
                Duration::from_secs(5),
            )
        }
    })
    .await
    .expect("http task")
    .expect("GET");
    let v = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_and_offline_reach_the_company_room_once_per_transition() {
    let redis = redis();
    let gw1 = presence_gateway(&redis, &[]).await;
    let gw2 = presence_gateway(&redis, &[]).await;
    let node = node().await;
    connect_user(&node, "watch1", &gw1, "w1", "c1").await;
    connect_user(&node, "watch2", &gw2, "w2", "c1").await;
    // An outsider in another company hears nothing about c1.
    connect_user(&node, "other", &gw2, "o1", "c2").await;

    // First tab on gw1: one presence:online, on both gateways' watchers.
    connect_user(&node, "alice1", &gw1, "alice", "c1").await;
    for w in ["watch1", "watch2"] {
        let online = expect_one(&node, w, "presence:online", "alice", T).await;
        assert_eq!(online["room"], json!("company:c1"));
        assert_eq!(online["claims"], json!({"name": "User alice"}));
    }
    // Second tab on the other gateway: online already, nothing announced.
    connect_user(&node, "alice2", &gw2, "alice", "c1").await;
    let (status, online) = api_get(&gw2, "/api/v1/online?user=alice").await;
    assert_eq!(status, 200, "{online}");
    assert_eq!(online["online"], json!(true));
    // Both tabs counted once the second gateway has written its entry.
    let deadline = Instant::now() + T;
    loop {
        let (_, v) = api_get(&gw1, "/api/v1/online?user=alice").await;
        if v["sockets"] == json!(2) {
            break;
        }
        assert!(Instant::now() < deadline, "sockets never reached 2: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in ["watch1", "watch2"] {
        assert!(
            collect(&node, w, "presence:online", "alice", QUIET)
                .await
                .is_empty()
        );
    }
    // The broadcaster reads the same from Redis.
    let b = Broadcaster::connect(redis.url()).expect("broadcaster");
    let alice = b
        .online("alice")
        .await
        .expect("online")
        .expect("alice online");
    assert_eq!(alice.sockets, 2);
    assert_eq!(alice.claims.get("name"), Some(&json!("User alice")));
    assert!(!b.is_online("nobody").await.expect("is_online"));
    // Closing one tab: still online, nothing announced.
    node.disconnect("alice1").await.unwrap();
    for w in ["watch1", "watch2"] {
        assert!(
            collect(&node, w, "presence:offline", "alice", QUIET)
                .await
                .is_empty()
        );
    }
    // Closing the last: one presence:offline.
    node.disconnect("alice2").await.unwrap();
    for w in ["watch1", "watch2"] {
        let offline = expect_one(&node, w, "presence:offline", "alice", T).await;
        assert_eq!(offline["room"], json!("company:c1"));
    }
    let (_, v) = api_get(&gw1, "/api/v1/online?user=alice").await;
    assert_eq!(v["online"], json!(false), "{v}");
    assert!(!b.is_online("alice").await.expect("is_online"));
    // The other company heard nothing about alice.
    assert!(
        collect(&node, "other", "presence:online", "alice", Duration::ZERO)
            .await
            .is_empty()
    );
    assert!(
        collect(&node, "other", "presence:offline", "alice", Duration::ZERO)
            .await
            .is_empty()
    );

    // The API refuses without a key and asks for the user.
    let (status, _) = get(format!("{}/api/v1/online?user=alice", gw1.url()))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, v) = api_get(&gw1, "/api/v1/online").await;
    assert_eq!(
        (status, v["error"].clone()),
        (400, json!("invalid_request"))
    );
    let m = metrics(&gw1).await;
    assert!(metric_or_zero(&m, "switchboard_presence_updates_total{op=\"upsert\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_gateways_users_go_offline_once_within_ttl() {
    let redis = redis();
    let gw1 = presence_gateway(&redis, &[]).await;
    let mut gw2 = presence_gateway(&redis, &[]).await;
    let gw3 = presence_gateway(&redis, &[]).await;
    let node = node().await;
    connect_user(&node, "watch1", &gw1, "w1", "c1").await;
    connect_user(&node, "watch3", &gw3, "w3", "c1").await;
    connect_user(&node, "bob", &gw2, "bob", "c1").await;
    connect_user(&node, "carol", &gw2, "carol", "c1").await;
    // carol also has a tab on a surviving gateway: she stays online.
    connect_user(&node, "carol_b", &gw3, "carol", "c1").await;
    for w in ["watch1", "watch3"] {
        expect_one(&node, w, "presence:online", "bob", T).await;
        expect_one(&node, w, "presence:online", "carol", T).await;
    }

    gw2.signal(9).expect("SIGKILL");
    let killed = Instant::now();
    // Two surviving gateways reap; each watcher hears bob's offline once,
    // within ttl_s + one refresh period (ttl_s / 3), plus scheduling slack.
    let bound = Duration::from_millis(TTL_S * 1000 + TTL_S * 1000 / 3 + 700);
    let (_, arrived) = expect_one_at(&node, "watch1", "presence:offline", "bob", bound).await;
    expect_one(&node, "watch3", "presence:offline", "bob", T).await;
    let took = arrived - killed;
    assert!(
        took >= Duration::from_secs(TTL_S - 1) && took <= bound,
        "offline after {took:?}: expected between the TTL and {bound:?}"
    );
    eprintln!("bob announced offline {took:?} after SIGKILL (ttl_s = {TTL_S})");
    for w in ["watch1", "watch3"] {
        assert!(
            collect(
                &node,
                w,
                "presence:offline",
                "carol",
                Duration::from_secs(1)
            )
            .await
            .is_empty()
        );
    }
    let (_, v) = api_get(&gw1, "/api/v1/online?user=carol").await;
    assert_eq!(
        (v["online"].clone(), v["sockets"].clone()),
        (json!(true), json!(1)),
        "{v}"
    );
    let (_, v) = api_get(&gw3, "/api/v1/online?user=bob").await;
    assert_eq!(v["online"], json!(false), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_keeps_presence_in_memory() {
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_AUTH__ROOMS", "user:{sub},company:{company_id}"),
        ("SWITCHBOARD_PRESENCE__ONLINE_ROOMS", "company:{company_id}"),
    ])
    .await;
    let node = node().await;
    connect_user(&node, "watch", &gw, "w", "c1").await;
    connect_user(&node, "a1", &gw, "alice", "c1").await;
    connect_user(&node, "a2", &gw, "alice", "c1").await;
    expect_one(&node, "watch", "presence:online", "alice", T).await;
    let (status, v) = api_get(&gw, "/api/v1/online?user=alice").await;
    assert_eq!((status, v["sockets"].clone()), (200, json!(2)), "{v}");
    node.disconnect("a1").await.unwrap();
    assert!(collect(&node, "watch", "presence:offline", "alice", QUIET).await.is_empty());
    node.disconnect("a2").await.unwrap();
    expect_one(&node, "watch", "presence:offline", "alice", T).await;
    let (_, v) = api_get(&gw, "/api/v1/online?user=alice").await;
    assert_eq!(v["online"], json!(false), "{v}");
    // Without online tracking the question is refused, with a reason.
    let plain = embedded_gateway(&[]).await;
    let (status, v) = api_get(&plain, "/api/v1/online?user=alice").await;
    assert_eq!((status, v["error"].clone()), (409, json!("online_not_tracked")), "{v}");
}
