//! Every code block of `docs/migration.md` is exercised here.
//!
//! Each fenced block in the guide is preceded by `<!-- snippet: name -->`.
//! The blocks are extracted from the Markdown and run against real
//! processes: a Redis, one gateway configured by the `gateway-env` snippet,
//! one by the `gateway-toml` snippet, and official `socket.io-client`
//! sockets that must receive what each snippet publishes.
//!
//! - Node snippets are written to a temporary `.mjs` in `tests/node` (so its
//!   `node_modules` resolve), with `REDIS_URL` in the environment and a
//!   small harness appended where the snippet is a module meant to be called.
//! - `curl` runs through `sh -c` (if curl is installed), Python with
//!   `tests/python/.venv`.
//! - `rust-handler` must appear verbatim in
//!   `broadcaster/examples/ticket_api.rs` (and the built example is run if
//!   present); `rust-config` must appear verbatim in THIS file, where it is
//!   compiled and run.
//! - `nginx` runs in a private nginx (if installed) in front of both
//!   gateways and the example API; the `client` snippet connects through it.
//! - `before-express` (Express is not installed) and the diagram are
//!   cross-checked against the other snippets instead.

mod common;
// The shared nginx stops its master with SIGTERM, so the worker goes too
// (a SIGKILL of the master alone leaves the worker running).
mod deploy_support;

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};
use switchboard_testkit::{
    GatewayOptions, GatewayProcess, bin_path, free_port,
    jwt::Claims,
    net::http_request,
    node::{ConnectOptions, NodeDriver, Note, node_dir},
    python,
    redis::RedisServer,
    repo_root,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// One fenced block of the guide.
#[derive(Debug, Clone)]
struct Snippet {
    name: String,
    lang: String,
    code: String,
}

/// Every snippet the guide must have, and nothing else.
const EXPECTED: [&str; 18] = [
    "diagram",
    "before-express",
    "gateway-env",
    "gateway-toml",
    "client",
    "rust-handler",
    "rust-config",
    "node-emitter",
    "curl",
    "python",
    "client-events",
    "before-handlers",
    "client-config",
    "client-app",
    "api-handler",
    "stream-worker",
    "mixed-fleet",
    "nginx",
];

const GRACE: Duration = Duration::from_millis(700);

fn guide() -> String {
    std::fs::read_to_string(repo_root().join("docs/migration.md")).expect("read docs/migration.md")
}

/// Extracts the fenced blocks; panics on a block without a marker or a
/// marker without a block.
fn snippets(md: &str) -> Vec<Snippet> {
    let mut out = Vec::new();
    let mut pending: Option<(String, usize)> = None;
    let mut lines = md.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("<!-- snippet:") {
            let name = rest.trim_end_matches("-->").trim().to_string();
            assert!(
                pending.is_none(),
                "docs/migration.md:{}: marker {name:?} follows a marker with no block",
                i + 1
            );
            pending = Some((name, i + 1));
            continue;
        }
        if let Some(lang) = t.strip_prefix("```") {
            let (name, at) = pending.take().unwrap_or_else(|| {
                panic!(
                    "docs/migration.md:{}: fenced block without a `<!-- snippet: name -->` marker; \
                     every block must be exercised by tests/tests/migration_snippets.rs",
                    i + 1
                )
            });
            assert_eq!(
                at + 1,
                i + 1,
                "docs/migration.md:{at}: the marker must be right before its block"
            );
            let mut code = String::new();
            loop {
                let (_, l) = lines
                    .next()
                    .unwrap_or_else(|| panic!("unterminated block {name:?}"));
                if l.trim_start().starts_with("```") {
                    break;
                }
                code.push_str(l);
                code.push('\n');
            }
            out.push(Snippet {
                name,
                lang: lang.trim().to_string(),
                code,
            });
            continue;
        }
        if !t.is_empty() && pending.is_some() {
            let (name, at) = pending.take().expect("pending");
            panic!("docs/migration.md:{at}: marker {name:?} is not followed by a fenced block");
        }
    }
    assert!(pending.is_none(), "trailing marker without a block");
    out
}

