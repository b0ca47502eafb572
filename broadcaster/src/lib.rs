//! Publish-only client for API services: sends Socket.IO events to Switchboard gateways (and
//! to Node Socket.IO servers using `@socket.io/redis-adapter`) through Redis.
//!
//! The messages are byte-identical to what the official `@socket.io/redis-emitter` 5.x
//! publishes for the same call, so a [`Broadcaster`] can replace a Node emitter.
//!
//! ```no_run
//! use serde::Serialize;
//! use switchboard_broadcaster::{Broadcaster, PublishError};
//!
//! #[derive(Serialize)]
//! struct Ticket { id: u64, status: &'static str }
//!
//! # async fn run() -> Result<(), PublishError> {
//! let b = Broadcaster::connect("redis://127.0.0.1:6379")?;
//!
//! // One argument: any serde::Serialize.
//! let delivery = b.to_role("admin").emit("ticket_updated", &Ticket { id: 7, status: "open" }).await?;
//! println!("{} subscriber(s) got it", delivery.subscribers);
//!
//! // Several arguments: a tuple. No argument: `()`. Bytes become binary attachments.
//! b.to_user(42).except("socket-id-123").emit("notification", &("assigned", 7)).await?;
//! b.of("/admin").volatile().emit("tick", &()).await?;
//! b.to("files").emit("file", &serde_bytes::Bytes::new(b"\x00\x01")).await?;
//! b.broadcast("announcement", &serde_json::json!({"text": "maintenance at 22:00"})).await?;
//!
//! // Request channel: make sockets join/leave rooms, or disconnect them.
//! b.to_user(42).sockets_join(["room:ticket:7"]).await?;
//! b.to_user(42).disconnect_sockets(true).await?;
//!
//! // Many events in one round trip.
//! let mut batch = b.pipeline();
//! for id in 1..=3u64 {
//!     batch.emit(&b.to_user(id), "notification", &"hello")?;
//! }
//! let deliveries = batch.send().await?;
//! # Ok(()) }
//! ```
//!
//! Client events the gateways forward onto a Redis stream (`[[client.forward]] stream`) are
//! consumed with [`stream::StreamConsumer`] (a consumer group: at least once, entries a dead
//! worker left pending claimed by another).

#![warn(missing_docs)]

pub mod fleet;
mod framing;
pub mod presence;
pub mod stream;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rmpv::Value;
use serde::Serialize;
pub use switchboard_wire::sharded::SubscriptionMode;
use switchboard_wire::{
    BroadcastFlags, BroadcastOptions, Channels, ClusterBody, ClusterMessage, DisconnectRequest,
    EMITTER_UID, Request, RequestOpts, RoomsRequest, WireError, cluster::ClusterBroadcast,
    room_template::RoomTemplate, sharded::ShardedOptions,
};

pub use switchboard_redis::{Mode, RedisSettings, Secret};
pub use switchboard_wire::RESERVED_EVENTS;
pub use switchboard_wire::streams::StreamsOptions;

use framing::{Framing, FramingCache};
use switchboard_redis::{Publication, PublishKind, Publisher, Redis};

/// Settings of a [`Broadcaster`].
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcasterConfig {
    /// Redis URL, e.g. `redis://127.0.0.1:6379` or `rediss://user:pass@host:6380/0`: the
    /// standalone server, used unless `redis.url` is set or `redis.mode` is not standalone.
    pub redis_url: String,
    /// Everything else about reaching Redis: TLS files, ACL user and password (or password
    /// file), `mode = Sentinel` with `sentinels` and `master_name`, `mode = Cluster` with
    /// `nodes`. See the README's "Broadcaster and CLI" configuration. Its `timeout_ms` is
    /// replaced by `publish_timeout`.
    pub redis: RedisSettings,
    /// Channel key prefix, the `key` option of the Node adapter/emitter (`"socket.io"`).
    pub key: String,
    /// Upper bound for one publish (waiting for a connection included). Default 2 s.
    pub publish_timeout: Duration,
    /// Room of a user; `{id}` is replaced by the user id. Default `"user:{id}"`.
    pub user_room_template: String,
    /// Room of a role; `{role}` is replaced by the role name. Default `"role:{role}"`.
    pub role_room_template: String,
    /// `Some` to publish into a fleet on `@socket.io/redis-streams-adapter` 0.3 (gateways with
    /// `redis.bus = "streams"`): broadcasts and `sockets_join` / `sockets_leave` /
    /// `disconnect_sockets` are `XADD`ed to the namespace's stream (`stream_name`,
    /// `stream_count`, `max_len` as the fleet's), and [`Delivery::stream_id`] is the entry id
    /// (the offset clients recover from). `server_side_emit` stays on pub/sub. `None` (the
    /// default): classic pub/sub, as `@socket.io/redis-emitter`.
    pub streams: Option<StreamsOptions>,
    /// Ignored. Publishes are pipelined on `redis.connections` shared multiplexed connections
    /// (default 1) instead of taking a pooled connection each.
    #[deprecated(note = "publishes are pipelined on shared connections; see `redis.connections`")]
    pub pool_size: usize,
}

