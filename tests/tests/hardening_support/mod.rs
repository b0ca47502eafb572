//! Helpers shared by the `hardening_*` and `security_*` tests: raw
//! Engine.IO polling requests, emitter-format publishes straight into Redis
//! with the `PUBLISH` reply, and process RSS. The raw websocket client
//! ([`RawWs`], [`Live`]) and the HTTP helper ([`http`]) are the testkit's,
//! re-exported here.
//!
//! Everything here is bounded by explicit timeouts and talks to loopback only.

#![allow(dead_code, unused_imports)]

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use switchboard_testkit::net::http_request;
pub use switchboard_testkit::{
    net::{HttpResponse, http},
    ws::{End, Live, RawWs, STEP, Seen, Ws, connect_many, ws_url},
};

// ---------------------------------------------------------------- polling

/// `http://127.0.0.1:PORT/socket.io/?EIO=4&transport=polling[&sid=..]`.
pub fn polling_url(port: u16, sid: Option<&str>) -> String {
    let mut url = format!("http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling");
    if let Some(sid) = sid {
        url.push_str("&sid=");
        url.push_str(sid);
    }
    url
}

/// Opens a polling session; returns its sid.
pub async fn polling_open(port: u16) -> anyhow::Result<String> {
    let r = http("GET", &polling_url(port, None), &[], None).await?;
    if r.status != 200 {
        bail!("polling handshake answered {}: {}", r.status, r.text());
    }
    let text = r.text();
    let body = text
        .strip_prefix('0')
        .with_context(|| format!("not an open packet: {text}"))?;
    let v: Value = serde_json::from_str(body)?;
    Ok(v["sid"].as_str().context("open without sid")?.to_string())
}

/// POSTs a polling payload.
pub async fn polling_post(port: u16, sid: &str, body: &[u8]) -> anyhow::Result<HttpResponse> {
    http(
        "POST",
        &polling_url(port, Some(sid)),
        &[("Content-Type", "text/plain;charset=UTF-8")],
        Some(body),
    )
    .await
}

/// One polling GET; status and body.
pub async fn polling_get(port: u16, sid: &str) -> anyhow::Result<(u16, String)> {
    let r = http("GET", &polling_url(port, Some(sid)), &[], None).await?;
    Ok((r.status, r.text()))
}

/// A polling session connected to `/` with `token`; returns its sid.
pub async fn polling_connected(port: u16, token: &str) -> anyhow::Result<String> {
    let sid = polling_open(port).await?;
    let r = polling_post(
        port,
        &sid,
        format!("40{}", json!({ "token": token })).as_bytes(),
    )
    .await?;
    if r.status != 200 {
        bail!("CONNECT POST answered {}: {}", r.status, r.text());
    }
    let (status, body) = polling_get(port, &sid).await?;
    if status != 200 || !body.split('\u{1e}').any(|p| p.starts_with("40")) {
        bail!("no CONNECT reply over polling: {status} {body}");
    }
    Ok(sid)
}

/// Whether a polling session is gone within `timeout`: a GET answers `1`
/// (close) or 400 (unknown sid). GETs are sent one after the other, never
/// two at once (a second concurrent GET is itself a protocol error).
pub async fn polling_closed(port: u16, sid: &str, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    let url = polling_url(port, Some(sid));
    loop {
        let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
            return false;
        };
        let url = url.clone();
        let r = tokio::task::spawn_blocking(move || {
            http_request("GET", &url, &[], None, left.max(Duration::from_millis(10)))
        })
        .await
        .expect("http task");
        match r {
            Ok(r) if r.status == 400 || r.text().split('\u{1e}').any(|p| p == "1") => return true,
            Ok(_) => {}
            // Nothing within the time left: still open.
            Err(_) => return false,
        }
    }
}

// ---------------------------------------------------------------- redis

/// Publishes `payload` on `channel` over a fresh connection (the `redis`
/// crate) to `127.0.0.1:port`; returns the `PUBLISH` reply (receivers).
/// Bounded by 300 ms for connect, write and read.
pub fn redis_publish(port: u16, channel: &str, payload: &[u8]) -> anyhow::Result<i64> {
    let timeout = Duration::from_millis(300);
    let mut con = redis::Client::open(("127.0.0.1", port))?.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    let receivers = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query(&mut con)
        .context("PUBLISH")?;
    Ok(receivers)
}

/// What `emitter.to(room).emit(event, ...args)` publishes: the channel and
/// the notepack bytes, encoded by `switchboard-wire` exactly as the Node
/// `@socket.io/redis-emitter` does.
pub fn emitter_message(room: &str, event: &str, args: Vec<rmpv::Value>) -> (String, Vec<u8>) {
    use switchboard_wire::{
        BroadcastMessage, BroadcastOptions, BusPacket, Channels, EMITTER_UID, encode_broadcast,
    };
    let mut data = vec![rmpv::Value::from(event)];
    data.extend(args);
    let msg = BroadcastMessage {
        uid: EMITTER_UID.to_string(),
        packet: BusPacket::event("/", rmpv::Value::Array(data)),
        opts: BroadcastOptions {
            rooms: vec![room.to_string()],
            ..Default::default()
        },
    };
    (msg.channel(&Channels::default()), encode_broadcast(&msg))
}

// ---------------------------------------------------------------- process

/// Resident set size of a process in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
