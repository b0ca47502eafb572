//! `[client]`: what clients may do besides receiving, declared in the
//! configuration (the gateway runs no application code).
//!
//! ```toml
//! [[client.rooms]]                 # rooms a client joins or leaves itself
//! join_event = "join:company"
//! leave_event = "leave:company"
//! room = "company:{arg}"           # {arg}: the event's first argument
//! allow = "{arg} == {company_id}"
//!
//! [[client.forward]]               # events handled by the API
//! events = ["create_ticket"]
//! url = "http://127.0.0.1:8080/realtime/events"
//!
//! [client.hooks]
//! secret = "..."                   # HMAC-SHA256 key of forwarded requests
//! ```
//!
//! The serde structs are what the TOML says; [`ClientConfig::compile`] checks
//! them (errors name the key, e.g. `client.rooms[1].allow`) and turns them
//! into the rules the session layer applies ([`super::Actions`]).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use switchboard_wire::{
    RESERVED_EVENTS,
    room_template::{self, RoomTemplate},
};

use crate::config::ConfigError;

/// `[client]`: client room rules, event forwarding and the hooks' settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// `[[client.rooms]]`: rooms clients join, leave and relay to themselves.
    pub rooms: Vec<RoomRule>,
    /// `[[client.forward]]`: events sent to the API over HTTP or onto a
    /// Redis stream.
    pub forward: Vec<ForwardRule>,
    /// `[client.hooks]`: signing key, join hook and bounds of the HTTP calls.
    pub hooks: HooksConfig,
    /// Most rooms one socket may be in (its connect-time rooms included)
    /// before a client join is refused with `too_many_rooms`.
    pub max_rooms_per_socket: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            rooms: Vec::new(),
            forward: Vec::new(),
            hooks: HooksConfig::default(),
            max_rooms_per_socket: 100,
        }
    }
}

/// One `[[client.rooms]]` rule: a room template, who may use it, and the
/// events that join, leave and relay to it. (Presence and other per-room
/// options belong here too.)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoomRule {
    /// Event that joins the room: `socket.emit(join_event, arg, ack?)`.
    #[serde(default)]
    pub join_event: Option<String>,
    /// Event that leaves it.
    #[serde(default)]
    pub leave_event: Option<String>,
    /// The room name: a template over the user's claims and `{arg}`, the
    /// event's first argument (`company:{arg}`, `chat_{arg}`).
    pub room: String,
    /// Who may join: `authenticated`, `anonymous` (anyone), `role:<r>[|role:<r2>...]`,
    /// `{arg} == {<claim>}`, `{arg} in {<array claim>}` or `hook`.
    #[serde(default = "default_allow")]
    pub allow: String,
    /// Event whose payload is relayed to the room's other members:
    /// `socket.emit(relay_event, arg, ...payload)`.
    #[serde(default)]
    pub relay_event: Option<String>,
    /// Whether the sender also receives its own relayed event.
    #[serde(default)]
    pub relay_to_sender: bool,
    /// Track who is in these rooms (`[presence]`): members with their
    /// socket counts, `presence:join` / `presence:leave` to the room, and
    /// the `presence` query for members.
    #[serde(default)]
    pub presence: bool,
}

fn default_allow() -> String {
    "authenticated".into()
}

/// One `[[client.forward]]` rule: events handled by the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardRule {
    /// The client event names this rule forwards.
    pub events: Vec<String>,
    /// POST each event to this `http://` URL (give `url` or `stream`).
    #[serde(default)]
    pub url: Option<String>,
    /// Append each event to this Redis stream instead (XADD).
    #[serde(default)]
    pub stream: Option<String>,
    /// How long the API may take to answer one POST.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries of a fire-and-forget POST (no ack asked) after a connection
    /// error, a timeout or a 5xx; an event with an ack is never retried
    /// (the client decides).
    #[serde(default)]
    pub retries: u32,
    /// `MAXLEN ~` of the stream: older entries are trimmed beyond it.
    #[serde(default = "default_stream_maxlen")]
    pub stream_maxlen: u64,
}

