//! A Node Socket.IO server with the official `@socket.io/redis-adapter` and a
//! Switchboard gateway on one Redis: the gateway answers the adapter's
//! requests Node callers wait on (`fetchSockets`, `allRooms`) and takes part
//! in a broadcast with acknowledgements (`io.timeout(..).emitWithAck`).

use std::time::Duration;

use switchboard_testkit::{
    GatewayOptions, GatewayProcess, free_port, jwt::Claims, redis::RedisServer,
};

mod common;

const SECRET: &str = "mixed-fleet-secret-0123456789abcdef";

#[test]
fn node_server_gets_fetch_sockets_all_rooms_and_acks_from_gateway_clients() {
    let redis = RedisServer::start().expect("redis");
    let gateway = GatewayProcess::start(GatewayOptions::new().redis(redis.url()).secret(SECRET))
        .expect("gateway");
    let token = Claims::new()
        .sub("42")
        .role("admin")
        .expires_in(Duration::from_secs(600))
        .sign_hs256(SECRET);
    let stdout = common::run_node_script(
        "scripts/broadcast-with-ack.mjs",
        &[redis.url(), gateway.url(), token, free_port().to_string()],
        &gateway,
    );
    assert!(stdout.contains(r#""acks":[{"answer":42}]"#), "{stdout}");
}
