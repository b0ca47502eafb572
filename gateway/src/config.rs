//! Gateway configuration: one typed struct, loaded from an optional TOML file
//! and overridden by `SWITCHBOARD_*` environment variables, validated once at
//! start so that a bad value stops the process with a message naming the key.
//!
//! Environment variables map onto keys in two ways:
//! - short aliases for what operators set most: `SWITCHBOARD_PORT`,
//!   `SWITCHBOARD_LISTEN`, `SWITCHBOARD_REDIS_URL`, `SWITCHBOARD_JWT_SECRET`,
//!   `SWITCHBOARD_JWT_PUBLIC_KEY_FILE`, `SWITCHBOARD_LOG_FORMAT`,
//!   `SWITCHBOARD_LOG_LEVEL`, `SWITCHBOARD_API_KEYS`;
//! - any key by its path with `__` between section and key, e.g.
//!   `SWITCHBOARD_ENGINE__PING_INTERVAL_MS=10000`.
//!
//! figment's own `Env` provider cannot express the aliases, so the variables
//! are mapped here and merged as figment layers.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};
use switchboard_redis::{RedisSettings, Secret};

/// Everything the gateway can be told at start. Each section belongs to one
/// module: `server` to the HTTP listener, `engine` to the Engine.IO transport,
/// `socketio` to the session layer, `auth` to connect-time authentication,
/// `redis` to the bus, `log` to tracing setup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: the HTTP listener.
    pub server: ServerConfig,
    /// `[engine]`: the Engine.IO transport.
    pub engine: EngineConfig,
    /// `[socketio]`: the Socket.IO layer.
    pub socketio: SocketIoConfig,
    /// `[auth]`: connect-time authentication and rooms.
    pub auth: AuthConfig,
    /// `[redis]`: the bus.
    pub redis: RedisConfig,
    /// `[api]`: the HTTP publish API.
    pub api: ApiConfig,
    /// `[limits]`: admission and rate limits.
    pub limits: LimitsConfig,
    /// `[cluster]`: sticky-session-free routing between gateways.
    pub cluster: ClusterConfig,
    /// `[log]`: tracing output.
    pub log: LogConfig,
    /// `[admin]`: the Socket.IO Admin UI server.
    pub admin: AdminConfig,
    /// `[recovery]`: connection state recovery (needs `redis.bus = "streams"`).
    pub recovery: RecoveryConfig,
    /// `[client]`: rooms clients join and relay to, events forwarded to the
    /// API (`[[client.rooms]]`, `[[client.forward]]`, `[client.hooks]`).
    pub client: crate::actions::config::ClientConfig,
    /// `[presence]`: who is online, who is in a room.
    pub presence: crate::presence::PresenceConfig,
}

/// The HTTP listener and its shutdown behaviour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on. `SWITCHBOARD_PORT` replaces the port only.
    pub listen: String,
    /// Port override; when set it replaces the port of `listen`.
    pub port: Option<u16>,
    /// The Socket.IO endpoint path, with leading and trailing slash.
    pub path: String,
    /// How long a graceful shutdown may take before remaining sockets are dropped.
    pub shutdown_deadline_ms: u64,
    /// Replaced by `trusted_proxies`; `true` stops the start with a message
    /// saying what to set instead.
    pub trust_forwarded_for: bool,
    /// Proxies (CIDRs such as `10.0.0.0/8`, or single addresses) whose
    /// `X-Forwarded-For` is believed: the client address is the right-most
    /// entry that is not one of them. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Browser origins allowed to connect (`https://app.example.com`); empty
    /// allows any origin. Enforced on polling and websocket requests alike.
    pub allowed_origins: Vec<String>,
    /// Longest a client may take to send a request's headers, counted from
    /// the moment the gateway waits for them: after accept, and after each
    /// response on a keep-alive connection (so it is also the idle
    /// keep-alive timeout). Cuts slowloris clients.
    pub header_read_timeout_ms: u64,
    /// Longest a client may take to send a request body (polling POST,
    /// publish API) once its headers are in.
    pub body_read_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes; a longer
    /// one is answered 431 and the connection closed.
    pub max_header_bytes: usize,
    /// Open TCP connections (HTTP and websocket) at once; over it a new
    /// connection is answered 503 and closed. Capped at start to the
    /// open-files limit minus a reserve (`fd_limit`).
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:3002".into(),
            port: None,
            path: "/socket.io/".into(),
            shutdown_deadline_ms: 10_000,
            trust_forwarded_for: false,
            trusted_proxies: Vec::new(),
            allowed_origins: Vec::new(),
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            max_header_bytes: 32 * 1024,
            max_connections: 16_384,
        }
    }
}

/// The two Engine.IO transports.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

/// Engine.IO v4 transport settings; the defaults are those of the Node server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// How often the server pings.
    pub ping_interval_ms: u64,
    /// How long a pong may take before the session is closed.
    pub ping_timeout_ms: u64,
    /// Largest HTTP polling body or websocket message accepted, in bytes.
    pub max_payload: u64,
    /// Which transports clients may use; at least one.
    pub transports: Vec<Transport>,
    /// How long a polling session may wait for the websocket upgrade to finish.
    pub upgrade_timeout_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_payload: 1_000_000,
            transports: vec![Transport::Polling, Transport::Websocket],
            upgrade_timeout_ms: 10_000,
        }
    }
}

impl EngineConfig {
    /// `ping_interval_ms` as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }
    /// `ping_timeout_ms` as a duration.
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }
    /// `upgrade_timeout_ms` as a duration.
    pub fn upgrade_timeout(&self) -> Duration {
        Duration::from_millis(self.upgrade_timeout_ms)
    }
    /// Whether `transport` is enabled.
    pub fn allows(&self, transport: Transport) -> bool {
        self.transports.contains(&transport)
    }
}

/// Socket.IO session layer settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Namespaces clients may connect to; `/` is the main namespace.
    pub namespaces: Vec<String>,
    /// A connection that has not connected to any namespace by then is closed.
    pub connect_timeout_ms: u64,
    /// Most binary attachments one packet may announce.
    pub max_attachments: usize,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            namespaces: vec!["/".into()],
            // Node's default is 45 s; an unauthenticated session costs memory
            // an attacker chooses, so it gets 10 s to send its CONNECT.
            connect_timeout_ms: 10_000,
            max_attachments: 10,
        }
    }
}

impl SocketIoConfig {
    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// Where the gateway looks for a client's token, tried in the configured order.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenSource {
    /// `{"token": "..."}` in the Socket.IO CONNECT payload (`auth` option of the client).
    Auth,
    /// `Authorization: Bearer ...` on the handshake request.
    Header,
    /// A cookie named by `auth.cookie_name`.
    Cookie,
    /// A query parameter named by `auth.query_param`.
    Query,
}