fn default_timeout_ms() -> u64 {
    3000
}

fn default_stream_maxlen() -> u64 {
    100_000
}

/// `[client.hooks]`: how the gateway calls the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// HMAC-SHA256 key: every forwarded POST and join hook carries
    /// `X-Switchboard-Signature: sha256=<hex>` over `<timestamp>.<body>` so
    /// the API can check it came from a gateway. Unset: requests are unsigned
    /// (a warning at start).
    pub secret: Option<String>,
    /// `allow = "hook"` rules POST `{user, claims, room, ...}` here; 2xx allows.
    pub join_url: Option<String>,
    /// How long the join hook may take.
    pub timeout_ms: u64,
    /// HTTP calls (forwards and hooks) in flight per gateway; more are
    /// refused with `overloaded`.
    pub max_in_flight: usize,
    /// HTTP calls in flight per socket; more are refused with `overloaded`.
    pub max_in_flight_per_socket: usize,
    /// Claims sent with forwards and hooks besides those the gateway reads
    /// itself (user, roles, room templates, rules).
    pub claims: Vec<String>,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            secret: None,
            join_url: None,
            timeout_ms: 3000,
            max_in_flight: 256,
            max_in_flight_per_socket: 4,
            claims: Vec::new(),
        }
    }
}

/// Who may join a client room: the parsed `allow` of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// `authenticated`: any connection with a verified token.
    Authenticated,
    /// `anonymous`: anyone, anonymous connections included.
    Anyone,
    /// `role:a|role:b`: a user with one of these roles.
    Roles(Vec<String>),
    /// `{arg} == {claim}`: the argument equals the claim's value.
    ArgEquals(String),
    /// `{arg} in {claim}`: the argument is one of the claim's values.
    ArgIn(String),
    /// `hook`: ask `client.hooks.join_url`.
    Hook,
}

impl Allow {
    /// Parses an `allow` rule.
    pub fn parse(text: &str) -> Result<Allow, String> {
        let t = text.trim();
        match t {
            "authenticated" => return Ok(Allow::Authenticated),
            "anonymous" => return Ok(Allow::Anyone),
            "hook" => return Ok(Allow::Hook),
            _ => {}
        }
        if t.starts_with("role:") {
            let roles = t
                .split('|')
                .map(|r| r.trim().strip_prefix("role:").map(str::trim))
                .collect::<Option<Vec<_>>>()
                .filter(|roles| roles.iter().all(|r| !r.is_empty()))
                .ok_or_else(|| format!("{text:?}: write roles as role:<name>|role:<name2>"))?;
            return Ok(Allow::Roles(roles.into_iter().map(String::from).collect()));
        }
        let (left, op, right) = if let Some((l, r)) = t.split_once("==") {
            (l, "==", r)
        } else if let Some((l, r)) = t.split_once(" in ") {
            (l, "in", r)
        } else {
            return Err(format!(
                "{text:?} is not a rule; use authenticated, anonymous, role:<r>[|role:<r2>], \
                 {{arg}} == {{<claim>}}, {{arg}} in {{<array claim>}} or hook"
            ));
        };
        let var = |s: &str| {
            let s = s.trim();
            s.strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .map(str::trim)
                .filter(|n| !n.is_empty() && !n.contains(['{', '}']))
                .map(String::from)
        };
        let (Some(l), Some(r)) = (var(left), var(right)) else {
            return Err(format!(
                "{text:?}: both sides must be placeholders, like {{arg}} {op} {{company_id}}"
            ));
        };
        let claim = match (l.as_str(), r.as_str()) {
            (room_template::ARG, room_template::ARG) => {
                return Err(format!("{text:?}: compare {{arg}} with a claim"));
            }
            (room_template::ARG, claim) => claim.to_string(),
            (claim, room_template::ARG) if op == "==" => claim.to_string(),
            _ => {
                return Err(format!(
                    "{text:?}: the left side is {{arg}}, the right side a claim"
                ));
            }
        };
        Ok(if op == "==" {
            Allow::ArgEquals(claim)
        } else {
            Allow::ArgIn(claim)
        })
    }

