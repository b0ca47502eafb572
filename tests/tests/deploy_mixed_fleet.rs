//! A mixed fleet on one Redis: a Node `socket.io` server with the official
//! `@socket.io/redis-adapter` next to a Switchboard gateway (a migration in
//! progress). Broadcasts cross in both directions, and the Node adapter's
//! request/response calls (`fetchSockets`, `allRooms`, `socketsJoin`,
//! `serverSideEmitWithAck`, `disconnectSockets`), which wait for every
//! subscriber of `socket.io-request#/#`, complete and include the
//! gateway's sockets.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_testkit::{
    GatewayOptions, GatewayProcess, http_get,
    jwt::Claims,
    net::http_request,
    node::{ConnectOptions, EmitterPublish, NodeDriver, Note, ServerTarget, StartServer},
    redis::RedisServer,
};

const SECRET: &str = "deploy-mixed-secret-0123456789abcdef";
const API_KEY: &str = "deploy-mixed-api-key-0123456789";
const T: Duration = Duration::from_secs(15);
/// The Node adapter's `requestsTimeout`: a request the gateway ignored
/// would fail after this long.
const REQUESTS_TIMEOUT_MS: u64 = 4000;

async fn expect_once(node: &NodeDriver, clients: &[&str], event: &str, expected: &[Value]) {
    for c in clients {
        let args = node
            .expect_event(c, event, T)
            .await
            .unwrap_or_else(|e| panic!("{c}: {e:#}"));
        assert_eq!(args, expected, "{c}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for c in clients {
        let dups: Vec<_> = node
            .queued(c)
            .into_iter()
            .filter(|n| matches!(n, Note::Event { name, .. } if name == event))
            .collect();
        assert!(dups.is_empty(), "{c} received {event} twice: {dups:?}");
    }
}

/// Fails (with how long it took) if a Node adapter request did not complete
/// well before `requestsTimeout`, i.e. if it only ended by timing out.
fn assert_answered(what: &str, started: Instant) {
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(REQUESTS_TIMEOUT_MS / 2),
        "{what} took {took:?}: it waited for a server that never answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_server_and_gateway_on_one_redis() {
    tokio::time::timeout(Duration::from_secs(150), run())
        .await
        .expect("mixed fleet test exceeded 150 s");
}

async fn run() {
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .expect("redis");
    let gw = GatewayProcess::start_async(
        GatewayOptions::new()
            .redis(redis.url())
            .secret(SECRET)
            .env("SWITCHBOARD_API_KEYS", API_KEY),
    )
    .await
    .expect("gateway");
    let ready = format!("{}/readyz", gw.url());
    let deadline = Instant::now() + T;
    while !matches!(http_get(&ready), Ok((200, _))) {
        assert!(Instant::now() < deadline, "gateway not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let node = NodeDriver::start().await.expect("node driver");
    let node_port = node
        .start_server_with(StartServer {
            redis_url: redis.url(),
            requests_timeout: Some(REQUESTS_TIMEOUT_MS),
            ..StartServer::default()
        })
        .await
        .expect("node server");
    let node_url = format!("http://127.0.0.1:{node_port}");

    // Two clients on the gateway (user rooms and role:admin from the token),
    // one on the Node server (rooms from its auth payload).
    let gw_ws = node
        .connect(
            "gw-ws",
            &gw.url(),
            ConnectOptions::new()
                .websocket_only()
                .token(Claims::new().sub("u1").role("admin").sign_hs256(SECRET)),
        )
        .await
        .expect("gw-ws");
    let gw_poll = node
        .connect(
            "gw-poll",
            &gw.url(),
            ConnectOptions::new()
                .polling_only()
                .token(Claims::new().sub("u2").role("admin").sign_hs256(SECRET)),
        )
        .await
        .expect("gw-poll");
    let node_c = node
        .connect(
            "node-a",
            &node_url,
            ConnectOptions::new().auth(json!({"rooms": ["role:admin", "user:u3"]})),
        )
        .await
        .expect("node-a");
    let all = ["gw-ws", "gw-poll", "node-a"];

    // Node server -> everyone (its own client and the gateway's).
    node.server_emit(
        ServerTarget::new(node_port),
        "from-node",
        vec![json!({"n": 1})],
    )
    .await
    .unwrap();
    expect_once(&node, &all, "from-node", &[json!({"n": 1})]).await;
    node.server_emit(
        ServerTarget::new(node_port).to("role:admin"),
        "from-node-room",
        vec![json!("admins"), json!(2)],
    )
    .await
    .unwrap();
    expect_once(&node, &all, "from-node-room", &[json!("admins"), json!(2)]).await;

    // Official emitter -> both fleets.
    node.emitter_publish(
        EmitterPublish::new(redis.url(), "from-emitter", vec![json!({"n": 3})]).to("role:admin"),
    )
    .await
    .unwrap();
    expect_once(&node, &all, "from-emitter", &[json!({"n": 3})]).await;

    // Gateway publish API -> the Node server's client too.
    let body = json!({"event": "from-gateway", "data": {"n": 4}, "roles": ["admin"]}).to_string();
    let url = format!("{}/api/v1/emit", gw.url());
    let resp = tokio::task::spawn_blocking(move || {
        http_request(
            "POST",
            &url,
            &[
                ("Authorization", &format!("Bearer {API_KEY}")),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
            Duration::from_secs(10),
        )
    })
    .await
    .unwrap()
    .expect("POST /api/v1/emit");
    assert!(
        (200..300).contains(&resp.status),
        "publish API: {} {}",
        resp.status,
        resp.text()
    );
    expect_once(&node, &all, "from-gateway", &[json!({"n": 4})]).await;

    // fetchSockets() from Node waits for every server and includes the
    // gateway's sockets with their rooms.
    let started = Instant::now();
    let fetched = node
        .server_fetch_sockets(ServerTarget::new(node_port))
        .await
        .unwrap_or_else(|e| panic!("fetchSockets: {e:#}"));
    assert_answered("fetchSockets()", started);
    let find = |id: &str| {
        fetched
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("fetchSockets lacks {id}: {fetched:?}"))
    };
    let ws = find(&gw_ws.sid);
    assert!(ws.rooms.contains(&"user:u1".to_string()), "{ws:?}");
    assert!(ws.rooms.contains(&"role:admin".to_string()), "{ws:?}");
    assert!(ws.rooms.contains(&gw_ws.sid), "{ws:?}");
    let poll = find(&gw_poll.sid);
    assert!(poll.rooms.contains(&"user:u2".to_string()), "{poll:?}");
    find(&node_c.sid);
    assert_eq!(fetched.len(), 3, "{fetched:?}");

    // Only the gateway's sockets of one room.
    let started = Instant::now();
    let u1 = node
        .server_fetch_sockets(ServerTarget::new(node_port).to("user:u1"))
        .await
        .unwrap_or_else(|e| panic!("fetchSockets(user:u1): {e:#}"));
    assert_answered("fetchSockets(user:u1)", started);
    assert_eq!(
        u1.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec![gw_ws.sid.as_str()]
    );

    // allRooms() includes the gateway's rooms.
    let started = Instant::now();
    let rooms = node
        .server_all_rooms(node_port, None)
        .await
        .unwrap_or_else(|e| panic!("allRooms: {e:#}"));
    assert_answered("allRooms()", started);
    for r in ["user:u1", "user:u2", "user:u3", "role:admin"] {
        assert!(
            rooms.contains(&r.to_string()),
            "allRooms lacks {r}: {rooms:?}"
        );
    }

    // socketsJoin() from Node acts on the gateway's socket.
    node.server_sockets_join(ServerTarget::new(node_port).to("user:u1"), &["vip"])
        .await
        .unwrap();
    let deadline = Instant::now() + T;
    loop {
        let rooms = node.server_all_rooms(node_port, None).await.unwrap();
        if rooms.contains(&"vip".to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "vip room never appeared: {rooms:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.server_emit(
        ServerTarget::new(node_port).to("vip"),
        "vip-news",
        vec![json!(5)],
    )
    .await
    .unwrap();
    expect_once(&node, &["gw-ws"], "vip-news", &[json!(5)]).await;
    node.expect_no_event_named("gw-poll", "vip-news", Duration::from_millis(300))
        .await
        .unwrap();
    node.expect_no_event_named("node-a", "vip-news", Duration::from_millis(300))
        .await
        .unwrap();

    // serverSideEmitWithAck() waits for one reply per other server: the
    // gateway answers (with null) instead of letting it time out.
    let started = Instant::now();
    let replies = node
        .server_side_emit(
            node_port,
            "hello-servers",
            vec![json!(1)],
            Some(Duration::from_millis(REQUESTS_TIMEOUT_MS)),
        )
        .await
        .unwrap_or_else(|e| panic!("serverSideEmitWithAck: {e:#}"));
    assert_answered("serverSideEmitWithAck()", started);
    assert_eq!(
        replies.as_array().map(Vec::len),
        Some(1),
        "one reply (the gateway's): {replies}"
    );

    // disconnectSockets() from Node reaches the gateway's socket.
    node.server_disconnect_sockets(ServerTarget::new(node_port).to("user:u2"), true)
        .await
        .unwrap();
    let reason = node
        .expect_disconnect("gw-poll", T)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(reason, "io server disconnect");
    let started = Instant::now();
    let fetched = node
        .server_fetch_sockets(ServerTarget::new(node_port))
        .await
        .unwrap();
    assert_answered("fetchSockets() after disconnect", started);
    assert!(
        fetched.iter().all(|s| s.id != gw_poll.sid),
        "disconnected socket still listed: {fetched:?}"
    );

    node.shutdown().await.ok();
}