impl Default for BroadcasterConfig {
    #[allow(deprecated)]
    fn default() -> Self {
        BroadcasterConfig {
            redis_url: "redis://127.0.0.1:6379".into(),
            redis: RedisSettings::default(),
            key: switchboard_wire::channel::DEFAULT_KEY.into(),
            publish_timeout: Duration::from_secs(2),
            user_room_template: "user:{id}".into(),
            role_room_template: "role:{role}".into(),
            streams: None,
            pool_size: 8,
        }
    }
}

impl BroadcasterConfig {
    /// The Redis settings in effect: `redis` with `redis_url` filled in for a standalone
    /// server and the timeout taken from `publish_timeout`.
    pub fn redis_settings(&self) -> RedisSettings {
        let mut settings = self.redis.clone();
        if settings.mode == Mode::Standalone && settings.url.as_deref().is_none_or(str::is_empty) {
            settings.url = Some(self.redis_url.clone());
        }
        settings.timeout_ms = u64::try_from(self.publish_timeout.as_millis()).unwrap_or(u64::MAX);
        settings
    }
}

/// How a publish went: Redis's answer to `PUBLISH` (or one entry per message of a batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The channel the message was published on (the stream key in streams mode).
    pub channel: String,
    /// How many Redis subscribers received it (PUBLISH's integer reply). Every gateway and
    /// every Node server of the namespace counts once (pattern subscriptions included); 0
    /// means nobody was listening, so the event reached nobody. Always 0 for a stream entry.
    pub subscribers: u64,
    /// Streams mode: the id of the stream entry (`<ms>-<seq>`), which clients get as the
    /// event's recovery offset. `None` for pub/sub.
    pub stream_id: Option<String>,
}

impl Delivery {
    /// True when at least one subscriber received the message, or when it was stored in a
    /// stream (every server reading the stream gets it, now or after a reconnect).
    pub fn reached_anyone(&self) -> bool {
        self.subscribers > 0 || self.stream_id.is_some()
    }
}

/// Why a publish failed. A publish never silently drops and never hangs past the configured
/// timeout.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The configuration is unusable (bad Redis URL, unreadable TLS file, zero timeout...);
    /// the message names the setting.
    #[error("invalid broadcaster configuration: {0}")]
    Config(String),
    /// Redis could not be reached or the connection broke.
    #[error("Redis at {url} is unreachable: {reason}")]
    Unreachable {
        /// The Redis URL (or addresses), password removed.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The publish did not complete within the configured timeout.
    #[error("publishing to Redis at {url} timed out after {after:?}{}", match .last_error {
        Some(e) => format!(" (last connection error: {e})"),
        None => String::new(),
    })]
    Timeout {
        /// The Redis URL (or addresses), password removed.
        url: String,
        /// The configured timeout.
        after: Duration,
        /// Why no connection could be made while waiting, if that was the cause.
        last_error: Option<String>,
    },
    /// Redis refused the credentials (`WRONGPASS`, `NOAUTH`).
    #[error("Redis at {url} refused the credentials{}: {reason}", match .user {
        Some(u) => format!(" for user \"{u}\""),
        None => String::new(),
    })]
    Auth {
        /// The Redis URL (or addresses), password removed.
        url: String,
        /// The ACL user, if one was given.
        user: Option<String>,
        /// Redis's answer, and what to check.
        reason: String,
    },
    /// The TLS handshake failed (certificate not trusted or not for this host, client
    /// certificate refused or missing).
    #[error("TLS with Redis at {url} failed: {reason}")]
    Tls {
        /// The Redis URL (or addresses), password removed.
        url: String,
        /// What the TLS layer reported, and which setting to check.
        reason: String,
    },
    /// Redis answered with an error (e.g. NOPERM for an ACL user, READONLY from a replica).
    #[error("Redis refused the publish: {0}")]
    Redis(String),
    /// The event name is reserved by Socket.IO.
    #[error("\"{0}\" is a reserved event name")]
    ReservedEvent(String),
    /// The arguments could not be serialized.
    #[error("cannot encode the event arguments: {0}")]
    Encode(#[from] WireError),
}

