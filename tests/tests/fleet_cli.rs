//! The fleet commands of the `switchboard` CLI against a real mixed fleet on
//! one redis-server: two Switchboard gateways and one Node socket.io server
//! with the official `@socket.io/redis-adapter`, official socket.io-client
//! sockets in rooms on each. `sockets --room` / `--user`, `rooms` and
//! `status` list what is really there, as tables and as JSON; a frozen
//! gateway (SIGSTOP: still subscribed, never answering) is reported as
//! missing within the timeout instead of hanging the command.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use switchboard_testkit::{
    GatewayProcess, bin_path,
    node::{ConnectOptions, NodeDriver, StartServer},
    redis::RedisServer,
};

/// What one CLI run printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

async fn cli(redis: &RedisServer, args: &[&str]) -> Run {
    let started = Instant::now();
    let out = tokio::process::Command::new(bin_path("switchboard").expect("switchboard binary"))
        .env("SWITCHBOARD_REDIS_URL", redis.url())
        .args(args)
        .output()
        .await
        .expect("run switchboard");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// The address a test gateway registers for sid forwarding.
fn gw_address(gw: &GatewayProcess) -> String {
    format!("127.0.0.1:{}", gw.port())
}

/// The sorted ids of a `sockets --json` answer.
fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["sockets"]
        .as_array()
        .expect("sockets array")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The fleet: two gateways, a Node server, one client on each gateway and
/// one on the Node server.
struct Fleet {
    redis: RedisServer,
    gw1: GatewayProcess,
    gw2: GatewayProcess,
    node: NodeDriver,
    /// Socket ids: alice (gw1, role:support), bob (gw2), carol (Node, role:support).
    alice: String,
    bob: String,
    carol: String,
}

async fn fleet() -> Fleet {
    let redis = redis();
    let gw1 = redis_gateway(&redis, &[]).await;
    let gw2 = redis_gateway(&redis, &[]).await;
    let node = node().await;
    let port = node
        .start_server_with(StartServer {
            redis_url: redis.url(),
            ..Default::default()
        })
        .await
        .expect("node server");
    let alice = connect(
        &node,
        "alice",
        &gw1,
        ConnectOptions::new()
            .websocket_only()
            .token(token_role("alice", "support")),
    )
    .await
    .sid;
    let bob = connect(
        &node,
        "bob",
        &gw2,
        ConnectOptions::new().polling_only().token(token("bob")),
    )
    .await
    .sid;
    let carol = node
        .connect(
            "carol",
            &format!("http://127.0.0.1:{port}"),
            ConnectOptions::new()
                .websocket_only()
                .auth(json!({"rooms": ["role:support"]})),
        )
        .await
        .expect("carol connects to the Node server")
        .sid;
    Fleet {
        redis,
        gw1,
        gw2,
        node,
        alice,
        bob,
        carol,
    }
}

#[tokio::test]
async fn fleet_commands_list_sockets_rooms_and_servers_of_a_mixed_fleet() {
    let f = fleet().await;

    // sockets --room: one socket on a gateway, one on the Node server.
    let run = cli(&f.redis, &["sockets", "--room", "role:support", "--json"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let v = run.json();
    assert_eq!(
        ids(&v),
        sorted(vec![f.alice.clone(), f.carol.clone()]),
        "{v}"
    );
    assert_eq!(v["answers"]["expected"], 3, "{v}");
    assert_eq!(v["answers"]["missing"], 0, "{v}");
    let alice = v["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == json!(f.alice))
        .unwrap();
    assert_eq!(alice["data"]["sub"], "alice", "claims as data: {alice}");
    assert!(
        alice["rooms"]
            .as_array()
            .unwrap()
            .contains(&json!("user:alice")),
        "{alice}"
    );

    // The same as a table.
    let run = cli(&f.redis, &["sockets", "--room", "role:support"]).await;
    eprintln!("$ switchboard sockets --room role:support\n{}", run.stdout);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("SOCKET"), "{}", run.stdout);
    assert!(run.stdout.contains(&f.alice) && run.stdout.contains(&f.carol));
    assert!(!run.stdout.contains(&f.bob), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("2 socket(s); 3 of 3 server(s) answered"),
        "{}",
        run.stdout
    );

    // sockets --user: the user's room (user:{id}).
    let v = cli(&f.redis, &["sockets", "--user", "bob", "--json"])
        .await
        .json();
    assert_eq!(ids(&v), vec![f.bob.clone()], "{v}");

    // rooms: the union of every server's rooms.
    let v = cli(&f.redis, &["rooms", "--json"]).await.json();
    let rooms: Vec<&str> = v["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for room in ["role:support", "user:alice", "user:bob"] {
        assert!(rooms.contains(&room), "{room} missing from {v}");
    }
    let run = cli(&f.redis, &["rooms"]).await;
    eprintln!("$ switchboard rooms\n{}", run.stdout);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.lines().any(|l| l == "role:support"),
        "{}",
        run.stdout
    );

    // status: both gateways with their connections, the Node server by uid.
    for gw in [&f.gw1, &f.gw2] {
        gw.wait_for_log("registered with peers for sid forwarding", T)
            .expect("gateway registered");
    }
    let v = cli(&f.redis, &["status", "--json"]).await.json();
    let gateways = v["gateways"].as_array().expect("gateways");
    assert_eq!(gateways.len(), 2, "{v}");
    let mut transports: Vec<(i64, i64)> = gateways
        .iter()
        .map(|g| {
            assert_eq!(g["kind"], "switchboard", "{g}");
            assert_eq!(g["version"], env!("CARGO_PKG_VERSION"), "{g}");
            assert!(g["uptimeSecs"].as_u64().is_some(), "{g}");
            assert_eq!(g["busUp"], true, "{g}");
            (
                g["connections"]["polling"].as_i64().unwrap(),
                g["connections"]["websocket"].as_i64().unwrap(),
            )
        })
        .collect();
    transports.sort();
    assert_eq!(transports, vec![(0, 1), (1, 0)], "{v}");
    let mut addresses: Vec<&str> = gateways
        .iter()
        .filter_map(|g| g["address"].as_str())
        .collect();
    addresses.sort();
    let mut want = vec![gw_address(&f.gw1), gw_address(&f.gw2)];
    want.sort();
    assert_eq!(addresses, want, "{v}");
    assert_eq!(v["unanswered"], json!([]), "{v}");
    assert_eq!(v["nodeServers"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["answers"]["missing"], 0, "{v}");
    let run = cli(&f.redis, &["status"]).await;
    eprintln!("$ switchboard status\n{}", run.stdout);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("SERVER"), "{}", run.stdout);
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.contains(" switchboard "))
            .count(),
        2,
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.lines().any(|l| l.contains(" node ")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("2 gateway(s) answered, 1 Node server(s)"),
        "{}",
        run.stdout
    );

    // A frozen gateway: still subscribed, so counted, but silent.
    f.gw2.signal(libc::SIGSTOP).expect("SIGSTOP gw2");
    let run = cli(&f.redis, &["sockets", "--json", "--timeout-ms", "1500"]).await;
    let frozen = cli(&f.redis, &["status", "--timeout-ms", "1500"]).await;
    let frozen_json = cli(&f.redis, &["status", "--json", "--timeout-ms", "1500"]).await;
    f.gw2.signal(libc::SIGCONT).expect("SIGCONT gw2");
    eprintln!(
        "$ switchboard status (one gateway frozen)\n{}{}",
        frozen.stdout, frozen.stderr
    );
    assert_eq!(
        run.code, 5,
        "exit 5 when servers are missing: {}",
        run.stderr
    );
    assert!(run.took < Duration::from_secs(10), "took {:?}", run.took);
    let v = run.json();
    assert_eq!(v["answers"]["missing"], 1, "{v}");
    assert_eq!(v["answers"]["answered"], 2, "{v}");
    assert_eq!(
        ids(&v),
        sorted(vec![f.alice.clone(), f.carol.clone()]),
        "{v}"
    );
    assert!(
        run.stderr.contains("1 of 3 server(s)") && run.stderr.contains("did not answer"),
        "{}",
        run.stderr
    );
    assert_eq!(frozen.code, 5, "{}", frozen.stderr);
    let v = frozen_json.json();
    assert_eq!(v["gateways"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        v["unanswered"][0]["address"],
        json!(gw_address(&f.gw2)),
        "the frozen gateway is named by its registered address: {v}"
    );
    assert!(
        frozen.stdout.contains(&format!(
            "did not answer within 1500 ms: gateway(s) at {}",
            gw_address(&f.gw2)
        )),
        "{}",
        frozen.stdout
    );
    assert!(
        frozen
            .stdout
            .contains("1 gateway(s) answered, 1 Node server(s)")
            && frozen.stdout.contains("1 server(s) did not answer"),
        "{}",
        frozen.stdout
    );
    let _ = (&f.gw1, &f.node);
}

#[tokio::test]
async fn fleet_commands_without_redis_fail_fast_with_exit_3() {
    let port = switchboard_testkit::free_port();
    let started = Instant::now();
    let out = tokio::process::Command::new(bin_path("switchboard").expect("switchboard binary"))
        .args(["sockets", "--room", "r", "--timeout-ms", "1000"])
        .env("SWITCHBOARD_REDIS_URL", format!("redis://127.0.0.1:{port}"))
        .output()
        .await
        .expect("run switchboard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