    /// The claim this rule reads, if any.
    pub fn claim(&self) -> Option<&str> {
        match self {
            Allow::ArgEquals(c) | Allow::ArgIn(c) => Some(c),
            _ => None,
        }
    }

    /// Whether the rule needs the event's argument.
    pub fn reads_arg(&self) -> bool {
        self.claim().is_some()
    }
}

/// A `[[client.rooms]]` rule, checked and parsed.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its index in `client.rooms`, for logs.
    pub index: usize,
    /// The rule as configured (for options read at join time).
    pub config: RoomRule,
    /// The parsed room template.
    pub room: RoomTemplate,
    /// The parsed `allow`.
    pub allow: Allow,
}

impl Rule {
    /// Whether the room name or the `allow` rule reads the event argument.
    pub fn needs_arg(&self) -> bool {
        self.room.uses(room_template::ARG) || self.allow.reads_arg()
    }
}

/// Where a forwarded event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// HTTP POST to this URL.
    Http(http::Uri),
    /// XADD to this Redis stream.
    Stream(String),
}

/// A `[[client.forward]]` rule, checked.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Its index in `client.forward`.
    pub index: usize,
    /// The rule as configured.
    pub config: ForwardRule,
    /// Where its events go.
    pub target: Target,
}

/// What one client event name does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAction {
    /// Joins the room of rule `n`.
    Join(usize),
    /// Leaves the room of rule `n`.
    Leave(usize),
    /// Relays to the room of rule `n`.
    Relay(usize),
    /// Forwards with forward rule `n`.
    Forward(usize),
}

/// `[client]` checked: the rules and which event does what.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// The room rules, in order.
    pub rules: Vec<Rule>,
    /// The forward rules, in order.
    pub forwards: Vec<Forward>,
    /// Event name -> what it does.
    pub events: Vec<(String, EventAction)>,
}

/// An error naming an indexed key such as `client.rooms[1].allow`.
fn bad(key: String, message: impl Into<String>) -> ConfigError {
    ConfigError::InvalidKey {
        key,
        message: message.into(),
    }
}

/// Shortest accepted `client.hooks.secret`, in bytes.
const MIN_SECRET_BYTES: usize = 32;