impl PublishError {
    /// True for errors caused by Redis availability (unreachable or timed out), as opposed to
    /// bad input, configuration, credentials or certificates.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            PublishError::Unreachable { .. } | PublishError::Timeout { .. }
        )
    }
}

impl From<switchboard_redis::Error> for PublishError {
    fn from(e: switchboard_redis::Error) -> Self {
        use switchboard_redis::Error as E;
        match e {
            E::Unreachable { target, reason } => PublishError::Unreachable {
                url: target,
                reason,
            },
            E::Timeout {
                target,
                after,
                last_error,
            } => PublishError::Timeout {
                url: target,
                after,
                last_error,
            },
            E::Auth {
                target,
                user,
                reason,
            } => PublishError::Auth {
                url: target,
                user,
                reason: format!(
                    "{reason}; check the user and password (redis.username, redis.password or password_file, or the URL)"
                ),
            },
            E::Tls { target, reason } => PublishError::Tls {
                url: target,
                reason,
            },
            e @ E::Server { .. } => PublishError::Redis(e.to_string()),
        }
    }
}

/// A message ready to publish: a channel and its payload. What every operator method
/// computes before talking to Redis ([`BroadcastOperator::encode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Redis channel.
    pub channel: String,
    /// Message bytes.
    pub payload: Vec<u8>,
}

struct Inner {
    publisher: Publisher,
    config: BroadcasterConfig,
    channels: Channels,
    framings: FramingCache,
    user_room: RoomTemplate,
    role_room: RoomTemplate,
}

/// Publishes Socket.IO events to Redis. Cheap to clone (an `Arc` inside); share one per process.
#[derive(Clone)]
pub struct Broadcaster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broadcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcaster")
            .field("redis", &self.inner.publisher.target())
            .field("key", &self.inner.config.key)
            .finish()
    }
}

impl Broadcaster {
    /// A broadcaster for `redis_url` with default settings.
    ///
    /// Validates the URL and creates the connection pool; connections are opened on the first
    /// publish (use [`Broadcaster::ping`] to check Redis at startup). Needs no runtime, but
    /// publishing needs a Tokio runtime.
    pub fn connect(redis_url: impl Into<String>) -> Result<Self, PublishError> {
        Self::from_config(BroadcasterConfig {
            redis_url: redis_url.into(),
            ..Default::default()
        })
    }