/// JWT verification and how claims become rooms.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted algorithms; the token's own `alg` header must be one of them.
    pub algorithms: Vec<String>,
    /// Shared secret for HS256/384/512.
    pub secret: Option<String>,
    /// PEM public key for RS*, PS*, ES* or EdDSA.
    pub public_key_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Accepted `aud` values, if set.
    pub audience: Option<Vec<String>>,
    /// Token locations, tried in this order.
    pub token_sources: Vec<TokenSource>,
    /// The cookie a token is read from (`cookie` source).
    pub cookie_name: String,
    /// The query parameter a token is read from (`query` source).
    pub query_param: String,
    /// Admit connections without a token; they join only `public_rooms`.
    pub allow_anonymous: bool,
    /// Rooms every connection joins, anonymous or not.
    pub public_rooms: Vec<String>,
    /// Room templates filled from claims: `{claim}` is replaced by the claim's
    /// value; `{role}` expands to one room per role from `role_claims`.
    pub rooms: Vec<String>,
    /// Claims that hold the user's roles, a string or an array of strings.
    pub role_claims: Vec<String>,
    /// Claim that names the user.
    pub user_claim: String,
    /// Seconds a socket may stay connected after its token's `exp` before it
    /// is disconnected with a CONNECT_ERROR "token expired".
    pub expiry_grace_s: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            algorithms: vec!["HS256".into()],
            secret: None,
            public_key_file: None,
            leeway_s: 30,
            issuer: None,
            audience: None,
            // Not cookie or query by default: a cookie is sent by the browser
            // from any site (cross-site websocket hijacking) and a query token
            // ends up in proxy logs. Enabling either needs
            // server.allowed_origins (see `Config::validate_origins`).
            token_sources: vec![TokenSource::Auth, TokenSource::Header],
            cookie_name: "token".into(),
            query_param: "token".into(),
            allow_anonymous: false,
            public_rooms: Vec::new(),
            rooms: vec!["user:{sub}".into(), "role:{role}".into()],
            role_claims: vec!["role".into(), "roles".into()],
            user_claim: "sub".into(),
            expiry_grace_s: 0,
        }
    }
}

/// The Redis bus. Without a URL (standalone mode) the gateway runs alone on
/// an in-memory bus. The connection keys are those of
/// `switchboard_redis::RedisSettings` (TLS, ACL user, Sentinel, Cluster),
/// shared with the broadcaster and the `switchboard` CLI.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `standalone` (default), `sentinel` or `cluster`.
    pub mode: RedisMode,
    /// Standalone: `redis://[user[:password]@]host:port/db`, or `rediss://`
    /// for TLS; unset or empty means the embedded in-memory bus.
    pub url: Option<String>,
    /// Sentinel: the sentinels, `host:port` (or `redis://` / `rediss://` URLs).
    pub sentinels: Vec<String>,
    /// Sentinel: the name the sentinels monitor the master under.
    pub master_name: Option<String>,
    /// Cluster: some of the nodes, `host:port` (or URLs); the rest is discovered.
    pub nodes: Vec<String>,
    /// TLS with `host:port` entries of `sentinels` / `nodes` (implied by `rediss://`).
    pub tls: bool,
    /// PEM file of the CA(s) that signed the server certificate; unset: the
    /// system roots.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// ACL user (instead of a user in the URL).
    pub username: Option<String>,
    /// Password of `username` (or of `default`); never logged. Prefer
    /// `SWITCHBOARD_REDIS_PASSWORD` or `password_file` to the TOML file.
    pub password: Option<Secret>,
    /// File holding the password (a trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// Sentinel: ACL user of the sentinels themselves, if they require one.
    pub sentinel_username: Option<String>,
    /// Sentinel: password of the sentinels themselves.
    pub sentinel_password: Option<Secret>,
    /// Multiplexed connections publishes are spread over (standalone and
    /// sentinel); one pipelines every concurrent publish.
    pub connections: usize,
    /// Channel prefix shared with `@socket.io/redis-adapter` (its `key` option).
    pub key: String,
    /// Reconnect backoff bounds.
    pub reconnect_min_ms: u64,
    /// See `reconnect_min_ms`.
    pub reconnect_max_ms: u64,
    /// How long a publish (or any Redis call, connecting included) may take
    /// before it fails.
    pub publish_timeout_ms: u64,
    /// `classic` (PUBLISH/PSUBSCRIBE, `createAdapter`'s format) or `sharded`
    /// (SPUBLISH/SSUBSCRIBE, Redis >= 7, `createShardedAdapter`'s format).
    pub pubsub: PubsubMode,
    /// With `pubsub = "sharded"`: `dynamic` (also one channel per room with
    /// local sockets, Node's default) or `static`.
    pub subscription: SubscriptionMode,
    /// `pubsub` (default: the redis-adapter format, lowest latency, nothing
    /// kept) or `streams` (the `@socket.io/redis-streams-adapter` 0.3 format:
    /// broadcasts in a Redis stream, needed for `[recovery]`).
    pub bus: BusMode,
    /// Streams mode: the stream key (`streamName` of the Node adapter).
    pub stream_name: String,
    /// Streams mode: namespaces are spread over this many streams
    /// (`streamCount`; `<stream_name>-<i>` when more than 1).
    pub stream_count: u32,
    /// Streams mode: `XADD ... MAXLEN ~ <stream_max_len>` (`maxLen`); the
    /// history recovery can replay. Size it above events/s x the longest
    /// disconnection to recover (docs/recovery.md).
    pub stream_max_len: u64,
}

/// Which Redis pub/sub the bus speaks (see `bus::sharded`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PubsubMode {
    /// `PUBLISH` / `PSUBSCRIBE` in the `createAdapter` / emitter format.
    #[default]
    Classic,
    /// `SPUBLISH` / `SSUBSCRIBE` in the `createShardedAdapter` format.
    Sharded,
}

/// `subscriptionMode` of the sharded adapter that the gateway supports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionMode {
    /// The namespace channel and this gateway's own channel only.
    Static,
    /// Also `socket.io#<nsp>#<room>#` for each room with local sockets.
    #[default]
    Dynamic,
}

/// Which bus format the gateway speaks on Redis.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BusMode {
    /// Pub/sub in the `@socket.io/redis-adapter` format.
    #[default]
    Pubsub,
    /// Redis Streams in the `@socket.io/redis-streams-adapter` 0.3 format.
    Streams,
}

/// Connection state recovery (socket.io >= 4.6 clients): a reconnecting
/// client gets its socket id, rooms and the events it missed back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Off by default; needs `redis.bus = "streams"`.
    pub enabled: bool,
    /// How long a disconnected session can be recovered
    /// (`maxDisconnectionDuration`), in ms.
    pub max_disconnection_ms: u64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_disconnection_ms: 120_000,
        }
    }
}

