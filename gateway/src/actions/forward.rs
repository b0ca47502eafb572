//! Client events handled by the API: HTTP POSTs (`[[client.forward]] url`
//! and the join hook, `client.hooks.join_url`) and Redis stream entries
//! (`[[client.forward]] stream`).
//!
//! A POST carries the [`ClientEvent`] JSON and, with `client.hooks.secret`,
//! `X-Switchboard-Timestamp: <unix seconds>` and
//! `X-Switchboard-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
//! A 2xx JSON body becomes the ack's one argument; a non-2xx, a timeout or
//! a connection error becomes `{"ok":false,"error":...}`. Calls in flight
//! are bounded per gateway and per socket (more are refused with
//! `overloaded`); a call with an ack is never retried (the client
//! decides), a fire-and-forget one up to the rule's `retries`.
//!
//! A stream forward is one `XADD <stream> MAXLEN ~ <n> * event <name> data
//! <ClientEvent JSON>` on the bus's Redis connection; the ack is
//! `{"ok":true,"id":<entry id>}`. API workers read the stream with a
//! consumer group (the broadcaster's `stream::StreamConsumer`).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use bytes::Bytes;
use engineioxide_core::Sid;
use hmac::{Hmac, Mac};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard_wire::client_event::{ClientEvent, STREAM_DATA_FIELD, STREAM_EVENT_FIELD};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    Actions, Kind, Refusal, Refused,
    config::{Forward, HooksConfig, Rule, Target},
    rooms::{Change, change_membership},
};
use crate::socketio::{Socket, SocketIo};

/// The header with the request's HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";
/// The header with the Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-switchboard-timestamp";
/// Largest API response read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// First pause before retrying a fire-and-forget POST (doubled each time).
const RETRY_BASE: Duration = Duration::from_millis(100);

/// `sha256=<hex>`: HMAC-SHA256 with `secret` of `"<timestamp>.<body>"`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // An HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    out
}

/// The HTTP side: one pooled client, the signing key and the bounds.
pub(super) struct HttpCaller {
    client: Client<HttpConnector, Full<Bytes>>,
    secret: Option<Vec<u8>>,
    join_url: Option<Uri>,
    hook_timeout: Duration,
    global: Arc<Semaphore>,
    per_socket: Arc<Mutex<HashMap<Sid, usize>>>,
    per_socket_max: usize,
}

/// One call's place in the bounds; released on drop.
pub(super) struct Permit {
    _global: OwnedSemaphorePermit,
    per_socket: Arc<Mutex<HashMap<Sid, usize>>>,
    id: Sid,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut map = self.per_socket.lock();
        if let Some(n) = map.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.id);
            }
        }
    }
}

impl HttpCaller {
    pub(super) fn new(hooks: &HooksConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(hooks.timeout_ms)));
        connector.set_nodelay(true);
        HttpCaller {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            secret: hooks.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            join_url: hooks.join_url.as_deref().and_then(|u| u.parse().ok()),
            hook_timeout: Duration::from_millis(hooks.timeout_ms),
            global: Arc::new(Semaphore::new(hooks.max_in_flight)),
            per_socket: Arc::default(),
            per_socket_max: hooks.max_in_flight_per_socket,
        }
    }

    /// A place for one more call of socket `id`, or `overloaded`.
    fn permit(&self, id: Sid) -> Result<Permit, Refused> {
        let global = self.global.clone().try_acquire_owned().map_err(|_| {
            Refused::new(
                Refusal::Overloaded,
                "client.hooks.max_in_flight calls in flight on this gateway",
            )
        })?;
        let mut map = self.per_socket.lock();
        let n = map.entry(id).or_insert(0);
        if *n >= self.per_socket_max {
            return Err(Refused::new(
                Refusal::Overloaded,
                "client.hooks.max_in_flight_per_socket calls in flight for this socket",
            ));
        }
        *n += 1;
        Ok(Permit {
            _global: global,
            per_socket: self.per_socket.clone(),
            id,
        })
    }

    /// One signed POST, bounded by `timeout` (response body included).
    async fn post(
        &self,
        url: &Uri,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), Refused> {
        let mut req = Request::post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "switchboard-gateway");
        if let Some(secret) = &self.secret {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            req = req
                .header(TIMESTAMP_HEADER, now)
                .header(SIGNATURE_HEADER, sign(secret, now, &body));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| Refused::new(Refusal::Unavailable, e.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| Refused::new(Refusal::Unavailable, format!("{url}: {e}")))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    Refused::new(
                        Refusal::Unavailable,
                        format!("{url}: reading the answer: {e}"),
                    )
                })?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| {
            Refused::new(
                Refusal::Timeout,
                format!("{url}: no answer within {timeout:?}"),
            )
        })?
    }
}

