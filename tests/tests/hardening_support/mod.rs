//! Helpers shared by the `hardening_*` tests: raw Socket.IO websocket clients
//! that run in the background (answering pings, recording events and how
//! they ended), raw Engine.IO polling requests, emitter-format publishes
//! straight into Redis with the `PUBLISH` reply, and process RSS.
//!
//! Everything here is bounded by explicit timeouts and talks to loopback only.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream as StdTcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_testkit::net::{HttpResponse, http_request};
use tokio::{net::TcpStream, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest, protocol::frame::coding::CloseCode},
};

/// A websocket to the gateway (plain TCP).
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound for any single step that should happen promptly.
pub const STEP: Duration = Duration::from_secs(10);

/// `ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket`.
pub fn ws_url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket")
}

/// Opens a raw Engine.IO websocket.
pub async fn ws_open(port: u16) -> anyhow::Result<Ws> {
    let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(ws_url(port)))
        .await
        .context("websocket handshake timed out")??;
    Ok(ws)
}

/// A websocket handshake with extra headers; `Err((status, body))` if
/// refused over HTTP.
pub async fn ws_open_with(port: u16, headers: &[(&str, &str)]) -> Result<Ws, (u16, String)> {
    let mut req = ws_url(port).into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            tungstenite::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("websocket handshake timed out")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err((
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string(),
        )),
        Err(e) => panic!("websocket handshake failed: {e}"),
    }
}

/// The next text frame, answering Engine.IO pings on the way.
pub async fn next_text(ws: &mut Ws, timeout: Duration) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("no frame in time")?;
        match msg {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                ws.send(Message::text("3")).await?;
            }
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(c))) => bail!("closed: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("websocket error: {e}"),
            None => bail!("websocket ended"),
        }
    }
}

/// Reads the open packet, sends CONNECT to `/` with `auth` (`None`: no
/// payload) and returns the first Socket.IO reply for `/` (`40...` or `44...`).
pub async fn sio_handshake(ws: &mut Ws, auth: Option<Value>) -> anyhow::Result<String> {
    let open = next_text(ws, STEP).await?;
    if !open.starts_with('0') {
        bail!("first frame is not an open packet: {open:?}");
    }
    let connect = match auth {
        Some(a) => format!("40{a}"),
        None => "40".to_string(),
    };
    ws.send(Message::text(connect)).await?;
    loop {
        let t = next_text(ws, STEP).await?;
        if t.starts_with("40") || t.starts_with("44") {
            return Ok(t);
        }
    }
}

/// A raw websocket that completed the Socket.IO CONNECT with `token`.
pub async fn ws_connected(port: u16, token: &str) -> anyhow::Result<Ws> {
    let mut ws = ws_open(port).await?;
    let reply = sio_handshake(&mut ws, Some(json!({ "token": token }))).await?;
    if !reply.starts_with("40") {
        bail!("CONNECT refused: {reply}");
    }
    Ok(ws)
}

/// How a background client's websocket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A close frame with this code and reason.
    Close(u16, String),
    /// EOF or a transport error without a close frame.
    Dropped(String),
}

/// What a background client saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// `(event name, args)` of every EVENT, in order.
    pub events: Vec<(String, Vec<Value>)>,
    /// Every other Socket.IO text frame (acks, CONNECT_ERROR, DISCONNECT...).
    pub other: Vec<String>,
    /// Set once the websocket ended.
    pub end: Option<End>,
}

