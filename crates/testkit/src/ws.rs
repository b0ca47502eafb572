//! One raw Engine.IO websocket client for protocol and hardening tests (no
//! socket.io-client): [`RawWs`] to drive a websocket step by step, and
//! [`Live`] to run one in the background (answering pings, recording events
//! and how it ended). Both report the end of a websocket as one [`End`].
//!
//! Every wait is bounded; everything talks to loopback only.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{net::TcpStream, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest, protocol::frame::coding::CloseCode},
};

/// A websocket to the gateway (plain TCP).
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound for any single step that should happen promptly.
pub const STEP: Duration = Duration::from_secs(10);

/// `ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket[&extra_query]`.
pub fn ws_url(port: u16, extra_query: &str) -> String {
    let mut url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    if !extra_query.is_empty() {
        url.push('&');
        url.push_str(extra_query);
    }
    url
}

/// How a websocket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A close frame with this code and reason (1005, empty, for a close
    /// frame without a code).
    Close(u16, String),
    /// EOF or a transport error without a close frame.
    Dropped(String),
}

/// A raw Engine.IO v4 websocket, driven step by step.
pub struct RawWs {
    ws: Ws,
    /// Text frames seen while waiting for something else.
    pub seen: Vec<String>,
}

impl RawWs {
    /// Opens [`ws_url`]`(port, extra_query)`, within [`STEP`].
    pub async fn connect(port: u16, extra_query: &str) -> anyhow::Result<RawWs> {
        let url = ws_url(port, extra_query);
        let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .context("websocket handshake timed out")?
            .with_context(|| format!("websocket handshake to {url}"))?;
        Ok(RawWs::from(ws))
    }

    /// Opens a websocket with extra request headers; `Err((status, body))`
    /// if the gateway refuses it over HTTP. Panics on any other failure.
    pub async fn connect_with(port: u16, headers: &[(&str, &str)]) -> Result<RawWs, (u16, String)> {
        let mut req = ws_url(port, "")
            .into_client_request()
            .expect("a valid websocket URL");
        for (k, v) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                tungstenite::http::HeaderValue::from_str(v).expect("header value"),
            );
        }
        match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
            .await
            .expect("websocket handshake timed out")
        {
            Ok((ws, _)) => Ok(RawWs::from(ws)),
            Err(tungstenite::Error::Http(resp)) => Err((
                resp.status().as_u16(),
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string(),
            )),
            Err(e) => panic!("websocket handshake failed: {e}"),
        }
    }

    /// A websocket that completed the Socket.IO CONNECT to `/` with
    /// `{"token": token}`.
    pub async fn connected(port: u16, token: &str) -> anyhow::Result<RawWs> {
        let mut ws = RawWs::connect(port, "").await?;
        let reply = ws.sio_handshake(Some(json!({ "token": token }))).await?;
        if !reply.starts_with("40") {
            bail!("CONNECT refused: {reply}");
        }
        Ok(ws)
    }

    /// The next text frame, Engine.IO pings (`2`) included; websocket-level
    /// pings and pongs are skipped.
    pub async fn next_text(&mut self, timeout: Duration) -> anyhow::Result<String> {
        self.next(timeout, false).await
    }

    /// The next text frame that is not an Engine.IO ping; pings are
    /// answered (`3`) on the way.
    pub async fn next_reply(&mut self, timeout: Duration) -> anyhow::Result<String> {
        self.next(timeout, true).await
    }

    async fn next(&mut self, timeout: Duration, pong: bool) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .context("no frame in time")?;
            match msg {
                Some(Ok(Message::Text(t))) if pong && t.as_str() == "2" => {
                    self.send_text("3").await?;
                }
                Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
                Some(Ok(Message::Binary(b))) => bail!("unexpected binary frame {b:?}"),
                Some(Ok(Message::Close(c))) => bail!("closed: {c:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("websocket error: {e}"),
                None => bail!("websocket ended"),
            }
        }
    }

    /// Reads the Engine.IO open packet and returns its JSON.
    pub async fn open_packet(&mut self) -> anyhow::Result<Value> {
        let t = self.next_text(STEP).await?;
        let body = t
            .strip_prefix('0')
            .with_context(|| format!("first frame is not an open packet: {t:?}"))?;
        Ok(serde_json::from_str(body)?)
    }

    /// Sends one text frame, within [`STEP`].
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        tokio::time::timeout(STEP, self.ws.send(Message::text(text)))
            .await
            .context("sending a text frame timed out")?
            .context("send text frame")
    }

    /// Reads the open packet, sends CONNECT to `/` with `auth` (`None`: no
    /// payload) and returns the first Socket.IO reply for `/` (`40...` or
    /// `44...`); frames before it are kept in [`seen`](Self::seen).
    pub async fn sio_handshake(&mut self, auth: Option<Value>) -> anyhow::Result<String> {
        self.open_packet().await?;
        let connect = match auth {
            Some(a) => format!("40{a}"),
            None => "40".to_string(),
        };
        self.send_text(&connect).await?;
        loop {
            let t = self.next_reply(STEP).await?;
            if t.starts_with("40") || t.starts_with("44") {
                return Ok(t);
            }
            self.seen.push(t);
        }
    }

    /// [`sio_handshake`](Self::sio_handshake) with `{"token": token}` that
    /// must be admitted; returns the Socket.IO sid.
    pub async fn socketio_connect(&mut self, token: &str) -> anyhow::Result<String> {
        let reply = self.sio_handshake(Some(json!({ "token": token }))).await?;
        let Some(body) = reply.strip_prefix("40") else {
            bail!("connect refused: {reply}");
        };
        let v: Value = serde_json::from_str(body)?;
        v["sid"]
            .as_str()
            .map(str::to_string)
            .context("CONNECT reply without sid")
    }

    /// Waits until the server ends the websocket; text frames that arrive
    /// first are kept in [`seen`](Self::seen). Errs if it is still open
    /// after `timeout`.
    pub async fn expect_closed(&mut self, timeout: Duration) -> anyhow::Result<End> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Ok(msg) = tokio::time::timeout_at(deadline, self.ws.next()).await else {
                bail!(
                    "websocket still open after {timeout:?}; frames seen: {:?}",
                    self.seen
                );
            };
            match msg {
                Some(Ok(Message::Text(t))) => self.seen.push(t.to_string()),
                Some(Ok(Message::Close(frame))) => return Ok(close_end(frame)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ok(End::Dropped(e.to_string())),
                None => return Ok(End::Dropped("eof".into())),
            }
        }
    }

    /// The websocket itself, for frames this type has no helper for.
    pub fn inner(&mut self) -> &mut Ws {
        &mut self.ws
    }

    /// Hands the websocket to a background [`Live`] driver.
    pub fn into_live(self) -> Live {
        Live::spawn(self.ws)
    }
}

