//! The Engine.IO v4 transport: sessions over HTTP long-polling and
//! WebSocket, the heartbeat, and the polling-to-websocket upgrade.
//!
//! Written here on hyper and tokio-tungstenite rather than mounted from
//! `engineioxide`, for memory per idle connection (see
//! `docs/architecture.md`); packets, payloads and sids use
//! `engineioxide-core`'s codecs.
//!
//! The layer above plugs in through [`EngineHandler`]; it never sees HTTP.

mod connection;
mod forward;
pub mod handshake;
mod heartbeats;
mod polling;
pub mod query;
mod websocket;
mod wire;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use engineioxide_core::{Packet, Sid, Str};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use parking_lot::RwLock;

pub use handshake::Handshake;
pub use query::EngineQuery;

pub(crate) use connection::prefetch_line;
#[cfg(test)]
pub(crate) use connection::test_conn_with;
pub use connection::{
    CloseReason, Connection, Frame, QueueLimits, Sent, TransportKind, str_from_utf8_bytes,
};

use crate::{
    cluster::{Cluster, Owner},
    config::{Config, Transport},
    metrics::Metrics,
};

static ORIGIN_LOG: crate::log_throttle::LogThrottle =
    crate::log_throttle::LogThrottle::new(std::time::Duration::from_secs(10));
static REFUSAL_LOG: crate::log_throttle::LogThrottle =
    crate::log_throttle::LogThrottle::new(std::time::Duration::from_secs(10));

/// The body type of every response the gateway writes.
pub type Body = Full<Bytes>;

/// What the layer above the transport (Socket.IO) must provide.
pub trait EngineHandler: Send + Sync + 'static {
    /// Per-connection state kept inside [`Connection::data`].
    type Data: Send + Sync + 'static;

    /// State for a session that is being opened.
    fn new_data(&self, handshake: &Handshake) -> Self::Data;
    /// The session is open and its open packet is queued.
    fn on_open(&self, conn: &Arc<Connection<Self::Data>>);
    /// A text message (`4...`) arrived; the `4` is stripped.
    fn on_message(&self, conn: &Arc<Connection<Self::Data>>, text: Str);
    /// A binary message arrived.
    fn on_binary(&self, conn: &Arc<Connection<Self::Data>>, data: Bytes);
    /// The session ended; called exactly once per session.
    fn on_close(&self, conn: &Arc<Connection<Self::Data>>, reason: CloseReason);
    /// The session moved from polling to websocket.
    fn on_upgrade(&self, _conn: &Arc<Connection<Self::Data>>) {}
}

/// Engine.IO protocol errors answered over HTTP, with the codes the official
/// clients understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    TransportUnknown,
    SessionIdUnknown,
    BadHandshakeMethod,
    BadRequest,
    UnsupportedProtocolVersion,
    PayloadTooLarge,
    /// The origin is not in `server.allowed_origins`.
    OriginNotAllowed,
    /// The client address holds `limits.max_connections_per_ip` sessions.
    TooManyConnections,
    /// The gateway admits no more new sessions this second.
    RateLimited,
    /// A request marked as forwarded came from outside `cluster.peer_cidrs`.
    ForwardNotAllowed,
    /// `cluster.forward_max_in_flight` forwarded requests are already running.
    ForwardOverloaded,
    /// The gateway owning the sid could not be reached.
    OwnerUnreachable,
    /// The gateway owning the sid did not answer within
    /// `cluster.forward_timeout_ms`.
    OwnerTimeout,
    /// A polling POST body did not arrive within `server.body_read_timeout_ms`.
    BodyTimeout,
    /// The gateway holds `limits.max_sessions` sessions.
    ServerFull,
    /// The gateway's heartbeats run `limits.refuse_when_behind_ms` behind.
    Overloaded,
}

impl EngineError {
    fn code(self) -> u8 {
        match self {
            EngineError::TransportUnknown => 0,
            EngineError::SessionIdUnknown => 1,
            EngineError::BadHandshakeMethod => 2,
            EngineError::BadRequest | EngineError::PayloadTooLarge => 3,
            EngineError::OriginNotAllowed | EngineError::ForwardNotAllowed => 4,
            EngineError::UnsupportedProtocolVersion => 5,
            EngineError::TooManyConnections | EngineError::RateLimited => 3,
            EngineError::ForwardOverloaded
            | EngineError::OwnerUnreachable
            | EngineError::OwnerTimeout => 3,
            EngineError::BodyTimeout | EngineError::ServerFull | EngineError::Overloaded => 3,
        }
    }

