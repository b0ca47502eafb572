//! End to end through a REAL nginx running the shipped site
//! (`deploy/nginx/switchboard.conf`, adapted textually in its listen port and
//! upstream addresses only): three gateways on one Redis behind plain
//! round-robin (no sticky sessions), the official socket.io-client over
//! websocket, polling and polling-with-upgrade, a broadcast published once
//! (the `switchboard` CLI, then the official emitter), many polling cycles
//! without a lost session, and failover when one gateway is stopped with
//! SIGTERM.

mod deploy_support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::TcpListener,
    time::{Duration, Instant},
};

use deploy_support::*;
use serde_json::{Value, json};
use switchboard_testkit::{
    GatewayOptions, GatewayProcess, bin_path, free_port, http_get,
    jwt::Claims,
    node::{ConnectOptions, EmitterPublish, NodeDriver, Note},
    redis::RedisServer,
};

const SECRET: &str = "deploy-e2e-secret-0123456789abcdef";
/// Bound of every single wait.
const T: Duration = Duration::from_secs(20);
/// Engine.IO pingInterval / pingTimeout of the gateways: one polling cycle
/// (ping GET + pong POST) per second.
const PING_MS: u64 = 1000;

fn metrics_of(gw: &GatewayProcess) -> String {
    let (status, body) = http_get(&format!("{}/metrics", gw.url())).expect("GET /metrics");
    assert_eq!(status, 200);
    body
}

/// A stand-in for the HTTP API behind `/api/`: answers every request with
/// `200 api-ok <path>`.
fn fake_api() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake API");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("?").to_string();
            let body = format!("api-ok {path}");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// Publishes `news(data)` to `role:admin` with the `switchboard` CLI if it is
/// built and works, otherwise with the official emitter. Returns which one.
async fn publish_with_cli_or_emitter(
    node: &NodeDriver,
    redis_url: &str,
    event: &str,
    data: Value,
) -> &'static str {
    if let Ok(cli) = bin_path("switchboard") {
        let run = tokio::process::Command::new(&cli)
            .args(["publish", "--redis", redis_url, "--role", "admin"])
            .args(["--event", event, "--data", &data.to_string()])
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(T, run).await {
            Ok(Ok(out)) if out.status.success() => return "switchboard CLI",
            Ok(Ok(out)) => panic!(
                "`switchboard publish` failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Ok(Err(e)) => panic!("spawn {}: {e}", cli.display()),
            Err(_) => panic!("`switchboard publish` did not finish within {T:?}"),
        }
    }
    skip(
        "publish with the switchboard CLI",
        "binary not built (cargo build -p switchboard-broadcaster); used the official emitter",
    );
    node.emitter_publish(EmitterPublish::new(redis_url, event, vec![data]).to("role:admin"))
        .await
        .expect("emitter publish");
    "official emitter"
}