impl ClientConfig {
    /// Checks every rule (errors name the key) and parses them;
    /// `redis_enabled` says whether streams are available.
    pub fn compile(&self, redis_enabled: bool) -> Result<Compiled, ConfigError> {
        let mut out = Compiled::default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut claim_event = |key: String, name: &str, action: EventAction| {
            if name.is_empty() {
                return Err(bad(key, "must not be empty"));
            }
            if RESERVED_EVENTS.contains(&name) {
                return Err(bad(
                    key,
                    format!("{name:?} is a reserved Socket.IO event name"),
                ));
            }
            if !seen.insert(name.to_string()) {
                return Err(bad(
                    key,
                    format!(
                        "{name:?} is already used by another client rule; one event does one thing"
                    ),
                ));
            }
            out.events.push((name.to_string(), action));
            Ok(())
        };
        for (i, r) in self.rooms.iter().enumerate() {
            let key = |field: &str| format!("client.rooms[{i}].{field}");
            let room = RoomTemplate::parse(&r.room).map_err(|e| bad(key("room"), e.to_string()))?;
            if room.uses(room_template::ROLE) {
                return Err(bad(
                    key("room"),
                    "{role} expands to several rooms; a client room is one room (use role:<r> in allow)",
                ));
            }
            let allow = Allow::parse(&r.allow).map_err(|m| bad(key("allow"), m))?;
            if allow == Allow::Hook && self.hooks.join_url.is_none() {
                return Err(bad(key("allow"), "\"hook\" needs client.hooks.join_url"));
            }
            if r.join_event.is_none() && r.leave_event.is_none() && r.relay_event.is_none() {
                return Err(bad(
                    format!("client.rooms[{i}]"),
                    "set at least one of join_event, leave_event, relay_event",
                ));
            }
            if let Some(e) = &r.join_event {
                claim_event(key("join_event"), e, EventAction::Join(i))?;
            }
            if let Some(e) = &r.leave_event {
                claim_event(key("leave_event"), e, EventAction::Leave(i))?;
            }
            if let Some(e) = &r.relay_event {
                claim_event(key("relay_event"), e, EventAction::Relay(i))?;
            }
            out.rules.push(Rule {
                index: i,
                config: r.clone(),
                room,
                allow,
            });
        }
        for (i, f) in self.forward.iter().enumerate() {
            let key = |field: &str| format!("client.forward[{i}].{field}");
            if f.events.is_empty() {
                return Err(bad(key("events"), "list at least one event"));
            }
            for (j, e) in f.events.iter().enumerate() {
                claim_event(
                    format!("client.forward[{i}].events[{j}]"),
                    e,
                    EventAction::Forward(i),
                )?;
            }
            let target = match (&f.url, &f.stream) {
                (Some(url), None) => Target::Http(http_url(url).map_err(|m| bad(key("url"), m))?),
                (None, Some(stream)) => {
                    if stream.is_empty() {
                        return Err(bad(key("stream"), "must not be empty"));
                    }
                    if !redis_enabled {
                        return Err(bad(
                            key("stream"),
                            "a stream needs Redis: set redis.url (or sentinel / cluster mode)",
                        ));
                    }
                    if f.stream_maxlen == 0 {
                        return Err(bad(key("stream_maxlen"), "must be greater than 0"));
                    }
                    Target::Stream(stream.clone())
                }
                _ => {
                    return Err(bad(
                        format!("client.forward[{i}]"),
                        "give exactly one of url, stream",
                    ));
                }
            };
            if f.timeout_ms == 0 {
                return Err(bad(key("timeout_ms"), "must be greater than 0"));
            }
            if f.retries > 10 {
                return Err(bad(key("retries"), "at most 10"));
            }
            out.forwards.push(Forward {
                index: i,
                config: f.clone(),
                target,
            });
        }
        let h = &self.hooks;
        if let Some(url) = &h.join_url {
            http_url(url).map_err(|m| bad("client.hooks.join_url".into(), m))?;
        }
        if let Some(secret) = &h.secret
            && secret.len() < MIN_SECRET_BYTES
        {
            return Err(bad(
                "client.hooks.secret".into(),
                format!("must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"),
            ));
        }
        if h.timeout_ms == 0 {
            return Err(bad(
                "client.hooks.timeout_ms".into(),
                "must be greater than 0",
            ));
        }
        if h.max_in_flight == 0 || h.max_in_flight_per_socket == 0 {
            return Err(bad(
                "client.hooks.max_in_flight".into(),
                "max_in_flight and max_in_flight_per_socket must be greater than 0",
            ));
        }
        if self.max_rooms_per_socket == 0 {
            return Err(bad(
                "client.max_rooms_per_socket".into(),
                "must be greater than 0",
            ));
        }
        Ok(out)
    }
}

