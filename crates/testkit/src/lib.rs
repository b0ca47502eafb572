//! Test support for Switchboard: real processes on free loopback ports and the
//! official Socket.IO clients.
//!
//! - [`redis::RedisServer`]: a private `redis-server` per test (never the
//!   shared one on 6379), with `kill`/`restart` for chaos tests, TLS and ACL
//!   users ([`redis::RedisOptions`]); [`tls::TestPki`]: throwaway certificates;
//!   [`sentinel::SentinelSet`]: master, replica and three sentinels, with a
//!   way to kill the master and wait for the failover;
//!   [`cluster::RedisCluster`]: a Redis Cluster with a slot-migration helper.
//! - [`gateway::GatewayProcess`]: the built `switchboard-gateway` binary on a
//!   free port, waited for until `/healthz` answers, with captured logs.
//! - [`node::NodeDriver`]: one long-running `node tests/node/driver.mjs` that
//!   drives many official `socket.io-client` sockets, the official
//!   `@socket.io/redis-emitter`, and Node `socket.io` servers with the
//!   official `@socket.io/redis-adapter`.
//! - [`python::run_client`]: the official `python-socketio` client.
//! - [`browser::Browser`]: a real headless Chromium (selenium with the
//!   system chromedriver) and [`browser::StaticSite`] to serve test pages.
//! - [`tools`]: external programs a test needs, and loud skips where one is
//!   missing.
//! - [`jwt`]: HS256 tokens for tests.
//! - [`net`]: free ports and a tiny HTTP/1.1 client ([`net::http`] for
//!   async tests).
//! - [`ws`]: one raw Engine.IO websocket client ([`ws::RawWs`], and
//!   [`ws::Live`] in the background), ending in one [`ws::End`].
//!
//! Every wait in this crate is bounded by an explicit timeout.

#![warn(missing_docs)]

pub mod browser;
pub mod cluster;
pub mod gateway;
pub mod jwt;
pub mod net;
pub mod node;
pub mod python;
pub mod redis;
pub mod sentinel;
pub mod tls;
pub mod tools;
pub mod ws;

mod lock;
mod proc;

pub use gateway::{GatewayOptions, GatewayProcess, bin_path};
pub use net::{free_port, http_get};

use std::path::PathBuf;

/// The workspace root (two levels above this crate's manifest directory).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or(manifest)
}