/// How the gateway reaches Redis (see `switchboard_redis::Mode`).
pub type RedisMode = switchboard_redis::Mode;

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            mode: RedisMode::Standalone,
            url: None,
            sentinels: Vec::new(),
            master_name: None,
            nodes: Vec::new(),
            tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            username: None,
            password: None,
            password_file: None,
            sentinel_username: None,
            sentinel_password: None,
            connections: 1,
            key: "socket.io".into(),
            reconnect_min_ms: 100,
            reconnect_max_ms: 3_000,
            publish_timeout_ms: 2_000,
            pubsub: PubsubMode::Classic,
            subscription: SubscriptionMode::Dynamic,
            bus: BusMode::Pubsub,
            stream_name: switchboard_wire::streams::DEFAULT_STREAM_NAME.into(),
            stream_count: 1,
            stream_max_len: switchboard_wire::streams::DEFAULT_MAX_LEN,
        }
    }
}

impl RedisConfig {
    /// The Redis URL if one is configured; empty counts as none.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref().map(str::trim).filter(|u| !u.is_empty())
    }

    /// True when a Redis is configured (a URL, or sentinel / cluster mode);
    /// false means the embedded in-memory bus.
    pub fn enabled(&self) -> bool {
        self.mode != RedisMode::Standalone || self.url().is_some()
    }

    /// The streams adapter options these keys describe (streams mode):
    /// `key` is the pub/sub `channelPrefix`.
    pub fn streams_options(&self) -> switchboard_wire::streams::StreamsOptions {
        switchboard_wire::streams::StreamsOptions {
            stream_name: self.stream_name.clone(),
            stream_count: std::num::NonZeroU32::new(self.stream_count)
                .unwrap_or(std::num::NonZeroU32::MIN),
            channels: switchboard_wire::ClusterChannels::new(self.key.clone()),
            max_len: self.stream_max_len,
            ..Default::default()
        }
    }

    /// The connection settings these keys describe, for `switchboard_redis`.
    pub fn settings(&self) -> RedisSettings {
        RedisSettings {
            mode: self.mode,
            url: self.url().map(str::to_string),
            sentinels: self.sentinels.clone(),
            master_name: self.master_name.clone(),
            nodes: self.nodes.clone(),
            tls: self.tls,
            tls_ca_file: self.tls_ca_file.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            password_file: self.password_file.clone(),
            sentinel_username: self.sentinel_username.clone(),
            sentinel_password: self.sentinel_password.clone(),
            timeout_ms: self.publish_timeout_ms,
            reconnect_min_ms: self.reconnect_min_ms,
            reconnect_max_ms: self.reconnect_max_ms,
            connections: self.connections,
        }
    }
}

/// The HTTP publish API on the gateway.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Keys accepted as `Authorization: Bearer <key>`; empty disables the API.
    pub keys: Vec<String>,
}

/// Bounds that keep one client from hurting the others; 0 disables a limit.
/// The defaults are on (see docs/security.md for what each protects and how
/// to size it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Bytes queued for one connection before it counts as a slow consumer
    /// and is disconnected.
    pub max_queue_bytes: usize,
    /// Frames queued for one connection before the same happens.
    pub max_queue_frames: usize,
    /// A write to a client that makes no progress for this long ends it.
    pub write_timeout_ms: u64,
    /// Sockets one user may hold at once (per namespace, all devices).
    pub max_connections_per_user: usize,
    /// Engine.IO sessions one client address may hold at once.
    pub max_connections_per_ip: usize,
    /// New sessions admitted per second, gateway-wide (token bucket).
    pub connects_per_sec: u32,
    /// Burst allowance of `connects_per_sec`.
    pub connects_burst: u32,
    /// Engine.IO sessions open at once on this gateway; over it a new
    /// session is refused with 503 (existing ones are unaffected).
    pub max_sessions: usize,
    /// New sessions are refused (503 with `Retry-After`, before the token
    /// is verified) while this gateway's heartbeats run at least this many
    /// milliseconds behind: its event loop is overloaded, and a session
    /// admitted now would be paid for with the heartbeats of the sessions it
    /// already holds. 0 (the default) disables: in the issue #17
    /// reproduction it did not help (docs/benchmarks.md).
    pub refuse_when_behind_ms: u64,
    /// Events one socket may emit per second (token bucket).
    pub client_events_per_sec: u32,
    /// Burst allowance of `client_events_per_sec`.
    pub client_events_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_queue_bytes: 1024 * 1024,
            max_queue_frames: 4096,
            write_timeout_ms: 10_000,
            max_connections_per_user: 32,
            max_connections_per_ip: 100,
            connects_per_sec: 500,
            connects_burst: 1_000,
            max_sessions: 10_000,
            refuse_when_behind_ms: 0,
            client_events_per_sec: 50,
            client_events_burst: 100,
        }
    }
}

/// How gateways behind one load balancer find each other, so a polling
/// request that lands on the wrong gateway is forwarded to the owner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `host:port` other gateways use to reach this one; defaults to the
    /// listen address (with 127.0.0.1 for an unspecified host).
    pub advertise_addr: Option<String>,
    /// Networks (CIDR, like `10.0.0.0/8`) that forwarded requests may come
    /// from. Empty: any address may send one (fine when only the load
    /// balancer reaches the gateways). Set it when clients can reach the
    /// gateways directly, so the forwarding header proves nothing by itself.
    pub peer_cidrs: Vec<String>,
    /// How long connecting to the sid's owner may take.
    pub forward_connect_timeout_ms: u64,
    /// How long a forwarded request may wait for the owner's response
    /// headers. A forwarded long-polling GET waits up to one ping interval,
    /// so this must be longer than `engine.ping_interval_ms`.
    pub forward_timeout_ms: u64,
    /// Forwarded requests in flight at once; more are refused with 503.
    pub forward_max_in_flight: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            advertise_addr: None,
            peer_cidrs: Vec::new(),
            forward_connect_timeout_ms: 2_000,
            forward_timeout_ms: 35_000,
            forward_max_in_flight: 4_096,
        }
    }
}

impl ClusterConfig {
    /// The parsed `peer_cidrs` (validated at start, so none is dropped).
    pub fn peer_networks(&self) -> Vec<ipnet::IpNet> {
        self.peer_cidrs
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect()
    }
}

/// How much the Admin UI is shown (`@socket.io/admin-ui`'s `mode`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AdminMode {
    /// Every socket, room and event: `all_sockets` and the per-socket events.
    #[default]
    Development,
    /// Only `config` and `server_stats` (aggregated counts): cheap, and no
    /// user data leaves the gateway.
    Production,
}

