//! The HTTP publish API, for services in languages with no Socket.IO
//! emitter: `POST /api/v1/emit` and `POST /api/v1/emit/batch`, authorized
//! by API keys from config; and the presence queries `GET
//! /api/v1/presence?room=` and `GET /api/v1/online?user=` (same keys).
//!
//! With Redis configured the gateway publishes into Redis in the emitter
//! format, so every gateway (and every Node server on the same Redis)
//! delivers; in the embedded mode the in-memory bus delivers locally.
//! The OpenAPI description is `docs/openapi.yaml`.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use switchboard_wire::{
    BroadcastFlags, BroadcastMessage, BroadcastOptions, BusPacket, Channels, RESERVED_EVENTS,
    encode_broadcast, json_to_msgpack,
    room_template::{self, RoomTemplate},
};

mod key_guard;

use crate::{
    bus::Bus, client_ip::TrustedProxies, config::Config, engine::Body, http::json,
    log_throttle::LogThrottle, metrics::Metrics, presence::Presence,
};
use key_guard::{ApiKeys, FailedKeyLimiter};

/// Unauthenticated refusals happen at the caller's rate: one line per window.
static AUTH_REFUSAL_LOG: LogThrottle = LogThrottle::new(std::time::Duration::from_secs(10));

/// Largest request body the API reads.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most messages in one batch.
const MAX_BATCH: usize = 1000;
/// The uid the API publishes under: not this gateway's own, so the gateway
/// delivers its own API publishes when they come back from Redis.
const API_UID: &str = "switchboard-api";

/// One event to publish, as the API accepts it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitRequest {
    /// The event name clients listen for.
    pub event: String,
    /// One argument (any JSON, `null` included); use `args` for several.
    #[serde(default, deserialize_with = "present")]
    pub data: Option<serde_json::Value>,
    /// Several arguments.
    pub args: Option<Vec<serde_json::Value>>,
    /// Rooms (or socket ids) to send to.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// User ids, turned into rooms by the user room template (`user:{sub}`).
    #[serde(default)]
    pub users: Vec<String>,
    /// Roles, turned into rooms by the role room template (`role:{role}`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Rooms or socket ids to leave out.
    #[serde(default)]
    pub except: Vec<String>,
    /// Namespace, `/` by default.
    pub namespace: Option<String>,
    /// Drop the event for clients whose outbound queue is not empty.
    #[serde(default)]
    pub volatile: bool,
    /// Send to every socket of the namespace; required when no target is named,
    /// so that a forgotten target never becomes a broadcast.
    #[serde(default)]
    pub broadcast: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    messages: Vec<EmitRequest>,
}

/// The publish API of one gateway.
pub struct PublishApi {
    keys: ApiKeys,
    failed_keys: FailedKeyLimiter,
    trusted_proxies: TrustedProxies,
    bus: Arc<Bus>,
    channels: Channels,
    namespaces: Vec<String>,
    /// The `auth.rooms` template whose only variable is the user claim.
    user_template: Option<(RoomTemplate, String)>,
    /// The `auth.rooms` template whose only variable is `{role}`.
    role_template: Option<RoomTemplate>,
    body_read_timeout: std::time::Duration,
    metrics: Metrics,
    presence: Arc<Presence>,
}

/// A client-visible API error.
struct ApiError {
    status: StatusCode,
    reason: &'static str,
    message: String,
    /// Seconds for `Retry-After`, on 429.
    retry_after: Option<u64>,
}

fn err(status: StatusCode, reason: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        reason,
        message: message.into(),
        retry_after: None,
    }
}