    /// A broadcaster with explicit settings. Reads the TLS and password files the settings
    /// name; an error names the setting that is wrong.
    pub fn from_config(config: BroadcasterConfig) -> Result<Self, PublishError> {
        if config.publish_timeout.is_zero() {
            return Err(PublishError::Config("publish_timeout must be > 0".into()));
        }
        let user_room =
            one_variable_template("user_room_template", &config.user_room_template, "id")?;
        let role_room =
            one_variable_template("role_room_template", &config.role_room_template, "role")?;
        let config_error =
            |e: switchboard_redis::SettingsError| PublishError::Config(e.to_string());
        let redis = Redis::new(&config.redis_settings()).map_err(config_error)?;
        let publisher = redis.publisher().map_err(config_error)?;
        Ok(Broadcaster {
            inner: Arc::new(Inner {
                publisher,
                channels: Channels::new(config.key.clone()),
                framings: FramingCache::default(),
                user_room,
                role_room,
                config,
            }),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &BroadcasterConfig {
        &self.inner.config
    }

    /// An operator on the default namespace `/` with no targeting (everyone).
    pub fn operator(&self) -> BroadcastOperator {
        BroadcastOperator {
            broadcaster: self.clone(),
            nsp: Cow::Borrowed("/"),
            rooms: Vec::new(),
            except: Vec::new(),
            flags: BroadcastFlags::default(),
            framing: OnceLock::new(),
        }
    }

    /// Target namespace `nsp` (a leading `/` is added if missing, like the Node emitter).
    pub fn of(&self, nsp: &str) -> BroadcastOperator {
        self.operator().of(nsp)
    }

    /// Target a room.
    pub fn to(&self, room: impl Into<String>) -> BroadcastOperator {
        self.operator().to(room)
    }

    /// Target several rooms (sockets in any of them, each socket once).
    pub fn to_rooms<I, S>(&self, rooms: I) -> BroadcastOperator
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.operator().to_rooms(rooms)
    }

    /// Target a user's room (`user_room_template`, `user:{id}` by default).
    pub fn to_user(&self, id: impl std::fmt::Display) -> BroadcastOperator {
        self.operator().to_user(id)
    }

    /// Target a role's room (`role_room_template`, `role:{role}` by default).
    pub fn to_role(&self, role: impl std::fmt::Display) -> BroadcastOperator {
        self.operator().to_role(role)
    }

    /// Exclude a room or a socket id.
    pub fn except(&self, room: impl Into<String>) -> BroadcastOperator {
        self.operator().except(room)
    }

    /// Mark the event volatile (clients that cannot take it right now miss it).
    pub fn volatile(&self) -> BroadcastOperator {
        self.operator().volatile()
    }

    /// Emit to every client of the default namespace.
    pub async fn broadcast<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<Delivery, PublishError> {
        self.operator().emit(event, args).await
    }

    /// Send an event to the Socket.IO servers themselves (`serverSideEmit`, no ack), on the
    /// default namespace. `args` follow the rules of [`BroadcastOperator::emit`].
    pub async fn server_side_emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<Delivery, PublishError> {
        self.operator().server_side_emit(event, args).await
    }

    /// A batch of messages sent in one Redis round trip.
    pub fn pipeline(&self) -> Batch {
        Batch {
            broadcaster: self.clone(),
            items: Vec::new(),
        }
    }

    /// Publishes already encoded messages in one pipeline (one per slot in a cluster); one
    /// [`Delivery`] per message, in order. All or nothing from the caller's point of view: on
    /// error, any subset may have been published.
    pub async fn emit_many(
        &self,
        messages: impl IntoIterator<Item = Encoded>,
    ) -> Result<Vec<Delivery>, PublishError> {
        self.publish_many(PublishKind::Classic, messages).await
    }

    /// Publishes one encoded message (`PUBLISH`).
    pub async fn publish(&self, message: Encoded) -> Result<Delivery, PublishError> {
        self.publish_one(PublishKind::Classic, message).await
    }

    /// Publishes one encoded message on a shard channel (`SPUBLISH`, Redis >= 7): in a
    /// cluster it goes to the shard that owns the channel's slot, and only subscribers there
    /// (`SSUBSCRIBE`) receive it. For fleets on sharded pub/sub.
    pub async fn spublish(&self, message: Encoded) -> Result<Delivery, PublishError> {
        self.publish_one(PublishKind::Sharded, message).await
    }

    /// [`Self::emit_many`] with `SPUBLISH`.
    pub async fn spublish_many(
        &self,
        messages: impl IntoIterator<Item = Encoded>,
    ) -> Result<Vec<Delivery>, PublishError> {
        self.publish_many(PublishKind::Sharded, messages).await
    }

    /// Streams mode: the stream entry for an encoded message, if it has a stream form.
    fn stream_entry(&self, message: &Encoded) -> Option<switchboard_wire::streams::XAdd> {
        let streams = self.inner.config.streams.as_ref()?;
        let msg = switchboard_wire::streams::from_classic(
            &self.inner.config.key,
            &message.channel,
            &message.payload,
        )?;
        match streams.encode_message(&msg) {
            switchboard_wire::streams::Outgoing::Xadd(xadd) => Some(xadd),
            switchboard_wire::streams::Outgoing::Publish { .. } => None,
        }
    }

    /// `XADD`, retried within the publish timeout when Redis is briefly unavailable.
    async fn append(
        &self,
        xadd: switchboard_wire::streams::XAdd,
    ) -> Result<Delivery, PublishError> {
        let id = self.inner.publisher.xadd(&xadd.args()[1..]).await?;
        Ok(Delivery {
            channel: xadd.stream,
            subscribers: 0,
            stream_id: Some(id),
        })
    }

    async fn publish_one(
        &self,
        kind: PublishKind,
        message: Encoded,
    ) -> Result<Delivery, PublishError> {
        if let Some(xadd) = self.stream_entry(&message) {
            return self.append(xadd).await;
        }
        let Encoded { channel, payload } = message;
        let subscribers = self
            .inner
            .publisher
            .publish_kind(kind, channel.as_bytes(), &payload)
            .await?;
        Ok(Delivery {
            channel,
            subscribers,
            stream_id: None,
        })
    }

    async fn publish_many(
        &self,
        kind: PublishKind,
        messages: impl IntoIterator<Item = Encoded>,
    ) -> Result<Vec<Delivery>, PublishError> {
        let messages: Vec<Encoded> = messages.into_iter().collect();
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        if self.inner.config.streams.is_some() {
            // In order, one entry after the other: a stream keeps the order.
            let mut deliveries = Vec::with_capacity(messages.len());
            for m in messages {
                deliveries.push(self.publish_one(kind, m).await?);
            }
            return Ok(deliveries);
        }
        let batch: Vec<Publication<'_>> = messages
            .iter()
            .map(|m| Publication {
                kind,
                channel: m.channel.as_bytes(),
                payload: &m.payload,
            })
            .collect();
        let counts = self.inner.publisher.publish_batch(&batch).await?;
        drop(batch);
        Ok(messages
            .into_iter()
            .zip(counts)
            .map(|(m, subscribers)| Delivery {
                channel: m.channel,
                subscribers,
                stream_id: None,
            })
            .collect())
    }

    /// Checks that Redis answers (`PING`) within the publish timeout, with these credentials
    /// and certificates: a startup check. Publishing itself never sends `PING`.
    pub async fn ping(&self) -> Result<(), PublishError> {
        Ok(self.inner.publisher.ping().await?)
    }
}

/// Targeting being built, like the emitter's `BroadcastOperator`: rooms, exclusions,
/// namespace and flags, then an action (`emit`, `sockets_join`, ...). Each builder method
/// returns a new operator; cloning is cheap.
#[derive(Debug, Clone)]
pub struct BroadcastOperator {
    broadcaster: Broadcaster,
    /// Borrowed for the default namespace: most operators never allocate it.
    nsp: Cow<'static, str>,
    rooms: Vec<String>,
    except: Vec<String>,
    flags: BroadcastFlags,
    /// The encoded message around its data, computed on the first `encode` and reused by
    /// later ones on this operator (and its clones); reset by every builder method.
    framing: OnceLock<Arc<Framing>>,
}

/// Parses a room template that must read `{var}` and nothing else (the
/// gateway's room-template engine, `switchboard_wire::room_template`).
pub fn one_variable_template(
    key: &str,
    text: &str,
    var: &str,
) -> Result<RoomTemplate, PublishError> {
    let template =
        RoomTemplate::parse(text).map_err(|e| PublishError::Config(format!("{key}: {e}")))?;
    if !template.only_uses(var) {
        return Err(PublishError::Config(format!(
            "{key} must contain {{{var}}} and no other placeholder (got {text:?})"
        )));
    }
    Ok(template)
}

/// `template` with `{var}` replaced by `value` (checked at construction to
/// be its only variable).
fn fill_one(template: &RoomTemplate, var: &str, value: impl std::fmt::Display) -> String {
    template
        .fill(var, value)
        .unwrap_or_else(|| template.as_str().to_string())
}

/// Checks `data` is `[event, ...args]` with an event name that is not reserved.
fn check_event_data(data: &Value) -> Result<(), PublishError> {
    match data {
        Value::Array(items) => match items.first() {
            Some(Value::String(s)) => {
                if let Some(ev) = s.as_str()
                    && RESERVED_EVENTS.contains(&ev)
                {
                    return Err(PublishError::ReservedEvent(ev.to_string()));
                }
                Ok(())
            }
            _ => Err(PublishError::Encode(WireError::InvalidEvent(
                "data must start with the event name".into(),
            ))),
        },
        _ => Err(PublishError::Encode(WireError::InvalidEvent(
            "data must be an array [event, ...args]".into(),
        ))),
    }
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

impl BroadcastOperator {
    /// Switch to namespace `nsp` (a leading `/` is added if missing).
    pub fn of(mut self, nsp: &str) -> Self {
        self.framing = OnceLock::new();
        self.nsp = Cow::Owned(if nsp.starts_with('/') {
            nsp.to_string()
        } else {
            format!("/{nsp}")
        });
        self
    }

    /// Add a target room.
    pub fn to(mut self, room: impl Into<String>) -> Self {
        self.framing = OnceLock::new();
        push_unique(&mut self.rooms, room.into());
        self
    }

    /// Add several target rooms.
    pub fn to_rooms<I, S>(mut self, rooms: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.framing = OnceLock::new();
        for r in rooms {
            push_unique(&mut self.rooms, r.into());
        }
        self
    }

    /// Add a user's room.
    pub fn to_user(self, id: impl std::fmt::Display) -> Self {
        let room = self.user_room(id);
        self.to(room)
    }

    /// Add a role's room.
    pub fn to_role(self, role: impl std::fmt::Display) -> Self {
        let room = self.role_room(role);
        self.to(room)
    }

    /// The room name of a user under the configured template.
    pub fn user_room(&self, id: impl std::fmt::Display) -> String {
        fill_one(&self.broadcaster.inner.user_room, "id", id)
    }

    /// The room name of a role under the configured template.
    pub fn role_room(&self, role: impl std::fmt::Display) -> String {
        fill_one(&self.broadcaster.inner.role_room, "role", role)
    }

    /// Exclude a room or a socket id.
    pub fn except(mut self, room: impl Into<String>) -> Self {
        self.framing = OnceLock::new();
        push_unique(&mut self.except, room.into());
        self
    }

    /// Exclude several rooms / socket ids.
    pub fn except_rooms<I, S>(mut self, rooms: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.framing = OnceLock::new();
        for r in rooms {
            push_unique(&mut self.except, r.into());
        }
        self
    }

    /// Volatile: clients that cannot take the event right now miss it.
    pub fn volatile(mut self) -> Self {
        self.framing = OnceLock::new();
        self.flags.volatile = true;
        self
    }

    /// Per-message compression flag.
    pub fn compress(mut self, compress: bool) -> Self {
        self.framing = OnceLock::new();
        self.flags.compress = Some(compress);
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.nsp
    }

    /// The target rooms.
    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    fn opts(&self) -> RequestOpts {
        RequestOpts {
            rooms: self.rooms.clone(),
            except: self.except.clone(),
        }
    }

    fn channels(&self) -> &Channels {
        &self.broadcaster.inner.channels
    }

    /// The message `emit` would publish, without publishing: exactly what the Node emitter
    /// publishes for the same call (channel and bytes).
    ///
    /// `args` is any `serde::Serialize`: a tuple is several arguments, `()` none, anything else
    /// one argument (see [`switchboard_wire::msgpack::to_args`]). Byte strings
    /// (`serde_bytes`, `bytes::Bytes`) become binary attachments.
    pub fn encode<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<Encoded, PublishError> {
        if RESERVED_EVENTS.contains(&event) {
            return Err(PublishError::ReservedEvent(event.to_string()));
        }
        let args = switchboard_wire::msgpack::to_args(args)?;
        let mut data = Vec::with_capacity(1 + args.len());
        data.push(Value::from(event));
        data.extend(args);
        self.encode_values(Value::Array(data))
    }

    /// Like [`Self::encode`] with `data = [event, ...args]` already built (e.g. from JSON).
    pub fn encode_values(&self, data: Value) -> Result<Encoded, PublishError> {
        check_event_data(&data)?;
        let framing = self.framing.get_or_init(|| {
            self.broadcaster.inner.framings.get(
                framing::Target {
                    nsp: &self.nsp,
                    rooms: &self.rooms,
                    except: &self.except,
                    flags: &self.flags,
                },
                self.channels(),
            )
        });
        Ok(framing.encode(&data))
    }

    /// The message a Node server on `@socket.io/redis-adapter`'s `createShardedAdapter` with
    /// `subscriptionMode` `mode` publishes for the same broadcast, for fleets on sharded
    /// pub/sub (which the official emitter cannot reach): the `ClusterMessage`
    /// `{type: 3, data: {packet, opts}, uid: "emitter", nsp}` as JSON (notepack when it holds
    /// binary), on the room's shard channel when exactly one room is targeted and `mode` has
    /// room channels, else on the namespace channel. Send it with [`Broadcaster::spublish`].
    pub fn encode_sharded<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
        mode: SubscriptionMode,
    ) -> Result<Encoded, PublishError> {
        if RESERVED_EVENTS.contains(&event) {
            return Err(PublishError::ReservedEvent(event.to_string()));
        }
        let mut data = vec![Value::from(event)];
        data.extend(switchboard_wire::msgpack::to_args(args)?);
        self.encode_sharded_values(Value::Array(data), mode)
    }

    /// Like [`Self::encode_sharded`] with `data = [event, ...args]` already built.
    pub fn encode_sharded_values(
        &self,
        data: Value,
        mode: SubscriptionMode,
    ) -> Result<Encoded, PublishError> {
        check_event_data(&data)?;
        let msg = ClusterMessage::new(
            switchboard_wire::EMITTER_UID,
            self.nsp.as_ref(),
            ClusterBody::Broadcast(ClusterBroadcast::new(
                data,
                BroadcastOptions {
                    rooms: self.rooms.clone(),
                    except: self.except.clone(),
                    flags: self.flags.clone(),
                },
            )),
        );
        let options = ShardedOptions::new(self.broadcaster.inner.config.key.clone(), mode);
        Ok(Encoded {
            channel: options.channel_for(&msg),
            payload: switchboard_wire::sharded::encode(&msg),
        })
    }

    /// [`Self::encode_sharded`], then `SPUBLISH`.
    pub async fn emit_sharded<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
        mode: SubscriptionMode,
    ) -> Result<Delivery, PublishError> {
        let m = self.encode_sharded(event, args, mode)?;
        self.broadcaster.spublish(m).await
    }

    /// Emit `event` with `args` to the targeted clients. See [`Self::encode`] for `args`.
    pub async fn emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<Delivery, PublishError> {
        let m = self.encode(event, args)?;
        self.broadcaster.publish(m).await
    }

    fn request(&self, req: &Request) -> Encoded {
        Encoded {
            channel: self.channels().request(&self.nsp),
            payload: switchboard_wire::encode_request(req),
        }
    }

    /// The request `sockets_join` would publish.
    pub fn encode_sockets_join<I, S>(&self, rooms: I) -> Encoded
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.request(&Request::RemoteJoin(RoomsRequest {
            opts: Some(self.opts()),
            rooms: rooms.into_iter().map(Into::into).collect(),
            ..Default::default()
        }))
    }