/// The server side of the official Socket.IO Admin UI (`gateway/src/admin/`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the Admin UI protocol on `namespace`. Off by default.
    pub enabled: bool,
    /// The namespace the UI connects to (the UI's default is `/admin`).
    pub namespace: String,
    /// The login the UI sends.
    pub username: String,
    /// A bcrypt hash of the password (`$2b$12$...`), as `instrument()`'s
    /// basic auth takes it; the password itself is never configured.
    pub password_bcrypt: String,
    /// `development` emits per-socket events; `production` only stats.
    pub mode: AdminMode,
    /// Show everything but refuse `join`, `leave`, `_disconnect` and `emit`.
    pub readonly: bool,
    /// The npm package's `ui/dist` folder, served under `/admin/` when set.
    pub ui_dir: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            namespace: "/admin".into(),
            username: "admin".into(),
            password_bcrypt: String::new(),
            mode: AdminMode::Development,
            readonly: false,
            ui_dir: None,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter such as `info` or `switchboard_gateway=debug`;
    /// `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Why the configuration could not be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or the environment does not parse.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A key has a value the gateway cannot use.
    #[error("invalid configuration: `{key}`: {message}")]
    Invalid {
        /// The key, as in the TOML file.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A key with an index in its name, such as `client.rooms[1].allow`.
    #[error("invalid configuration: `{key}`: {message}")]
    InvalidKey {
        /// The key, as in the TOML file, with the index of the table.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A `[redis]` connection key (the message names it as `redis.<key>`).
    #[error("invalid configuration: {0}")]
    Redis(#[from] switchboard_redis::SettingsError),
}

/// Shortest accepted HS* secret, in bytes.
const MIN_SECRET_BYTES: usize = 32;
/// Largest `auth.leeway_s`.
const MAX_LEEWAY_S: u64 = 300;

/// Smallest `server.max_header_bytes`: hyper's minimum read buffer.
const MIN_HEADER_BYTES: usize = 8192;
/// Largest `server.max_header_bytes`: beyond it, a few hundred half-sent
/// heads cost hundreds of megabytes.
const MAX_HEADER_BYTES: usize = 1024 * 1024;

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Short environment names operators expect, mapped to config keys.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("PORT", "server.port"),
    ("LISTEN", "server.listen"),
    ("REDIS_URL", "redis.url"),
    ("REDIS_PASSWORD", "redis.password"),
    ("REDIS_USERNAME", "redis.username"),
    ("JWT_SECRET", "auth.secret"),
    ("JWT_PUBLIC_KEY_FILE", "auth.public_key_file"),
    ("JWT_ALGORITHMS", "auth.algorithms"),
    ("LOG_FORMAT", "log.format"),
    ("LOG_LEVEL", "log.level"),
    ("API_KEYS", "api.keys"),
    ("ALLOWED_ORIGINS", "server.allowed_origins"),
    ("ADVERTISE_ADDR", "cluster.advertise_addr"),
];

impl Config {
    /// Loads defaults, then the TOML file if given, then `SWITCHBOARD_*`
    /// variables from the process environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Same as [`Config::load`] with an explicit environment, for tests.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            figment = figment.merge(Toml::string(&text));
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("SWITCHBOARD_") else {
                continue;
            };
            let key = match ENV_ALIASES.iter().find(|(alias, _)| *alias == rest) {
                Some((_, key)) => (*key).to_string(),
                None if rest.contains("__") => rest.to_ascii_lowercase().replace("__", "."),
                None => continue,
            };
            figment = figment.merge(env_value(&key, &value));
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value that serde cannot: ranges, paths, combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let path = &self.server.path;
        if !path.starts_with('/') || !path.ends_with('/') || path.len() < 2 {
            return Err(invalid(
                "server.path",
                format!("must start and end with '/', like \"/socket.io/\" (got {path:?})"),
            ));
        }
        self.validate_server()?;
        let e = &self.engine;
        if e.ping_interval_ms == 0 {
            return Err(invalid("engine.ping_interval_ms", "must be greater than 0"));
        }
        if e.ping_timeout_ms == 0 {
            return Err(invalid("engine.ping_timeout_ms", "must be greater than 0"));
        }
        if e.max_payload < 1024 {
            return Err(invalid("engine.max_payload", "must be at least 1024 bytes"));
        }
        if e.transports.is_empty() {
            return Err(invalid(
                "engine.transports",
                "list at least one of \"polling\", \"websocket\"",
            ));
        }
        let s = &self.socketio;
        if s.namespaces.is_empty() {
            return Err(invalid(
                "socketio.namespaces",
                "list at least one namespace",
            ));
        }
        if let Some(bad) = s.namespaces.iter().find(|n| !n.starts_with('/')) {
            return Err(invalid(
                "socketio.namespaces",
                format!("{bad:?} must start with '/'"),
            ));
        }
        if s.connect_timeout_ms == 0 {
            return Err(invalid(
                "socketio.connect_timeout_ms",
                "must be greater than 0",
            ));
        }
        self.validate_auth()?;
        self.validate_origins()?;
        let r = &self.redis;
        if let Some(url) = r.url()
            && !["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            return Err(invalid(
                "redis.url",
                format!("{url:?} is not a redis:// URL; leave it empty for the embedded bus"),
            ));
        }
        // Every connection key (TLS files readable and parseable, the
        // password file, which keys go with which mode) is checked here, so
        // `check-config` and the start fail on them naming the key.
        if r.enabled() {
            r.settings().validate()?;
        }
        if r.key.is_empty() || r.key.contains('#') {
            return Err(invalid("redis.key", "must be non-empty and contain no '#'"));
        }
        if r.reconnect_min_ms == 0 || r.reconnect_min_ms > r.reconnect_max_ms {
            return Err(invalid(
                "redis.reconnect_min_ms",
                "must be greater than 0 and at most redis.reconnect_max_ms",
            ));
        }
        if r.publish_timeout_ms == 0 {
            return Err(invalid(
                "redis.publish_timeout_ms",
                "must be greater than 0",
            ));
        }
        if r.pubsub == PubsubMode::Sharded && !r.enabled() {
            return Err(invalid(
                "redis.pubsub",
                "\"sharded\" needs a Redis >= 7: set redis.url, or redis.mode = \"cluster\" with redis.nodes",
            ));
        }
        if r.pubsub == PubsubMode::Sharded && r.bus == BusMode::Streams {
            return Err(invalid(
                "redis.pubsub",
                "\"sharded\" cannot be combined with redis.bus = \"streams\" (the streams adapter has its own format); use one of them",
            ));
        }
        self.validate_streams()?;
        let l = &self.limits;
        if l.max_queue_bytes == 0 || l.max_queue_frames == 0 {
            return Err(invalid(
                "limits.max_queue_bytes",
                "queue bounds must be greater than 0 (max_queue_bytes and max_queue_frames)",
            ));
        }
        if l.write_timeout_ms == 0 {
            return Err(invalid("limits.write_timeout_ms", "must be greater than 0"));
        }
        if l.client_events_per_sec > 0 && l.client_events_burst < l.client_events_per_sec {
            return Err(invalid(
                "limits.client_events_burst",
                "must be at least limits.client_events_per_sec",
            ));
        }
        if l.connects_per_sec > 0 && l.connects_burst < l.connects_per_sec {
            return Err(invalid(
                "limits.connects_burst",
                "must be at least limits.connects_per_sec",
            ));
        }
        if let Some(bad) =
            self.server.allowed_origins.iter().find(|o| {
                !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/')
            })
        {
            return Err(invalid(
                "server.allowed_origins",
                format!(
                    "{bad:?} must look like https://app.example.com (scheme, host, optional port, no path)"
                ),
            ));
        }
        if let Some(addr) = &self.cluster.advertise_addr
            && addr.parse::<SocketAddr>().is_err()
        {
            return Err(invalid(
                "cluster.advertise_addr",
                format!("{addr:?} is not an address like 10.0.0.5:3002"),
            ));
        }
        self.validate_cluster()?;
        self.presence.validate()?;
        if self.api.keys.iter().any(|k| k.len() < 16) {
            return Err(invalid(
                "api.keys",
                "every key must be at least 16 characters",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be \"text\" or \"json\""));
        }
        self.validate_admin()?;
        self.client.compile(self.redis.enabled())?;
        Ok(())
    }

    fn validate_streams(&self) -> Result<(), ConfigError> {
        let r = &self.redis;
        if r.bus == BusMode::Streams {
            if !r.enabled() {
                return Err(invalid(
                    "redis.bus",
                    "\"streams\" needs a Redis (redis.url, or sentinel / cluster mode)",
                ));
            }
            if r.stream_name.is_empty() {
                return Err(invalid("redis.stream_name", "must not be empty"));
            }
            if r.stream_count == 0 {
                return Err(invalid("redis.stream_count", "must be at least 1"));
            }
            if r.stream_max_len == 0 {
                return Err(invalid("redis.stream_max_len", "must be at least 1"));
            }
        }
        let c = &self.recovery;
        if c.enabled && r.bus != BusMode::Streams {
            return Err(invalid(
                "recovery.enabled",
                "connection state recovery needs redis.bus = \"streams\" (pub/sub keeps nothing to replay)",
            ));
        }
        if c.enabled && c.max_disconnection_ms == 0 {
            return Err(invalid(
                "recovery.max_disconnection_ms",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    fn validate_admin(&self) -> Result<(), ConfigError> {
        let a = &self.admin;
        if !a.enabled {
            return Ok(());
        }
        if !a.namespace.starts_with('/') || a.namespace.len() < 2 || a.namespace.contains(',') {
            return Err(invalid(
                "admin.namespace",
                format!(
                    "{:?} must start with '/', like \"/admin\", and contain no ','",
                    a.namespace
                ),
            ));
        }
        if self.socketio.namespaces.contains(&a.namespace) {
            return Err(invalid(
                "admin.namespace",
                format!(
                    "{:?} is also in socketio.namespaces; pick a namespace of its own",
                    a.namespace
                ),
            ));
        }
        if a.username.is_empty() {
            return Err(invalid("admin.username", "must not be empty"));
        }
        if a.password_bcrypt.parse::<bcrypt::HashParts>().is_err() {
            return Err(invalid(
                "admin.password_bcrypt",
                "must be a bcrypt hash like $2b$12$... (generate one with `htpasswd -bnBC 12 \"\" 'the password' | tr -d ':\\n'`)",
            ));
        }
        if let Some(dir) = &a.ui_dir
            && !dir.join("index.html").is_file()
        {
            return Err(invalid(
                "admin.ui_dir",
                format!(
                    "{} has no index.html; point it at @socket.io/admin-ui's ui/dist folder",
                    dir.display()
                ),
            ));
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if let Some(bad) = c
            .peer_cidrs
            .iter()
            .find(|cidr| cidr.parse::<ipnet::IpNet>().is_err())
        {
            return Err(invalid(
                "cluster.peer_cidrs",
                format!("{bad:?} is not a network like 10.0.0.0/8 or fd00::/8"),
            ));
        }
        if c.forward_connect_timeout_ms == 0 {
            return Err(invalid(
                "cluster.forward_connect_timeout_ms",
                "must be greater than 0",
            ));
        }
        if c.forward_timeout_ms <= self.engine.ping_interval_ms {
            return Err(invalid(
                "cluster.forward_timeout_ms",
                format!(
                    "must be greater than engine.ping_interval_ms ({}): a forwarded long-polling GET waits up to one ping interval",
                    self.engine.ping_interval_ms
                ),
            ));
        }
        if c.forward_max_in_flight == 0 {
            return Err(invalid(
                "cluster.forward_max_in_flight",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.header_read_timeout_ms == 0 || s.header_read_timeout_ms > 300_000 {
            return Err(invalid(
                "server.header_read_timeout_ms",
                "must be between 1 and 300000 (a longer wait lets slow clients hold connections)",
            ));
        }
        if s.body_read_timeout_ms == 0 || s.body_read_timeout_ms > 300_000 {
            return Err(invalid(
                "server.body_read_timeout_ms",
                "must be between 1 and 300000",
            ));
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&s.max_header_bytes) {
            return Err(invalid(
                "server.max_header_bytes",
                format!("must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"),
            ));
        }
        if s.trust_forwarded_for {
            return Err(invalid(
                "server.trust_forwarded_for",
                "was replaced by server.trusted_proxies (SWITCHBOARD_SERVER__TRUSTED_PROXIES): list the \
                 addresses or CIDRs of your proxies, e.g. [\"127.0.0.1\"] for nginx on the same host; \
                 X-Forwarded-For is then read only from them, right-most entry first",
            ));
        }
        if let Some(bad) = s
            .trusted_proxies
            .iter()
            .find(|p| crate::client_ip::parse_proxy(p).is_none())
        {
            return Err(invalid(
                "server.trusted_proxies",
                format!("{bad:?} is not an address or CIDR like 10.0.0.0/8"),
            ));
        }
        if s.max_connections == 0 {
            return Err(invalid(
                "server.max_connections",
                "must be greater than 0 (raise it, with the process's open-file limit, for more clients)",
            ));
        }
        Ok(())
    }

    /// Refuses to start with an ambient token source (cookie, or a query
    /// token a page can be made to carry) and no origin allowlist: any web
    /// site could then open an authenticated websocket in the user's name
    /// (cross-site websocket hijacking), since browsers send cookies with a
    /// cross-site websocket handshake and CORS does not apply to it. A start
    /// error, rather than refusing every Origin-bearing request, because the
    /// latter would break every browser client silently at run time.
    fn validate_origins(&self) -> Result<(), ConfigError> {
        let ambient: Vec<&str> = self
            .auth
            .token_sources
            .iter()
            .filter_map(|s| match s {
                TokenSource::Cookie => Some("cookie"),
                TokenSource::Query => Some("query"),
                _ => None,
            })
            .collect();
        if !ambient.is_empty() && self.server.allowed_origins.is_empty() {
            return Err(invalid(
                "server.allowed_origins",
                format!(
                    "auth.token_sources includes {}, so any web site could connect in a user's name: \
                     set server.allowed_origins (SWITCHBOARD_ALLOWED_ORIGINS) to the sites of your app, \
                     e.g. [\"https://app.example.com\"], or keep auth.token_sources to auth and header",
                    ambient.join(" and ")
                ),
            ));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        if a.algorithms.is_empty() {
            return Err(invalid("auth.algorithms", "list at least one algorithm"));
        }
        let mut needs_secret = false;
        let mut needs_key = false;
        for alg in &a.algorithms {
            match alg.as_str() {
                "HS256" | "HS384" | "HS512" => needs_secret = true,
                "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384"
                | "EdDSA" => needs_key = true,
                other => {
                    return Err(invalid(
                        "auth.algorithms",
                        format!(
                            "unknown algorithm {other:?}; use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA"
                        ),
                    ));
                }
            }
        }
        if needs_secret && needs_key {
            return Err(invalid(
                "auth.algorithms",
                "mixes shared-secret (HS*) and public-key algorithms; pick one family so a public key can never be used as an HMAC secret",
            ));
        }
        let has_secret = a.secret.as_deref().is_some_and(|s| !s.is_empty());
        if needs_secret && !has_secret && !a.allow_anonymous {
            return Err(invalid(
                "auth.secret",
                "HS* algorithms need a secret: set SWITCHBOARD_JWT_SECRET or auth.secret (or allow_anonymous = true to run without tokens)",
            ));
        }
        // RFC 7518 3.2: an HMAC key at least as long as the hash output;
        // 32 bytes is HS256's, and a shorter one is brute-forceable offline
        // from any token.
        if needs_secret
            && has_secret
            && a.secret
                .as_deref()
                .is_some_and(|s| s.len() < MIN_SECRET_BYTES)
        {
            return Err(invalid(
                "auth.secret",
                format!(
                    "must be at least {MIN_SECRET_BYTES} bytes (SWITCHBOARD_JWT_SECRET; e.g. `openssl rand -hex 32`)"
                ),
            ));
        }
        if a.leeway_s > MAX_LEEWAY_S {
            return Err(invalid(
                "auth.leeway_s",
                format!(
                    "must be at most {MAX_LEEWAY_S} seconds: a larger clock-skew allowance keeps expired tokens valid"
                ),
            ));
        }
        if needs_key {
            match &a.public_key_file {
                None => {
                    return Err(invalid(
                        "auth.public_key_file",
                        "public-key algorithms need a PEM file: set SWITCHBOARD_JWT_PUBLIC_KEY_FILE or auth.public_key_file",
                    ));
                }
                Some(p) if !p.is_file() => {
                    return Err(invalid(
                        "auth.public_key_file",
                        format!("{} does not exist or is not a file", p.display()),
                    ));
                }
                Some(_) => {}
            }
        }
        if a.token_sources.is_empty() && !a.allow_anonymous {
            return Err(invalid(
                "auth.token_sources",
                "list at least one of auth, header, cookie, query",
            ));
        }
        if a.user_claim.is_empty() {
            return Err(invalid("auth.user_claim", "must not be empty"));
        }
        for template in a.rooms.iter().chain(&a.public_rooms) {
            if template.is_empty() {
                return Err(invalid("auth.rooms", "room names must not be empty"));
            }
            if template.matches('{').count() != template.matches('}').count() {
                return Err(invalid(
                    "auth.rooms",
                    format!("unbalanced braces in template {template:?}"),
                ));
            }
        }
        Ok(())
    }

    /// The socket address to bind, with `server.port` applied.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        let mut addr: SocketAddr = self.server.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!(
                    "{:?} is not an address like 0.0.0.0:3002",
                    self.server.listen
                ),
            )
        })?;
        if let Some(port) = self.server.port {
            addr.set_port(port);
        }
        Ok(addr)
    }

    /// The address other gateways forward to.
    pub fn advertise_addr(&self) -> Result<SocketAddr, ConfigError> {
        if let Some(addr) = &self.cluster.advertise_addr {
            return addr
                .parse()
                .map_err(|_| invalid("cluster.advertise_addr", "not an address"));
        }
        let mut addr = self.listen_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Ok(addr)
    }

    /// `server.trusted_proxies`, parsed (validated at load).
    pub fn trusted_proxies(&self) -> Vec<ipnet::IpNet> {
        self.server
            .trusted_proxies
            .iter()
            .filter_map(|p| crate::client_ip::parse_proxy(p))
            .collect()
    }

    /// `server.header_read_timeout_ms` as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.server.header_read_timeout_ms)
    }

    /// `server.body_read_timeout_ms` as a duration.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.server.body_read_timeout_ms)
    }

    /// `server.shutdown_deadline_ms` as a duration.
    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_millis(self.server.shutdown_deadline_ms)
    }
}