impl PublishApi {
    pub(crate) fn new(
        config: &Config,
        bus: Arc<Bus>,
        presence: Arc<Presence>,
        metrics: Metrics,
    ) -> Self {
        let user_claim = config.auth.user_claim.clone();
        // Templates that do not parse stop the start earlier (auth); here
        // they are simply not candidates.
        let templates: Vec<RoomTemplate> = config
            .auth
            .rooms
            .iter()
            .filter_map(|t| RoomTemplate::parse(t).ok())
            .collect();
        PublishApi {
            keys: ApiKeys::new(&config.api.keys),
            failed_keys: FailedKeyLimiter::default(),
            trusted_proxies: TrustedProxies::new(config.trusted_proxies()),
            bus,
            channels: Channels::new(config.redis.key.clone()),
            namespaces: config.socketio.namespaces.clone(),
            user_template: templates
                .iter()
                .find(|t| t.only_uses(&user_claim))
                .map(|t| (t.clone(), user_claim.clone())),
            role_template: templates
                .into_iter()
                .find(|t| t.only_uses(room_template::ROLE)),
            body_read_timeout: config.body_read_timeout(),
            metrics,
            presence,
        }
    }

    /// Answers one request under `/api/`.
    pub async fn handle(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        let route = Metrics::api_route(req.uri().path());
        let response = self.answer(req, remote).await;
        self.metrics
            .api_requests
            .with_label_values(&[route, response.status().as_str()])
            .inc();
        response
    }