    /// The request `sockets_leave` would publish.
    pub fn encode_sockets_leave<I, S>(&self, rooms: I) -> Encoded
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.request(&Request::RemoteLeave(RoomsRequest {
            opts: Some(self.opts()),
            rooms: rooms.into_iter().map(Into::into).collect(),
            ..Default::default()
        }))
    }

    /// The request `disconnect_sockets` would publish.
    pub fn encode_disconnect_sockets(&self, close: bool) -> Encoded {
        self.request(&Request::RemoteDisconnect(DisconnectRequest {
            opts: Some(self.opts()),
            close,
            ..Default::default()
        }))
    }

    /// The request `server_side_emit` would publish.
    pub fn encode_server_side_emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<Encoded, PublishError> {
        let mut data = vec![Value::from(event)];
        data.extend(switchboard_wire::msgpack::to_args(args)?);
        Ok(self.request(&Request::ServerSideEmit {
            uid: Some(EMITTER_UID.into()),
            request_id: None,
            data,
        }))
    }

    /// Make the targeted sockets join `rooms` (on every server).
    pub async fn sockets_join<I, S>(&self, rooms: I) -> Result<Delivery, PublishError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.broadcaster
            .publish(self.encode_sockets_join(rooms))
            .await
    }

    /// Make the targeted sockets leave `rooms` (on every server).
    pub async fn sockets_leave<I, S>(&self, rooms: I) -> Result<Delivery, PublishError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.broadcaster
            .publish(self.encode_sockets_leave(rooms))
            .await
    }

    /// Disconnect the targeted sockets; `close` also closes their underlying connection.
    pub async fn disconnect_sockets(&self, close: bool) -> Result<Delivery, PublishError> {
        self.broadcaster
            .publish(self.encode_disconnect_sockets(close))
            .await
    }

    /// Send an event to the servers of this namespace (`serverSideEmit`, without ack).
    pub async fn server_side_emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<Delivery, PublishError> {
        let m = self.encode_server_side_emit(event, args)?;
        self.broadcaster.publish(m).await
    }
}

