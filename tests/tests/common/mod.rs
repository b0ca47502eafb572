//! Shared helpers for the gateway interop tests: gateways in embedded and
//! Redis mode, tokens, `/metrics` parsing and the publish API. The raw
//! Engine.IO websocket ([`RawWs`]) and the HTTP helper are the testkit's.
//!
//! Every helper is bounded by a timeout; every process is owned by the test
//! that started it (dropping it kills it).

#![allow(dead_code, unused_imports)]

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
pub use switchboard_testkit::ws::{End, RawWs};
use switchboard_testkit::{
    GatewayOptions, GatewayProcess,
    jwt::Claims,
    net::http,
    node::{ConnectOptions, Connected, NodeDriver},
    redis::RedisServer,
};

/// HS256 secret every gateway in these tests is started with.
pub const SECRET: &str = "interop-secret-0123456789abcdef0123456789";
/// API key for `POST /api/v1/emit`.
pub const API_KEY: &str = "interop-api-key-0123456789abcdef";
/// Default bound for anything that should happen.
pub const T: Duration = Duration::from_secs(10);
/// How long we watch for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(600);

/// A valid HS256 token for `sub` with no role.
pub fn token(sub: &str) -> String {
    Claims::new().sub(sub).sign_hs256(SECRET)
}

/// A valid HS256 token for `sub` with a single `role` claim.
pub fn token_role(sub: &str, role: &str) -> String {
    Claims::new().sub(sub).role(role).sign_hs256(SECRET)
}

/// Options for a gateway with the test secret and API key, embedded bus.
pub fn base_opts() -> GatewayOptions {
    GatewayOptions::new()
        .secret(SECRET)
        .env("SWITCHBOARD_API_KEYS", API_KEY)
        .env("SWITCHBOARD_LOG_LEVEL", "switchboard_gateway=debug,info")
}

/// Starts a gateway (blocking start on a worker thread).
pub async fn start(opts: GatewayOptions) -> GatewayProcess {
    GatewayProcess::start_async(opts)
        .await
        .expect("gateway starts")
}

/// An embedded-bus gateway with the test secret and API key plus `env`.
pub async fn embedded_gateway(env: &[(&str, &str)]) -> GatewayProcess {
    let mut opts = base_opts();
    for (k, v) in env {
        opts = opts.env(*k, *v);
    }
    start(opts).await
}

/// A Redis-bus gateway on `redis` plus `env`, waited for until `/readyz`
/// says it is subscribed.
pub async fn redis_gateway(redis: &RedisServer, env: &[(&str, &str)]) -> GatewayProcess {
    let mut opts = base_opts().redis(redis.url());
    for (k, v) in env {
        opts = opts.env(*k, *v);
    }
    let gw = start(opts).await;
    wait_ready(&gw, T).await;
    gw
}

/// Starts a private redis-server.
pub fn redis() -> RedisServer {
    RedisServer::start().expect("redis-server starts")
}

/// Starts the node driver (official socket.io-client and redis-emitter).
pub async fn node() -> NodeDriver {
    NodeDriver::start().await.expect("node driver starts")
}

/// `GET url`: status and body.
pub async fn get(url: String) -> anyhow::Result<(u16, String)> {
    let r = http("GET", &url, &[], None).await?;
    Ok((r.status, r.text()))
}

/// `GET url` parsed as JSON.
pub async fn get_json(url: String) -> anyhow::Result<(u16, Value)> {
    let (status, body) = get(url.clone()).await?;
    let v = serde_json::from_str(&body).with_context(|| format!("{url} gave non-JSON {body:?}"))?;
    Ok((status, v))
}

/// Polls `/readyz` until it answers 200 (`ready: true`); returns the body.
pub async fn wait_ready(gw: &GatewayProcess, timeout: Duration) -> Value {
    let body = wait_readyz(gw, 200, timeout).await;
    assert_eq!(body["ready"], json!(true), "{body}");
    body
}

