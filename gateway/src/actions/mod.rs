//! Clients that act, by declarative policy: room joins and leaves, relays to
//! a room's members, and events forwarded to the API (over HTTP, signed, or
//! onto a Redis stream). The gateway runs no application code: what a
//! client event does is declared in `[client]` ([`config`]) and checked
//! against the socket's verified claims.
//!
//! The session layer hands every client event whose name a rule claims to
//! [`Actions::on_event`] (after the per-socket rate limit); other events go
//! upstream as before. Each action ends in [`Actions::finish`]: the ack the
//! client asked for (`{"ok":true,...}` or `{"ok":false,"error":<reason>}`),
//! a count in `switchboard_client_actions_total{action,outcome}` and, for a
//! refusal, a (throttled) log line.
//!
//! - [`rooms`]: joins, leaves (one function changes client-made membership:
//!   [`rooms::change_membership`]) and relays;
//! - [`forward`]: HTTP forwards and join hooks (HMAC-signed, bounded per
//!   gateway and per socket) and stream forwards (XADD).

pub mod config;
mod forward;
mod rooms;

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use serde_json::{Value, json};

pub use config::ClientConfig;
use config::{Compiled, EventAction};
pub use forward::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};

use crate::{
    config::{Config, ConfigError},
    log_throttle::LogThrottle,
    metrics::Metrics,
    socketio::{Socket, SocketIo},
};

/// Refused actions happen at the rate clients send them.
static REFUSED_LOG: LogThrottle = LogThrottle::new(std::time::Duration::from_secs(10));

/// Why an action was refused: the `error` of the client's ack and the
/// `outcome` label of the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The rule's `allow` (or the join hook) said no.
    Forbidden,
    /// The event's argument is missing or not a usable string or integer.
    InvalidArgument,
    /// A leave or relay for a room the socket is not in.
    NotAMember,
    /// Over the per-socket event rate (`limits.client_events_per_sec`).
    RateLimited,
    /// The socket is already in `client.max_rooms_per_socket` rooms.
    TooManyRooms,
    /// Too many HTTP calls in flight (`client.hooks.max_in_flight*`).
    Overloaded,
    /// The API did not answer within the rule's `timeout_ms`.
    Timeout,
    /// The API or Redis could not be reached.
    Unavailable,
    /// The API answered with a non-2xx status.
    UpstreamStatus,
    /// The API answered 2xx with a body that is not JSON.
    BadResponse,
}

impl Refusal {
    /// The `error` string clients see and the metric label.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Forbidden => "forbidden",
            Refusal::InvalidArgument => "invalid_argument",
            Refusal::NotAMember => "not_a_member",
            Refusal::RateLimited => "rate_limited",
            Refusal::TooManyRooms => "too_many_rooms",
            Refusal::Overloaded => "overloaded",
            Refusal::Timeout => "timeout",
            Refusal::Unavailable => "unavailable",
            Refusal::UpstreamStatus => "upstream_status",
            Refusal::BadResponse => "bad_response",
        }
    }
}

/// A refusal with what the log line adds (never shown to the client).
#[derive(Debug, Clone)]
pub struct Refused {
    /// The reason.
    pub why: Refusal,
    /// Detail for the log.
    pub detail: String,
    /// The API's HTTP status, for [`Refusal::UpstreamStatus`].
    pub status: Option<u16>,
}

impl Refused {
    fn new(why: Refusal, detail: impl Into<String>) -> Self {
        Refused {
            why,
            detail: detail.into(),
            status: None,
        }
    }
}

impl From<Refusal> for Refused {
    fn from(why: Refusal) -> Self {
        Refused::new(why, "")
    }
}

/// The kind of an action: the `action` label of the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `join_event`.
    Join,
    /// A `leave_event`.
    Leave,
    /// A `relay_event`.
    Relay,
    /// A `[[client.forward]] url` event.
    Forward,
    /// A `[[client.forward]] stream` event.
    Stream,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::Relay => "relay",
            Kind::Forward => "forward",
            Kind::Stream => "stream",
        }
    }
}

/// The `[client]` rules of one gateway, ready to apply.
pub struct Actions {
    compiled: Compiled,
    events: HashMap<String, EventAction>,
    max_rooms_per_socket: usize,
    role_claims: Vec<String>,
    extra_claims: Vec<String>,
    http: forward::HttpCaller,
    metrics: Metrics,
}