fn snippet(all: &[Snippet], name: &str) -> Snippet {
    all.iter()
        .find(|s| s.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("docs/migration.md has no snippet {name:?}"))
}

/// `block` appears in `source` line for line, at some uniform indentation
/// (the snippet may sit inside a function body).
fn contains_block(source: &str, block: &str) -> bool {
    ["", "    ", "        "].iter().any(|indent| {
        let indented: Vec<String> = block
            .lines()
            .map(|l| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!("{indent}{l}")
                }
            })
            .collect();
        source.contains(&indented.join("\n"))
    })
}

// ------------------------------------------------------------ the Rust snippet

/// The `rust-config` snippet, compiled and run by this test. The guide's
/// block must match the lines between the markers verbatim.
async fn rust_config_snippet(
    redis_url: String,
    ticket: Value,
) -> Result<(), Box<dyn std::error::Error>> {
    // snippet rust-config: begin
    use switchboard_broadcaster::{Broadcaster, BroadcasterConfig};

    // Keep the room names the Express app used (`role_admin`, `user:42`).
    let switchboard = Broadcaster::from_config(BroadcasterConfig {
        redis_url,
        role_room_template: "role_{role}".into(),
        ..BroadcasterConfig::default()
    })?;
    switchboard
        .to_role("admin")
        .emit("ticket_updated", &ticket)
        .await?;
    // snippet rust-config: end
    Ok(())
}

// ------------------------------------------------------------------ static

#[test]
fn every_block_has_a_marker_and_static_snippets_match_their_sources() {
    let md = guide();
    let all = snippets(&md);
    let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    let mut expected = EXPECTED.to_vec();
    expected.sort_unstable();
    assert_eq!(
        names, expected,
        "snippets in docs/migration.md vs the ones this test exercises"
    );

    // rust-handler: verbatim in the runnable example.
    let example = std::fs::read_to_string(repo_root().join("broadcaster/examples/ticket_api.rs"))
        .expect("read ticket_api.rs");
    let handler = snippet(&all, "rust-handler");
    assert_eq!(handler.lang, "rust");
    assert!(
        example.contains(&handler.code),
        "the rust-handler snippet must be copied verbatim from broadcaster/examples/ticket_api.rs"
    );
    // rust-config: verbatim in this file, where it is compiled and run.
    let me = include_str!("migration_snippets.rs");
    let config = snippet(&all, "rust-config");
    assert_eq!(config.lang, "rust");
    let begin = me.find("// snippet rust-config: begin").expect("marker");
    let end = me.find("// snippet rust-config: end").expect("marker");
    assert!(
        contains_block(&me[begin..end], config.code.trim_end()),
        "the rust-config snippet must match rust_config_snippet() in tests/tests/migration_snippets.rs"
    );

    // before-express (not runnable here: no Express): its emit call is
    // exactly the one the emitter snippet keeps, and its middleware joins the
    // rooms the gateway config recreates.
    let before = snippet(&all, "before-express").code;
    let call = ".to('role_admin').emit('ticket_updated', ticket);";
    assert!(before.contains(&format!("req.app.get('io'){call}")));
    assert!(
        snippet(&all, "node-emitter")
            .code
            .contains(&format!("io{call}"))
    );
    assert!(before.contains("socket.join(`user:${user.sub}`)"));
    assert!(before.contains("socket.join(`role_${user.role}`)"));
    assert!(before.contains("socket.handshake.auth.token"));
    assert!(
        snippet(&all, "gateway-env")
            .code
            .contains("SWITCHBOARD_AUTH__ROOMS=user:{sub},role_{role}")
    );
    assert!(before.contains("socket.on('ticket_viewed'"));
    assert!(
        snippet(&all, "client-events")
            .code
            .contains("\"ticket_viewed\"")
    );

    // before-handlers (not runnable: no Socket.IO server to replace here):
    // every handler it shows is taken over by client-config.
    let handlers = snippet(&all, "before-handlers").code;
    let config = snippet(&all, "client-config").code;
    for (on, configured) in [
        ("socket.on('join:company'", "join_event = \"join:company\""),
        ("socket.on('join_chat'", "join_event = \"join_chat\""),
        ("socket.on('new_message'", "relay_event = \"new_message\""),
        ("socket.on('send_message'", "events = [\"send_message\"]"),
    ] {
        assert!(handlers.contains(on), "before-handlers has {on}");
        assert!(
            config.contains(configured),
            "client-config has {configured}"
        );
    }
    assert!(handlers.contains("companyId !== user.company_id"));
    assert!(config.contains("allow = \"{arg} == {company_id}\""));
    assert!(
        snippet(&all, "api-handler")
            .code
            .contains("io.to(`chat_${chatId}`).emit(\"message_saved\", saved)")
    );

    // The diagram names the routes the nginx snippet implements.
    let diagram = snippet(&all, "diagram").code;
    let nginx = snippet(&all, "nginx").code;
    for route in ["/socket.io/", "/api/"] {
        assert!(diagram.contains(route), "diagram mentions {route}");
        assert!(
            nginx.contains(&format!("location {route} ")),
            "nginx routes {route}"
        );
    }
}