/// Polls `/readyz` until it answers `status`; returns the body.
pub async fn wait_readyz(gw: &GatewayProcess, status: u16, timeout: Duration) -> Value {
    let url = format!("{}/readyz", gw.url());
    let deadline = Instant::now() + timeout;
    loop {
        let last = get_json(url.clone()).await;
        if let Ok((s, v)) = &last
            && *s == status
        {
            return v.clone();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not answer {status} within {timeout:?}; last: {last:?}\nlogs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `/metrics` text of a gateway.
pub async fn metrics(gw: &GatewayProcess) -> String {
    let (status, body) = get(format!("{}/metrics", gw.url()))
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200, "/metrics answered {status}: {body}");
    body
}

/// The value of one series in Prometheus text, e.g.
/// `switchboard_connect_refused_total{reason="expired"}` or
/// `switchboard_messages_out_total`. `None` if the series is absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, v)| v.parse().ok())
}

/// [`metric`] with absent counted as 0 (a labelled counter that was never
/// incremented is not rendered).
pub fn metric_or_zero(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or(0.0)
}

/// Polls `/metrics` until `series` satisfies `pred`; returns its value.
pub async fn wait_metric(
    gw: &GatewayProcess,
    series: &str,
    timeout: Duration,
    pred: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let text = metrics(gw).await;
        let v = metric_or_zero(&text, series);
        if pred(v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "metric {series} = {v} did not reach the expected value within {timeout:?}; /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /api/v1/emit` with the test API key; status and JSON body.
pub async fn api_emit(gw: &GatewayProcess, body: Value) -> (u16, Value) {
    api_post(gw.url(), "/api/v1/emit", body).await
}

/// `POST <base><path>` (`/api/v1/emit` or `/api/v1/emit/batch`) with the
/// test API key; status and JSON body (`null` if not JSON).
pub async fn api_post(base: String, path: &str, body: Value) -> (u16, Value) {
    let url = format!("{base}{path}");
    let auth = format!("Bearer {API_KEY}");
    let resp = http(
        "POST",
        &url,
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        Some(body.to_string().as_bytes()),
    )
    .await
    .expect("POST to the publish API");
    let v = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, v)
}

/// `GET <gateway><path>` with the test API key: status and JSON body.
pub async fn api_get(gw: &GatewayProcess, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", gw.url());
    let auth = format!("Bearer {API_KEY}");
    let resp = http("GET", &url, &[("authorization", auth.as_str())], None)
        .await
        .expect("GET");
    let v = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, v)
}

/// [`api_emit`] that must succeed.
pub async fn api_emit_ok(gw: &GatewayProcess, body: Value) -> Value {
    let (status, v) = api_emit(gw, body.clone()).await;
    assert_eq!(status, 200, "API emit {body} failed: {v}");
    assert_eq!(v["ok"], json!(true), "API emit {body}: {v}");
    v
}

/// Connects a client that must be admitted.
pub async fn connect(
    node: &NodeDriver,
    name: &str,
    gw: &GatewayProcess,
    opts: ConnectOptions,
) -> Connected {
    match node
        .connect(name, &gw.url(), opts.timeout(Duration::from_secs(8)))
        .await
    {
        Ok(c) => c,
        Err(e) => panic!(
            "{name} could not connect: {e:#}\ngateway logs:\n{}",
            gw.logs()
        ),
    }
}

/// Waits for `name` on `client` and then makes sure it does not arrive a
/// second time within [`QUIET`].
pub async fn expect_once(node: &NodeDriver, client: &str, name: &str) -> Vec<Value> {
    let args = node
        .expect_event(client, name, T)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    node.expect_no_event_named(client, name, QUIET)
        .await
        .unwrap_or_else(|e| panic!("{client} got {name:?} twice: {e:#}"));
    args
}

/// Asserts `client` receives no event `name` within [`QUIET`].
pub async fn expect_none(node: &NodeDriver, client: &str, name: &str) {
    node.expect_no_event_named(client, name, QUIET)
        .await
        .unwrap_or_else(|e| panic!("{client} must not receive {name:?}: {e:#}"));
}

/// A JSON payload with nested objects, unicode, integers and floats.
pub fn rich_json() -> Value {
    json!({
        "nested": {"list": [1, 2, {"deep": {"deeper": [null, true, false]}}], "empty": {}},
        "unicode": "héllo wörld ✓ 日本語 🎉 \u{0}nul \"quoted\" \\ back",
        "int": 42,
        "negative": -7,
        "big": 9_007_199_254_740_991_u64,
        "float": 3.25,
        "pi": 1.234_567_890_123,
        "tiny": 1.5e-7,
        "string_number": "12"
    })
}

/// Runs `tests/node/<script>` with `args` (installing the npm packages
/// first) and returns its stdout; panics with its output and the gateway's
/// logs when it exits non-zero (the scripts exit 1 on what they did not see).
pub fn run_node_script(script: &str, args: &[String], gateway: &GatewayProcess) -> String {
    switchboard_testkit::node::ensure_node_modules().expect("npm packages");
    let out = std::process::Command::new("node")
        .current_dir(switchboard_testkit::node::node_dir())
        .arg(script)
        .args(args)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "node {script} failed\nstdout: {}\nstderr: {}\ngateway logs:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        gateway.logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