/// Turns one environment value into a figment layer at `key`. Lists accept a
/// comma-separated form (`HS256,HS384`); numbers and booleans are parsed as
/// TOML scalars so `SWITCHBOARD_SERVER__PORT=80` is a number.
fn env_value(key: &str, raw: &str) -> Figment {
    let list_keys = [
        "auth.algorithms",
        "auth.audience",
        "auth.token_sources",
        "auth.public_rooms",
        "auth.rooms",
        "auth.role_claims",
        "engine.transports",
        "socketio.namespaces",
        "api.keys",
        "server.allowed_origins",
        "cluster.peer_cidrs",
        "server.trusted_proxies",
        "redis.sentinels",
        "redis.nodes",
        "client.hooks.claims",
        "presence.online_rooms",
        "presence.claims",
    ];
    // Never read as a number or boolean: a hash, a secret or a name stays a string.
    let string_keys = [
        "admin.password_bcrypt",
        "admin.username",
        "redis.password",
        "redis.username",
        "redis.sentinel_password",
        "redis.sentinel_username",
        "redis.master_name",
        "client.hooks.secret",
    ];
    let value: figment::value::Value = if list_keys.contains(&key) {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into()
    } else if string_keys.contains(&key) {
        raw.to_string().into()
    } else if let Ok(n) = raw.parse::<u64>() {
        n.into()
    } else if let Ok(b) = raw.parse::<bool>() {
        b.into()
    } else {
        raw.to_string().into()
    };
    Figment::from(Serialized::global(key, value))
}

