//! Clients that act (issue #11), with the official `socket.io-client` on two
//! gateways sharing a real Redis and configured by the issue's own example
//! (`[[client.rooms]]`, `[[client.forward]]`): joins allowed and refused by
//! the claims, a relay between users on different gateways, an event
//! forwarded to a real HTTP server that checks the HMAC signature, a join
//! hook, a stream forward consumed (and, after a worker dies, claimed) by
//! the broadcaster's consumer, and `check-config` naming a bad rule.

mod common;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use common::*;
use hmac::{Hmac, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard_broadcaster::{
    RedisSettings,
    stream::{StreamConsumer, StreamConsumerConfig},
};
use switchboard_testkit::{
    GatewayProcess, bin_path,
    jwt::Claims,
    node::{ConnectOptions, EmitterPublish, EmitterTarget, NodeDriver},
    redis::RedisServer,
};

/// The configuration example of issue #11, verbatim.
const ISSUE_EXAMPLE: &str = r#"[[client.rooms]]                 # rooms a client joins or leaves itself
join_event = "join:company"      # socket.emit("join:company", "c1", ack?)
leave_event = "leave:company"
room = "company:{arg}"           # {arg}: the event's first argument (string or integer)
allow = "{arg} == {company_id}"  # only the company named in the user's own claims

[[client.rooms]]
join_event = "join_chat"
leave_event = "leave_chat"
room = "chat_{arg}"
allow = "authenticated"
relay_event = "new_message"      # socket.emit("new_message", "123", payload): sent to chat_123's members

[[client.forward]]               # events handled by the API
events = ["create_ticket"]
url = "http://127.0.0.1:8080/realtime/events"
timeout_ms = 3000
"#;

/// `client.hooks.secret` of these tests.
const HOOK_SECRET: &str = "hook-secret-0123456789abcdef0123456789";

/// The issue's example with the API URL pointing at `api`, plus what a
/// test adds.
fn config(api: Option<&ApiServer>, extra: &str) -> String {
    let mut text = ISSUE_EXAMPLE.to_string();
    if let Some(api) = api {
        text = text.replace("http://127.0.0.1:8080", &api.base());
    }
    text.push('\n');
    text.push_str(extra);
    text
}

/// A Redis-bus gateway with `toml`, ready.
async fn gateway(redis: &RedisServer, toml: String) -> GatewayProcess {
    let gw = start(
        base_opts()
            .redis(redis.url())
            .env("SWITCHBOARD_CLIENT__HOOKS__SECRET", HOOK_SECRET)
            .config_toml(toml),
    )
    .await;
    wait_ready(&gw, T).await;
    gw
}

fn user_token(sub: &str, company: Value) -> String {
    Claims::new()
        .sub(sub)
        .claim("company_id", company)
        .sign_hs256(SECRET)
}

/// The ack of a join, leave or relay that went through.
fn ok_room(room: &str) -> Value {
    json!([{"ok": true, "room": room}])
}

/// The ack of a refused action.
fn refused(error: &str) -> Value {
    json!([{"ok": false, "error": error}])
}

async fn ack(node: &NodeDriver, client: &str, event: &str, args: Vec<Value>) -> Value {
    node.emit_with_ack(client, event, args, T)
        .await
        .unwrap_or_else(|e| panic!("{client} {event}: {e:#}"))
}

/// Emits with an ack and checks the answer.
async fn expect_ack(node: &NodeDriver, client: &str, event: &str, args: Vec<Value>, want: Value) {
    assert_eq!(
        ack(node, client, event, args).await,
        want,
        "{client} {event}"
    );
}

async fn publish(node: &NodeDriver, redis: &RedisServer, room: &str, event: &str, n: i64) {
    node.emitter_publish(EmitterPublish::new(redis.url(), event, vec![json!(n)]).to(room))
        .await
        .expect("emitter publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn company_rooms_follow_the_claims() {
    let redis = redis();
    let gw1 = gateway(&redis, config(None, "")).await;
    let gw2 = gateway(&redis, config(None, "")).await;
    let node = node().await;
    let opts = |t: String| ConnectOptions::new().websocket_only().token(t);
    connect(&node, "u1", &gw1, opts(user_token("u1", json!("c1")))).await;
    connect(&node, "u7", &gw2, opts(user_token("u7", json!(7)))).await;

    // Own company: joined, and a publish to it reaches the client.
    expect_ack(
        &node,
        "u1",
        "join:company",
        vec![json!("c1")],
        ok_room("company:c1"),
    )
    .await;
    publish(&node, &redis, "company:c1", "news", 1).await;
    assert_eq!(expect_once(&node, "u1", "news").await, vec![json!(1)]);

    // Another company: forbidden, and nothing joined.
    expect_ack(
        &node,
        "u1",
        "join:company",
        vec![json!("c2")],
        refused("forbidden"),
    )
    .await;
    publish(&node, &redis, "company:c2", "news", 2).await;
    expect_none(&node, "u1", "news").await;

    // Arguments that cannot name a room.
    for bad in [json!({"id": "c1"}), json!(""), json!(1.5), json!(null)] {
        assert_eq!(
            ack(&node, "u1", "join:company", vec![bad.clone()]).await,
            refused("invalid_argument"),
            "{bad}"
        );
    }
    expect_ack(
        &node,
        "u1",
        "join:company",
        vec![],
        refused("invalid_argument"),
    )
    .await;

    // An integer claim and argument, on the other gateway.
    expect_ack(
        &node,
        "u7",
        "join:company",
        vec![json!(7)],
        ok_room("company:7"),
    )
    .await;
    expect_ack(
        &node,
        "u7",
        "join:company",
        vec![json!("c1")],
        refused("forbidden"),
    )
    .await;

    // Leave: out of the room; a second leave is not_a_member.
    expect_ack(
        &node,
        "u1",
        "leave:company",
        vec![json!("c1")],
        ok_room("company:c1"),
    )
    .await;
    publish(&node, &redis, "company:c1", "news", 3).await;
    expect_none(&node, "u1", "news").await;
    expect_ack(
        &node,
        "u1",
        "leave:company",
        vec![json!("c1")],
        refused("not_a_member"),
    )
    .await;

    // Membership made by a client is the same membership: the emitter's
    // socketsLeave removes it.
    ack(&node, "u1", "join:company", vec![json!("c1")]).await;
    node.emitter_leave(
        EmitterTarget::new(redis.url()).to("company:c1"),
        &["company:c1"],
    )
    .await
    .expect("socketsLeave");
    // user:u1 is left.
    wait_metric(&gw1, "switchboard_rooms", T, |v| v == 1.0).await;
    publish(&node, &redis, "company:c1", "news", 4).await;
    expect_none(&node, "u1", "news").await;

    // Without an ack a refusal is only counted.
    node.emit("u1", "join:company", vec![json!("c9")])
        .await
        .unwrap();
    wait_metric(
        &gw1,
        r#"switchboard_client_actions_total{action="join",outcome="forbidden"}"#,
        T,
        |v| v == 2.0,
    )
    .await;
    let text = metrics(&gw1).await;
    assert_eq!(
        metric(
            &text,
            r#"switchboard_client_actions_total{action="join",outcome="invalid_argument"}"#
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"switchboard_client_actions_total{action="leave",outcome="not_a_member"}"#
        ),
        Some(1.0)
    );
    assert!(
        gw1.logs().contains("client action refused"),
        "{}",
        gw1.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_claims_and_roles_allow_joins() {
    let extra = r#"
[[client.rooms]]
join_event = "join:team"
room = "team:{arg}"
allow = "{arg} in {teams}"

[[client.rooms]]
join_event = "join:ops"
room = "ops"
allow = "role:admin|role:ops"
"#;
    let gw = start(base_opts().config_toml(config(None, extra))).await;
    let node = node().await;
    let member = Claims::new()
        .sub("m")
        .roles(["viewer", "ops"])
        .claim("teams", json!(["t1", 2]))
        .sign_hs256(SECRET);
    let opts = |t: String| ConnectOptions::new().websocket_only().token(t);
    connect(&node, "m", &gw, opts(member)).await;
    connect(&node, "x", &gw, opts(token("x"))).await;
    for (arg, want) in [
        (json!("t1"), ok_room("team:t1")),
        (json!(2), ok_room("team:2")),
        (json!("t3"), refused("forbidden")),
    ] {
        expect_ack(&node, "m", "join:team", vec![arg], want).await;
    }
    expect_ack(
        &node,
        "x",
        "join:team",
        vec![json!("t1")],
        refused("forbidden"),
    )
    .await;
    expect_ack(&node, "m", "join:ops", vec![], ok_room("ops")).await;
    expect_ack(&node, "x", "join:ops", vec![], refused("forbidden")).await;
    api_emit_ok(
        &gw,
        json!({"event": "ops_news", "rooms": ["ops"], "data": 1}),
    )
    .await;
    assert_eq!(expect_once(&node, "m", "ops_news").await, vec![json!(1)]);
    expect_none(&node, "x", "ops_news").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_relay_reaches_other_members_once_with_the_senders_identity() {
    let redis = redis();
    let gw1 = gateway(&redis, config(None, "")).await;
    let gw2 = gateway(&redis, config(None, "")).await;
    let node = node().await;
    let opts = |sub: &str| ConnectOptions::new().websocket_only().token(token(sub));
    let alice = connect(&node, "alice", &gw1, opts("alice")).await;
    connect(&node, "bob", &gw2, opts("bob")).await;
    connect(&node, "dan", &gw1, opts("dan")).await;
    connect(&node, "carol", &gw2, opts("carol")).await;
    for who in ["alice", "bob", "dan"] {
        expect_ack(
            &node,
            who,
            "join_chat",
            vec![json!(123)],
            ok_room("chat_123"),
        )
        .await;
    }

    let payload = json!({"text": "hi", "from": "bob"});
    assert_eq!(
        ack(
            &node,
            "alice",
            "new_message",
            vec![json!("123"), payload.clone()]
        )
        .await,
        ok_room("chat_123")
    );
    let meta = json!({"room": "chat_123", "from": {"user": "alice", "socket": alice.sid}});
    // Bob (other gateway) and Dan (same gateway) get it once; the payload is
    // untouched and the identity is the token's, whatever the payload says.
    for who in ["bob", "dan"] {
        assert_eq!(
            expect_once(&node, who, "new_message").await,
            vec![payload.clone(), meta.clone()],
            "{who}"
        );
    }
    expect_none(&node, "alice", "new_message").await;
    expect_none(&node, "carol", "new_message").await;

    // A non-member's relay is refused and reaches nobody.
    assert_eq!(
        ack(
            &node,
            "carol",
            "new_message",
            vec![json!("123"), json!({"text": "spam"})]
        )
        .await,
        refused("not_a_member")
    );
    for who in ["alice", "bob", "dan"] {
        expect_none(&node, who, "new_message").await;
    }
    // After leaving, Bob no longer receives nor may relay.
    ack(&node, "bob", "leave_chat", vec![json!("123")]).await;
    ack(
        &node,
        "alice",
        "new_message",
        vec![json!("123"), json!("two")],
    )
    .await;
    assert_eq!(
        expect_once(&node, "dan", "new_message").await[0],
        json!("two")
    );
    expect_none(&node, "bob", "new_message").await;
    expect_ack(
        &node,
        "bob",
        "new_message",
        vec![json!("123"), json!("x")],
        refused("not_a_member"),
    )
    .await;
    let text = metrics(&gw2).await;
    assert_eq!(
        metric(
            &text,
            r#"switchboard_client_actions_total{action="relay",outcome="not_a_member"}"#
        ),
        Some(2.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_actions_obey_the_event_rate_limit() {
    let redis = redis();
    let gw = start(
        base_opts()
            .redis(redis.url())
            .env("SWITCHBOARD_LIMITS__CLIENT_EVENTS_PER_SEC", "2")
            .env("SWITCHBOARD_LIMITS__CLIENT_EVENTS_BURST", "2")
            .config_toml(config(None, "")),
    )
    .await;
    wait_ready(&gw, T).await;
    let node = node().await;
    connect(
        &node,
        "a",
        &gw,
        ConnectOptions::new().websocket_only().token(token("a")),
    )
    .await;
    let mut errors = Vec::new();
    for i in 0..6 {
        let reply = ack(&node, "a", "join_chat", vec![json!(i)]).await;
        errors.push(reply[0]["error"].clone());
    }
    assert!(
        errors.contains(&json!("rate_limited")),
        "6 joins at 2/s must hit the limit: {errors:?}"
    );
}

/// What the API server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    body: Value,
    signed: bool,
}

/// A real HTTP server standing in for the API: checks the gateway's HMAC
/// signature on every request and answers by path and payload.
struct ApiServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn valid_signature(headers: &http::HeaderMap, body: &[u8]) -> bool {
    let (Some(ts), Some(sig)) = (
        headers
            .get("x-switchboard-timestamp")
            .and_then(|v| v.to_str().ok()),
        headers
            .get("x-switchboard-signature")
            .and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let Ok(ts_num) = ts.parse::<i64>() else {
        return false;
    };
    if (switchboard_testkit::jwt::now_secs() - ts_num).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).expect("hmac key");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sig.strip_prefix("sha256=") == Some(expected.as_str())
}

async fn api_answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let signed = valid_signature(&headers, &body);
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        body: json_body.clone(),
        signed,
    });
    let reply = |status: StatusCode, body: Value| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("response"))
    };
    if !signed {
        return reply(StatusCode::UNAUTHORIZED, json!({"error": "bad signature"}));
    }
    match path.as_str() {
        "/realtime/events" => match json_body["args"][0]["title"].as_str() {
            Some("boom") => reply(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "boom"})),
            Some("slow") => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                reply(StatusCode::OK, json!({"late": true}))
            }
            title => reply(
                StatusCode::CREATED,
                json!({"ok": true, "ticket": 42, "title": title, "by": json_body["user"]}),
            ),
        },
        "/realtime/join" => {
            if json_body["room"] == json!("vip_gold") {
                reply(StatusCode::NO_CONTENT, Value::Null)
            } else {
                reply(StatusCode::FORBIDDEN, json!({"error": "no"}))
            }
        }
        _ => reply(StatusCode::NOT_FOUND, json!({})),
    }
}