    fn message(self) -> &'static str {
        match self {
            EngineError::TransportUnknown => "Transport unknown",
            EngineError::SessionIdUnknown => "Session ID unknown",
            EngineError::BadHandshakeMethod => "Bad handshake method",
            EngineError::BadRequest => "Bad request",
            EngineError::UnsupportedProtocolVersion => "Unsupported protocol version",
            EngineError::PayloadTooLarge => "Payload too large",
            EngineError::OriginNotAllowed => "Forbidden: origin not allowed",
            EngineError::TooManyConnections => "Too many connections from this address",
            EngineError::RateLimited => "Too many connection attempts; retry later",
            EngineError::ForwardNotAllowed => {
                "Forbidden: forwarded request from outside cluster.peer_cidrs"
            }
            EngineError::ForwardOverloaded => "Too many forwarded requests in flight; retry later",
            EngineError::OwnerUnreachable => "The gateway holding this session cannot be reached",
            EngineError::OwnerTimeout => "The gateway holding this session did not answer in time",
            EngineError::BodyTimeout => "Request body not received in time",
            EngineError::ServerFull => "Gateway at its session limit; retry later",
            EngineError::Overloaded => "Gateway overloaded; retry later",
        }
    }

    fn label(self) -> &'static str {
        match self {
            EngineError::TransportUnknown => "transport_unknown",
            EngineError::SessionIdUnknown => "session_id_unknown",
            EngineError::BadHandshakeMethod => "bad_handshake_method",
            EngineError::BadRequest => "bad_request",
            EngineError::UnsupportedProtocolVersion => "unsupported_protocol_version",
            EngineError::PayloadTooLarge => "payload_too_large",
            EngineError::OriginNotAllowed => "origin_not_allowed",
            EngineError::TooManyConnections => "too_many_connections_ip",
            EngineError::RateLimited => "admission_rate_limited",
            EngineError::ForwardNotAllowed => "forward_not_allowed",
            EngineError::ForwardOverloaded => "forward_overloaded",
            EngineError::OwnerUnreachable => "owner_unreachable",
            EngineError::OwnerTimeout => "owner_timeout",
            EngineError::BodyTimeout => "body_read_timeout",
            EngineError::ServerFull => "max_sessions",
            EngineError::Overloaded => "overloaded",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            EngineError::OriginNotAllowed => StatusCode::FORBIDDEN,
            EngineError::TooManyConnections | EngineError::RateLimited => {
                StatusCode::TOO_MANY_REQUESTS
            }
            EngineError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::ForwardNotAllowed => StatusCode::FORBIDDEN,
            EngineError::ForwardOverloaded => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::OwnerUnreachable => StatusCode::BAD_GATEWAY,
            EngineError::OwnerTimeout => StatusCode::GATEWAY_TIMEOUT,
            EngineError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            EngineError::ServerFull | EngineError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Seconds a refused client should wait before it tries again, for
    /// the refusals that pass by themselves.
    fn retry_after(self) -> Option<&'static str> {
        match self {
            EngineError::Overloaded => Some("2"),
            _ => None,
        }
    }
}

/// Timings and limits of the transport, copied out of the config once.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub upgrade_timeout: Duration,
    pub max_payload: u64,
    pub polling: bool,
    pub websocket: bool,
    pub queue: QueueLimits,
    pub write_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections_per_ip: usize,
    pub max_sessions: usize,
    /// `limits.refuse_when_behind_ms`; zero disables.
    pub refuse_when_behind: Duration,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: crate::client_ip::TrustedProxies,
    /// Forwarding to the gateway that owns a sid (`[cluster]`).
    pub forward: forward::ForwardSettings,
}

impl From<&Config> for EngineSettings {
    fn from(config: &Config) -> Self {
        let c = &config.engine;
        let l = &config.limits;
        EngineSettings {
            ping_interval: c.ping_interval(),
            ping_timeout: c.ping_timeout(),
            upgrade_timeout: c.upgrade_timeout(),
            max_payload: c.max_payload,
            polling: c.allows(Transport::Polling),
            websocket: c.allows(Transport::Websocket),
            queue: QueueLimits {
                max_bytes: l.max_queue_bytes,
                max_frames: l.max_queue_frames,
            },
            write_timeout: Duration::from_millis(l.write_timeout_ms),
            body_read_timeout: config.body_read_timeout(),
            max_connections_per_ip: l.max_connections_per_ip,
            max_sessions: l.max_sessions,
            refuse_when_behind: Duration::from_millis(l.refuse_when_behind_ms),
            allowed_origins: config.server.allowed_origins.clone(),
            trusted_proxies: crate::client_ip::TrustedProxies::new(config.trusted_proxies()),
            forward: forward::ForwardSettings::from(config),
        }
    }
}