impl std::fmt::Debug for Actions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actions")
            .field("events", &self.events.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Actions {
    /// The rules of `config.client`; `None` when there are none.
    pub fn from_config(config: &Config, metrics: Metrics) -> Result<Option<Actions>, ConfigError> {
        let compiled = config.client.compile(config.redis.enabled())?;
        if compiled.events.is_empty() {
            return Ok(None);
        }
        let unsigned = compiled
            .forwards
            .iter()
            .any(|f| matches!(f.target, config::Target::Http(_)))
            || config.client.hooks.join_url.is_some();
        if unsigned && config.client.hooks.secret.is_none() {
            tracing::warn!(
                "client.forward / client.hooks.join_url requests are not signed: set client.hooks.secret \
                 (SWITCHBOARD_CLIENT__HOOKS__SECRET) so the API can check they come from a gateway"
            );
        }
        Ok(Some(Actions {
            events: compiled.events.iter().cloned().collect(),
            compiled,
            max_rooms_per_socket: config.client.max_rooms_per_socket,
            role_claims: config.auth.role_claims.clone(),
            extra_claims: config.client.hooks.claims.clone(),
            http: forward::HttpCaller::new(&config.client.hooks),
            metrics,
        }))
    }

    /// Claims the rules read, plus `client.hooks.claims`: the authenticator
    /// keeps them in each socket's claims.
    pub fn referenced_claims(&self) -> Vec<String> {
        let mut names = self.extra_claims.clone();
        for rule in &self.compiled.rules {
            names.extend(rule.room.variables().map(String::from));
            names.extend(rule.allow.claim().map(String::from));
        }
        names.extend(self.role_claims.iter().cloned());
        names.retain(|n| n != switchboard_wire::room_template::ARG);
        names
    }

    /// Whether a rule claims this client event name.
    pub fn handles(&self, event: &str) -> bool {
        self.events.contains_key(event)
    }

    fn kind(&self, event: &str) -> Option<Kind> {
        Some(match self.events.get(event)? {
            EventAction::Join(_) => Kind::Join,
            EventAction::Leave(_) => Kind::Leave,
            EventAction::Relay(_) => Kind::Relay,
            EventAction::Forward(n) => match self.compiled.forwards[*n].target {
                config::Target::Http(_) => Kind::Forward,
                config::Target::Stream(_) => Kind::Stream,
            },
        })
    }

    /// A handled event over the socket's rate: refused with `rate_limited`.
    pub(crate) fn refuse_rate_limited(&self, socket: &Socket, event: &str, ack: Option<i64>) {
        let kind = self.kind(event).unwrap_or(Kind::Forward);
        self.finish(socket, kind, event, ack, Err(Refusal::RateLimited.into()));
    }

    /// Applies the rule that claims `args[0]` (the event name). `args` are
    /// the event's JSON arguments, name first; `attachments` its binary
    /// attachments.
    pub(crate) fn on_event(
        &self,
        io: &SocketIo,
        socket: &Arc<Socket>,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
        ack: Option<i64>,
    ) {
        let Some(event) = args.first().and_then(Value::as_str).map(str::to_string) else {
            return;
        };
        let Some(action) = self.events.get(&event).copied() else {
            return;
        };
        match action {
            EventAction::Join(n) => {
                let rule = &self.compiled.rules[n];
                rooms::join(self, io, socket, rule, &event, &args, ack);
            }
            EventAction::Leave(n) => {
                let rule = &self.compiled.rules[n];
                let result = rooms::leave(self, io, socket, rule, &args);
                self.finish(socket, Kind::Leave, &event, ack, result);
            }
            EventAction::Relay(n) => {
                let rule = &self.compiled.rules[n];
                rooms::relay(self, io, socket, rule, &event, args, attachments, ack);
            }
            EventAction::Forward(n) => {
                let fwd = &self.compiled.forwards[n];
                forward::forward(self, io, socket, fwd, args, attachments, ack);
            }
        }
    }

    /// Ends an action: the ack (when asked for), the metric, and a log line
    /// for a refusal. `Ok` holds the ack's arguments.
    pub(crate) fn finish(
        &self,
        socket: &Socket,
        kind: Kind,
        event: &str,
        ack: Option<i64>,
        result: Result<Value, Refused>,
    ) {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(r) => r.why.code(),
        };
        self.metrics
            .client_actions
            .with_label_values(&[kind.label(), outcome])
            .inc();
        let args = match result {
            Ok(args) => args,
            Err(refused) => {
                if let Some(suppressed) = REFUSED_LOG.allow() {
                    tracing::info!(
                        socket = %socket.id,
                        user = ?socket.user,
                        event,
                        action = kind.label(),
                        reason = refused.why.code(),
                        detail = %refused.detail,
                        suppressed,
                        "client action refused"
                    );
                }
                let mut body = json!({ "ok": false, "error": refused.why.code() });
                if let Some(status) = refused.status {
                    body["status"] = json!(status);
                }
                json!([body])
            }
        };
        if let Some(id) = ack {
            socket.ack(id, &args);
        }
    }
}

/// The event's first argument as a room-name piece: a non-empty string of
/// at most [`MAX_ARG_BYTES`] bytes, or an integer.
pub(crate) fn room_arg(args: &[Value]) -> Result<String, Refused> {
    match args.get(1) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ARG_BYTES => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(other) => Err(Refused::new(
            Refusal::InvalidArgument,
            format!(
                "first argument must be a non-empty string (<= {MAX_ARG_BYTES} bytes) or an integer, got {other}"
            ),
        )),
        None => Err(Refused::new(
            Refusal::InvalidArgument,
            "the rule needs a first argument",
        )),
    }
}

/// Longest string argument accepted as part of a room name.
pub const MAX_ARG_BYTES: usize = 256;
