//! Self-tests of the testkit against real parts: redis-server, node with the
//! official socket.io packages, python-socketio. The gateway wrapper is
//! exercised with a stand-in HTTP server (the real gateway has its own
//! tests in `tests/`).

use std::{os::unix::fs::PermissionsExt, time::Duration};

use serde_json::json;
use switchboard_testkit::{
    GatewayOptions, GatewayProcess, bin_path, free_port, http_get,
    jwt::{Claims, hs256},
    net::http_request,
    node::{
        ConnectOptions, EmitterPublish, EmitterTarget, NodeDriver, Note, ServerTarget, StartServer,
        as_bin, bin,
    },
    python::{PyClientOptions, PythonClient},
    redis::{RedisServer, Resp},
};

const T: Duration = Duration::from_secs(10);

#[test]
fn redis_start_kill_restart() {
    let mut redis = RedisServer::start().unwrap();
    let port = redis.port();
    assert_ne!(port, 6379);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(
        redis.command(&["PING"]).unwrap(),
        Resp::Simple("PONG".into())
    );
    assert_eq!(
        redis.command(&["SET", "k", "v"]).unwrap(),
        Resp::Simple("OK".into())
    );
    assert_eq!(
        redis.command(&["GET", "k"]).unwrap().as_str().as_deref(),
        Some("v")
    );
    // Persistence is off.
    let save = redis.command(&["CONFIG", "GET", "save"]).unwrap();
    assert_eq!(save.as_array().unwrap()[1].as_str().as_deref(), Some(""));

    redis.kill();
    assert!(!redis.is_running());
    assert!(redis.command(&["PING"]).is_err(), "killed redis answered");

    redis.restart().unwrap();
    assert!(redis.is_running());
    assert_eq!(redis.port(), port);
    assert_eq!(
        redis.command(&["GET", "k"]).unwrap(),
        Resp::Bulk(None),
        "data survived a SIGKILL with persistence off"
    );

    // restart() while running works too.
    redis.restart().unwrap();
    assert_eq!(
        redis.command(&["PING"]).unwrap().as_str().as_deref(),
        Some("PONG")
    );

    drop(redis);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "redis still listening after drop"
    );
}

#[test]
fn two_redis_servers_are_independent() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    assert_ne!(a.port(), b.port());
    a.command(&["SET", "x", "1"]).unwrap();
    assert_eq!(b.command(&["GET", "x"]).unwrap(), Resp::Bulk(None));
}

#[test]
fn bin_path_reports_how_to_build() {
    let err = bin_path("switchboard-no-such-binary")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cargo build"), "{err}");
}

/// A stand-in for the gateway binary: serves /healthz and /readyz on
/// SWITCHBOARD_PORT, echoes its env and argv into its log, exits 0 on
/// SIGTERM.
const FAKE_GATEWAY: &str = r#"#!/usr/bin/env python3
import http.server, os, signal, sys
port = int(os.environ["SWITCHBOARD_PORT"])
listen = os.environ["SWITCHBOARD_LISTEN"]
cfg = sys.argv[sys.argv.index("--config") + 1] if "--config" in sys.argv else None
print(f"listen={listen} redis={os.environ.get('SWITCHBOARD_REDIS_URL')} secret={os.environ.get('SWITCHBOARD_JWT_SECRET')} extra={os.environ.get('EXTRA')}", flush=True)
if cfg:
    print("config=" + open(cfg).read().strip(), flush=True)