impl std::fmt::Debug for RawWs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawWs")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl From<Ws> for RawWs {
    fn from(ws: Ws) -> RawWs {
        RawWs {
            ws,
            seen: Vec::new(),
        }
    }
}

fn close_end(frame: Option<tungstenite::protocol::CloseFrame>) -> End {
    match frame {
        Some(f) => End::Close(u16::from(f.code), f.reason.to_string()),
        None => End::Close(u16::from(CloseCode::Status), String::new()),
    }
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

/// A client driven by a background task until it ends or is dropped.
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
                            } else {
                                record(&mut lock(&s), t);
                            }
                        }
                        Some(Ok(Message::Close(frame))) => break close_end(frame),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break End::Dropped(e.to_string()),
                        None => break End::Dropped("eof".into()),
                    }
                }
            };
            lock(&s).end = Some(end);
        });
        Live { seen, tx, task }
    }

    /// Sends one text frame.
    pub fn send(&self, text: impl Into<String>) {
        let _ = self.tx.send(text.into());
    }

    /// How it ended, if it did.
    pub fn end(&self) -> Option<End> {
        lock(&self.seen).end.clone()
    }

    /// The args of every event named `name` received so far.
    pub fn events_named(&self, name: &str) -> Vec<Vec<Value>> {
        lock(&self.seen)
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
            if pred(&lock(&self.seen)) {
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

    /// A one-line summary of what it saw, for assertion messages.
    pub fn summary(&self) -> String {
        let s = lock(&self.seen);
        format!(
            "{} events, other frames {:?}, end {:?}",
            s.events.len(),
            s.other.iter().take(5).collect::<Vec<_>>(),
            s.end
        )
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// Files one Socket.IO text frame: an EVENT under `events`, anything else
/// under `other`.
fn record(seen: &mut Seen, text: &str) {
    if let Some(body) = text.strip_prefix("42")
        && let Ok(mut args) = serde_json::from_str::<Vec<Value>>(body)
        && !args.is_empty()
    {
        let name = args.remove(0).as_str().unwrap_or_default().to_string();
        seen.events.push((name, args));
        return;
    }
    seen.other.push(text.to_string());
}

/// Connects `n` clients with tokens from `token(i)`, `parallel` at a time,
/// each driven in the background.
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
            set.spawn(async move { (k, RawWs::connected(port, &t).await) });
        }
        let mut batch: Vec<(usize, RawWs)> = Vec::new();
        while let Some(r) = set.join_next().await {
            let (k, ws) = r?;
            batch.push((k, ws.with_context(|| format!("client {k}"))?));
        }
        batch.sort_by_key(|(k, _)| *k);
        out.extend(batch.into_iter().map(|(_, ws)| ws.into_live()));
        i += parallel;
    }
    Ok(out)
}