/// Several messages published in one Redis round trip (a pipeline).
#[derive(Debug)]
pub struct Batch {
    broadcaster: Broadcaster,
    items: Vec<Encoded>,
}

impl Batch {
    /// Queue `op.emit(event, args)`.
    pub fn emit<T: Serialize + ?Sized>(
        &mut self,
        op: &BroadcastOperator,
        event: &str,
        args: &T,
    ) -> Result<&mut Self, PublishError> {
        self.items.push(op.encode(event, args)?);
        Ok(self)
    }

    /// Queue an already encoded message.
    pub fn push(&mut self, message: Encoded) -> &mut Self {
        self.items.push(message);
        self
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Publish everything; one [`Delivery`] per message, in order.
    pub async fn send(self) -> Result<Vec<Delivery>, PublishError> {
        self.broadcaster.emit_many(self.items).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Broadcaster {
        Broadcaster::connect("redis://127.0.0.1:1").unwrap()
    }

    #[test]
    fn targeting() {
        let b = b();
        let op = b
            .to("a")
            .to("a")
            .to_rooms(["b", "a"])
            .except("x")
            .except("x");
        assert_eq!(op.rooms(), ["a", "b"]);
        assert_eq!(b.to_user(42).rooms(), ["user:42"]);
        assert_eq!(b.to_role("admin").rooms(), ["role:admin"]);
        let t = one_variable_template("t", "{id}/x/{id}", "id").unwrap();
        assert_eq!(fill_one(&t, "id", 7), "7/x/7");
        assert!(one_variable_template("t", "plain", "id").is_err());
        assert!(one_variable_template("t", "u:{id}:{x}", "id").is_err());
        assert_eq!(b.of("chat").namespace(), "/chat");
        assert_eq!(b.of("/chat").namespace(), "/chat");
        let e = b.to_user(1).encode("ev", &()).unwrap();
        assert_eq!(e.channel, "socket.io#/#user:1#");
        let e = b.to_rooms(["a", "b"]).encode("ev", &()).unwrap();
        assert_eq!(e.channel, "socket.io#/#");
        assert!(matches!(
            b.operator().encode("disconnect", &()),
            Err(PublishError::ReservedEvent(_))
        ));
        assert!(b.operator().encode_values(Value::Nil).is_err());
        assert!(
            b.operator()
                .encode_values(Value::Array(vec![Value::from(1)]))
                .is_err()
        );
    }

    #[test]
    fn config_validation_and_redaction() {
        assert!(Broadcaster::connect("not a url").is_err());
        assert!(
            Broadcaster::from_config(BroadcasterConfig {
                publish_timeout: Duration::ZERO,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Broadcaster::from_config(BroadcasterConfig {
                user_room_template: "user".into(),
                ..Default::default()
            })
            .is_err()
        );
        let err = Broadcaster::from_config(BroadcasterConfig {
            redis_url: "rediss://u:secret@h:1".into(),
            redis: RedisSettings {
                tls_ca_file: Some("/nonexistent/ca.pem".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`redis.tls_ca_file`: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
        let b = Broadcaster::connect("redis://u:secret@h:1").unwrap();
        assert!(!format!("{b:?}").contains("secret"), "{b:?}");
        // A sentinel setup ignores the default standalone URL.
        let sentinel = BroadcasterConfig {
            redis: RedisSettings {
                mode: Mode::Sentinel,
                sentinels: vec!["127.0.0.1:26379".into()],
                master_name: Some("mymaster".into()),
                ..Default::default()
            },
            publish_timeout: Duration::from_millis(1500),
            ..Default::default()
        };
        let settings = sentinel.redis_settings();
        assert_eq!(settings.url, None);
        assert_eq!(settings.timeout_ms, 1500);
        assert!(Broadcaster::from_config(sentinel).is_ok());
        let b = Broadcaster::from_config(BroadcasterConfig {
            key: "myapp".into(),
            user_room_template: "u-{id}".into(),
            role_room_template: "r-{role}".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            b.to_user(1).encode("e", &()).unwrap().channel,
            "myapp#/#u-1#"
        );
        assert_eq!(b.to_role("x").rooms(), ["r-x"]);
    }
}