/// A token bucket: `rate` per second, up to `burst` at once.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(rate));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: std::time::Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The Engine.IO server: the registry of open sessions and the entry point
/// for every request under the Socket.IO path.
pub struct Engine<H: EngineHandler> {
    pub settings: EngineSettings,
    sessions: RwLock<HashMap<Sid, Arc<Connection<H::Data>>>>,
    /// Sessions open and not yet ended: `sessions` less the closed polling
    /// sessions still registered only so their client can collect the close
    /// packet ([`Engine::end_session`]).
    open: AtomicUsize,
    /// Woken when the last session ends, so a draining shutdown waits for
    /// it instead of polling the count.
    emptied: tokio::sync::Notify,
    /// Open sessions per client address, for `limits.max_connections_per_ip`.
    per_ip: parking_lot::Mutex<HashMap<String, usize>>,
    /// Admission of new sessions, for `limits.connects_per_sec`.
    admission: Option<parking_lot::Mutex<TokenBucket>>,
    /// Peers, when several gateways share Redis: sids name their owner.
    /// Set once the gateway has registered (possibly after a Redis outage
    /// at start).
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// Relays requests for peers' sids.
    forwarder: forward::Forwarder,
    handler: Arc<H>,
    metrics: Metrics,
    /// Pings the websocket sessions and closes those whose pong is late.
    heartbeats: Arc<heartbeats::Heartbeats<H::Data>>,
}

/// Where the session a request names lives.
enum Located<D> {
    /// On this gateway.
    Here(Arc<Connection<D>>),
    /// On the peer at this address; this gateway's own tag goes along.
    Peer(SocketAddr, String),
}

/// `websocket` for an upgrade request, else `polling`, for metrics.
fn transport_label<B>(req: &Request<B>) -> &'static str {
    if req.headers().contains_key(header::UPGRADE) {
        "websocket"
    } else {
        "polling"
    }
}