/// The ack arguments for an API answer: the 2xx JSON body as one argument
/// (an empty body: `{"ok":true}`).
fn answer_args(url: &Uri, status: StatusCode, body: &[u8]) -> Result<Value, Refused> {
    if !status.is_success() {
        return Err(Refused {
            why: Refusal::UpstreamStatus,
            detail: format!("{url} answered {status}"),
            status: Some(status.as_u16()),
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!([{ "ok": true }]));
    }
    serde_json::from_slice::<Value>(body)
        .map(|v| json!([v]))
        .map_err(|e| Refused::new(Refusal::BadResponse, format!("{url}: not JSON: {e}")))
}

/// Forwards one client event by a `[[client.forward]]` rule.
pub(super) fn forward(
    actions: &Actions,
    io: &SocketIo,
    socket: &Arc<Socket>,
    fwd: &Forward,
    mut args: Vec<Value>,
    attachments: Vec<Bytes>,
    ack: Option<i64>,
) {
    let event = match args.remove(0) {
        Value::String(name) => name,
        _ => return,
    };
    let kind = match fwd.target {
        Target::Http(_) => Kind::Forward,
        Target::Stream(_) => Kind::Stream,
    };
    let envelope = ClientEvent {
        event: event.clone(),
        args,
        user: socket.user.as_deref().map(String::from),
        claims: socket.claims.clone(),
        socket: socket.id.to_string(),
        nsp: socket.nsp.to_string(),
        rooms: io.hub.rooms_of(socket.id),
        gateway: io.uid.clone(),
        attachments: attachments
            .iter()
            .map(|a| base64::engine::general_purpose::STANDARD.encode(a))
            .collect(),
    };
    let body = match serde_json::to_vec(&envelope) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            let refused = Refused::new(Refusal::InvalidArgument, e.to_string());
            return actions.finish(socket, kind, &event, ack, Err(refused));
        }
    };
    let permit = match actions.http.permit(socket.id) {
        Ok(permit) => permit,
        Err(refused) => return actions.finish(socket, kind, &event, ack, Err(refused)),
    };
    let Some(io) = io.shared() else {
        return;
    };
    let socket = socket.clone();
    let target = fwd.target.clone();
    let timeout = Duration::from_millis(fwd.config.timeout_ms);
    // An event with an ack is never retried: the client decides.
    let retries = if ack.is_some() { 0 } else { fwd.config.retries };
    let maxlen = fwd.config.stream_maxlen;
    tokio::spawn(async move {
        let Some(actions) = io.actions.as_ref() else {
            return;
        };
        let result = match &target {
            Target::Http(url) => post_with_retries(actions, &io, url, body, timeout, retries).await,
            Target::Stream(stream) => xadd(&io, stream, maxlen, &event, &body).await,
        };
        drop(permit);
        actions.finish(&socket, kind, &event, ack, result);
    });
}

/// POSTs a forwarded event, retrying a fire-and-forget one after a
/// connection error, a timeout or a 5xx.
async fn post_with_retries(
    actions: &Actions,
    io: &SocketIo,
    url: &Uri,
    body: Bytes,
    timeout: Duration,
    retries: u32,
) -> Result<Value, Refused> {
    let mut attempt = 0;
    loop {
        let started = tokio::time::Instant::now();
        let result = actions.http.post(url, body.clone(), timeout).await;
        io.metrics
            .client_forward_seconds
            .observe(started.elapsed().as_secs_f64());
        let retryable = match &result {
            Ok((status, _)) => status.is_server_error(),
            Err(r) => matches!(r.why, Refusal::Timeout | Refusal::Unavailable),
        };
        if !retryable || attempt >= retries {
            return result.and_then(|(status, body)| answer_args(url, status, &body));
        }
        tokio::time::sleep(RETRY_BASE * 2u32.saturating_pow(attempt)).await;
        attempt += 1;
    }
}

