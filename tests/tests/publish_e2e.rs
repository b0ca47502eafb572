//! Publishing end to end: one real Redis, TWO real gateways, official
//! `socket.io-client` sockets on both, and every way an API service can
//! publish:
//!
//! (a) the `switchboard-broadcaster` crate, (b) the `switchboard` CLI,
//! (c) the gateway's HTTP publish API, (d) the official Node
//! `@socket.io/redis-emitter`.
//!
//! Each publish must reach exactly the targeted clients, on both gateways,
//! exactly once (nothing more within a grace period); binary arguments
//! arrive as binary; the request channel (join, leave, disconnect) acts
//! across gateways; and with Redis down every path fails promptly with a
//! useful error instead of hanging or silently dropping.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::*;
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_broadcaster::{Broadcaster, BroadcasterConfig, PublishError};
use switchboard_testkit::{
    GatewayProcess, bin_path,
    net::http_request,
    node::{ConnectOptions, EmitterPublish, NodeDriver, Note, as_bin, bin},
    redis::RedisServer,
};

/// How long after the expected deliveries we keep watching for duplicates
/// and strays.
const GRACE: Duration = Duration::from_millis(700);
/// "Promptly" for a publish while Redis is down.
const PROMPT: Duration = Duration::from_secs(3);

/// The five clients of the cluster fixture: name, gateway index, sub, role.
const CLIENTS: [(&str, usize, &str, Option<&str>); 5] = [
    ("admin1", 1, "a1", Some("admin")),
    ("admin2", 2, "a2", Some("admin")),
    ("u42", 1, "42", None),
    ("u7", 2, "7", None),
    ("plain", 2, "99", Some("viewer")),
];

fn all_clients() -> Vec<&'static str> {
    CLIENTS.iter().map(|c| c.0).collect()
}

/// Redis, two gateways on it, the node driver and the five clients.
struct Cluster {
    redis: RedisServer,
    gw1: GatewayProcess,
    gw2: GatewayProcess,
    node: NodeDriver,
    /// Socket ids by client name.
    sids: Vec<(&'static str, String)>,
}

impl Cluster {
    async fn start() -> Self {
        let redis = redis();
        let gw1 = redis_gateway(&redis, &[]).await;
        let gw2 = redis_gateway(&redis, &[]).await;
        let node = node().await;
        let mut sids = Vec::new();
        for (name, g, sub, role) in CLIENTS {
            let gw = if g == 1 { &gw1 } else { &gw2 };
            let tok = match role {
                Some(r) => token_role(sub, r),
                None => token(sub),
            };
            let c = connect(
                &node,
                name,
                gw,
                ConnectOptions::new().websocket_only().token(tok),
            )
            .await;
            sids.push((name, c.sid));
        }
        Cluster {
            redis,
            gw1,
            gw2,
            node,
            sids,
        }
    }

    fn sid(&self, name: &str) -> &str {
        &self
            .sids
            .iter()
            .find(|(n, _)| *n == name)
            .expect("known client")
            .1
    }

    fn logs(&self) -> String {
        format!(
            "--- gw1 ---\n{}\n--- gw2 ---\n{}",
            self.gw1.logs(),
            self.gw2.logs()
        )
    }

    /// `event` must reach exactly `receivers` (each once, with `args`) and
    /// nobody else, within the grace period after the last delivery.
    async fn expect_exactly(&self, what: &str, event: &str, receivers: &[&str], args: &Value) {
        for r in receivers {
            let got = self
                .node
                .expect_event(r, event, T)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", self.logs()));
            assert_eq!(
                &Value::Array(got.clone()),
                args,
                "{what}: {r} got {event:?} with other arguments"
            );
        }
        tokio::time::sleep(GRACE).await;
        for c in all_clients() {
            let extra: Vec<Note> = self
                .node
                .queued(c)
                .into_iter()
                .filter(|n| matches!(n, Note::Event { name, .. } if name == event))
                .collect();
            if receivers.contains(&c) {
                assert!(
                    extra.is_empty(),
                    "{what}: {c} received {event:?} more than once: {extra:?}"
                );
            } else {
                assert!(
                    extra.is_empty(),
                    "{what}: {c} is not targeted but received {event:?}: {extra:?}"
                );
            }
        }
    }