// ------------------------------------------------------------------ harness

/// A file that is removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `code` to `tests/node/.migration-<name>-<pid>.mjs`.
fn node_file(name: &str, code: &str) -> TempFile {
    let path = node_dir().join(format!(".migration-{name}-{}.mjs", std::process::id()));
    std::fs::write(&path, code).expect("write snippet .mjs");
    TempFile(path)
}

/// A child process whose stdout lines are collected.
struct Running {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    what: String,
}

impl Running {
    fn spawn(what: &str, mut cmd: tokio::process::Command) -> Running {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let out = child.stdout.take().expect("stdout");
        tokio::spawn(async move {
            let mut r = BufReader::new(out).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let _ = tx.send(l);
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(err).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&l);
                s.push('\n');
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
            stderr,
            what: what.to_string(),
        }
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits for a stdout line containing `needle`.
    async fn expect_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Ok(None) | Err(_) => panic!(
                    "{}: no stdout line containing {needle:?} within {timeout:?}; stdout {:?}; stderr:\n{}",
                    self.what,
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// Waits for a successful exit.
    async fn expect_success(mut self, timeout: Duration) -> Vec<String> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not finish within {timeout:?}", self.what))
            .expect("wait");
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        assert!(
            status.success(),
            "{} failed with {status}; stdout {:?}; stderr:\n{}",
            self.what,
            self.seen,
            self.stderr()
        );
        self.seen
    }
}

fn node_cmd(file: &TempFile, env: &[(&str, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&file.0).current_dir(node_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `KEY=VALUE` lines of the env snippet (comments and blanks skipped).
fn env_pairs(code: &str) -> Vec<(String, String)> {
    code.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("gateway-env line is not KEY=VALUE: {l:?}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// The ticket_api example binary next to the gateway binary, if built.
fn example_binary() -> Option<PathBuf> {
    let gw = bin_path("switchboard-gateway").ok()?;
    let p = gw.parent()?.join("examples").join("ticket_api");
    p.is_file().then_some(p)
}

struct Setup {
    redis: RedisServer,
    gw1: GatewayProcess,
    gw2: GatewayProcess,
    node: NodeDriver,
    secret: String,
    api_key: String,
    clients: Vec<&'static str>,
}

impl Setup {
    /// `event` reaches exactly `receivers` once each with `args`, nobody
    /// else within the grace period.
    async fn expect_exactly(&self, what: &str, event: &str, receivers: &[&str], args: &Value) {
        for r in receivers {
            let got = self
                .node
                .expect_event(r, event, T)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "snippet {what}: {e:#}\n--- gw1 ---\n{}\n--- gw2 ---\n{}",
                        self.gw1.logs(),
                        self.gw2.logs()
                    )
                });
            assert_eq!(
                &Value::Array(got),
                args,
                "snippet {what}: {r} got other arguments"
            );
        }
        tokio::time::sleep(GRACE).await;
        for c in &self.clients {
            let extra: Vec<Note> = self
                .node
                .queued(c)
                .into_iter()
                .filter(|n| matches!(n, Note::Event { name, .. } if name == event))
                .collect();
            assert!(
                extra.is_empty(),
                "snippet {what}: {c} got {event:?} unexpectedly (duplicate or stray): {extra:?}"
            );
        }
    }
}

// ------------------------------------------------------------------- runtime

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_snippet_of_the_migration_guide_works_end_to_end() {
    let all = snippets(&guide());
    let redis = redis();

    // gateway-env starts gw1 (its Redis URL pointed at the test Redis).
    let env = env_pairs(&snippet(&all, "gateway-env").code);
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("gateway-env sets {k}"))
    };
    let secret = get("SWITCHBOARD_JWT_SECRET");
    let api_key = get("SWITCHBOARD_API_KEYS");
    let mut opts = GatewayOptions::new();
    for (k, v) in &env {
        opts = opts.env(k, v);
    }
    let gw1 = GatewayProcess::start_async(opts.redis(redis.url()))
        .await
        .expect("gateway from the gateway-env snippet starts");
    wait_ready(&gw1, T).await;

    // gateway-toml starts gw2 (same secret, rooms and key as the env form).
    let toml = snippet(&all, "gateway-toml").code;
    assert!(toml.contains(&format!("secret = \"{secret}\"")));
    assert!(toml.contains(&format!("keys = [\"{api_key}\"]")));
    let gw2 =
        GatewayProcess::start_async(GatewayOptions::new().config_toml(toml).redis(redis.url()))
            .await
            .expect("gateway from the gateway-toml snippet starts");
    wait_ready(&gw2, T).await;

    let node = node().await;
    let admin = |sub: &str| Claims::new().sub(sub).role("admin").sign_hs256(&secret);
    let user = |sub: &str| Claims::new().sub(sub).sign_hs256(&secret);

    // The JWT check moved to the gateway: a token with another secret is refused.
    let bad = Claims::new()
        .sub("mallory")
        .role("admin")
        .sign_hs256("some-other-secret-0123456789");
    for gw in [&gw1, &gw2] {
        let r = node
            .connect(
                "mallory",
                &gw.url(),
                ConnectOptions::new()
                    .websocket_only()
                    .token(bad.clone())
                    .timeout(Duration::from_secs(8)),
            )
            .await;
        assert!(
            r.is_err(),
            "a token signed with another secret must be refused"
        );
        node.drain("mallory");
    }

    for (name, gw, tok) in [
        ("admin1", &gw1, admin("a1")),
        ("admin2", &gw2, admin("a2")),
        ("u42", &gw1, user("42")),
        ("plain", &gw2, user("99")),
    ] {
        connect(
            &node,
            name,
            gw,
            ConnectOptions::new().websocket_only().token(tok),
        )
        .await;
    }
    let s = Setup {
        redis,
        gw1,
        gw2,
        node,
        secret: secret.clone(),
        api_key,
        clients: vec!["admin1", "admin2", "u42", "plain"],
    };
    let redis_url = s.redis.url();
    let ticket = json!({"id": 7, "title": "Printer on fire", "status": "open"});
    let admins = ["admin1", "admin2"];

    // ---- node-emitter: the module plus a call of its exported function.
    let code = format!(
        "{}\n// --- test harness (not part of the snippet) ---\nticketUpdated(JSON.parse(process.env.TICKET));\nawait redisClient.quit();\n",
        snippet(&all, "node-emitter").code
    );
    let f = node_file("node-emitter", &code);
    Running::spawn(
        "node-emitter snippet",
        node_cmd(
            &f,
            &[
                ("REDIS_URL", redis_url.clone()),
                ("TICKET", ticket.to_string()),
            ],
        ),
    )
    .expect_success(Duration::from_secs(20))
    .await;
    s.expect_exactly("node-emitter", "ticket_updated", &admins, &json!([ticket]))
        .await;

    // ---- mixed-fleet: an old Node server with the Redis adapter on the same
    // Redis. A client of the Node server receives a gateway API publish, and
    // the Node server's io.to('role_admin').emit reaches gateway clients.
    let port = free_port();
    let code = format!(
        r#"{}
// --- test harness (not part of the snippet) ---
import {{ io as ioc }} from "socket.io-client";
const legacy = ioc(`http://127.0.0.1:${{process.env.PORT}}`, {{ transports: ["websocket"], reconnection: false }});
await new Promise((resolve, reject) => {{ legacy.on("connect", resolve); legacy.on("connect_error", reject); }});
const got = new Promise((resolve) => legacy.on("fleet_check", resolve));
console.log("READY");
console.log("GOT " + JSON.stringify(await got));
io.to('role_admin').emit('ticket_updated', JSON.parse(process.env.TICKET));
await new Promise((r) => setTimeout(r, 300));
legacy.close();
io.close();
await Promise.allSettled([pubClient.quit(), subClient.quit()]);
process.exit(0);
"#,
        snippet(&all, "mixed-fleet").code
    );
    let f = node_file("mixed-fleet", &code);
    let mut fleet = Running::spawn(
        "mixed-fleet snippet",
        node_cmd(
            &f,
            &[
                ("REDIS_URL", redis_url.clone()),
                ("PORT", port.to_string()),
                ("TICKET", ticket.to_string()),
            ],
        ),
    );
    fleet.expect_line("READY", Duration::from_secs(20)).await;
    // Publish API of a gateway -> client of the old Node server.
    let (status, v) = api_post(
        &s.gw1,
        &s.api_key,
        json!({"event": "fleet_check", "broadcast": true, "data": {"from": "gateway"}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["receivers"],
        json!(3),
        "two gateways and the Node server: {v}"
    );
    fleet
        .expect_line(r#"GOT {"from":"gateway"}"#, Duration::from_secs(10))
        .await;
    fleet.expect_success(Duration::from_secs(10)).await;
    s.expect_exactly("mixed-fleet", "ticket_updated", &admins, &json!([ticket]))
        .await;
    for c in &s.clients {
        s.node
            .expect_event(c, "fleet_check", T)
            .await
            .expect("broadcast");
    }

    // ---- rust-config: compiled into this test; run it.
    rust_config_snippet(redis_url.clone(), ticket.clone())
        .await
        .expect("rust-config snippet publishes");
    s.expect_exactly("rust-config", "ticket_updated", &admins, &json!([ticket]))
        .await;

    // ---- curl (through sh -c), against gw1.
    let curl = snippet(&all, "curl");
    if deploy_support::find_tool("curl").is_some() {
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&curl.code)
            .env("SWITCHBOARD_URL", s.gw1.url())
            .env("SWITCHBOARD_API_KEY", &s.api_key)
            .output()
            .await
            .expect("run sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl snippet failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_str(stdout.trim()).expect("JSON answer");
        assert_eq!(v, json!({"ok": true, "receivers": 2}));
        s.expect_exactly(
            "curl",
            "ticket_updated",
            &admins,
            &json!([{"id": 7, "status": "open"}]),
        )
        .await;
    } else {
        eprintln!("curl is not installed: skipping the curl snippet run");
    }

    // ---- python with requests, against gw2.
    let py = snippet(&all, "python");
    tokio::task::spawn_blocking(python::ensure_venv)
        .await
        .expect("task")
        .expect("tests/python/.venv");
    let dir = tempfile::tempdir().expect("tempdir");
    let py_file = dir.path().join("publish.py");
    std::fs::write(&py_file, &py.code).expect("write publish.py");
    let mut cmd = tokio::process::Command::new(python::venv_python());
    cmd.arg(&py_file)
        .env("SWITCHBOARD_URL", s.gw2.url())
        .env("SWITCHBOARD_API_KEY", &s.api_key);
    Running::spawn("python snippet", cmd)
        .expect_success(Duration::from_secs(30))
        .await;
    s.expect_exactly(
        "python",
        "ticket_updated",
        &admins,
        &json!([{"id": 7, "status": "open"}]),
    )
    .await;
    s.expect_exactly(
        "python",
        "notification",
        &["u42"],
        &json!([{"ticket_id": 7, "kind": "ticket_assigned"}]),
    )
    .await;

    // ---- client-events: a Redis subscriber for events clients emit.
    let f = node_file("client-events", &snippet(&all, "client-events").code);
    let mut consumer = Running::spawn(
        "client-events snippet",
        node_cmd(&f, &[("REDIS_URL", redis_url.clone())]),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = s
            .redis
            .command(&["PUBSUB", "NUMSUB", "socket.io-upstream#/#"])
            .expect("PUBSUB NUMSUB");
        if n.as_array().and_then(|a| a.get(1)).and_then(|c| c.as_int()) >= Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "client-events snippet never subscribed: {}",
            consumer.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.node
        .emit("u42", "ticket_viewed", vec![json!({"id": 7})])
        .await
        .expect("client emits");
    consumer
        .expect_line("user 42 viewed ticket 7", Duration::from_secs(10))
        .await;
    drop(consumer);

    // ---- nginx in front of both gateways and the example API, if installed;
    // the example API (rust-handler) if built.
    let api_port = free_port();
    let example = example_binary().map(|bin| {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.env("SWITCHBOARD_REDIS_URL", &redis_url)
            .env("BIND", format!("127.0.0.1:{api_port}"));
        Running::spawn("ticket_api example", cmd)
    });
    let nginx_conf = snippet(&all, "nginx").code;
    let nginx_port = free_port();
    let site = nginx_conf
        .replace(
            "server 10.0.0.11:3002;",
            &format!("server 127.0.0.1:{};", s.gw1.port()),
        )
        .replace(
            "server 10.0.0.12:3002;",
            &format!("server 127.0.0.1:{};", s.gw2.port()),
        )
        .replace(
            "server 127.0.0.1:3001;",
            &format!("server 127.0.0.1:{api_port};"),
        )
        .replace("listen 80;", &format!("listen 127.0.0.1:{nginx_port};"));
    assert_ne!(site, nginx_conf);
    let nginx = match deploy_support::find_tool("nginx") {
        Some(bin) => Some(
            tokio::task::spawn_blocking(move || {
                deploy_support::Nginx::start(&bin, &site, nginx_port)
            })
            .await
            .expect("task")
            .expect("nginx with the nginx snippet starts"),
        ),
        None => {
            eprintln!("nginx is not installed: the client snippet connects to a gateway directly");
            None
        }
    };
    let front = nginx
        .as_ref()
        .map_or_else(|| s.gw1.url(), deploy_support::Nginx::url);

    // ---- client: the unchanged socket.io-client code, via nginx (default
    // transports: polling, then upgrade, round-robin over both gateways).
    let client = snippet(&all, "client").code;
    assert!(client.contains("\"https://app.example.com\""));
    let code = format!(
        "const token = process.env.TOKEN;\n{}\n// --- test harness (not part of the snippet) ---\nsocket.on(\"connect\", () => console.log(\"CONNECTED\"));\nsocket.on(\"connect_error\", (e) => console.log(\"CONNECT_ERROR \" + e.message));\n",
        client.replace("https://app.example.com", &front)
    );
    let f = node_file("client", &code);
    let mut browser = Running::spawn("client snippet", node_cmd(&f, &[("TOKEN", admin("a3"))]));
    browser
        .expect_line("CONNECTED", Duration::from_secs(20))
        .await;
    // Let it upgrade to websocket through nginx, then publish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.node
        .emitter_publish(
            switchboard_testkit::node::EmitterPublish::new(
                redis_url.clone(),
                "ticket_updated",
                vec![ticket.clone()],
            )
            .to("role_admin"),
        )
        .await
        .expect("emitter publish");
    let line = browser
        .expect_line("ticket_updated ", Duration::from_secs(10))
        .await;
    assert_eq!(line, format!("ticket_updated {ticket}"));
    s.expect_exactly(
        "client (other admins)",
        "ticket_updated",
        &admins,
        &json!([ticket]),
    )
    .await;
    tokio::time::sleep(GRACE).await;
    while let Ok(l) = browser.lines.try_recv() {
        assert!(
            !l.starts_with("ticket_updated"),
            "client snippet got a duplicate: {l}"
        );
    }
    drop(browser);

    // ---- rust-handler: the example API, through nginx's /api/ route.
    match example {
        Some(mut api) => {
            api.expect_line("ticket API on", Duration::from_secs(20))
                .await;
            let base = if nginx.is_some() {
                front.clone()
            } else {
                format!("http://127.0.0.1:{api_port}")
            };
            let url = format!("{base}/api/tickets/7");
            let resp = tokio::task::spawn_blocking(move || {
                http_request(
                    "PUT",
                    &url,
                    &[("Content-Type", "application/json")],
                    Some(br#"{"title":"Printer on fire","status":"open","assignee":42}"#),
                    Duration::from_secs(10),
                )
            })
            .await
            .expect("task")
            .expect("PUT /api/tickets/7");
            assert_eq!(resp.status, 200, "{}", resp.text());
            let v: Value = serde_json::from_slice(&resp.body).expect("JSON");
            assert_eq!(
                v,
                json!({"id": 7, "admins_delivery": 2, "assignee_delivery": 2}),
                "both gateways received both events"
            );
            s.expect_exactly(
                "rust-handler",
                "notification",
                &["u42"],
                &json!([{
                    "kind": "ticket_assigned",
                    "ticket_id": 7,
                    "message": "Ticket #7 \"Printer on fire\" is assigned to you"
                }]),
            )
            .await;
        }
        None => eprintln!(
            "broadcaster/examples/ticket_api is not built (cargo build -p switchboard-broadcaster --examples): \
             the rust-handler snippet was only checked verbatim"
        ),
    }
    let _ = &s.secret;
}

/// `POST /api/v1/emit` with `key`.
async fn api_post(gw: &GatewayProcess, key: &str, body: Value) -> (u16, Value) {
    let url = format!("{}/api/v1/emit", gw.url());
    let auth = format!("Bearer {key}");
    let resp = tokio::task::spawn_blocking(move || {
        http_request(
            "POST",
            &url,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            Some(body.to_string().as_bytes()),
            Duration::from_secs(5),
        )
    })
    .await
    .expect("task")
    .expect("POST /api/v1/emit");
    (
        resp.status,
        serde_json::from_slice(&resp.body).unwrap_or(Value::Null),
    )
}

// ---------------------------------------------- client handlers (section 6)

/// Section 6: the old server's handlers as `[client]` configuration
/// (`client-config`), the unchanged client (`client-app`), the API endpoint
/// that took over the business logic (`api-handler`) and the stream worker
/// (`stream-worker`), all run for real: two gateways on one Redis, the
/// official socket.io-client, Node's http server checking the signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_handler_snippets_work_end_to_end() {
    let all = snippets(&guide());
    let redis = redis();
    let redis_url = redis.url();
    let jwt_secret = "migration-client-secret-0123456789abcdef";

    // The API endpoint (api-handler) on a free port, with the hook secret
    // the gateway configuration names.
    let config = snippet(&all, "client-config").code;
    let hook_secret = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret = \""))
        .and_then(|rest| rest.split('"').next())
        .expect("client-config sets client.hooks.secret")
        .to_string();
    let api_port = free_port();
    let f_api = node_file("api-handler", &snippet(&all, "api-handler").code);
    let api = Running::spawn(
        "api-handler snippet",
        node_cmd(
            &f_api,
            &[
                ("REDIS_URL", redis_url.clone()),
                ("PORT", api_port.to_string()),
                ("SWITCHBOARD_HOOK_SECRET", hook_secret.clone()),
            ],
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "api-handler never listened: {}",
            api.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Two gateways configured by client-config (its API URL pointed at the
    // snippet's server).
    assert!(config.contains("http://127.0.0.1:8080/realtime/events"));
    let toml = config.replace("127.0.0.1:8080", &format!("127.0.0.1:{api_port}"));
    let mut gws = Vec::new();
    for _ in 0..2 {
        let gw = GatewayProcess::start_async(
            GatewayOptions::new()
                .config_toml(toml.clone())
                .secret(jwt_secret)
                .redis(redis_url.clone()),
        )
        .await
        .expect("gateway with the client-config snippet starts");
        wait_ready(&gw, T).await;
        gws.push(gw);
    }
    let token = |sub: &str, company: &str| {
        Claims::new()
            .sub(sub)
            .claim("company_id", company)
            .sign_hs256(jwt_secret)
    };

    // Bob, on the second gateway, in chat 123; not allowed into company c1.
    let node = node().await;
    connect(
        &node,
        "bob",
        &gws[1],
        ConnectOptions::new()
            .websocket_only()
            .token(token("bob", "c2")),
    )
    .await;
    let ack = |who: &'static str, event: &'static str, arg: &'static str| {
        let node = &node;
        async move {
            node.emit_with_ack(who, event, vec![json!(arg)], T)
                .await
                .expect("ack")
        }
    };
    assert_eq!(
        ack("bob", "join_chat", "123").await,
        json!([{"ok": true, "room": "chat_123"}])
    );
    assert_eq!(
        ack("bob", "join:company", "c1").await,
        json!([{"ok": false, "error": "forbidden"}])
    );

    // Alice runs the client-app snippet on the first gateway.
    let code = format!(
        r#"// --- test harness (not part of the snippet) ---
import {{ io }} from "socket.io-client";
const socket = io(process.env.GATEWAY_URL, {{ auth: {{ token: process.env.TOKEN }}, transports: ["websocket"], reconnection: false }});
const user = {{ company_id: "c1" }};
const chatId = "123";
await new Promise((resolve, reject) => {{ socket.on("connect", resolve); socket.on("connect_error", reject); }});
// --- the snippet ---
{}"#,
        snippet(&all, "client-app").code
    );
    let f_client = node_file("client-app", &code);
    let mut alice = Running::spawn(
        "client-app snippet",
        node_cmd(
            &f_client,
            &[
                ("GATEWAY_URL", gws[0].url()),
                ("TOKEN", token("alice", "c1")),
            ],
        ),
    );
    alice
        .expect_line(r#"joined {"ok":true,"room":"company:c1"}"#, T)
        .await;
    alice
        .expect_line(r#"joined {"ok":true,"room":"chat_123"}"#, T)
        .await;
    let saved = json!({"id": 1, "chatId": "123", "text": "hello", "user": "alice"});
    alice
        .expect_line(&format!("send_message ack {saved}"), T)
        .await;

    // The relay reached Bob once, with Alice's verified identity; the saved
    // message reached both (the API published it to chat_123).
    let relayed = expect_once(&node, "bob", "new_message").await;
    assert_eq!(relayed[0], json!({"text": "typing..."}));
    assert_eq!(relayed[1]["room"], json!("chat_123"));
    assert_eq!(relayed[1]["from"]["user"], json!("alice"));
    assert_eq!(
        expect_once(&node, "bob", "message_saved").await,
        vec![saved.clone()]
    );
    // (It may have come before the ack, and been read already.)
    let line = format!("message_saved {saved}");
    if !alice.seen.contains(&line) {
        alice.expect_line(&line, T).await;
    }

    // ticket_viewed went onto the stream; the stream-worker snippet handles
    // and acknowledges it.
    let f_worker = node_file("stream-worker", &snippet(&all, "stream-worker").code);
    let mut worker = Running::spawn(
        "stream-worker snippet",
        node_cmd(&f_worker, &[("REDIS_URL", redis_url.clone())]),
    );
    worker
        .expect_line("user alice viewed ticket 7", Duration::from_secs(20))
        .await;
    let deadline = Instant::now() + T;
    loop {
        let pending = redis
            .command(&["XPENDING", "socket.io-upstream", "audit"])
            .expect("XPENDING");
        let count = pending
            .as_array()
            .and_then(|a| a.first())
            .and_then(|c| c.as_int());
        if count == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never acknowledged: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((worker, alice, api));
}