print("args=" + " ".join(sys.argv[1:]), file=sys.stderr, flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path in ("/healthz", "/readyz") else 404
        body = b"ok" if code == 200 else b"nope"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", port), H)
def term(*_):
    print("got SIGTERM", flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
srv.serve_forever()
"#;

#[test]
fn gateway_process_with_stand_in_binary() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake-gateway");
    std::fs::write(&fake, FAKE_GATEWAY).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut gw = GatewayProcess::start(
        GatewayOptions::new()
            .binary(&fake)
            .redis("redis://127.0.0.1:1")
            .secret("0123456789abcdef0123")
            .env("EXTRA", "yes")
            .config_toml("[engine]\nping_interval_ms = 1000")
            .arg("--flag"),
    )
    .unwrap();
    let port = gw.port();
    assert_eq!(gw.url(), format!("http://127.0.0.1:{port}"));
    assert_eq!(
        http_get(&format!("{}/healthz", gw.url())).unwrap(),
        (200, "ok".into())
    );
    assert_eq!(http_get(&format!("{}/readyz", gw.url())).unwrap().0, 200);
    let r = http_request(
        "GET",
        &format!("{}/metrics", gw.url()),
        &[("X-Test", "1")],
        None,
        T,
    )
    .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "nope");

    gw.wait_for_log("args=", T).unwrap();
    let logs = gw.logs();
    assert!(
        logs.contains(&format!(
            "listen=127.0.0.1:{port} redis=redis://127.0.0.1:1 secret=0123456789abcdef0123 extra=yes"
        )),
        "{logs}"
    );
    assert!(logs.contains("config=[engine]"), "{logs}");
    assert!(logs.contains("--config"), "{logs}");
    assert!(logs.contains("--flag"), "{logs}");

    let status = gw.terminate().unwrap();
    assert!(status.success(), "{status}");
    assert!(gw.logs().contains("got SIGTERM"));
}

#[test]
fn gateway_start_failure_carries_output() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("bad-gateway");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'invalid configuration: `auth.secret`: missing' >&2\nexit 2\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = GatewayProcess::start(GatewayOptions::new().binary(&fake))
        .err()
        .expect("start should fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("auth.secret"), "{msg}");
    assert!(msg.contains("exited"), "{msg}");
}

#[test]
fn jwt_helpers() {
    let t = hs256("0123456789abcdef0123", &json!({"sub": "u1"}));
    assert_eq!(t.split('.').count(), 3);
    let c = Claims::new().sub("u1").roles(["a", "b"]).build();
    assert_eq!(c["roles"], json!(["a", "b"]));
    assert!(c["exp"].as_i64().unwrap() > 0);
}

