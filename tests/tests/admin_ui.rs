//! The official Socket.IO Admin UI's protocol against gateways, driven with
//! the official `socket.io-client` exactly as the UI (`@socket.io/admin-ui`
//! 0.5.1) connects: the `/admin` namespace, `auth: {username, password}`
//! then `{sessionId}`, polling upgraded to websocket, `withCredentials`.
//!
//! Two gateways share a real redis-server; the UI connected to one of them
//! sees both servers, every app socket with its rooms, and acts on sockets
//! of the other gateway (`join`, `leave`, `_disconnect`). A Node socket.io
//! 4.8 server instrumented with the package's own `instrument()` on the same
//! Redis appears beside them. Read-only refuses actions; production mode
//! sends no per-socket events.

mod admin_support;
mod common;

use admin_support::*;
use common::*;
use serde_json::{Value, json};
use switchboard_testkit::node::{ConnectOptions, NodeDriver, Note, StartServer};

/// Waits for a `server_stats` of `id` whose payload satisfies `pred`.
async fn stats_of(d: &NodeDriver, ui: &str, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let note = d
        .take_note(ui, T * 2, |n| {
            matches!(n, Note::Event { name, args } if name == "server_stats"
                && args[0]["serverId"] == id && pred(&args[0]))
        })
        .await
        .unwrap_or_else(|e| panic!("server_stats of {id}: {e:#}"));
    match note {
        Note::Event { args, .. } => args[0].clone(),
        _ => unreachable!(),
    }
}

/// Waits for event `name` whose arguments satisfy `pred`.
async fn event_where(
    d: &NodeDriver,
    client: &str,
    name: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let note = d
        .take_note(
            client,
            T,
            |n| matches!(n, Note::Event { name: n, args } if n == name && pred(args)),
        )
        .await
        .unwrap_or_else(|e| panic!("{client}: no matching {name}: {e:#}"));
    match note {
        Note::Event { args, .. } => args,
        _ => unreachable!(),
    }
}

/// The UI's `join`/`leave` of room `war-room` for socket `sid`, and the
/// `room_joined`/`room_left` event that reports it.
async fn room_action(d: &NodeDriver, action: &str, reported: &str, sid: &str) {
    d.emit(
        "ui",
        action,
        vec![json!("/"), json!("war-room"), json!(sid)],
    )
    .await
    .unwrap();
    event_where(d, "ui", reported, |a| a[1] == "war-room" && a[2] == sid).await;
}

/// The total of one type of `aggregatedEvents` in a `server_stats`.
fn count_of(stats: &Value, kind: &str) -> u64 {
    stats["aggregatedEvents"]
        .as_array()
        .expect("aggregatedEvents")
        .iter()
        .filter(|e| e["type"] == kind)
        .filter_map(|e| e["count"].as_u64())
        .sum()
}

