//! socketioxide reference server for bench/run.sh: what a team would run
//! instead of the Switchboard gateway if it picked the best Rust Socket.IO
//! library. socketioxide 0.18 with its in-memory adapter, the same HS256 JWT
//! check at CONNECT as the gateway and bench/node-reference (token in the
//! CONNECT auth payload) and the same rooms: `user:{sub}` and `role:{role}`
//! for each of `role`/`roles`.
//!
//! socketioxide's Redis adapter speaks its own request format and cannot
//! receive @socket.io/redis-emitter broadcasts, which is what the benchmark
//! publishes, so a small bridge PSUBSCRIBEs the emitter channels of the main
//! namespace (`socket.io#/#*`), decodes each message with the workspace's
//! wire crate and broadcasts it locally.
//!
//! Environment: PORT (default 3003), REDIS_URL (default
//! redis://127.0.0.1:6379), JWT_SECRET (required).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::Deserialize;
use socketioxide::{
    SocketIo,
    extract::{Data, SocketRef},
    handler::ConnectHandler,
};

/// The CONNECT auth payload the clients send.
#[derive(Debug, Deserialize)]
struct Auth {
    token: String,
}

/// The claims the bench tokens carry.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: Option<serde_json::Value>,
    #[serde(default)]
    roles: Option<serde_json::Value>,
}

/// A refused CONNECT (the client sees `unauthorized`).
#[derive(Debug)]
struct Unauthorized;

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unauthorized")
    }
}

fn rooms_of(claims: &Claims) -> Vec<String> {
    let mut rooms = vec![format!("user:{}", claims.sub)];
    for v in [&claims.role, &claims.roles].into_iter().flatten() {
        match v {
            serde_json::Value::String(r) => rooms.push(format!("role:{r}")),
            serde_json::Value::Array(rs) => rooms.extend(
                rs.iter()
                    .filter_map(|r| r.as_str())
                    .map(|r| format!("role:{r}")),
            ),
            _ => {}
        }
    }
    rooms
}

/// Forwards emitter broadcasts for `/` to the local sockets.
async fn bridge(io: SocketIo, redis_url: String) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url.as_str())?;
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .context("connect to redis")?;
    pubsub.psubscribe("socket.io#/#*").await?;
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let msg = match switchboard_wire::decode_broadcast(msg.get_payload_bytes()) {
            Ok(m) => m,
            Err(err) => {
                eprintln!("bridge: undecodable message: {err}");
                continue;
            }
        };
        let data = switchboard_wire::msgpack_to_json(&msg.packet.data);
        let serde_json::Value::Array(mut items) = data else {
            continue;
        };
        if items.is_empty() {
            continue;
        }
        let event = match items.remove(0) {
            serde_json::Value::String(e) => e,
            _ => continue,
        };
        let ops = io.to(msg.opts.rooms).except(msg.opts.except);
        // One argument is sent as itself; several as socketioxide's
        // multi-argument form (a JSON array is spread into arguments).
        let result = if items.len() == 1 {
            ops.emit(&event, &items[0]).await
        } else {
            ops.emit(&event, &items).await
        };
        if let Err(err) = result {
            eprintln!("bridge: broadcast failed: {err}");
        }
    }
    bail!("redis subscription ended")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .map(|p| p.parse())
        .transpose()
        .context("PORT")?
        .unwrap_or(3003);
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let secret = std::env::var("JWT_SECRET").context("JWT_SECRET is required")?;
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 30;

    // socketioxide drops a message (emit error `SocketFull`) once a socket
    // has 128 waiting; a burst queues far more than that per socket, and the
    // other servers bound their queues in bytes, so the bound is raised to
    // what the gateway allows (4,096 frames, x4 while the client reads).
    let (layer, io) = SocketIo::builder().max_buffer_size(16 * 1024).build_layer();
    let auth = move |s: SocketRef, Data(auth): Data<Auth>| {
        let claims = jsonwebtoken::decode::<Claims>(&auth.token, &key, &validation)
            .map_err(|_| Unauthorized);
        async move {
            let claims = claims?.claims;
            s.join(rooms_of(&claims));
            Ok::<(), Unauthorized>(())
        }
    };
    io.ns("/", (async |_s: SocketRef| {}).with(auth));

    tokio::spawn(bridge(io.clone(), redis_url));
    let app = axum::Router::new().layer(layer);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("socketioxide-reference listening on {addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