impl ApiServer {
    async fn start() -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| api_answer(req, seen.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ApiServer { port, seen, task }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_event_reaches_the_api_signed_and_its_answer_is_the_ack() {
    let redis = redis();
    let api = ApiServer::start().await;
    let extra = format!(
        r#"
[[client.rooms]]
join_event = "join:vip"
room = "vip_{{arg}}"
allow = "hook"

[[client.forward]]
events = ["fire_and_forget"]
url = "{base}/realtime/events"
retries = 2

[client.hooks]
join_url = "{base}/realtime/join"
"#,
        base = api.base()
    );
    let gw = gateway(&redis, config(Some(&api), &extra)).await;
    let node = node().await;
    let u1 = connect(
        &node,
        "u1",
        &gw,
        ConnectOptions::new()
            .websocket_only()
            .token(user_token("u1", json!("c1"))),
    )
    .await;
    ack(&node, "u1", "join_chat", vec![json!("9")]).await;

    let reply = ack(
        &node,
        "u1",
        "create_ticket",
        vec![json!({"title": "printer"})],
    )
    .await;
    assert_eq!(
        reply,
        json!([{"ok": true, "ticket": 42, "title": "printer", "by": "u1"}])
    );
    let seen = api.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let req = &seen[0];
    assert!(req.signed, "signature must verify: {req:?}");
    assert_eq!(req.path, "/realtime/events");
    let b = &req.body;
    assert_eq!(b["event"], json!("create_ticket"));
    assert_eq!(b["args"], json!([{"title": "printer"}]));
    assert_eq!(b["user"], json!("u1"));
    assert_eq!(b["claims"]["company_id"], json!("c1"));
    assert_eq!(b["claims"]["sub"], json!("u1"));
    assert_eq!(b["socket"], json!(u1.sid));
    assert_eq!(b["nsp"], json!("/"));
    assert_eq!(b["rooms"], json!(["user:u1", "chat_9"]));
    assert!(b["gateway"].as_str().is_some_and(|g| !g.is_empty()), "{b}");

    // A non-2xx answer is an error ack, with the status.
    assert_eq!(
        ack(&node, "u1", "create_ticket", vec![json!({"title": "boom"})]).await,
        json!([{"ok": false, "error": "upstream_status", "status": 500}])
    );
    // Calls with an ack are not retried; fire-and-forget ones are (3 tries on 500).
    let before = api.seen().len();
    node.emit("u1", "fire_and_forget", vec![json!({"title": "boom"})])
        .await
        .unwrap();
    wait_metric(
        &gw,
        r#"switchboard_client_actions_total{action="forward",outcome="upstream_status"}"#,
        T,
        |v| v == 2.0,
    )
    .await;
    assert_eq!(api.seen().len() - before, 3, "1 try + 2 retries");

    // The join hook: 2xx allows, anything else refuses.
    expect_ack(
        &node,
        "u1",
        "join:vip",
        vec![json!("gold")],
        ok_room("vip_gold"),
    )
    .await;
    expect_ack(
        &node,
        "u1",
        "join:vip",
        vec![json!("silver")],
        refused("forbidden"),
    )
    .await;
    let hooks: Vec<Seen> = api
        .seen()
        .into_iter()
        .filter(|s| s.path == "/realtime/join")
        .collect();
    assert_eq!(hooks.len(), 2);
    assert!(hooks.iter().all(|h| h.signed));
    assert_eq!(hooks[0].body["room"], json!("vip_gold"));
    assert_eq!(hooks[0].body["user"], json!("u1"));
    publish(&node, &redis, "vip_gold", "vip", 1).await;
    expect_once(&node, "u1", "vip").await;
    let text = metrics(&gw).await;
    assert!(
        metric(&text, "switchboard_client_forward_seconds_count").is_some_and(|n| n >= 6.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_timeouts_refused_connections_and_bounds_become_error_acks() {
    let api = ApiServer::start().await;
    let closed = switchboard_testkit::free_port();
    let toml = format!(
        r#"
[[client.forward]]
events = ["slow"]
url = "{base}/realtime/events"
timeout_ms = 300

[[client.forward]]
events = ["nowhere"]
url = "http://127.0.0.1:{closed}/x"

[client.hooks]
max_in_flight_per_socket = 1
"#,
        base = api.base()
    );
    let gw = start(
        base_opts()
            .env("SWITCHBOARD_CLIENT__HOOKS__SECRET", HOOK_SECRET)
            .config_toml(toml),
    )
    .await;
    let node = node().await;
    connect(
        &node,
        "a",
        &gw,
        ConnectOptions::new().websocket_only().token(token("a")),
    )
    .await;
    expect_ack(
        &node,
        "a",
        "nowhere",
        vec![json!({})],
        refused("unavailable"),
    )
    .await;
    // One slow call in flight: a second one from the same socket is
    // refused at once; the first times out.
    let first = node.emit_with_ack("a", "slow", vec![json!({"title": "slow"})], T);
    let second = async {
        // Once the first one is at the API (in flight), send the second.
        tokio::time::timeout(T, async {
            while !api.seen().iter().any(|s| s.body["event"] == json!("slow")) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the first call reaches the API");
        node.emit_with_ack("a", "slow", vec![json!({"title": "slow"})], T)
            .await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.unwrap(), refused("timeout"));
    assert_eq!(second.unwrap(), refused("overloaded"));
}

async fn xpending(redis: &RedisServer, stream: &str, group: &str) -> i64 {
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(&mut conn)
        .await
        .expect("XPENDING");
    match reply {
        redis::Value::Array(parts) => match parts.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("XPENDING: {other:?}"),
        },
        other => panic!("XPENDING: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_forwards_are_consumed_acked_and_claimed_after_a_worker_dies() {
    let redis = redis();
    let extra = r#"
[[client.forward]]
events = ["audit", "note"]
stream = "socket.io-upstream"
stream_maxlen = 1000
"#;
    let gw1 = gateway(&redis, config(None, extra)).await;
    let gw2 = gateway(&redis, config(None, extra)).await;
    let node = node().await;
    let opts = |sub: &str| ConnectOptions::new().websocket_only().token(token(sub));
    connect(&node, "a", &gw1, opts("a")).await;
    connect(&node, "b", &gw2, opts("b")).await;

    let settings = RedisSettings::from_url(redis.url());
    let consumer = |name: &str, idle_ms: u64| {
        let mut c = StreamConsumerConfig::new("socket.io-upstream", "workers", name);
        c.block = Duration::from_millis(200);
        c.claim_idle = Duration::from_millis(idle_ms);
        StreamConsumer::new(&settings, c).expect("consumer")
    };
    let w1 = consumer("w1", 60_000);
    w1.create_group().await.expect("XGROUP CREATE");
    w1.create_group().await.expect("a second create is fine");

    let reply = ack(&node, "a", "audit", vec![json!({"x": 1})]).await;
    assert_eq!(reply[0]["ok"], json!(true), "{reply}");
    let id = reply[0]["id"].as_str().expect("entry id").to_string();

    let batch = w1.next_batch().await.expect("read");
    assert_eq!(batch.len(), 1, "{batch:?}");
    assert_eq!(batch[0].id, id);
    assert!(!batch[0].claimed);
    let event = batch[0].event.as_ref().expect("a client event");
    assert_eq!(event.event, "audit");
    assert_eq!(event.args, vec![json!({"x": 1})]);
    assert_eq!(event.user.as_deref(), Some("a"));
    assert_eq!(xpending(&redis, "socket.io-upstream", "workers").await, 1);
    assert_eq!(w1.ack(&[&id]).await.expect("XACK"), 1);
    assert_eq!(xpending(&redis, "socket.io-upstream", "workers").await, 0);

    // A worker dies in the middle of an event: its task is killed before
    // it acknowledges, so the entry stays pending, owned by it.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let mut started_tx = Some(started_tx);
    let w2 = consumer("w2", 60_000);
    let dying = tokio::spawn(async move {
        w2.run(std::future::pending(), move |entry| {
            if let Some(tx) = started_tx.take() {
                let _ = tx.send(entry.id.clone());
            }
            std::future::pending::<Result<(), ()>>()
        })
        .await
    });
    node.emit("b", "note", vec![json!("from gateway 2")])
        .await
        .unwrap();
    let pending_id = tokio::time::timeout(T, started_rx)
        .await
        .expect("the worker got the event")
        .expect("id");
    dying.abort();
    let _ = dying.await;
    assert_eq!(xpending(&redis, "socket.io-upstream", "workers").await, 1);

    // Another worker claims it once it has been idle long enough, and acks.
    let w3 = consumer("w3", 300);
    let claimed = tokio::time::timeout(T, async {
        loop {
            let batch = w3.next_batch().await.expect("claim");
            if let Some(e) = batch.into_iter().find(|e| e.id == pending_id) {
                return e;
            }
        }
    })
    .await
    .expect("w3 claims the entry w2 left pending");
    assert!(claimed.claimed);
    let event = claimed.event.expect("a client event");
    assert_eq!(
        (event.event.as_str(), event.user.as_deref()),
        ("note", Some("b"))
    );
    w3.ack(&[&claimed.id]).await.expect("XACK");
    assert_eq!(xpending(&redis, "socket.io-upstream", "workers").await, 0);
    let text = metrics(&gw2).await;
    assert_eq!(
        metric(
            &text,
            r#"switchboard_client_actions_total{action="stream",outcome="ok"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn the_issue_example_passes_check_config_and_bad_rules_name_the_key() {
    let run = |toml: &str| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, toml).expect("write");
        let out = std::process::Command::new(bin_path("switchboard-gateway").expect("binary"))
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .env("SWITCHBOARD_JWT_SECRET", SECRET)
            .output()
            .expect("run check-config");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert_eq!(run(ISSUE_EXAMPLE).0, Some(0));
    let (code, err) = run(&ISSUE_EXAMPLE.replace("\"authenticated\"", "\"{arg} == company\""));
    assert_eq!(code, Some(2));
    assert!(err.contains("`client.rooms[1].allow`"), "{err}");
    let (code, err) = run(&ISSUE_EXAMPLE.replace(
        "url = \"http://127.0.0.1:8080/realtime/events\"",
        "stream = \"s\"",
    ));
    assert_eq!(code, Some(2));
    assert!(err.contains("`client.forward[0].stream`"), "{err}");
}