/// Appends a forwarded event to a stream; the ack holds the entry id.
async fn xadd(
    io: &SocketIo,
    stream: &str,
    maxlen: u64,
    event: &str,
    body: &[u8],
) -> Result<Value, Refused> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(maxlen)
        .arg("*")
        .arg(STREAM_EVENT_FIELD)
        .arg(event)
        .arg(STREAM_DATA_FIELD)
        .arg(body);
    // Embedded mode has no Redis: config validation refuses `stream`
    // forwards without one, so this only answers a bus built differently.
    let Some(link) = io.bus.store_link() else {
        return Err(Refused::new(
            Refusal::Unavailable,
            "stream forwarding needs redis (redis.url)".to_string(),
        ));
    };
    match link.query::<String>(&cmd).await {
        Ok(id) => Ok(json!([{ "ok": true, "id": id }])),
        Err(err) => {
            io.metrics
                .bus_publish_errors
                .with_label_values(&["client_stream"])
                .inc();
            Err(Refused::new(Refusal::Unavailable, err.to_string()))
        }
    }
}

/// `allow = "hook"`: asks `client.hooks.join_url` whether the socket may
/// join `room`; 2xx joins, any other status is `forbidden`.
#[allow(clippy::too_many_arguments)]
pub(super) fn join_hook(
    actions: &Actions,
    io: &SocketIo,
    socket: &Arc<Socket>,
    rule: &Rule,
    event: &str,
    room: String,
    arg: Option<String>,
    ack: Option<i64>,
) {
    let Some(url) = actions.http.join_url.clone() else {
        let refused = Refused::new(Refusal::Forbidden, "no client.hooks.join_url");
        return actions.finish(socket, Kind::Join, event, ack, Err(refused));
    };
    let body = json!({
        "event": event,
        "room": room,
        "arg": arg,
        "user": socket.user.as_deref(),
        "claims": socket.claims,
        "socket": socket.id.as_str(),
        "nsp": &*socket.nsp,
        "gateway": io.uid,
    });
    let permit = match actions.http.permit(socket.id) {
        Ok(permit) => permit,
        Err(refused) => return actions.finish(socket, Kind::Join, event, ack, Err(refused)),
    };
    let Some(io) = io.shared() else {
        return;
    };
    let socket = socket.clone();
    let event = event.to_string();
    let rule_index = rule.index;
    let body = Bytes::from(body.to_string());
    tokio::spawn(async move {
        let Some(actions) = io.actions.as_ref() else {
            return;
        };
        let started = tokio::time::Instant::now();
        let answer = actions
            .http
            .post(&url, body, actions.http.hook_timeout)
            .await;
        io.metrics
            .client_forward_seconds
            .observe(started.elapsed().as_secs_f64());
        drop(permit);
        let result = match answer {
            Ok((status, _)) if status.is_success() => {
                match actions.compiled.rules.get(rule_index) {
                    Some(rule) => change_membership(&io, &socket, rule, &room, Change::Join),
                    None => Err(Refused::new(Refusal::Forbidden, "rule gone")),
                }
            }
            Ok((status, _)) => Err(Refused {
                why: Refusal::Forbidden,
                detail: format!("join hook answered {status}"),
                status: None,
            }),
            Err(refused) => Err(refused),
        };
        actions.finish(&socket, Kind::Join, &event, ack, result);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Python: hmac.new(b"key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            sign(b"key", 1_700_000_000, br#"{"a":1}"#),
            "sha256=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }

    #[test]
    fn answers_become_ack_arguments() {
        let url: Uri = "http://api/x".parse().unwrap();
        assert_eq!(
            answer_args(&url, StatusCode::OK, br#"{"id":7}"#).unwrap(),
            json!([{"id": 7}])
        );
        assert_eq!(
            answer_args(&url, StatusCode::OK, b"[1,2]").unwrap(),
            json!([[1, 2]])
        );
        assert_eq!(
            answer_args(&url, StatusCode::NO_CONTENT, b"").unwrap(),
            json!([{"ok": true}])
        );
        let e = answer_args(&url, StatusCode::BAD_GATEWAY, b"x").unwrap_err();
        assert_eq!((e.why, e.status), (Refusal::UpstreamStatus, Some(502)));
        let e = answer_args(&url, StatusCode::OK, b"<html>").unwrap_err();
        assert_eq!(e.why, Refusal::BadResponse);
    }
}