#[test]
fn free_port_is_bindable() {
    let p = free_port();
    std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_driver_emitter_to_room_with_binary_and_ack() {
    let redis = RedisServer::start().unwrap();
    let node = NodeDriver::start().await.unwrap();
    node.ping().await.unwrap();
    let port = node.start_server(&redis.url()).await.unwrap();
    let url = format!("http://127.0.0.1:{port}");

    let c1 = node
        .connect(
            "c1",
            &url,
            ConnectOptions::new().auth(json!({"rooms": ["r1"]})),
        )
        .await
        .unwrap();
    assert!(!c1.sid.is_empty());
    // Polling first; the upgrade may even finish before CONNECT is acked.
    assert!(c1.transport.is_some());
    assert_eq!(node.expect_upgrade("c1", T).await.unwrap(), "websocket");
    node.connect(
        "c2",
        &url,
        ConnectOptions::new()
            .websocket_only()
            .auth(json!({"rooms": ["r2"]})),
    )
    .await
    .unwrap();

    // Official emitter -> Redis -> Node server (redis adapter) -> client.
    let payload: Vec<u8> = (0u8..=255).collect();
    node.emitter_publish(
        EmitterPublish::new(
            redis.url(),
            "hello",
            vec![
                json!("text"),
                json!({"n": 1, "blob": bin(&payload)}),
                bin(b""),
            ],
        )
        .to("r1"),
    )
    .await
    .unwrap();
    let args = node.expect_event("c1", "hello", T).await.unwrap();
    assert_eq!(args[0], json!("text"));
    assert_eq!(args[1]["n"], json!(1));
    assert_eq!(as_bin(&args[1]["blob"]).unwrap(), payload);
    assert_eq!(as_bin(&args[2]).unwrap(), Vec::<u8>::new());
    node.expect_no_event("c2", Duration::from_millis(300))
        .await
        .unwrap();

    // except
    node.emitter_publish(
        EmitterPublish::new(redis.url(), "all-but-r1", vec![json!(2)]).except("r1"),
    )
    .await
    .unwrap();
    assert_eq!(
        node.expect_event("c2", "all-but-r1", T).await.unwrap(),
        vec![json!(2)]
    );
    node.expect_no_event_named("c1", "all-but-r1", Duration::from_millis(300))
        .await
        .unwrap();

    // Ack roundtrip with binary through the server's echo handler.
    let ack = node
        .emit_with_ack("c1", "echo", vec![json!("a"), bin([1, 2, 3])], T)
        .await
        .unwrap();
    assert_eq!(ack[0], json!("a"));
    assert_eq!(as_bin(&ack[1]).unwrap(), vec![1, 2, 3]);
    // The server saw it too.
    let seen = node
        .take_note(
            &NodeDriver::server_queue(port),
            T,
            |n| matches!(n, Note::ServerEvent { name, .. } if name == "echo"),
        )
        .await
        .unwrap();
    assert!(matches!(seen, Note::ServerEvent { sid, .. } if sid == c1.sid));

    // Ack timeout is an error, bounded.
    let err = node
        .emit_with_ack("c1", "no-handler", vec![], Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");

    // socketsJoin through the emitter, then publish to the new room.
    node.emitter_join(EmitterTarget::new(redis.url()).to("r2"), &["late"])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.emitter_publish(EmitterPublish::new(redis.url(), "late-ev", vec![]).to("late"))
        .await
        .unwrap();
    node.expect_event("c2", "late-ev", T).await.unwrap();

    // disconnectSockets through the emitter.
    node.emitter_disconnect(EmitterTarget::new(redis.url()).to("r2"), false)
        .await
        .unwrap();
    assert_eq!(
        node.expect_disconnect("c2", T).await.unwrap(),
        "io server disconnect"
    );

    node.disconnect("c1").await.unwrap();
    assert_eq!(
        node.expect_disconnect("c1", T).await.unwrap(),
        "io client disconnect"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_driver_mixed_fleet_and_errors() {
    let redis = RedisServer::start().unwrap();
    let node = NodeDriver::start().await.unwrap();
    let a = node
        .start_server_with(StartServer {
            redis_url: redis.url(),
            key: Some("sbtest".into()),
            requests_timeout: Some(2000),
            ..Default::default()
        })
        .await
        .unwrap();
    let b = node
        .start_server_with(StartServer {
            redis_url: redis.url(),
            key: Some("sbtest".into()),
            requests_timeout: Some(2000),
            ..Default::default()
        })
        .await
        .unwrap();
    node.connect(
        "on-a",
        &format!("http://127.0.0.1:{a}"),
        ConnectOptions::new().auth(json!({"rooms": ["shared"]})),
    )
    .await
    .unwrap();
    node.connect(
        "on-b",
        &format!("http://127.0.0.1:{b}"),
        ConnectOptions::new()
            .polling_only()
            .auth(json!({"rooms": ["shared", "only-b"]})),
    )
    .await
    .unwrap();

    // Server B emits to a room: both servers' clients get it.
    node.server_emit(ServerTarget::new(b).to("shared"), "fleet", vec![json!(1)])
        .await
        .unwrap();
    node.expect_event("on-a", "fleet", T).await.unwrap();
    node.expect_event("on-b", "fleet", T).await.unwrap();

    // Emitter with the matching key reaches the fleet; the default key does not.
    node.emitter_publish(EmitterPublish::new(redis.url(), "wrong-key", vec![]).to("shared"))
        .await
        .unwrap();
    node.emitter_publish(
        EmitterPublish::new(redis.url(), "right-key", vec![])
            .key("sbtest")
            .to("only-b"),
    )
    .await
    .unwrap();
    node.expect_event("on-b", "right-key", T).await.unwrap();
    node.expect_no_event_named("on-a", "wrong-key", Duration::from_millis(300))
        .await
        .unwrap();
    node.expect_no_event_named("on-b", "wrong-key", Duration::from_millis(10))
        .await
        .unwrap();

    // fetchSockets and allRooms across the fleet.
    let sockets = node
        .server_fetch_sockets(ServerTarget::new(a))
        .await
        .unwrap();
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    assert!(
        sockets
            .iter()
            .any(|s| s.rooms.contains(&"only-b".to_string()))
    );
    let rooms = node.server_all_rooms(a, None).await.unwrap();
    assert!(rooms.contains(&"only-b".to_string()), "{rooms:?}");

    // serverSideEmit with ack: B answers A through the driver hook.
    let replies = node
        .server_side_emit(a, "ping-servers", vec![json!("x")], Some(T))
        .await
        .unwrap();
    assert_eq!(replies, json!([{"port": b}]));
    let n = node
        .next_note(&NodeDriver::server_queue(b), T)
        .await
        .unwrap();
    assert!(matches!(n, Note::ServerSideEvent { name, .. } if name == "ping-servers"));

    // Connect errors come back as Err with the client's message, quickly.
    let closed = free_port();
    let err = node
        .connect(
            "nowhere",
            &format!("http://127.0.0.1:{closed}"),
            ConnectOptions::new().timeout(Duration::from_secs(3)),
        )
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("error"), "{err:#}");
    assert!(matches!(
        node.next_note("nowhere", T).await.unwrap(),
        Note::ConnectError { .. }
    ));
    // Unknown client / op errors are reported, not hung.
    assert!(node.emit("ghost", "x", vec![]).await.is_err());
    assert!(
        node.request("noSuchOp", json!({}), T)
            .await
            .unwrap_err()
            .to_string()
            .contains("unknown op")
    );
    // Bounded waits fail in time.
    let started = std::time::Instant::now();
    assert!(
        node.expect_event("on-a", "never", Duration::from_millis(200))
            .await
            .is_err()
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    node.stop_server(b).await.unwrap();
    node.expect_disconnect("on-b", T).await.unwrap();
}

#[tokio::test]
async fn python_client_receives_emitter_event() {
    let redis = RedisServer::start().unwrap();
    let node = NodeDriver::start().await.unwrap();
    let port = node.start_server(&redis.url()).await.unwrap();
    let url = format!("http://127.0.0.1:{port}");

    for transports in [&["websocket"][..], &["polling"][..]] {
        let mut opts = PyClientOptions::new(&url, "py-ev")
            .transports(transports)
            .timeout(T);
        opts.auth = Some(json!({"rooms": ["py"]}));
        let client = PythonClient::spawn(&opts).await.unwrap();
        assert!(!client.sid.is_empty());
        assert_eq!(client.transport, transports[0]);
        node.emitter_publish(
            EmitterPublish::new(
                redis.url(),
                "py-ev",
                vec![json!({"a": 1}), bin([0xde, 0xad])],
            )
            .to("py"),
        )
        .await
        .unwrap();
        let args = client.wait_event().await.unwrap();
        assert_eq!(args[0], json!({"a": 1}));
        assert_eq!(as_bin(&args[1]).unwrap(), vec![0xde, 0xad]);
    }

    // Connect error is an Err.
    let closed = free_port();
    let err = PythonClient::spawn(
        &PyClientOptions::new(format!("http://127.0.0.1:{closed}"), "x")
            .timeout(Duration::from_secs(3)),
    )
    .await
    .err()
    .expect("connect to a closed port must fail");
    assert!(err.to_string().contains("connect error"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_driver_survives_redis_restart() {
    let mut redis = RedisServer::start().unwrap();
    let node = NodeDriver::start().await.unwrap();
    let port = node.start_server(&redis.url()).await.unwrap();
    node.connect(
        "c",
        &format!("http://127.0.0.1:{port}"),
        ConnectOptions::new().auth(json!({"rooms": ["r"]})),
    )
    .await
    .unwrap();
    node.emitter_publish(EmitterPublish::new(redis.url(), "before", vec![]).to("r"))
        .await
        .unwrap();
    node.expect_event("c", "before", T).await.unwrap();

    redis.kill();
    // While Redis is down the publish fails or hangs, but boundedly.
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        node.emitter_publish(EmitterPublish::new(redis.url(), "lost", vec![]).to("r")),
    )
    .await;
    redis.restart().unwrap();

    // node-redis reconnects and the adapter resubscribes; retry until through.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let _ = node
            .emitter_publish(EmitterPublish::new(redis.url(), "after", vec![]).to("r"))
            .await;
        if node
            .expect_event("c", "after", Duration::from_millis(500))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no delivery after redis restart; node stderr:\n{}",
            node.stderr()
        );
    }
    node.ping().await.unwrap();
}

#[test]
fn redis_over_tls_with_acl_users() {
    use switchboard_testkit::{redis::RedisOptions, tls::TestPki};
    let pki = TestPki::generate().unwrap();
    let redis = RedisServer::start_with(
        RedisOptions::default()
            .tls(&pki, true)
            .user("app on >app-secret ~* &* +@all"),
    )
    .unwrap();
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));
    assert_ne!(redis.port(), redis.plain_port());
    assert_eq!(
        redis
            .command(&["ACL", "WHOAMI"])
            .unwrap()
            .as_str()
            .as_deref(),
        Some("admin")
    );
    let out = std::process::Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(pki.ca_file())
        .arg("--cert")
        .arg(pki.client_cert_file())
        .arg("--key")
        .arg(pki.client_key_file())
        .args([
            "-p",
            &redis.port().to_string(),
            "--user",
            "app",
            "--pass",
            "app-secret",
        ])
        .args(["--no-auth-warning", "ACL", "WHOAMI"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "app",
        "{out:?}"
    );
}

#[test]
fn sentinel_fails_over_when_the_master_dies() {
    use switchboard_testkit::sentinel::SentinelSet;
    let mut set = SentinelSet::start().unwrap();
    assert_eq!(set.sentinel_addrs().len(), 3);
    let old = set.master_port().unwrap();
    assert_eq!(old, set.servers()[0].port());
    let killed = set.kill_master().unwrap();
    assert_eq!(killed, old);
    let started = std::time::Instant::now();
    let new = set.wait_for_failover(old, Duration::from_secs(30)).unwrap();
    assert_eq!(new, set.servers()[1].port());
    eprintln!("failover took {:?}", started.elapsed());
}

#[test]
fn cluster_of_three_masters_migrates_a_slot() {
    use switchboard_testkit::cluster::RedisCluster;
    let cluster = RedisCluster::start(3, 0).unwrap();
    assert_eq!(cluster.master_ports().unwrap().len(), 3);
    let slot = cluster.key_slot("k").unwrap();
    let owner = cluster.slot_owner(slot).unwrap();
    let node = cluster.node(owner).unwrap();
    assert_eq!(
        node.command(&["SET", "k", "v"]).unwrap(),
        Resp::Simple("OK".into())
    );
    let target = cluster.other_master(owner).unwrap();
    cluster.migrate_slot(slot, target).unwrap();
    assert_eq!(cluster.slot_owner(slot).unwrap(), target);
    let moved = node.command(&["GET", "k"]).unwrap();
    assert!(
        matches!(&moved, Resp::Error(e) if e.starts_with("MOVED")),
        "{moved:?}"
    );
    assert_eq!(
        cluster
            .node(target)
            .unwrap()
            .command(&["GET", "k"])
            .unwrap()
            .as_str()
            .as_deref(),
        Some("v")
    );
}