    /// The CLI with `--redis` pointed at this cluster's Redis.
    async fn cli(&self, args: &[&str]) -> CliOutput {
        let mut full = vec!["--redis".to_string(), self.redis.url()];
        full.extend(args.iter().map(|s| s.to_string()));
        let out = run_cli(&full, None).await;
        assert_eq!(
            out.code,
            Some(0),
            "switchboard {args:?} failed: stdout {:?} stderr {:?}",
            out.stdout,
            out.stderr
        );
        out
    }
}

struct CliOutput {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs the built `switchboard` CLI (no inherited `SWITCHBOARD_*`), bounded
/// by 20 s.
async fn run_cli(args: &[String], stdin: Option<&str>) -> CliOutput {
    let bin = bin_path("switchboard").expect("switchboard CLI is built");
    let mut cmd = tokio::process::Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn switchboard");
    if let Some(text) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("switchboard CLI finished within 20 s")
        .expect("switchboard CLI output");
    CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// `POST {url}{path}` with an optional bearer key and a raw body; status and
/// JSON body (Null if not JSON).
async fn post_raw(
    url: String,
    path: &str,
    key: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let url = format!("{url}{path}");
    let auth = key.map(|k| format!("Bearer {k}"));
    let content_type = content_type.to_string();
    let resp = tokio::task::spawn_blocking(move || {
        let mut headers = vec![("Content-Type", content_type.as_str())];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        http_request("POST", &url, &headers, Some(&body), Duration::from_secs(10))
    })
    .await
    .expect("http task")
    .expect("HTTP request");
    (
        resp.status,
        serde_json::from_slice(&resp.body).unwrap_or(Value::Null),
    )
}

async fn post_json(url: String, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    post_raw(
        url,
        path,
        key,
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

/// Sends a body larger than the API limit and reads whatever status comes
/// back. The server may answer and close before it has read everything, so
/// write errors after the head are tolerated.
fn post_oversize(port: u16, key: &str, len: usize) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "POST /api/v1/emit HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes())?;
    // A valid-looking JSON prefix, then padding inside a string.
    let mut body = br#"{"event":"big","broadcast":true,"data":""#.to_vec();
    body.resize(len - 2, b'x');
    body.extend_from_slice(b"\"}");
    for chunk in body.chunks(64 * 1024) {
        if s.write_all(chunk).is_err() {
            break;
        }
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP status in {text:?}"))?;
    Ok((status, text))
}

#[derive(Serialize)]
struct Ticket {
    id: u64,
    title: String,
    status: &'static str,
}

// ------------------------------------------------------------------ fan-out

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_path_reaches_exactly_the_targets_on_both_gateways() {
    let c = Cluster::start().await;
    let url = c.redis.url();
    let b = Broadcaster::connect(url.clone()).expect("broadcaster");

    // ---- (a) the broadcaster crate
    let ticket = Ticket {
        id: 7,
        title: "Printer on fire 🔥".into(),
        status: "open",
    };
    let d = b
        .to_role("admin")
        .emit("a_role", &ticket)
        .await
        .expect("crate publish");
    assert_eq!(d.subscribers, 2, "both gateways subscribed: {d:?}");
    c.expect_exactly(
        "crate to_role(admin)",
        "a_role",
        &["admin1", "admin2"],
        &json!([{"id": 7, "title": "Printer on fire 🔥", "status": "open"}]),
    )
    .await;

    b.to_user(42)
        .emit("a_user", &("assigned", 7))
        .await
        .expect("crate publish");
    c.expect_exactly(
        "crate to_user(42)",
        "a_user",
        &["u42"],
        &json!(["assigned", 7]),
    )
    .await;

    b.to_role("admin")
        .except("user:a2")
        .emit("a_except_room", &())
        .await
        .expect("crate publish");
    c.expect_exactly(
        "crate to_role(admin).except(user:a2)",
        "a_except_room",
        &["admin1"],
        &json!([]),
    )
    .await;

    b.except(c.sid("u7"))
        .emit("a_except_sid", &json!({"n": 1}))
        .await
        .expect("crate publish");
    c.expect_exactly(
        "crate except(<sid of u7>)",
        "a_except_sid",
        &["admin1", "admin2", "u42", "plain"],
        &json!([{"n": 1}]),
    )
    .await;

    b.broadcast("a_broadcast", &"hello everyone")
        .await
        .expect("crate publish");
    c.expect_exactly(
        "crate broadcast",
        "a_broadcast",
        &all_clients(),
        &json!(["hello everyone"]),
    )
    .await;

    // Binary: serde_bytes and bytes::Bytes become binary attachments.
    let blob: Vec<u8> = (0..=255u8).collect();
    b.to_role("admin")
        .emit(
            "a_binary",
            &(
                "report.bin",
                serde_bytes::Bytes::new(&blob),
                bytes::Bytes::from_static(b"\x00\x01\xfe\xff"),
            ),
        )
        .await
        .expect("crate binary publish");
    c.expect_exactly(
        "crate binary",
        "a_binary",
        &["admin1", "admin2"],
        &json!(["report.bin", bin(&blob), bin(b"\x00\x01\xfe\xff")]),
    )
    .await;

    // A batch (pipeline) reaches its targets too.
    let mut batch = b.pipeline();
    batch
        .emit(&b.to_role("admin"), "a_batch_admins", &1)
        .expect("queue")
        .emit(&b.to_user(7), "a_batch_u7", &2)
        .expect("queue");
    let ds = batch.send().await.expect("pipeline");
    assert_eq!(ds.len(), 2);
    c.expect_exactly(
        "crate pipeline 1",
        "a_batch_admins",
        &["admin1", "admin2"],
        &json!([1]),
    )
    .await;
    c.expect_exactly("crate pipeline 2", "a_batch_u7", &["u7"], &json!([2]))
        .await;

    // ---- (b) the CLI
    let out = c
        .cli(&[
            "publish",
            "--role",
            "admin",
            "--event",
            "b_role",
            "--data",
            r#"{"id":7,"status":"open"}"#,
        ])
        .await;
    assert!(
        out.stdout.contains("2 subscriber(s)"),
        "CLI reports both gateways: {:?}",
        out.stdout
    );
    c.expect_exactly(
        "CLI --role admin",
        "b_role",
        &["admin1", "admin2"],
        &json!([{"id": 7, "status": "open"}]),
    )
    .await;

    c.cli(&[
        "publish",
        "--user",
        "42",
        "--event",
        "b_user",
        "--args",
        r#"["assigned", 7, null]"#,
    ])
    .await;
    c.expect_exactly(
        "CLI --user 42 --args",
        "b_user",
        &["u42"],
        &json!(["assigned", 7, null]),
    )
    .await;

    c.cli(&[
        "publish",
        "--except",
        "user:42",
        "--except",
        "role:admin",
        "--event",
        "b_except",
        "--data",
        "[1,2]",
    ])
    .await;
    c.expect_exactly(
        "CLI broadcast --except user:42 --except role:admin",
        "b_except",
        &["u7", "plain"],
        &json!([[1, 2]]),
    )
    .await;

    let out = run_cli(
        &[
            "--redis".into(),
            url.clone(),
            "publish".into(),
            "--to".into(),
            "user:7".into(),
            "--to".into(),
            "role:admin".into(),
            "--event".into(),
            "b_stdin".into(),
            "--data".into(),
            "-".into(),
        ],
        Some("{\"from\":\"stdin\"}\n"),
    )
    .await;
    assert_eq!(out.code, Some(0), "CLI --data -: {:?}", out.stderr);
    c.expect_exactly(
        "CLI --to user:7 --to role:admin --data -",
        "b_stdin",
        &["admin1", "admin2", "u7"],
        &json!([{"from": "stdin"}]),
    )
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("payload.json");
    std::fs::write(&file, r#"{"from":"file","list":[1,"two",3.5]}"#).expect("write");
    c.cli(&[
        "publish",
        "--user",
        "7",
        "--event",
        "b_file",
        "--data-file",
        file.to_str().expect("utf-8 path"),
    ])
    .await;
    c.expect_exactly(
        "CLI --data-file",
        "b_file",
        &["u7"],
        &json!([{"from": "file", "list": [1, "two", 3.5]}]),
    )
    .await;

    // ---- (c) the HTTP API of gw1 (delivers on gw2 through Redis too)
    let v = api_emit_ok(
        &c.gw1,
        json!({"event": "c_role", "roles": ["admin"], "data": {"id": 7}}),
    )
    .await;
    assert_eq!(v["receivers"], json!(2), "{v}");
    c.expect_exactly(
        "API roles:[admin]",
        "c_role",
        &["admin1", "admin2"],
        &json!([{"id": 7}]),
    )
    .await;

    api_emit_ok(
        &c.gw1,
        json!({"event": "c_user", "users": ["7"], "args": ["x", {"y": 1}]}),
    )
    .await;
    c.expect_exactly(
        "API users:[7] (on the other gateway)",
        "c_user",
        &["u7"],
        &json!(["x", {"y": 1}]),
    )
    .await;

    api_emit_ok(
        &c.gw1,
        json!({"event": "c_except", "broadcast": true, "except": ["user:42", c.sid("admin2")]}),
    )
    .await;
    c.expect_exactly(
        "API broadcast except user:42 and admin2's sid",
        "c_except",
        &["admin1", "u7", "plain"],
        &json!([]),
    )
    .await;

    api_emit_ok(
        &c.gw1,
        json!({"event": "c_rooms", "rooms": ["user:42", "role:admin"], "users": ["42"], "data": "x"}),
    )
    .await;
    c.expect_exactly(
        "API rooms + users overlapping",
        "c_rooms",
        &["admin1", "admin2", "u42"],
        &json!(["x"]),
    )
    .await;

    let (status, v) = post_json(
        c.gw1.url(),
        "/api/v1/emit/batch",
        Some(API_KEY),
        &json!({"messages": [
            {"event": "c_batch_1", "roles": ["admin"], "data": 1},
            {"event": "c_batch_2", "users": ["42"], "data": 2},
            {"event": "c_batch_3", "rooms": ["user:7"], "except": [], "data": 3}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "batch: {v}");
    assert_eq!(v, json!({"ok": true, "receivers": [2, 2, 2]}));
    c.expect_exactly(
        "API batch 1",
        "c_batch_1",
        &["admin1", "admin2"],
        &json!([1]),
    )
    .await;
    c.expect_exactly("API batch 2", "c_batch_2", &["u42"], &json!([2]))
        .await;
    c.expect_exactly("API batch 3", "c_batch_3", &["u7"], &json!([3]))
        .await;

    // ---- (d) the official Node @socket.io/redis-emitter
    c.node
        .emitter_publish(
            EmitterPublish::new(url.clone(), "d_role", vec![json!({"id": 7})]).to("role:admin"),
        )
        .await
        .expect("emitter publish");
    c.expect_exactly(
        "emitter to(role:admin)",
        "d_role",
        &["admin1", "admin2"],
        &json!([{"id": 7}]),
    )
    .await;

    c.node
        .emitter_publish(EmitterPublish::new(url.clone(), "d_user", vec![json!(42)]).to("user:42"))
        .await
        .expect("emitter publish");
    c.expect_exactly("emitter to(user:42)", "d_user", &["u42"], &json!([42]))
        .await;

    c.node
        .emitter_publish(
            EmitterPublish::new(url.clone(), "d_except", vec![])
                .to("role:admin")
                .to("user:7")
                .except("user:a1"),
        )
        .await
        .expect("emitter publish");
    c.expect_exactly(
        "emitter to(role:admin, user:7).except(user:a1)",
        "d_except",
        &["admin2", "u7"],
        &json!([]),
    )
    .await;

    c.node
        .emitter_publish(EmitterPublish::new(
            url.clone(),
            "d_binary",
            vec![json!("x"), bin([0u8, 159, 146, 150])],
        ))
        .await
        .expect("emitter publish");
    let got = c
        .node
        .expect_event("plain", "d_binary", T)
        .await
        .expect("binary via emitter");
    assert_eq!(as_bin(&got[1]).as_deref(), Some(&[0u8, 159, 146, 150][..]));
    c.expect_exactly(
        "emitter binary broadcast",
        "d_binary",
        &["admin1", "admin2", "u42", "u7"],
        &json!(["x", bin([0u8, 159, 146, 150])]),
    )
    .await;

    // Nothing else arrived anywhere (no stray events from any of the above).
    for client in all_clients() {
        let stray: Vec<Note> = c
            .node
            .drain(client)
            .into_iter()
            .filter(|n| matches!(n, Note::Event { .. } | Note::Disconnect { .. }))
            .collect();
        assert!(stray.is_empty(), "{client} has leftover notes: {stray:?}");
    }
}

// ---------------------------------------------------------- request channel

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_and_disconnect_act_across_gateways() {
    let c = Cluster::start().await;
    // A second socket of user 42, on the other gateway.
    connect(
        &c.node,
        "u42b",
        &c.gw2,
        ConnectOptions::new().websocket_only().token(token("42")),
    )
    .await;
    let b = Broadcaster::connect(c.redis.url()).expect("broadcaster");
    // No wait between a join / leave and the emit that checks it: Redis
    // runs the request's PUBLISH before the emit's (the crate's connection
    // keeps order; the CLI has exited once its PUBLISH answered), delivers
    // both to each gateway's one subscriber connection in that order, and
    // the gateway applies a request before it reads the next message.

    // crate sockets_join: both admins (one per gateway) join "ops".
    let d = b
        .to_role("admin")
        .sockets_join(["ops"])
        .await
        .expect("sockets_join");
    assert!(d.subscribers >= 2, "{d:?}");
    b.to("ops").emit("ops_1", &1).await.expect("emit");
    c.expect_exactly(
        "after crate sockets_join",
        "ops_1",
        &["admin1", "admin2"],
        &json!([1]),
    )
    .await;

    // crate sockets_leave: admin2 (gw2) leaves; admin1 stays.
    b.to("user:a2")
        .sockets_leave(["ops"])
        .await
        .expect("sockets_leave");
    b.to("ops").emit("ops_2", &2).await.expect("emit");
    c.expect_exactly(
        "after crate sockets_leave",
        "ops_2",
        &["admin1"],
        &json!([2]),
    )
    .await;

    // CLI join / leave: user 7 (gw2) joins "vip", then leaves it.
    c.cli(&["join", "--user", "7", "--room", "vip", "--room", "vip2"])
        .await;
    b.to("vip").emit("vip_1", &()).await.expect("emit");
    c.expect_exactly("after CLI join", "vip_1", &["u7"], &json!([]))
        .await;
    c.cli(&["leave", "--user", "7", "--room", "vip"]).await;
    b.to("vip").emit("vip_2", &()).await.expect("emit");
    b.to("vip2").emit("vip2_1", &()).await.expect("emit");
    c.expect_exactly("after CLI leave", "vip_2", &[], &json!([]))
        .await;
    c.expect_exactly("still in vip2", "vip2_1", &["u7"], &json!([]))
        .await;

    // crate disconnect_sockets: user 7 on gw2 is disconnected by the server.
    b.to_user(7)
        .disconnect_sockets(false)
        .await
        .expect("disconnect_sockets");
    let reason = c
        .node
        .expect_disconnect("u7", T)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));
    assert_eq!(reason, "io server disconnect");

    // CLI kick --user 42 --close: both of 42's sockets, one per gateway.
    let out = c.cli(&["kick", "--user", "42", "--close"]).await;
    assert!(out.stdout.contains("subscriber(s)"), "{:?}", out.stdout);
    for client in ["u42", "u42b"] {
        let reason = c
            .node
            .expect_disconnect(client, T)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));
        assert_eq!(reason, "io server disconnect", "{client}");
    }

    // Everyone else is still connected and reachable.
    tokio::time::sleep(GRACE).await;
    for client in ["admin1", "admin2", "plain"] {
        let notes = c.node.drain(client);
        assert!(
            !notes.iter().any(|n| matches!(n, Note::Disconnect { .. })),
            "{client} must stay connected: {notes:?}"
        );
    }
    b.broadcast("after_kick", &()).await.expect("emit");
    for client in ["admin1", "admin2", "plain"] {
        c.node
            .expect_event(client, "after_kick", T)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    for client in ["u7", "u42", "u42b"] {
        c.node
            .expect_no_event_named(client, "after_kick", GRACE)
            .await
            .unwrap_or_else(|e| panic!("disconnected {client} got an event: {e:#}"));
    }
}

// ---------------------------------------------------------------- Redis down

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_with_redis_down_fails_promptly_on_every_path() {
    let mut redis = redis();
    let url = redis.url();
    let gw = redis_gateway(&redis, &[]).await;
    // A broadcaster that already holds a pooled connection when Redis dies.
    let warm = Broadcaster::connect(url.clone()).expect("broadcaster");
    warm.ping().await.expect("ping while Redis is up");
    redis.kill();

    // (a) crate, warm pool and fresh broadcaster.
    for (what, b) in [
        ("warm", warm.clone()),
        (
            "fresh",
            Broadcaster::connect(url.clone()).expect("broadcaster"),
        ),
    ] {
        let started = Instant::now();
        let err = b
            .to_role("admin")
            .emit("x", &1)
            .await
            .expect_err("publish with Redis down must fail");
        let elapsed = started.elapsed();
        assert!(
            matches!(
                err,
                PublishError::Unreachable { .. } | PublishError::Timeout { .. }
            ),
            "{what}: {err:?}"
        );
        assert!(err.is_unavailable());
        assert!(elapsed < PROMPT, "{what}: took {elapsed:?}: {err}");
        assert!(
            err.to_string().contains(&url),
            "{what}: the error names the Redis URL: {err}"
        );
    }

    // A Redis that accepts TCP but never answers: Timeout within the bound.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hole_url = format!("redis://{}", blackhole.local_addr().expect("addr"));
    let b = Broadcaster::from_config(BroadcasterConfig {
        redis_url: hole_url.clone(),
        publish_timeout: Duration::from_millis(800),
        ..Default::default()
    })
    .expect("broadcaster");
    let started = Instant::now();
    let err = b.broadcast("x", &()).await.expect_err("must time out");
    assert!(
        matches!(err, PublishError::Timeout { .. }),
        "unanswering Redis: {err:?}"
    );
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());

    // (b) CLI: exit code 3 and a message that says what to check.
    let out = run_cli(
        &[
            "--redis".into(),
            url.clone(),
            "publish".into(),
            "--role".into(),
            "admin".into(),
            "--event".into(),
            "x".into(),
            "--data".into(),
            "1".into(),
        ],
        None,
    )
    .await;
    assert_eq!(out.code, Some(3), "stderr: {:?}", out.stderr);
    assert!(out.elapsed < PROMPT, "CLI took {:?}", out.elapsed);
    assert!(
        out.stderr.contains("unreachable") || out.stderr.contains("timed out"),
        "{:?}",
        out.stderr
    );
    assert!(
        out.stderr.contains("SWITCHBOARD_REDIS_URL") && out.stderr.contains(&url),
        "the CLI says which Redis and how to point elsewhere: {:?}",
        out.stderr
    );
    let out = run_cli(
        &[
            "--redis".into(),
            hole_url,
            "--timeout-ms".into(),
            "500".into(),
            "kick".into(),
            "--user".into(),
            "42".into(),
        ],
        None,
    )
    .await;
    assert_eq!(
        out.code,
        Some(3),
        "kick vs unanswering Redis: {:?}",
        out.stderr
    );
    assert!(out.elapsed < PROMPT, "CLI took {:?}", out.elapsed);
    drop(blackhole);

    // (c) HTTP API: 503 bus_unavailable, promptly.
    let started = Instant::now();
    let (status, v) = post_json(
        gw.url(),
        "/api/v1/emit",
        Some(API_KEY),
        &json!({"event": "x", "roles": ["admin"], "data": 1}),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(status, 503, "{v}\n{}", gw.logs());
    assert_eq!(v["ok"], json!(false));
    assert_eq!(v["error"], json!("bus_unavailable"), "{v}");
    assert!(v["message"].is_string(), "{v}");
    assert!(elapsed < PROMPT, "API took {elapsed:?}");
    let (status, v) = post_json(
        gw.url(),
        "/api/v1/emit/batch",
        Some(API_KEY),
        &json!({"messages": [{"event": "x", "broadcast": true}]}),
    )
    .await;
    assert_eq!(status, 503, "batch: {v}");
    assert_eq!(v["error"], json!("bus_unavailable"), "{v}");

    // And once Redis is back, every path works again.
    redis.restart().expect("redis restart");
    wait_ready(&gw, Duration::from_secs(15)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match warm.broadcast("back", &()).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "still failing: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The gateway's publisher reconnects on its own backoff, independent of
    // the subscriber `/readyz` follows: wait for it the same way.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = api_emit(&gw, json!({"event": "back", "broadcast": true})).await;
        if status == 200 {
            assert_eq!(v["ok"], json!(true), "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the API still fails 10 s after Redis is back: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ----------------------------------------------------------- API rejections

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_rejects_bad_requests_with_reasons() {
    let redis = redis();
    let gw = redis_gateway(&redis, &[]).await;
    let ok_body = json!({"event": "e", "roles": ["admin"], "data": {"id": 7}});
    let url = gw.url();

    let check = |what: &str, status: u16, v: &Value, want_status: u16, want_reason: &str| {
        assert_eq!(status, want_status, "{what}: {v}");
        assert_eq!(v["ok"], json!(false), "{what}: {v}");
        assert_eq!(v["error"], json!(want_reason), "{what}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: a message explains it: {v}"
        );
    };

    // 401 without a key, with a wrong key, with a non-bearer scheme.
    let (s, v) = post_json(url.clone(), "/api/v1/emit", None, &ok_body).await;
    check("no key", s, &v, 401, "missing_api_key");
    let (s, v) = post_json(
        url.clone(),
        "/api/v1/emit",
        Some("wrong-key-0123456789abcdef"),
        &ok_body,
    )
    .await;
    check("wrong key", s, &v, 401, "bad_api_key");
    let (s, v) = post_json(
        url.clone(),
        "/api/v1/emit/batch",
        Some("wrong-key-0123456789abcdef"),
        &json!({"messages": []}),
    )
    .await;
    check("wrong key (batch)", s, &v, 401, "bad_api_key");

    // 400: unknown field, invalid JSON, no target, data and args together.
    let (s, v) = post_json(
        url.clone(),
        "/api/v1/emit",
        Some(API_KEY),
        &json!({"evnt": "typo", "broadcast": true}),
    )
    .await;
    assert_eq!(s, 400, "unknown field: {v}");
    assert_eq!(v["ok"], json!(false));
    assert!(
        v["message"].as_str().unwrap_or("").contains("evnt"),
        "the message names the unknown field: {v}"
    );
    let (s, v) = post_json(
        url.clone(),
        "/api/v1/emit",
        Some(API_KEY),
        &json!({"event": "e", "broadcast": true, "room": ["typo"]}),
    )
    .await;
    assert_eq!(s, 400, "unknown field next to valid ones: {v}");
    let (s, v) = post_raw(
        url.clone(),
        "/api/v1/emit",
        Some(API_KEY),
        "application/json",
        b"{\"event\": \"e\", ".to_vec(),
    )
    .await;
    check("invalid JSON", s, &v, 400, "invalid_json");
    let (s, v) = post_json(
        url.clone(),
        "/api/v1/emit",
        Some(API_KEY),
        &json!({"event": "e", "data": 1}),
    )
    .await;
    check("no target", s, &v, 400, "invalid_request");
    let (s, v) = post_json(
        url.clone(),
        "/api/v1/emit",
        Some(API_KEY),
        &json!({"event": "e", "broadcast": true, "data": 1, "args": [1]}),
    )
    .await;
    check("data and args", s, &v, 400, "invalid_request");
    let (s, v) = post_json(
        url.clone(),
        "/api/v1/emit/batch",
        Some(API_KEY),
        &json!({"messages": [{"event": "ok", "broadcast": true}, {"event": "e"}]}),
    )
    .await;
    check("batch with one bad message", s, &v, 400, "invalid_request");
    assert!(
        v["message"].as_str().unwrap_or("").contains("messages[1]"),
        "names the bad message: {v}"
    );

    // 405 on GET.
    let get = tokio::task::spawn_blocking({
        let u = format!("{url}/api/v1/emit");
        move || http_request("GET", &u, &[], None, Duration::from_secs(5))
    })
    .await
    .expect("task")
    .expect("GET");
    assert_eq!(get.status, 405, "{}", get.text());

    // 413 for a body over 1 MiB.
    let port = gw.port();
    let (status, text) =
        tokio::task::spawn_blocking(move || post_oversize(port, API_KEY, 1024 * 1024 + 4096))
            .await
            .expect("task")
            .expect("oversize request");
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("body_too_large"), "{text}");
    // Just under the limit is fine (a broadcast nobody listens to).
    let (status, text) =
        tokio::task::spawn_blocking(move || post_oversize(port, API_KEY, 1024 * 1024 - 64))
            .await
            .expect("task")
            .expect("large request");
    assert_eq!(status, 200, "{text}");

    // The gateway is unaffected and a good request still works.
    api_emit_ok(&gw, ok_body).await;
}

/// BUG (kept failing on purpose): `"data": null` is documented as "one
/// argument (any JSON)", and `io.emit("e", null)` delivers one `null`
/// argument, but the API drops it: serde maps a JSON `null` onto
/// `Option::None` for `EmitRequest::data`, so clients receive the event with
/// NO arguments. `"args": [null]` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_data_null_is_one_null_argument() {
    let redis = redis();
    let gw = redis_gateway(&redis, &[]).await;
    let node = node().await;
    connect(
        &node,
        "u42",
        &gw,
        ConnectOptions::new().websocket_only().token(token("42")),
    )
    .await;
    api_emit_ok(
        &gw,
        json!({"event": "via_args", "users": ["42"], "args": [null]}),
    )
    .await;
    let got = node
        .expect_event("u42", "via_args", T)
        .await
        .expect("event");
    assert_eq!(got, vec![Value::Null], "args: [null]");
    api_emit_ok(
        &gw,
        json!({"event": "via_data", "users": ["42"], "data": null}),
    )
    .await;
    let got = node
        .expect_event("u42", "via_data", T)
        .await
        .expect("event");
    assert_eq!(
        got,
        vec![Value::Null],
        "\"data\": null must arrive as one null argument (like io.emit(\"via_data\", null)), not as no argument"
    );
}