impl<H: EngineHandler> Engine<H> {
    pub fn new(
        settings: EngineSettings,
        admission: Option<TokenBucket>,
        handler: Arc<H>,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Engine {
            forwarder: forward::Forwarder::new(settings.forward.clone()),
            heartbeats: heartbeats::Heartbeats::new(
                settings.ping_interval,
                settings.ping_timeout,
                metrics.heartbeat_late.clone(),
            ),
            settings,
            sessions: RwLock::new(HashMap::new()),
            open: AtomicUsize::new(0),
            emptied: tokio::sync::Notify::new(),
            per_ip: parking_lot::Mutex::new(HashMap::new()),
            admission: admission.map(parking_lot::Mutex::new),
            cluster: std::sync::OnceLock::new(),
            handler,
            metrics,
        })
    }

    /// Enables sid forwarding once this gateway is registered with its peers.
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Where this gateway stands with its peers: `None` before it has
    /// registered, else whether every peer has read the registration.
    pub fn announced_to_peers(&self) -> Option<bool> {
        self.cluster.get().map(|c| c.announced())
    }

    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// Number of open sessions (a closed one counts no more, even while
    /// its close packet waits for the client's last poll).
    pub fn session_count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Returns once no session is registered (closed polling sessions
    /// included until their last poll, bounded by the ping timeout).
    pub async fn drained(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            // Registered before the count is read, so a session ending in
            // between still wakes us.
            emptied.as_mut().enable();
            if self.sessions.read().is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// Closes every session, for shutdown: clients see their transport close
    /// and reconnect (to another gateway behind the load balancer).
    pub fn close_all(&self, reason: CloseReason) {
        let sessions: Vec<_> = self.sessions.read().values().cloned().collect();
        for conn in sessions {
            conn.close(reason);
            // A session closed earlier that still waits for its last poll
            // must not hold the shutdown.
            conn.last_poll_done();
        }
    }

    /// Answers one request under the Socket.IO path.
    /// Answers one Engine.IO request; `query` is its query, parsed once by
    /// the caller.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        query: EngineQuery,
        remote: SocketAddr,
    ) -> Response<Body> {
        let origin = req.headers().get(header::ORIGIN).cloned();
        let allowed = match &origin {
            None => true,
            Some(o) => {
                self.settings.allowed_origins.is_empty()
                    || self
                        .settings
                        .allowed_origins
                        .iter()
                        .any(|a| a.as_bytes() == o.as_bytes())
            }
        };
        let mut resp = if !allowed {
            // The client chooses how often this happens: one line per
            // window, every refusal still counted in the metric.
            if let Some(suppressed) = ORIGIN_LOG.allow() {
                tracing::warn!(origin = ?origin, %remote, suppressed, "request from an origin not in server.allowed_origins refused");
            }
            self.error_response(EngineError::OriginNotAllowed)
        } else if req.method() == Method::OPTIONS {
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST")
                .header(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "content-type, authorization",
                )
                .body(Body::default())
                .unwrap_or_default()
        } else {
            match self.dispatch(req, query, remote).await {
                Ok(resp) => resp,
                Err(err) => self.error_response(err),
            }
        };
        // CORS with credentials, only for the origins explicitly listed.
        if allowed
            && !self.settings.allowed_origins.is_empty()
            && let Some(origin) = origin
        {
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                http::HeaderValue::from_static("true"),
            );
            h.insert(header::VARY, http::HeaderValue::from_static("Origin"));
        }
        resp
    }

    /// Admission control for a new session: the gateway-wide rate and the
    /// per-address bound. Counts the session against its address on success;
    /// [`Engine::release`] gives the place back.
    fn admit(&self, handshake: &Handshake) -> Result<(), EngineError> {
        // First, and before the token is verified: when the process is
        // this far behind, a new session's handshake is paid for with the
        // heartbeats of the sessions already here (issue #17's reconnect
        // storm); a refusal costs a few microseconds and the client retries.
        if !self.settings.refuse_when_behind.is_zero()
            && self.heartbeats.behind() >= self.settings.refuse_when_behind
        {
            return Err(EngineError::Overloaded);
        }
        // Then per address: a flood from one address must not use up the
        // gateway-wide rate that everybody else's reconnects need.
        let mut per_ip = self.per_ip.lock();
        let address = handshake.client_address();
        let count = per_ip.get(&address).copied().unwrap_or(0);
        if self.settings.max_connections_per_ip > 0 && count >= self.settings.max_connections_per_ip
        {
            return Err(EngineError::TooManyConnections);
        }
        if self.settings.max_sessions > 0 && self.session_count() >= self.settings.max_sessions {
            return Err(EngineError::ServerFull);
        }
        if let Some(bucket) = &self.admission
            && !bucket.lock().try_take()
        {
            return Err(EngineError::RateLimited);
        }
        *per_ip.entry(address).or_insert(0) += 1;
        Ok(())
    }

    pub(crate) fn release(&self, handshake: &Handshake) {
        let mut per_ip = self.per_ip.lock();
        let address = handshake.client_address();
        if let Some(count) = per_ip.get_mut(&address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_ip.remove(&address);
            }
        }
    }

    async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
        query: EngineQuery,
        remote: SocketAddr,
    ) -> Result<Response<Body>, EngineError> {
        if query.eio.as_deref() != Some("4") {
            return Err(EngineError::UnsupportedProtocolVersion);
        }
        let transport = match query.transport.as_deref() {
            Some("polling") if self.settings.polling => TransportKind::Polling,
            Some("websocket") if self.settings.websocket => TransportKind::Websocket,
            _ => return Err(EngineError::TransportUnknown),
        };
        let existing = match &query.sid {
            None => None,
            Some(raw) => match self.locate(raw, &req, remote)? {
                Located::Here(conn) => Some(conn),
                Located::Peer(owner, own_tag) => {
                    return self
                        .forwarder
                        .forward(
                            &own_tag,
                            owner,
                            req,
                            remote,
                            self.settings.max_payload,
                            &self.metrics,
                        )
                        .await;
                }
            },
        };
        match (existing, transport) {
            (None, TransportKind::Polling) => {
                if req.method() != Method::GET {
                    return Err(EngineError::BadHandshakeMethod);
                }
                let handshake = self.handshake_of(&req, remote);
                self.admit(&handshake)?;
                Ok(self.open_polling(handshake))
            }
            (None, TransportKind::Websocket) => {
                let handshake = self.handshake_of(&req, remote);
                self.admit(&handshake)?;
                websocket::open(self, req, handshake)
            }
            (Some(conn), TransportKind::Polling) => match *req.method() {
                Method::GET => polling::poll(conn, &self.metrics).await,
                Method::POST => polling::post(self, conn, req).await,
                _ => Err(EngineError::BadRequest),
            },
            (Some(conn), TransportKind::Websocket) => websocket::upgrade(self, conn, req),
        }
    }

    fn handshake_of<B>(&self, req: &Request<B>, remote: SocketAddr) -> Handshake {
        let issued_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // Only the headers authentication and per-IP limits read are kept:
        // a browser's full header set would cost every idle connection a
        // kilobyte or two.
        let mut headers = http::HeaderMap::new();
        // Values are copied, not cloned: a clone shares hyper's read buffer
        // and would keep all of it alive for the session's life.
        let copy = |v: &http::HeaderValue| http::HeaderValue::from_bytes(v.as_bytes()).ok();
        for name in [header::AUTHORIZATION, header::COOKIE] {
            for value in req.headers().get_all(&name).iter().filter_map(copy) {
                headers.append(name.clone(), value);
            }
        }
        Handshake {
            headers: headers.into(),
            query: req.uri().query().unwrap_or("").to_string(),
            remote,
            issued_ms,
            client_ip: self
                .settings
                .trusted_proxies
                .client_ip(remote.ip(), req.headers()),
        }
    }

    /// Where the session a request names lives. The sid is parsed in full
    /// first, and the owner of a foreign one is looked up in memory, so no
    /// sid, however made up, causes Redis traffic or a connection to a peer
    /// that does not exist. A request a peer forwarded is never forwarded
    /// again; one that only claims to be forwarded is refused when it
    /// comes from outside `cluster.peer_cidrs`.
    fn locate<B>(
        &self,
        raw: &str,
        req: &Request<B>,
        remote: SocketAddr,
    ) -> Result<Located<H::Data>, EngineError> {
        let forwarded = req.headers().contains_key(forward::FORWARDED_HEADER);
        if forwarded && !self.forwarder.peer_allowed(remote) {
            return Err(self.forwarder.refuse(
                &self.metrics,
                "peer_not_allowed",
                remote,
                EngineError::ForwardNotAllowed,
            ));
        }
        let Ok(sid) = raw.parse::<Sid>() else {
            return Err(self.forwarder.refuse(
                &self.metrics,
                "bad_sid",
                remote,
                EngineError::SessionIdUnknown,
            ));
        };
        if let Some(conn) = self.sessions.read().get(&sid).cloned() {
            return Ok(Located::Here(conn));
        }
        let Some(cluster) = self.cluster.get() else {
            return Err(EngineError::SessionIdUnknown);
        };
        match cluster.owner(&sid) {
            Owner::Local => Err(EngineError::SessionIdUnknown),
            // Forwarded here by a peer whose directory is staler than ours:
            // relaying again could loop.
            Owner::Peer(_) if forwarded => Err(EngineError::SessionIdUnknown),
            Owner::Peer(addr) => Ok(Located::Peer(addr, cluster.tag().to_string())),
            Owner::Unknown => {
                self.metrics
                    .forwarded
                    .with_label_values(&[transport_label(req), "owner_gone"])
                    .inc();
                Err(self.forwarder.refuse(
                    &self.metrics,
                    "unknown_owner",
                    remote,
                    EngineError::SessionIdUnknown,
                ))
            }
        }
    }

    fn error_response(&self, err: EngineError) -> Response<Body> {
        self.metrics
            .engine_errors
            .with_label_values(&[err.label()])
            .inc();
        // Clients choose how often they are refused: one line per window.
        if let Some(suppressed) = REFUSAL_LOG.allow() {
            tracing::info!(
                error = err.label(),
                message = err.message(),
                suppressed,
                "engine.io request refused"
            );
        }
        let body = serde_json::json!({ "code": err.code(), "message": err.message() }).to_string();
        let mut resp = Response::builder()
            .status(err.status())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(secs) = err.retry_after() {
            resp = resp.header(header::RETRY_AFTER, secs);
        }
        resp.body(Full::new(Bytes::from(body))).unwrap_or_default()
    }

    /// Creates and registers a session and queues its open packet.
    fn open_session(
        self: &Arc<Self>,
        handshake: Handshake,
        kind: TransportKind,
    ) -> Arc<Connection<H::Data>> {
        let sid = match self.cluster.get() {
            Some(cluster) => cluster.new_sid(),
            None => Sid::new(),
        };
        let data = self.handler.new_data(&handshake);
        let conn = Arc::new(Connection::new(
            sid,
            handshake,
            kind,
            self.settings.queue,
            data,
        ));
        let upgrades: &[&str] = if kind == TransportKind::Polling && self.settings.websocket {
            &["websocket"]
        } else {
            &[]
        };
        let open = serde_json::json!({
            "sid": sid.as_str(),
            "upgrades": upgrades,
            "pingInterval": self.settings.ping_interval.as_millis() as u64,
            "pingTimeout": self.settings.ping_timeout.as_millis() as u64,
            "maxPayload": self.settings.max_payload,
        });
        conn.send(Frame::text(format!("0{open}")));
        self.sessions.write().insert(sid, conn.clone());
        self.open.fetch_add(1, Ordering::AcqRel);
        self.metrics.engine_opened.inc();
        self.metrics
            .connections
            .with_label_values(&[kind.as_str()])
            .inc();
        tracing::debug!(sid = %sid, transport = kind.as_str(), remote = %conn.handshake.remote, "session opened");
        self.handler.on_open(&conn);
        conn
    }

    fn open_polling(self: &Arc<Self>, handshake: Handshake) -> Response<Body> {
        let conn = self.open_session(handshake, TransportKind::Polling);
        let frames = conn.take_frames();
        // Per connection: the session's heartbeat, ending with the session
        // (or handing over to its websocket); shutdown awaits sessions.
        tokio::spawn(polling::drive(self.clone(), conn));
        polling::payload_response(frames)
    }

    /// Handles one decoded Engine.IO packet from the client, whatever the
    /// transport. Returns false when the packet ended the session.
    fn on_packet(&self, conn: &Arc<Connection<H::Data>>, packet: Packet) -> bool {
        match packet {
            Packet::Pong => {
                if let Some(rtt) = conn.state.lock().pong_received() {
                    self.metrics.heartbeat_rtt.observe(rtt.as_secs_f64());
                }
                true
            }
            Packet::Message(text) => {
                self.metrics.packets_in.inc();
                self.metrics.bytes_in.inc_by(text.len() as u64);
                self.handler.on_message(conn, text);
                true
            }
            Packet::Binary(data) => {
                self.metrics.packets_in.inc();
                self.metrics.bytes_in.inc_by(data.len() as u64);
                self.handler.on_binary(conn, data);
                true
            }
            Packet::Noop => true,
            Packet::Close => {
                conn.close(CloseReason::ClientClosed);
                false
            }
            other => {
                tracing::debug!(sid = %conn.sid, packet = ?other, "unexpected engine.io packet");
                conn.close(CloseReason::ProtocolError);
                false
            }
        }
    }

    /// Ends a closed session and unregisters it; called once by whichever
    /// task drives the session when it ends.
    fn finish(&self, conn: &Arc<Connection<H::Data>>) {
        self.end_session(conn);
        self.unregister(conn);
    }

    /// Accounts for a closed session's end at once: the connections gauge,
    /// the close counter, its place under `limits.max_connections_per_ip`
    /// and `limits.max_sessions`, and the layer above (its sockets
    /// disconnect). A polling session the server closed stays registered
    /// after this until its client collects the close packet
    /// ([`Engine::unregister`]), which may take up to the ping timeout when
    /// the client does not come back; it counts as open no more meanwhile.
    /// Does nothing the second time.
    fn end_session(&self, conn: &Arc<Connection<H::Data>>) {
        {
            let mut state = conn.state.lock();
            if state.ended {
                return;
            }
            state.ended = true;
        }
        let reason = conn.close_reason().unwrap_or(CloseReason::TransportError);
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.release(&conn.handshake);
        self.metrics
            .connections
            .with_label_values(&[conn.transport().as_str()])
            .dec();
        self.metrics
            .engine_closed
            .with_label_values(&[reason.as_str()])
            .inc();
        tracing::debug!(sid = %conn.sid, reason = reason.as_str(), "session closed");
        self.handler.on_close(conn, reason);
    }

    /// Removes an ended session from the registry: later requests for its
    /// sid get `Session ID unknown`.
    fn unregister(&self, conn: &Arc<Connection<H::Data>>) {
        let mut sessions = self.sessions.write();
        if sessions.remove(&conn.sid).is_some() && sessions.is_empty() {
            self.emptied.notify_waiters();
        }
    }
}
