//! A Node Socket.IO server with the official `@socket.io/redis-adapter` and a
//! Switchboard gateway on one Redis: the gateway answers the adapter's
//! requests Node callers wait on (`fetchSockets`, `allRooms`) and takes part
//! in a broadcast with acknowledgements (`io.timeout(..).emitWithAck`).

use std::{process::Command, time::Duration};

use switchboard_testkit::{
    GatewayOptions, GatewayProcess, free_port,
    jwt::Claims,
    node::{ensure_node_modules, node_dir},
    redis::RedisServer,
};

const SECRET: &str = "mixed-fleet-secret-0123456789abcdef";

#[test]
fn node_server_gets_fetch_sockets_all_rooms_and_acks_from_gateway_clients() {
    let redis = RedisServer::start().expect("redis");
    let gateway = GatewayProcess::start(GatewayOptions::new().redis(redis.url()).secret(SECRET))
        .expect("gateway");
    ensure_node_modules().expect("npm packages");
    let token = Claims::new()
        .sub("42")
        .role("admin")
        .expires_in(Duration::from_secs(600))
        .sign_hs256(SECRET);
    let out = Command::new("node")
        .current_dir(node_dir())
        .arg("scripts/broadcast-with-ack.mjs")
        .arg(redis.url())
        .arg(gateway.url())
        .arg(&token)
        .arg(free_port().to_string())
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "node script failed\nstdout: {}\nstderr: {}\ngateway logs:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        gateway.logs()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(r#""acks":[{"answer":42}]"#), "{stdout}");
}