    async fn answer(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        let client = self.trusted_proxies.client_ip(remote.ip(), req.headers());
        match self.try_handle(req, client).await {
            Ok(body) => json(StatusCode::OK, &body),
            Err(e) => {
                self.metrics
                    .bus_publish_errors
                    .with_label_values(&[&format!("api_{}", e.reason)])
                    .inc();
                let unauthenticated = matches!(
                    e.reason,
                    "missing_api_key" | "bad_api_key" | "too_many_failed_keys"
                );
                if !unauthenticated {
                    tracing::info!(reason = e.reason, message = %e.message, "publish API request refused");
                } else if let Some(suppressed) = AUTH_REFUSAL_LOG.allow() {
                    tracing::warn!(reason = e.reason, %client, suppressed, "publish API request refused");
                }
                let mut resp = json(
                    e.status,
                    &json!({ "ok": false, "error": e.reason, "message": e.message }),
                );
                if let Some(secs) = e.retry_after {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, http::HeaderValue::from(secs));
                }
                resp
            }
        }
    }

    async fn try_handle(
        &self,
        req: Request<Incoming>,
        client: IpAddr,
    ) -> Result<serde_json::Value, ApiError> {
        let batch = match (req.method(), req.uri().path()) {
            (&Method::POST, "/api/v1/emit") => false,
            (&Method::POST, "/api/v1/emit/batch") => true,
            (_, "/api/v1/emit" | "/api/v1/emit/batch") => {
                return Err(err(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use POST",
                ));
            }
            (&Method::GET, "/api/v1/presence" | "/api/v1/online") => {
                self.authorize(&req, client)?;
                return self.presence_query(&req).await;
            }
            (_, "/api/v1/presence" | "/api/v1/online") => {
                return Err(err(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET",
                ));
            }
            _ => return Err(err(StatusCode::NOT_FOUND, "not_found", "unknown API path")),
        };
        self.authorize(&req, client)?;
        let body = read_body(req.into_body(), self.body_read_timeout).await?;
        let messages = if batch {
            let batch: BatchRequest = parse(&body)?;
            if batch.messages.len() > MAX_BATCH {
                return Err(err(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "batch_too_large",
                    format!("at most {MAX_BATCH} messages per batch"),
                ));
            }
            batch.messages
        } else {
            vec![parse(&body)?]
        };
        if let Some(streams) = self.bus.streams() {
            // Streams mode: each event is a stream entry; its id is the
            // recovery offset clients get with it.
            let ids = self.append(streams, messages, batch).await?;
            return Ok(if batch {
                json!({ "ok": true, "ids": ids })
            } else {
                json!({ "ok": true, "id": ids.first() })
            });
        }
        let encoded = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                self.encode(m).map_err(|mut e| {
                    if batch {
                        e.message = format!("messages[{i}]: {}", e.message);
                    }
                    e
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // One PUBLISH (SPUBLISH when sharded) per message, a batch in one
        // pipeline (per slot in a cluster).
        let sharded = self.bus.sharded().is_some();
        let published = match (batch, sharded) {
            (true, false) => self.bus.publish_many(encoded).await,
            (true, true) => self.bus.spublish_many(encoded).await,
            (false, _) => {
                let mut one = encoded;
                match one.pop() {
                    Some((channel, payload)) if sharded => {
                        self.bus.spublish(&channel, payload).await.map(|n| vec![n])
                    }
                    Some((channel, payload)) => {
                        self.bus.publish(&channel, payload).await.map(|n| vec![n])
                    }
                    None => Ok(Vec::new()),
                }
            }
        };
        let receivers = published.map_err(|e| {
            err(
                StatusCode::SERVICE_UNAVAILABLE,
                "bus_unavailable",
                e.to_string(),
            )
        })?;
        Ok(if batch {
            json!({ "ok": true, "receivers": receivers })
        } else {
            json!({ "ok": true, "receivers": receivers.first().copied().unwrap_or(0) })
        })
    }

    /// `GET /api/v1/presence?room=R[&namespace=/]` and
    /// `GET /api/v1/online?user=U`.
    async fn presence_query(&self, req: &Request<Incoming>) -> Result<serde_json::Value, ApiError> {
        let bad = |msg: &str| err(StatusCode::BAD_REQUEST, "invalid_request", msg);
        let query: std::collections::HashMap<String, String> =
            form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let unavailable = |e: crate::bus::BusError| {
            err(
                StatusCode::SERVICE_UNAVAILABLE,
                "bus_unavailable",
                e.to_string(),
            )
        };
        if req.uri().path() == "/api/v1/online" {
            let user = query
                .get("user")
                .filter(|u| !u.is_empty())
                .ok_or_else(|| bad("give ?user=<user id>"))?;
            if !self.presence.tracks_online() {
                return Err(err(
                    StatusCode::CONFLICT,
                    "online_not_tracked",
                    "online state is not tracked: set presence.online_rooms or presence.track_online",
                ));
            }
            let member = self.presence.online(user).await.map_err(unavailable)?;
            return Ok(json!({
                "ok": true,
                "user": user,
                "online": member.is_some(),
                "sockets": member.as_ref().map_or(0, |m| m.sockets),
                "since": member.map(|m| m.joined_at),
            }));
        }
        let room = query
            .get("room")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| bad("give ?room=<room>"))?;
        let nsp = query.get("namespace").map_or("/", String::as_str);
        if !self.namespaces.iter().any(|n| n == nsp) {
            return Err(bad("unknown namespace"));
        }
        let members = self
            .presence
            .members(nsp, room)
            .await
            .map_err(unavailable)?;
        Ok(json!({ "ok": true, "room": room, "namespace": nsp, "members": members }))
    }

    fn authorize(&self, req: &Request<Incoming>, client: IpAddr) -> Result<(), ApiError> {
        if self.keys.is_empty() {
            return Err(err(
                StatusCode::FORBIDDEN,
                "api_disabled",
                "the publish API is disabled: set api.keys (SWITCHBOARD_API_KEYS)",
            ));
        }
        // Checked first: an address out of attempts learns nothing more.
        if let Err(retry) = self.failed_keys.check(client) {
            let secs = retry.as_secs().max(1);
            let mut e = err(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failed_keys",
                format!("too many failed API-key attempts from this address; retry in {secs} s"),
            );
            e.retry_after = Some(secs);
            return Err(e);
        }
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                self.failed_keys.record_failure(client);
                err(
                    StatusCode::UNAUTHORIZED,
                    "missing_api_key",
                    "send Authorization: Bearer <api key>",
                )
            })?;
        if self.keys.accepts(presented.as_bytes()) {
            Ok(())
        } else {
            self.failed_keys.record_failure(client);
            Err(err(
                StatusCode::UNAUTHORIZED,
                "bad_api_key",
                "the API key is not valid",
            ))
        }
    }

    /// Turns one request into the channel and bytes the emitter would publish.
    fn encode(&self, m: EmitRequest) -> Result<(String, Vec<u8>), ApiError> {
        let (channel, msg) = self.message(m)?;
        // Sharded pub/sub: the sharded adapter's message, on the room's
        // shard channel when one room is targeted (Node's computeChannel).
        Ok(match self.bus.sharded() {
            Some(sharded) => sharded.encode_broadcast(&msg),
            None => (channel, encode_broadcast(&msg)),
        })
    }

    /// Streams mode: XADDs each message (a batch in order); the entry ids.
    async fn append(
        &self,
        streams: &crate::bus::StreamsBus,
        messages: Vec<EmitRequest>,
        batch: bool,
    ) -> Result<Vec<String>, ApiError> {
        let mut encoded = Vec::with_capacity(messages.len());
        for (i, m) in messages.into_iter().enumerate() {
            encoded.push(self.message(m).map_err(|mut e| {
                if batch {
                    e.message = format!("messages[{i}]: {}", e.message);
                }
                e
            })?);
        }
        let mut ids = Vec::with_capacity(encoded.len());
        for (_, msg) in &encoded {
            ids.push(streams.publish_broadcast(msg).await.map_err(|e| {
                err(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "bus_unavailable",
                    e.to_string(),
                )
            })?);
        }
        Ok(ids)
    }

    /// The broadcast one request describes, and its classic channel.
    fn message(&self, m: EmitRequest) -> Result<(String, BroadcastMessage), ApiError> {
        let bad = |msg: String| err(StatusCode::BAD_REQUEST, "invalid_request", msg);
        if m.event.is_empty() {
            return Err(bad("`event` must not be empty".into()));
        }
        // Client-side these names are the socket's own lifecycle events; the
        // emitter and the broadcaster refuse them too.
        if RESERVED_EVENTS.contains(&m.event.as_str()) {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "reserved_event",
                format!(
                    "{:?} is a reserved Socket.IO event name ({})",
                    m.event,
                    RESERVED_EVENTS.join(", ")
                ),
            ));
        }
        let nsp = m.namespace.unwrap_or_else(|| "/".into());
        if !self.namespaces.contains(&nsp) {
            return Err(bad(format!("unknown namespace {nsp:?}")));
        }
        let mut rooms = m.rooms;
        for user in &m.users {
            let template = self
                .user_template
                .as_ref()
                .ok_or_else(|| bad("`users` needs a user room template in auth.rooms".into()))?;
            let (template, var) = template;
            rooms.extend(template.fill(var, user));
        }
        for role in &m.roles {
            let template = self
                .role_template
                .as_ref()
                .ok_or_else(|| bad("`roles` needs a {role} template in auth.rooms".into()))?;
            rooms.extend(template.fill(room_template::ROLE, role));
        }
        if rooms.is_empty() && !m.broadcast {
            return Err(bad(
                "name a target (`rooms`, `users`, `roles`) or set `broadcast: true`".into(),
            ));
        }
        let mut data = vec![serde_json::Value::String(m.event)];
        match (m.data, m.args) {
            (Some(_), Some(_)) => return Err(bad("give `data` or `args`, not both".into())),
            (Some(d), None) => data.push(d),
            (None, Some(args)) => data.extend(args),
            (None, None) => {}
        }
        let channel = match rooms.as_slice() {
            [room] => self.channels.room(&nsp, room),
            _ => self.channels.broadcast(&nsp),
        };
        let msg = BroadcastMessage {
            uid: API_UID.into(),
            packet: BusPacket {
                packet_type: 2,
                data: json_to_msgpack(&serde_json::Value::Array(data)),
                nsp,
                id: None,
            },
            opts: BroadcastOptions {
                rooms,
                except: m.except,
                flags: BroadcastFlags {
                    volatile: m.volatile,
                    ..BroadcastFlags::default()
                },
            },
        };
        Ok((channel, msg))
    }
}

/// A field that is present is `Some`, even when it is `null`; an absent one
/// stays `None` (through `#[serde(default)]`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

async fn read_body(body: Incoming, timeout: std::time::Duration) -> Result<Bytes, ApiError> {
    let Ok(read) =
        tokio::time::timeout(timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await
    else {
        return Err(err(
            StatusCode::REQUEST_TIMEOUT,
            "body_read_timeout",
            "the request body did not arrive within server.body_read_timeout_ms",
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(err(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body over {MAX_BODY_BYTES} bytes"),
            ))
        }
        Err(e) => Err(err(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            e.to_string(),
        )),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| err(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}
