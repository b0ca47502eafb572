//! Helpers shared by the Admin UI tests (`admin_ui.rs`, `cluster_stores.rs`):
//! the login, its bcrypt hash, and the connection options and server id the
//! official UI (`@socket.io/admin-ui` 0.5.1) uses.

#![allow(dead_code)]

use serde_json::{Value, json};
use switchboard_testkit::{GatewayProcess, node::ConnectOptions};

pub const USER: &str = "ops";
pub const PASSWORD: &str = "correct horse battery staple";

/// A bcrypt hash of [`PASSWORD`] (cost 4: tests need no slow hashing), in
/// the `$2a$` form bcryptjs writes, so Node's `instrument()` takes it too.
pub fn password_hash() -> String {
    bcrypt::hash_with_result(PASSWORD, 4)
        .expect("bcrypt")
        .format_for_version(bcrypt::Version::TwoA)
}

pub fn admin_env(hash: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SWITCHBOARD_ADMIN__ENABLED", "true".into()),
        ("SWITCHBOARD_ADMIN__USERNAME", USER.into()),
        ("SWITCHBOARD_ADMIN__PASSWORD_BCRYPT", hash.into()),
    ]
}

pub fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The UI's connection options (`App.vue`): polling then websocket, with
/// credentials, no automatic reconnection in tests.
pub fn ui_opts(auth: Value) -> ConnectOptions {
    ConnectOptions::new()
        .transports(&["polling", "websocket"])
        .opt("withCredentials", json!(true))
        .auth(auth)
        .reconnection(false)
}

pub fn login() -> Value {
    json!({"username": USER, "password": PASSWORD})
}

/// The UI's `serverId` for a gateway process (`hostname#pid`).
pub fn server_id(gw: &GatewayProcess) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}#{}", host.trim(), gw.pid().expect("gateway pid"))
}