/// A client driven by a background task until it ends or is aborted.
pub struct Live {
    /// What it saw so far.
    pub seen: Arc<Mutex<Seen>>,
    /// Text frames to send.
    pub tx: tokio::sync::mpsc::UnboundedSender<String>,
    task: JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Live {
    /// Drives `ws` in the background: answers pings, records frames.
    pub fn spawn(mut ws: Ws) -> Live {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let end = loop {
                tokio::select! {
                    out = rx.recv() => {
                        if let Some(text) = out
                            && let Err(e) = ws.send(Message::text(text)).await
                        {
                            break End::Dropped(e.to_string());
                        }
                    }
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(t))) => {
                            let t = t.as_str();
                            if t == "2" {
                                if let Err(e) = ws.send(Message::text("3")).await {
                                    break End::Dropped(e.to_string());
                                }
                            } else if let Some(body) = t.strip_prefix("42") {
                                let mut seen = s.lock().unwrap();
                                match serde_json::from_str::<Vec<Value>>(body) {
                                    Ok(mut args) if !args.is_empty() => {
                                        let name = args.remove(0).as_str().unwrap_or_default().to_string();
                                        seen.events.push((name, args));
                                    }
                                    _ => seen.other.push(t.to_string()),
                                }
                            } else {
                                s.lock().unwrap().other.push(t.to_string());
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            break match frame {
                                Some(f) => End::Close(u16::from(f.code), f.reason.to_string()),
                                None => End::Close(u16::from(CloseCode::Status), String::new()),
                            };
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break End::Dropped(e.to_string()),
                        None => break End::Dropped("eof".into()),
                    }
                }
            };
            s.lock().unwrap().end = Some(end);
        });
        Live { seen, tx, task }
    }

    /// Sends one text frame.
    pub fn send(&self, text: impl Into<String>) {
        let _ = self.tx.send(text.into());
    }

    /// How it ended, if it did.
    pub fn end(&self) -> Option<End> {
        self.seen.lock().unwrap().end.clone()
    }

    /// The args of every event named `name` received so far.
    pub fn events_named(&self, name: &str) -> Vec<Vec<Value>> {
        self.seen
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// The integer first args of events named `name` (e.g. sequence numbers).
    pub fn seqs(&self, name: &str) -> Vec<i64> {
        self.events_named(name)
            .iter()
            .filter_map(|a| a.first().and_then(Value::as_i64))
            .collect()
    }

    /// Waits until `pred` holds for what was seen; false on timeout.
    pub async fn wait(&self, timeout: Duration, pred: impl Fn(&Seen) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(&self.seen.lock().unwrap()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for an event `name` whose first arg is `tag`.
    pub async fn wait_event(&self, name: &str, tag: &Value, timeout: Duration) -> bool {
        self.wait(timeout, |s| {
            s.events
                .iter()
                .any(|(n, a)| n == name && a.first() == Some(tag))
        })
        .await
    }

    /// Waits until the websocket ended; its end, or `None` on timeout.
    pub async fn wait_end(&self, timeout: Duration) -> Option<End> {
        self.wait(timeout, |s| s.end.is_some()).await;
        self.end()
    }
}

/// Connects `n` clients with tokens from `token(i)`, `parallel` at a time.
pub async fn connect_many(
    port: u16,
    n: usize,
    parallel: usize,
    token: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<Live>> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let mut set = tokio::task::JoinSet::new();
        for k in i..(i + parallel).min(n) {
            let t = token(k);
            set.spawn(async move { (k, ws_connected(port, &t).await) });
        }
        let mut batch: Vec<(usize, Ws)> = Vec::new();
        while let Some(r) = set.join_next().await {
            let (k, ws) = r?;
            batch.push((k, ws.with_context(|| format!("client {k}"))?));
        }
        batch.sort_by_key(|(k, _)| *k);
        out.extend(batch.into_iter().map(|(_, ws)| Live::spawn(ws)));
        i += parallel;
    }
    Ok(out)
}

// ---------------------------------------------------------------- polling

/// One raw HTTP request on a worker thread.
pub async fn http(
    method: &str,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
) -> anyhow::Result<HttpResponse> {
    let method = method.to_string();
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http_request(&method, &url, &h, body.as_deref(), Duration::from_secs(5))
    })
    .await
    .context("http task panicked")?
}

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
    let r = http("GET", polling_url(port, None), vec![], None).await?;
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
        polling_url(port, Some(sid)),
        vec![("Content-Type".into(), "text/plain;charset=UTF-8".into())],
        Some(body.to_vec()),
    )
    .await
}

/// One polling GET; status and body.
pub async fn polling_get(port: u16, sid: &str) -> anyhow::Result<(u16, String)> {
    let r = http("GET", polling_url(port, Some(sid)), vec![], None).await?;
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

/// Publishes `payload` on `channel` over a fresh connection to
/// `127.0.0.1:port`; returns the `PUBLISH` reply (receivers).
pub fn redis_publish(port: u16, channel: &str, payload: &[u8]) -> anyhow::Result<i64> {
    let timeout = Duration::from_millis(300);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = StdTcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut out = b"*3\r\n$7\r\nPUBLISH\r\n".to_vec();
    for arg in [channel.as_bytes(), payload] {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    let n = line
        .strip_prefix(':')
        .and_then(|l| l.trim_end().parse().ok())
        .with_context(|| format!("unexpected PUBLISH reply {line:?}"))?;
    Ok(n)
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

/// A one-line summary of what a client saw, for assertion messages.
pub fn summary(live: &Live) -> String {
    let s = live.seen.lock().unwrap();
    format!(
        "{} events, other frames {:?}, end {:?}",
        s.events.len(),
        s.other.iter().take(5).collect::<Vec<_>>(),
        s.end
    )
}