/// An `http://host[:port]/path` URL (TLS to the API is not supported: put
/// the API's plain-HTTP listener on a private network).
fn http_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(uri),
        (Some("https"), _) => Err(format!(
            "{text:?}: https is not supported; use the API's plain-HTTP address on a private network"
        )),
        _ => Err(format!(
            "{text:?} must look like http://api:8080/realtime/events"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_forms() {
        assert_eq!(Allow::parse("authenticated"), Ok(Allow::Authenticated));
        assert_eq!(Allow::parse(" anonymous "), Ok(Allow::Anyone));
        assert_eq!(Allow::parse("hook"), Ok(Allow::Hook));
        assert_eq!(
            Allow::parse("role:admin|role:agent"),
            Ok(Allow::Roles(vec!["admin".into(), "agent".into()]))
        );
        assert_eq!(
            Allow::parse("{arg} == {company_id}"),
            Ok(Allow::ArgEquals("company_id".into()))
        );
        assert_eq!(
            Allow::parse("{company_id}=={arg}"),
            Ok(Allow::ArgEquals("company_id".into()))
        );
        assert_eq!(
            Allow::parse("{arg} in {chats}"),
            Ok(Allow::ArgIn("chats".into()))
        );
        for bad in [
            "",
            "everyone",
            "role:",
            "role:a|admin",
            "{arg} == company_id",
            "{arg} == {arg}",
            "{chats} in {arg}",
            "{a} == {b}",
            "{arg} in {}",
        ] {
            assert!(Allow::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn rule(room: &str, allow: &str) -> RoomRule {
        RoomRule {
            join_event: Some("join".into()),
            leave_event: None,
            room: room.into(),
            allow: allow.into(),
            relay_event: None,
            relay_to_sender: false,
            presence: false,
        }
    }

    fn error(c: &ClientConfig) -> String {
        c.compile(true).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_indexed_key() {
        let mut c = ClientConfig {
            rooms: vec![rule("a:{arg}", "authenticated"), rule("b:{arg}", "nobody")],
            ..ClientConfig::default()
        };
        c.rooms[1].join_event = Some("join2".into());
        let e = error(&c);
        assert!(e.contains("`client.rooms[1].allow`"), "{e}");

        c.rooms[1].allow = "hook".into();
        assert!(error(&c).contains("client.hooks.join_url"));

        c.rooms[1].allow = "anonymous".into();
        c.rooms[1].join_event = Some("join".into());
        let e = error(&c);
        assert!(
            e.contains("`client.rooms[1].join_event`") && e.contains("already used"),
            "{e}"
        );

        c.rooms[1].join_event = Some("disconnect".into());
        assert!(error(&c).contains("reserved"));

        c.rooms[1].join_event = None;
        assert!(error(&c).contains("`client.rooms[1]`"));

        c.rooms[1] = rule("r:{role}", "authenticated");
        c.rooms[1].join_event = Some("j2".into());
        assert!(error(&c).contains("`client.rooms[1].room`"));
        c.rooms[1].room = "x:{".into();
        assert!(error(&c).contains("`client.rooms[1].room`"));
        c.rooms[1].room = "x:{arg}".into();
        assert!(c.compile(true).is_ok());
    }

    #[test]
    fn forward_rules() {
        let f = |url: Option<&str>, stream: Option<&str>| ForwardRule {
            events: vec!["ev".into()],
            url: url.map(String::from),
            stream: stream.map(String::from),
            timeout_ms: 1000,
            retries: 0,
            stream_maxlen: 10,
        };
        let c = |rule| ClientConfig {
            forward: vec![rule],
            ..ClientConfig::default()
        };
        assert!(
            c(f(Some("http://127.0.0.1:8080/x"), None))
                .compile(false)
                .is_ok()
        );
        let e = c(f(Some("https://api/x"), None))
            .compile(false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`client.forward[0].url`") && e.contains("https"),
            "{e}"
        );
        let e = c(f(Some("api:8080"), None))
            .compile(false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`client.forward[0].url`"), "{e}");
        let e = c(f(None, Some("s")))
            .compile(false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`client.forward[0].stream`") && e.contains("Redis"),
            "{e}"
        );
        assert!(c(f(None, Some("s"))).compile(true).is_ok());
        let e = c(f(Some("http://a/x"), Some("s")))
            .compile(true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`client.forward[0]`"), "{e}");
        let mut short = c(f(Some("http://a/x"), None));
        short.hooks.secret = Some("short".into());
        let e = short.compile(true).unwrap_err().to_string();
        assert!(e.contains("`client.hooks.secret`"), "{e}");
    }
}