fn describe_figment_error(e: figment::Error) -> String {
    e.into_iter()
        .map(|err| {
            let path = err.path.join(".");
            if path.is_empty() {
                err.kind.to_string()
            } else {
                format!("`{path}`: {}", err.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_only_start_needs_just_a_secret() {
        let c = Config::load_from(
            None,
            env(&[
                ("SWITCHBOARD_PORT", "4000"),
                ("SWITCHBOARD_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                ("SWITCHBOARD_REDIS_URL", ""),
            ]),
        )
        .expect("valid");
        assert_eq!(c.listen_addr().unwrap().port(), 4000);
        assert_eq!(c.redis.url(), None);
        assert_eq!(
            c.auth.secret.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn missing_secret_names_the_key() {
        let err = Config::load_from(None, env(&[])).unwrap_err().to_string();
        assert!(err.contains("auth.secret"), "{err}");
    }

    #[test]
    fn toml_file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(
            &file,
            "[engine]\nping_interval_ms = 1000\n[auth]\nsecret = \"from-file-secret-0123456789abcdef\"\nrooms = [\"role_{role}\"]\n",
        )
        .unwrap();
        let c = Config::load_from(
            Some(&file),
            env(&[("SWITCHBOARD_ENGINE__PING_TIMEOUT_MS", "700")]),
        )
        .unwrap();
        assert_eq!(c.engine.ping_interval_ms, 1000);
        assert_eq!(c.engine.ping_timeout_ms, 700);
        assert_eq!(c.auth.rooms, vec!["role_{role}".to_string()]);
    }

    #[test]
    fn wrong_type_and_unknown_key_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(&file, "[engine]\nping_interval_ms = \"soon\"\n").unwrap();
        let err = Config::load_from(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("engine.ping_interval_ms"), "{err}");

        std::fs::write(&file, "[engine]\npingInterval = 3\n").unwrap();
        let err = Config::load_from(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pingInterval"), "{err}");
    }

    #[test]
    fn admin_needs_a_bcrypt_hash_and_its_own_namespace() {
        let secret = ("SWITCHBOARD_JWT_SECRET", "0123456789abcdef0123456789abcdef");
        let on = ("SWITCHBOARD_ADMIN__ENABLED", "true");
        let hash = bcrypt::hash("pw", 4).unwrap();
        let hash = ("SWITCHBOARD_ADMIN__PASSWORD_BCRYPT", hash.as_str());
        let c = Config::load_from(None, env(&[secret, on, hash])).expect("valid admin config");
        assert_eq!(c.admin.namespace, "/admin");
        assert_eq!(c.admin.mode, AdminMode::Development);
        for (extra, key) in [
            (
                ("SWITCHBOARD_ADMIN__PASSWORD_BCRYPT", "plain-password"),
                "admin.password_bcrypt",
            ),
            (("SWITCHBOARD_ADMIN__NAMESPACE", "/"), "admin.namespace"),
            (
                ("SWITCHBOARD_ADMIN__UI_DIR", "/nonexistent"),
                "admin.ui_dir",
            ),
            (("SWITCHBOARD_ADMIN__MODE", "debug"), "admin.mode"),
        ] {
            let err = Config::load_from(None, env(&[secret, on, hash, extra]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{extra:?}: {err}");
        }
        // Disabled, nothing is required.
        Config::load_from(None, env(&[secret])).expect("admin off by default");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let secret = ("SWITCHBOARD_JWT_SECRET", "0123456789abcdef0123456789abcdef");
        for (var, val, key) in [
            ("SWITCHBOARD_REDIS_URL", "localhost:6379", "redis.url"),
            ("SWITCHBOARD_LISTEN", "nowhere", "server.listen"),
            ("SWITCHBOARD_SERVER__PATH", "socket.io", "server.path"),
            ("SWITCHBOARD_JWT_ALGORITHMS", "none", "auth.algorithms"),
            (
                "SWITCHBOARD_JWT_ALGORITHMS",
                "HS256,RS256",
                "auth.algorithms",
            ),
            ("SWITCHBOARD_ENGINE__TRANSPORTS", "", "engine.transports"),
            ("SWITCHBOARD_AUTH__LEEWAY_S", "301", "auth.leeway_s"),
            (
                "SWITCHBOARD_JWT_SECRET",
                "sixteen-byte-key-plus-15",
                "auth.secret",
            ),
            ("SWITCHBOARD_LOG_FORMAT", "xml", "log.format"),
        ] {
            let err = Config::load_from(None, env(&[secret, (var, val)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{var}={val}: {err}");
        }
    }

    #[test]
    fn streams_and_recovery_settings_name_the_key() {
        let secret = ("SWITCHBOARD_JWT_SECRET", "0123456789abcdef0123456789abcdef");
        let redis = ("SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:6379");
        let streams = ("SWITCHBOARD_REDIS__BUS", "streams");
        let ok = Config::load_from(
            None,
            env(&[
                secret,
                redis,
                streams,
                ("SWITCHBOARD_RECOVERY__ENABLED", "true"),
                ("SWITCHBOARD_REDIS__STREAM_COUNT", "4"),
            ]),
        )
        .expect("valid");
        assert_eq!(ok.redis.bus, BusMode::Streams);
        assert_eq!(ok.recovery.max_disconnection_ms, 120_000);
        assert_eq!(
            ok.redis.streams_options().read_streams(),
            ["socket.io-0", "socket.io-1", "socket.io-2", "socket.io-3"]
        );
        for (vars, key) in [
            (vec![streams], "redis.bus"),
            (
                vec![redis, streams, ("SWITCHBOARD_REDIS__STREAM_COUNT", "0")],
                "redis.stream_count",
            ),
            (
                vec![redis, streams, ("SWITCHBOARD_REDIS__STREAM_MAX_LEN", "0")],
                "redis.stream_max_len",
            ),
            (
                vec![redis, streams, ("SWITCHBOARD_REDIS__STREAM_NAME", "")],
                "redis.stream_name",
            ),
            (
                vec![redis, ("SWITCHBOARD_RECOVERY__ENABLED", "true")],
                "recovery.enabled",
            ),
            (
                vec![
                    redis,
                    streams,
                    ("SWITCHBOARD_RECOVERY__ENABLED", "true"),
                    ("SWITCHBOARD_RECOVERY__MAX_DISCONNECTION_MS", "0"),
                ],
                "recovery.max_disconnection_ms",
            ),
            (vec![redis, ("SWITCHBOARD_REDIS__BUS", "kafka")], "bus"),
        ] {
            let mut all = vec![secret];
            all.extend(vars.iter().copied());
            let err = Config::load_from(None, env(&all)).unwrap_err().to_string();
            assert!(err.contains(key), "{vars:?}: {err}");
        }
    }

    #[test]
    fn cluster_settings_are_validated_and_name_the_key() {
        let secret = ("SWITCHBOARD_JWT_SECRET", "0123456789abcdef0123456789abcdef");
        let ok = Config::load_from(
            None,
            env(&[
                secret,
                ("SWITCHBOARD_CLUSTER__PEER_CIDRS", "10.0.0.0/8, fd00::/8"),
            ]),
        )
        .expect("valid");
        assert_eq!(ok.cluster.peer_networks().len(), 2);
        for (var, val, key) in [
            (
                "SWITCHBOARD_CLUSTER__PEER_CIDRS",
                "10.0.0.0/33",
                "cluster.peer_cidrs",
            ),
            (
                "SWITCHBOARD_CLUSTER__PEER_CIDRS",
                "gateways",
                "cluster.peer_cidrs",
            ),
            (
                "SWITCHBOARD_CLUSTER__FORWARD_TIMEOUT_MS",
                "25000",
                "cluster.forward_timeout_ms",
            ),
            (
                "SWITCHBOARD_CLUSTER__FORWARD_MAX_IN_FLIGHT",
                "0",
                "cluster.forward_max_in_flight",
            ),
            (
                "SWITCHBOARD_CLUSTER__FORWARD_CONNECT_TIMEOUT_MS",
                "0",
                "cluster.forward_connect_timeout_ms",
            ),
        ] {
            let err = Config::load_from(None, env(&[secret, (var, val)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{var}={val}: {err}");
        }
    }

    #[test]
    fn cookie_or_query_tokens_need_allowed_origins() {
        let secret = ("SWITCHBOARD_JWT_SECRET", "0123456789abcdef0123456789abcdef");
        let c = Config::load_from(None, env(&[secret])).unwrap();
        assert_eq!(
            c.auth.token_sources,
            vec![TokenSource::Auth, TokenSource::Header]
        );
        for sources in ["auth,cookie", "query", "header,cookie,query"] {
            let err = Config::load_from(
                None,
                env(&[secret, ("SWITCHBOARD_AUTH__TOKEN_SOURCES", sources)]),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("server.allowed_origins"), "{sources}: {err}");
            assert!(err.contains("SWITCHBOARD_ALLOWED_ORIGINS"), "{err}");
            Config::load_from(
                None,
                env(&[
                    secret,
                    ("SWITCHBOARD_AUTH__TOKEN_SOURCES", sources),
                    ("SWITCHBOARD_ALLOWED_ORIGINS", "https://app.example.com"),
                ]),
            )
            .expect("valid with an allowlist");
        }
    }

    #[test]
    fn http_limits_are_validated() {
        let secret = ("SWITCHBOARD_JWT_SECRET", "0123456789abcdef0123456789abcdef");
        for (var, val, key) in [
            (
                "SWITCHBOARD_SERVER__HEADER_READ_TIMEOUT_MS",
                "0",
                "server.header_read_timeout_ms",
            ),
            (
                "SWITCHBOARD_SERVER__BODY_READ_TIMEOUT_MS",
                "0",
                "server.body_read_timeout_ms",
            ),
            (
                "SWITCHBOARD_SERVER__MAX_HEADER_BYTES",
                "1000",
                "server.max_header_bytes",
            ),
            (
                "SWITCHBOARD_SERVER__MAX_CONNECTIONS",
                "0",
                "server.max_connections",
            ),
        ] {
            let err = Config::load_from(None, env(&[secret, (var, val)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{var}={val}: {err}");
        }
    }

    #[test]
    fn redis_keys_reach_the_settings_and_bad_ones_name_the_key() {
        let secret = ("SWITCHBOARD_JWT_SECRET", "0123456789abcdef0123456789abcdef");
        // A numeric password stays a string; lists split on commas.
        let c = Config::load_from(
            None,
            env(&[
                secret,
                ("SWITCHBOARD_REDIS__MODE", "sentinel"),
                (
                    "SWITCHBOARD_REDIS__SENTINELS",
                    "10.0.0.1:26379, 10.0.0.2:26379",
                ),
                ("SWITCHBOARD_REDIS__MASTER_NAME", "mymaster"),
                ("SWITCHBOARD_REDIS_USERNAME", "gateway"),
                ("SWITCHBOARD_REDIS_PASSWORD", "987654"),
            ]),
        )
        .expect("valid");
        assert!(c.redis.enabled());
        let s = c.redis.settings();
        assert_eq!(s.mode, RedisMode::Sentinel);
        assert_eq!(s.sentinels, vec!["10.0.0.1:26379", "10.0.0.2:26379"]);
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("987654"));
        assert_eq!(s.timeout_ms, c.redis.publish_timeout_ms);
        assert!(
            !format!("{c:?}").contains("987654"),
            "the password is printed: {c:?}"
        );

        let c = Config::load_from(
            None,
            env(&[
                secret,
                ("SWITCHBOARD_REDIS__MODE", "cluster"),
                ("SWITCHBOARD_REDIS__NODES", "10.0.0.1:7000"),
                ("SWITCHBOARD_REDIS__PUBSUB", "sharded"),
                ("SWITCHBOARD_REDIS__SUBSCRIPTION", "static"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.redis.pubsub, PubsubMode::Sharded);
        assert_eq!(c.redis.subscription, SubscriptionMode::Static);
        assert_eq!(RedisConfig::default().pubsub, PubsubMode::Classic);

        // No URL in standalone mode: the embedded bus.
        assert!(!RedisConfig::default().enabled());

        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        for (pairs, key) in [
            (
                vec![("SWITCHBOARD_REDIS__MODE", "sentinel")],
                "redis.sentinels",
            ),
            (
                vec![
                    ("SWITCHBOARD_REDIS_URL", "rediss://localhost:6380"),
                    ("SWITCHBOARD_REDIS__TLS_CA_FILE", junk.to_str().unwrap()),
                ],
                "redis.tls_ca_file",
            ),
            (
                vec![
                    ("SWITCHBOARD_REDIS_URL", "redis://localhost"),
                    ("SWITCHBOARD_REDIS__PASSWORD_FILE", "/nonexistent/pw"),
                ],
                "redis.password_file",
            ),
            (vec![("SWITCHBOARD_REDIS__MODE", "shard")], "redis.mode"),
            // Sharded pub/sub needs a Redis; only static and dynamic modes.
            (
                vec![("SWITCHBOARD_REDIS__PUBSUB", "sharded")],
                "redis.pubsub",
            ),
            (
                vec![
                    ("SWITCHBOARD_REDIS_URL", "redis://localhost"),
                    ("SWITCHBOARD_REDIS__PUBSUB", "sharded"),
                    ("SWITCHBOARD_REDIS__SUBSCRIPTION", "dynamic-private"),
                ],
                "redis.subscription",
            ),
        ] {
            let mut all = vec![secret];
            all.extend(pairs.iter().copied());
            let err = Config::load_from(None, env(&all)).unwrap_err().to_string();
            assert!(err.contains(key), "{pairs:?}: {err}");
        }
    }
}