/// Every client receives `event` with `expected` exactly once.
async fn expect_once(node: &NodeDriver, clients: &[String], event: &str, expected: &Value) {
    for c in clients {
        let args = node
            .expect_event(c, event, T)
            .await
            .unwrap_or_else(|e| panic!("{c}: {e:#}"));
        assert_eq!(args, vec![expected.clone()], "{c}");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for c in clients {
        let dups: Vec<_> = node
            .queued(c)
            .into_iter()
            .filter(|n| matches!(n, Note::Event { name, .. } if name == event))
            .collect();
        assert!(
            dups.is_empty(),
            "{c} received {event} more than once: {dups:?}"
        );
    }
}

/// Notes that mean a session was lost.
fn trouble(notes: &[Note]) -> Vec<&Note> {
    notes
        .iter()
        .filter(|n| matches!(n, Note::Disconnect { .. } | Note::ConnectError { .. }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_behind_the_shipped_nginx_config() {
    let Some(nginx_bin) = find_tool("nginx") else {
        skip(
            "end-to-end through nginx",
            "nginx is not installed (apt-get install -y nginx-light)",
        );
        return;
    };
    tokio::time::timeout(Duration::from_secs(240), run(nginx_bin))
        .await
        .expect("end-to-end test exceeded 240 s");
}

async fn run(nginx_bin: std::path::PathBuf) {
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .expect("redis");
    let mut gateways = Vec::new();
    for _ in 0..3 {
        let opts = GatewayOptions::new()
            .redis(redis.url())
            .secret(SECRET)
            .env("SWITCHBOARD_SERVER__TRUSTED_PROXIES", "127.0.0.1")
            .env("SWITCHBOARD_ENGINE__PING_INTERVAL_MS", PING_MS.to_string())
            .env("SWITCHBOARD_ENGINE__PING_TIMEOUT_MS", PING_MS.to_string())
            .env("SWITCHBOARD_SERVER__SHUTDOWN_DEADLINE_MS", "3000");
        let gw = GatewayProcess::start_async(opts).await.expect("gateway");
        wait_ready(&gw).await;
        gateways.push(gw);
    }

    // nginx from the shipped site: only listen + upstream lines differ.
    let api_port = fake_api();
    let nginx_port = free_port();
    let site = adapt_site(
        &deploy_file("nginx/switchboard.conf"),
        &gateways
            .iter()
            .map(|g| format!("127.0.0.1:{}", g.port()))
            .collect::<Vec<_>>(),
        &format!("127.0.0.1:{api_port}"),
        Some(&format!("127.0.0.1:{nginx_port}")),
    );
    let nginx = {
        let (b, s) = (nginx_bin.clone(), site.clone());
        tokio::task::spawn_blocking(move || Nginx::start(&b, &s, nginx_port))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("start nginx: {e:#}\n--- site ---\n{site}"))
    };
    let url = nginx.url();

    // Routing: /api/ to the API, gateway operator endpoints not exposed.
    let u = url.clone();
    let routes = tokio::task::spawn_blocking(move || {
        ["/api/tickets/7", "/healthz", "/readyz", "/metrics"]
            .map(|p| (p, http_get(&format!("{u}{p}")).expect("GET via nginx")))
    })
    .await
    .unwrap();
    assert_eq!(routes[0].1, (200, "api-ok /api/tickets/7".to_string()));
    for (p, (status, body)) in &routes[1..] {
        assert_eq!(
            *status, 404,
            "{p} must not be exposed through nginx: {body}"
        );
    }

    // Round-robin: three raw handshakes land on three different gateways
    // (the first 4 characters of a sid name the owning gateway).
    let u = url.clone();
    let tags: BTreeSet<String> = tokio::task::spawn_blocking(move || {
        (0..3)
            .map(|_| {
                let (status, body) = http_get(&format!("{u}/socket.io/?EIO=4&transport=polling"))
                    .expect("handshake via nginx");
                assert_eq!(status, 200, "{body}");
                let open: Value = serde_json::from_str(body.strip_prefix('0').expect("open"))
                    .expect("open packet JSON");
                open["sid"].as_str().unwrap()[..4].to_string()
            })
            .collect()
    })
    .await
    .unwrap();
    assert_eq!(tags.len(), 3, "handshakes not spread round-robin: {tags:?}");

    // Clients of the three kinds, several of each.
    let node = NodeDriver::start().await.expect("node driver");
    let mut clients = Vec::new();
    let mut initial_sids = BTreeMap::new();
    for i in 0..3 {
        for (kind, opts) in [
            ("ws", ConnectOptions::new().websocket_only()),
            ("poll", ConnectOptions::new().polling_only()),
            ("up", ConnectOptions::new()),
        ] {
            let name = format!("{kind}-{i}");
            let token = Claims::new().sub(&name).role("admin").sign_hs256(SECRET);
            let c = node
                .connect(
                    &name,
                    &url,
                    opts.token(token)
                        .reconnection(true)
                        .timeout(Duration::from_secs(10)),
                )
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            match kind {
                "ws" => assert_eq!(c.transport.as_deref(), Some("websocket"), "{name}"),
                "poll" => assert_eq!(c.transport.as_deref(), Some("polling"), "{name}"),
                // The upgrade may already be done when the connect is reported.
                _ => assert!(c.transport.is_some(), "{name}"),
            }
            initial_sids.insert(name.clone(), c.sid);
            clients.push(name);
        }
    }
    for c in clients.iter().filter(|c| c.starts_with("up-")) {
        let t = node
            .expect_upgrade(c, T)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(t, "websocket", "{c}");
    }
    for c in &clients {
        let notes = node.drain(c);
        assert!(trouble(&notes).is_empty(), "{c}: {notes:?}");
    }

    // Many polling cycles: every request goes round-robin, so most of them
    // reach a gateway that does not own the session and is forwarded.
    tokio::time::sleep(Duration::from_secs(11)).await;
    for c in &clients {
        let notes = node.queued(c);
        assert!(
            trouble(&notes).is_empty(),
            "{c} lost its session while polling through nginx: {notes:?}"
        );
        let state = node.client_state(c).await.unwrap();
        assert_eq!(state["connected"], true, "{c}: {state}");
        assert_eq!(
            state["sid"].as_str(),
            Some(initial_sids[c].as_str()),
            "{c} reconnected"
        );
        let expect = if c.starts_with("poll-") {
            "polling"
        } else {
            "websocket"
        };
        assert_eq!(state["transport"], expect, "{c}: {state}");
    }
    let log = nginx.access_log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" /socket.io/ ") && !l.starts_with("200 ") && !l.starts_with("101 "))
        .collect();
    assert!(
        bad.is_empty(),
        "non-2xx Socket.IO answers through nginx (Session ID unknown?):\n{}",
        bad.join("\n")
    );
    let upstreams: BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains(" /socket.io/ "))
        .filter_map(|l| l.split("upstream=").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(upstreams.len(), 3, "nginx used upstreams {upstreams:?}");
    let polls = log
        .lines()
        .filter(|l| l.contains(" /socket.io/ ") && l.contains("transport=polling"))
        .count();
    assert!(
        polls >= 3 * 10,
        "expected many polling requests, saw {polls}"
    );
    let mut forwarded_ok = 0.0;
    for gw in &gateways {
        let m = metrics_of(gw);
        forwarded_ok += metric(
            &m,
            "switchboard_forwarded_requests_total",
            &["outcome=\"ok\""],
        );
        assert_eq!(
            metric(
                &m,
                "switchboard_forwarded_requests_total",
                &["outcome=\"owner_gone\""]
            ),
            0.0,
            "gateway {}",
            gw.port()
        );
        assert_eq!(
            metric(
                &m,
                "switchboard_engine_errors_total",
                &["session_id_unknown"]
            ),
            0.0,
            "gateway {}",
            gw.port()
        );
    }
    assert!(forwarded_ok > 0.0, "round-robin never needed forwarding?");

    // One publish, everyone exactly once.
    let how =
        publish_with_cli_or_emitter(&node, &redis.url(), "news", json!({"n": 1, "via": "cli"}))
            .await;
    println!("first broadcast published with the {how}");
    expect_once(&node, &clients, "news", &json!({"n": 1, "via": "cli"})).await;

    // Failover: SIGTERM the gateway holding the most sockets.
    let sockets: Vec<f64> = gateways
        .iter()
        .map(|g| metric(&metrics_of(g), "switchboard_sockets", &[]))
        .collect();
    assert_eq!(
        sockets.iter().sum::<f64>(),
        clients.len() as f64,
        "sockets per gateway {sockets:?}"
    );
    let victim_idx = (0..3)
        .max_by(|a, b| sockets[*a].total_cmp(&sockets[*b]))
        .unwrap();
    let victim_sockets = sockets[victim_idx];
    assert!(victim_sockets > 0.0);
    // Websockets whose upgrade landed on the victim but belong to another
    // gateway are spliced through the victim; they end with it too.
    let victim_relayed_ws = metric(
        &metrics_of(&gateways[victim_idx]),
        "switchboard_forwarded_requests_total",
        &["transport=\"websocket\"", "outcome=\"ok\""],
    );
    let mut victim = gateways.remove(victim_idx);
    let status = tokio::task::spawn_blocking(move || {
        let s = victim.terminate_timeout(Duration::from_secs(15));
        (s, victim)
    })
    .await
    .unwrap();
    let (status, victim) = status;
    let status = status.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        status.success(),
        "SIGTERM exit {status}:\n{}",
        victim.logs()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Every client is connected again (its own gateway's clients reconnect
    // through nginx to the two survivors).
    let deadline = Instant::now() + T;
    for c in &clients {
        loop {
            let s = node.client_state(c).await.unwrap();
            if s["connected"] == true {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{c} did not reconnect through nginx: {s}; notes {:?}\nnginx errors:\n{}",
                node.queued(c),
                nginx.error_log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut disconnected = Vec::new();
    for c in &clients {
        let notes = node.drain(c);
        if notes.iter().any(|n| matches!(n, Note::Disconnect { .. })) {
            assert!(
                notes.iter().any(|n| matches!(n, Note::Connect { .. })),
                "{c} disconnected without reconnecting: {notes:?}"
            );
            disconnected.push((c.clone(), notes));
        }
    }
    println!(
        "stopped gateway held {victim_sockets} sockets and relayed {victim_relayed_ws} \
         websocket upgrades for peers; {} clients saw a disconnect: {:?}",
        disconnected.len(),
        disconnected
    );
    assert!(
        disconnected.len() as f64 >= victim_sockets,
        "the stopped gateway's {victim_sockets} clients must have been disconnected, saw {}",
        disconnected.len()
    );
    assert!(
        disconnected.len() as f64 <= victim_sockets + victim_relayed_ws,
        "more clients disconnected ({}) than the stopped gateway owned ({victim_sockets}) \
         or relayed ({victim_relayed_ws})",
        disconnected.len()
    );
    // All sockets now live on the survivors.
    let deadline = Instant::now() + T;
    loop {
        let total: f64 = gateways
            .iter()
            .map(|g| metric(&metrics_of(g), "switchboard_sockets", &[]))
            .sum();
        if total == clients.len() as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "survivors hold {total} sockets, want {}",
            clients.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The next broadcast reaches everyone once (official emitter this time).
    node.emitter_publish(
        EmitterPublish::new(redis.url(), "news", vec![json!({"n": 2})]).to("role:admin"),
    )
    .await
    .unwrap();
    expect_once(&node, &clients, "news", &json!({"n": 2})).await;

    drop(victim);
    node.shutdown().await.ok();
    drop(nginx);
}