fn socket_in<'a>(all: &'a [Value], id: &str) -> &'a Value {
    all.iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("socket {id} not in all_sockets: {all:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ui_sees_and_acts_on_the_whole_fleet() {
    let redis = redis();
    let hash = password_hash();
    let mut env = admin_env(&hash);
    // A socket below passes its token in the query string (which the UI
    // must not show): a query token source needs an origin allowlist.
    env.push((
        "SWITCHBOARD_AUTH__TOKEN_SOURCES",
        "auth,header,query".into(),
    ));
    env.push((
        "SWITCHBOARD_ALLOWED_ORIGINS",
        "https://app.example.com".into(),
    ));
    let gw_a = redis_gateway(&redis, &env_refs(&env)).await;
    let gw_b = redis_gateway(&redis, &env_refs(&env)).await;
    let d = node().await;

    let alice = d
        .connect(
            "alice",
            &gw_a.url(),
            ConnectOptions::new().token(token("alice")),
        )
        .await
        .unwrap();
    let bob = d
        .connect(
            "bob",
            &gw_b.url(),
            ConnectOptions::new().token(token_role("bob", "agent")),
        )
        .await
        .unwrap();

    // A wrong password is refused with the UI's message.
    let refused = d
        .connect(
            "intruder",
            &format!("{}/admin", gw_a.url()),
            ui_opts(json!({"username": USER, "password": "guess"})),
        )
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("invalid credentials"),
        "{refused:#}"
    );
    wait_metric(
        &gw_a,
        r#"switchboard_admin_refused_total{reason="invalid_credentials"}"#,
        T,
        |v| v == 1.0,
    )
    .await;

    // Log in: a session id, the features, every socket of the fleet.
    d.connect("ui", &format!("{}/admin", gw_a.url()), ui_opts(login()))
        .await
        .unwrap();
    let session = d.expect_event("ui", "session", T).await.unwrap();
    let session = session[0].as_str().expect("session id").to_string();
    assert_eq!(session.len(), 16, "{session}");
    let config = d.expect_event("ui", "config", T).await.unwrap();
    let features = config[0]["supportedFeatures"].as_array().unwrap();
    for f in [
        "JOIN",
        "LEAVE",
        "DISCONNECT",
        "MJOIN",
        "AGGREGATED_EVENTS",
        "ALL_EVENTS",
    ] {
        assert!(
            features.contains(&json!(f)),
            "{f} missing from {features:?}"
        );
    }
    let all = d.expect_event("ui", "all_sockets", T).await.unwrap();
    let all = all[0].as_array().unwrap();
    let a = socket_in(all, &alice.sid);
    assert_eq!(a["nsp"], "/");
    assert_eq!(a["data"]["sub"], "alice");
    assert!(
        a["rooms"]
            .as_array()
            .unwrap()
            .contains(&json!("user:alice")),
        "{a}"
    );
    assert!(
        a["rooms"].as_array().unwrap().contains(&json!(alice.sid)),
        "{a}"
    );
    assert_eq!(a["handshake"]["address"], "127.0.0.1");
    let b = socket_in(all, &bob.sid);
    assert!(
        b["rooms"]
            .as_array()
            .unwrap()
            .contains(&json!("role:agent")),
        "{b}"
    );
    assert_eq!(b["data"]["role"], "agent");
    assert!(b["clientId"].as_str().is_some_and(|c| c.len() == 12), "{b}");
    assert!(
        !all.iter().any(|s| s["nsp"] == "/admin"),
        "admin sockets are not app sockets"
    );

    // Both gateways report in, each with its own app client only.
    let stats_a = stats_of(&d, "ui", &server_id(&gw_a), |s| s["clientsCount"] == 1).await;
    assert_eq!(
        stats_a["namespaces"][0],
        json!({"name": "/", "socketsCount": 1})
    );
    assert!(stats_a["uptime"].as_f64().unwrap() > 0.0);
    stats_of(&d, "ui", &server_id(&gw_b), |s| s["clientsCount"] == 1).await;
    // Aggregated events count what happened: a connection made on each
    // gateway while the UI listens shows up in that gateway's next
    // `server_stats`. (Each `server_stats` carries the buckets since the
    // previous one, listened to or not, as `@socket.io/admin-ui` clears its
    // buffer on every emit: the connections above may have been reported
    // before this UI logged in. Waiting for them, unbounded, once hung this
    // test in CI.)
    for (name, gw) in [("tick-a", &gw_a), ("tick-b", &gw_b)] {
        connect(&d, name, gw, ConnectOptions::new().token(token(name))).await;
        let deadline = tokio::time::Instant::now() + T * 2;
        let mut connections = 0;
        while connections == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}'s connection not counted in a server_stats of {} within {:?}",
                server_id(gw),
                T * 2
            );
            let stats = stats_of(&d, "ui", &server_id(gw), |_| true).await;
            connections += count_of(&stats, "rawConnection");
        }
        d.disconnect(name).await.unwrap();
    }

    // The session id logs in through the other gateway (sessions in Redis).
    d.connect(
        "ui2",
        &format!("{}/admin", gw_b.url()),
        ui_opts(json!({"sessionId": session})),
    )
    .await
    .expect("session id accepted by the other gateway");
    d.expect_event("ui2", "config", T).await.unwrap();

    // Per-socket events from the other gateway: a new socket (its token in
    // the query string, which must not be shown), its events.
    let carol_token = token("carol");
    let carol = d
        .connect(
            "carol",
            &gw_b.url(),
            ConnectOptions::new().query("token", carol_token.clone()),
        )
        .await
        .unwrap();
    let connected = event_where(&d, "ui", "socket_connected", |a| a[0]["id"] == carol.sid).await;
    assert_eq!(connected[0]["data"]["sub"], "carol");
    assert!(
        !connected[0].to_string().contains(&carol_token),
        "token leaked: {}",
        connected[0]
    );
    assert!(
        connected[1].as_str().is_some_and(|d| d.ends_with('Z')),
        "a date: {}",
        connected[1]
    );
    // Polling first (the client's default), then the upgrade reported.
    event_where(&d, "ui", "socket_updated", |a| {
        a[0] == json!({"id": carol.sid, "nsp": "/", "transport": "websocket"})
    })
    .await;
    d.emit("carol", "typing", vec![json!({"ticket": 7})])
        .await
        .unwrap();
    let received = event_where(&d, "ui", "event_received", |a| a[1] == carol.sid).await;
    assert_eq!(received[0], "/");
    assert_eq!(received[2], json!(["typing", {"ticket": 7}]));

    // join / leave / _disconnect on a socket of the other gateway, by id.
    room_action(&d, "join", "room_joined", &bob.sid).await;
    api_emit_ok(
        &gw_a,
        json!({"event": "briefing", "rooms": ["war-room"], "data": 1}),
    )
    .await;
    d.expect_event("bob", "briefing", T).await.unwrap();
    // What the gateway delivered, per socket (Node's onAnyOutgoing).
    event_where(&d, "ui", "event_sent", |a| {
        a[0] == "/" && a[1] == bob.sid && a[2] == json!(["briefing", 1])
    })
    .await;
    room_action(&d, "leave", "room_left", &bob.sid).await;
    api_emit_ok(
        &gw_a,
        json!({"event": "briefing", "rooms": ["war-room"], "data": 2}),
    )
    .await;
    d.expect_no_event_named("bob", "briefing", QUIET)
        .await
        .unwrap();

    // emit to one socket of the other gateway.
    d.emit(
        "ui",
        "emit",
        vec![
            json!("/"),
            json!(bob.sid),
            json!("notice"),
            json!({"from": "ops"}),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        d.expect_event("bob", "notice", T).await.unwrap(),
        vec![json!({"from": "ops"})]
    );
    d.expect_no_event_named("alice", "notice", QUIET)
        .await
        .unwrap();

    d.emit(
        "ui",
        "_disconnect",
        vec![json!("/"), json!(false), json!(bob.sid)],
    )
    .await
    .unwrap();
    assert_eq!(
        d.expect_disconnect("bob", T).await.unwrap(),
        "io server disconnect"
    );
    let gone = event_where(&d, "ui", "socket_disconnected", |a| a[1] == bob.sid).await;
    assert_eq!(gone[0], "/");
    assert_eq!(gone[2], "server namespace disconnect");
    // Alice, on the UI's own gateway, was not touched.
    assert_eq!(d.client_state("alice").await.unwrap()["connected"], true);
    stats_of(&d, "ui", &server_id(&gw_b), |s| s["clientsCount"] == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_refuses_actions_and_production_sends_no_socket_events() {
    let hash = password_hash();
    let mut env = admin_env(&hash);
    env.push(("SWITCHBOARD_ADMIN__READONLY", "true".into()));
    let readonly = embedded_gateway(&env_refs(&env)).await;
    let mut env = admin_env(&hash);
    env.push(("SWITCHBOARD_ADMIN__MODE", "production".into()));
    let production = embedded_gateway(&env_refs(&env)).await;
    let d = node().await;

    let alice = d
        .connect(
            "alice",
            &readonly.url(),
            ConnectOptions::new().token(token("alice")),
        )
        .await
        .unwrap();
    d.connect("ro", &format!("{}/admin", readonly.url()), ui_opts(login()))
        .await
        .unwrap();
    let config = d.expect_event("ro", "config", T).await.unwrap();
    assert_eq!(
        config[0]["supportedFeatures"],
        json!(["AGGREGATED_EVENTS", "ALL_EVENTS"])
    );
    let all = d.expect_event("ro", "all_sockets", T).await.unwrap();
    socket_in(all[0].as_array().unwrap(), &alice.sid);
    d.emit(
        "ro",
        "_disconnect",
        vec![json!("/"), json!(true), json!(alice.sid)],
    )
    .await
    .unwrap();
    d.emit("ro", "join", vec![json!("/"), json!("x"), json!(alice.sid)])
        .await
        .unwrap();
    wait_metric(
        &readonly,
        r#"switchboard_admin_refused_total{reason="readonly"}"#,
        T,
        |v| v == 2.0,
    )
    .await;
    d.expect_no_event_named("alice", "disconnect", QUIET)
        .await
        .unwrap();
    assert_eq!(d.client_state("alice").await.unwrap()["connected"], true);

    d.connect(
        "prod",
        &format!("{}/admin", production.url()),
        ui_opts(login()),
    )
    .await
    .unwrap();
    let config = d.expect_event("prod", "config", T).await.unwrap();
    let features = config[0]["supportedFeatures"].as_array().unwrap();
    assert!(features.contains(&json!("JOIN")));
    assert!(!features.contains(&json!("ALL_EVENTS")), "{features:?}");
    d.connect(
        "dave",
        &production.url(),
        ConnectOptions::new().token(token("dave")),
    )
    .await
    .unwrap();
    d.emit("dave", "typing", vec![json!(1)]).await.unwrap();
    let stats = d.expect_event("prod", "server_stats", T).await.unwrap();
    assert!(stats[0]["aggregatedEvents"].is_array());
    stats_of(&d, "prod", &server_id(&production), |s| {
        s["clientsCount"] == 1
    })
    .await;
    let notes = d.drain("prod");
    for note in &notes {
        if let Note::Event { name, .. } = note {
            assert!(
                ["server_stats", "session", "config"].contains(&name.as_str()),
                "production mode sent {name}: {notes:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_server_with_admin_ui_appears_beside_the_gateway() {
    let redis = redis();
    let hash = password_hash();
    let env = admin_env(&hash);
    let gw = redis_gateway(&redis, &env_refs(&env)).await;
    let d = node().await;
    let node_port = d
        .start_server_with(StartServer {
            redis_url: redis.url(),
            admin_ui: Some(json!({"username": USER, "passwordHash": hash, "serverId": "node-1"})),
            ..StartServer::default()
        })
        .await
        .unwrap();
    let node_url = format!("http://127.0.0.1:{node_port}");
    let on_node = d
        .connect(
            "on-node",
            &node_url,
            ConnectOptions::new().auth(json!({"rooms": ["legacy"]})),
        )
        .await
        .unwrap();
    let on_gw = d
        .connect(
            "on-gw",
            &gw.url(),
            ConnectOptions::new().token(token("erin")),
        )
        .await
        .unwrap();

    // A UI on the gateway: the Node server's stats and sockets too.
    d.connect("ui", &format!("{}/admin", gw.url()), ui_opts(login()))
        .await
        .unwrap();
    let all = d.expect_event("ui", "all_sockets", T).await.unwrap();
    let all = all[0].as_array().unwrap();
    let n = socket_in(all, &on_node.sid);
    assert!(
        n["rooms"].as_array().unwrap().contains(&json!("legacy")),
        "{n}"
    );
    assert!(
        n["clientId"].is_string(),
        "instrument() keeps the client id: {n}"
    );
    socket_in(all, &on_gw.sid);
    stats_of(&d, "ui", "node-1", |s| {
        s["clientsCount"].as_u64() >= Some(1)
    })
    .await;
    stats_of(&d, "ui", &server_id(&gw), |s| s["clientsCount"] == 1).await;

    // A UI on the Node server sees the gateway, and the gateway's socket.
    d.connect("node-ui", &format!("{node_url}/admin"), ui_opts(login()))
        .await
        .unwrap();
    let all = d.expect_event("node-ui", "all_sockets", T).await.unwrap();
    let g = socket_in(all[0].as_array().unwrap(), &on_gw.sid);
    assert_eq!(g["data"]["sub"], "erin");
    assert_eq!(g["transport"], "websocket");
    stats_of(&d, "node-ui", &server_id(&gw), |_| true).await;

    // The gateway's UI disconnects the Node server's socket.
    d.emit(
        "ui",
        "_disconnect",
        vec![json!("/"), json!(false), json!(on_node.sid)],
    )
    .await
    .unwrap();
    assert_eq!(
        d.expect_disconnect("on-node", T).await.unwrap(),
        "io server disconnect"
    );
}
