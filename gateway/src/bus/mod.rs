//! The bus that brings events in from API services (and from other
//! gateways and Node servers), and carries client events out.
//!
//! Two implementations behind one type: Redis pub/sub in the
//! `@socket.io/redis-adapter` format when a Redis is configured (`redis.url`,
//! or sentinel / cluster mode), and an in-memory bus otherwise (the embedded
//! default: one gateway alone).
//! Either way the gateway sees only channels and payload bytes through
//! [`BusHandler`]; decoding is the session layer's job.

mod memory;
mod publish_health;
mod redis;
pub mod sharded;
mod store_link;
mod streams;

pub use store_link::StoreLink;
pub use streams::{StreamEntry, StreamsBus};

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{config::RedisConfig, metrics::Metrics};

/// What the bus delivers to, and what it subscribes for.
pub trait BusHandler: Send + Sync + 'static {
    /// The exact channels to SUBSCRIBE to.
    fn channels(&self) -> Vec<String>;
    /// The glob patterns to PSUBSCRIBE to (`socket.io#/#*`).
    fn patterns(&self) -> Vec<String>;
    /// A message arrived on `channel`.
    fn on_bus_message(&self, channel: &str, payload: Bytes);
    /// Sharded pub/sub: the shard channels always subscribed (namespace
    /// and own channels).
    fn shard_channels(&self) -> Vec<String> {
        Vec::new()
    }
    /// Sharded pub/sub: a message arrived on shard channel `channel`.
    fn on_shard_message(&self, channel: &str, payload: Bytes) {
        let _ = (channel, payload);
    }
    /// Sharded pub/sub, dynamic mode: whether `room` of `nsp` has local
    /// sockets (its channel is subscribed while it does).
    fn has_local_room(&self, nsp: &str, room: &str) -> bool {
        let _ = (nsp, room);
        false
    }
    /// Streams mode: an entry read from `stream`, in stream order.
    fn on_stream_entry(&self, _stream: &str, _entry: &StreamEntry) {}
}

/// Why a publish failed. Publishing never waits longer than
/// `redis.publish_timeout_ms`.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("redis is unreachable: {0}")]
    Unreachable(String),
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
    #[error("redis refused the command: {0}")]
    Command(String),
    /// The `[redis]` settings cannot work (caught by config validation first).
    #[error("{0}")]
    Config(String),
}

/// The bus state reported by `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct BusStatus {
    /// `embedded` or `redis`.
    pub mode: &'static str,
    /// Subscribed and receiving; always true for the embedded bus.
    pub subscribed: bool,
    /// Channels and patterns subscribed to.
    pub subscriptions: usize,
    /// Reconnects since start.
    pub reconnects: u64,
    /// The last connection error, while disconnected.
    pub last_error: Option<String>,
    /// The last publish into the bus (or `/readyz`'s probe, when none
    /// ended lately) succeeded; always true for the embedded bus.
    pub publishing: bool,
    /// Why the last publish failed, while `publishing` is false.
    pub publish_error: Option<String>,
}

enum Kind {
    Memory(memory::MemoryBus),
    Redis(Box<redis::RedisBus>),
    Streams(Box<StreamsBus>),
}

/// The gateway's bus, shared by the session layer and the publish API.
pub struct Bus {
    kind: Kind,
    /// Sharded pub/sub, when `redis.pubsub = "sharded"`.
    sharded: Option<sharded::Sharded>,
}

impl Bus {
    /// The embedded in-memory bus.
    pub fn memory() -> Bus {
        Bus {
            kind: Kind::Memory(memory::MemoryBus::default()),
            sharded: None,
        }
    }

    /// A Redis bus; connects lazily, so a gateway starts (not ready) while
    /// Redis is down and becomes ready once it is back.
    pub fn redis(config: &RedisConfig, metrics: Metrics) -> Result<Bus, BusError> {
        let bus = redis::RedisBus::new(config, metrics.clone())?;
        let sharded = (config.pubsub == crate::config::PubsubMode::Sharded)
            .then(|| {
                bus.subscriber()
                    .map(|s| sharded::Sharded::new(config, s, metrics))
            })
            .flatten();
        Ok(Bus {
            kind: Kind::Redis(Box::new(bus)),
            sharded,
        })
    }

    /// The sharded pub/sub side, when `redis.pubsub = "sharded"`.
    pub fn sharded(&self) -> Option<&sharded::Sharded> {
        self.sharded.as_ref()
    }

    /// Builds the bus the config asks for. The embedded bus is up from the
    /// start (`switchboard_bus_up` and `switchboard_bus_publish_up` 1); a
    /// Redis bus once it has subscribed.
    pub fn from_config(config: &RedisConfig, metrics: Metrics) -> Result<Bus, BusError> {
        if config.enabled() && config.bus == crate::config::BusMode::Streams {
            Ok(Bus {
                kind: Kind::Streams(Box::new(StreamsBus::new(config, metrics)?)),
                sharded: None,
            })
        } else if config.enabled() {
            Bus::redis(config, metrics)
        } else {
            metrics.bus_up.set(1);
            metrics.bus_publish_up.set(1);
            Ok(Bus::memory())
        }
    }

    /// Builds the bus and checks Redis once (see [`Bus::ping`]). Credentials
    /// or TLS that Redis refuses stop the start with the error, since
    /// retrying cannot fix them; a Redis that is down or slow does not: the
    /// gateway starts unready and becomes ready when Redis is back.
    pub async fn connect(config: &RedisConfig, metrics: Metrics) -> Result<Bus, BusError> {
        let bus = Bus::from_config(config, metrics)?;
        match bus.ping().await {
            Ok(()) => {}
            Err(
                e @ (switchboard_redis::Error::Auth { .. } | switchboard_redis::Error::Tls { .. }),
            ) => {
                return Err(BusError::Config(format!("cannot start: {e}")));
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis is not answering at start; starting unready, /readyz turns ready once subscribed");
            }
        }
        Ok(bus)
    }

    /// What the bus talks to, for the startup log: `embedded`, or the Redis
    /// (URL or addresses, password removed).
    pub fn describe(&self) -> &str {
        match &self.kind {
            Kind::Memory(_) => "embedded",
            Kind::Redis(r) => r.describe(),
            Kind::Streams(s) => s.pubsub().describe(),
        }
    }

    /// Checks once, at start, that Redis answers with these credentials
    /// (one `PING`; publishing never sends one). The embedded bus has
    /// nothing to check.
    pub async fn ping(&self) -> Result<(), switchboard_redis::Error> {
        match &self.kind {
            Kind::Memory(_) => Ok(()),
            Kind::Redis(r) => r.ping().await,
            Kind::Streams(s) => s.pubsub().ping().await,
        }
    }

    /// Starts delivering to `handler` until `shutdown` is cancelled.
    pub fn start(
        &self,
        handler: Arc<dyn BusHandler>,
        shutdown: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        match &self.kind {
            Kind::Memory(m) => {
                m.set_handler(handler);
                None
            }
            Kind::Redis(r) => {
                let classic = r.start(handler.clone(), shutdown.clone());
                let shards = self.sharded.as_ref().map(|s| s.start(handler, shutdown));
                Some(tokio::spawn(async move {
                    let _ = classic.await;
                    if let Some(shards) = shards {
                        let _ = shards.await;
                    }
                }))
            }
            Kind::Streams(s) => Some(s.start(handler, shutdown)),
        }
    }

    /// `SPUBLISH`es `payload` on shard channel `channel`; returns how many
    /// subscribers received it. The embedded bus has no shard channels.
    pub async fn spublish(&self, channel: &str, payload: Vec<u8>) -> Result<usize, BusError> {
        match &self.kind {
            Kind::Memory(_) => Err(BusError::Config("sharded pub/sub needs a Redis".into())),
            Kind::Redis(r) => r.spublish(channel, &payload).await,
            Kind::Streams(_) => Err(BusError::Config(
                "sharded pub/sub cannot be combined with redis.bus = \"streams\"".into(),
            )),
        }
    }

    /// [`Bus::publish_many`] with `SPUBLISH`.
    pub async fn spublish_many(
        &self,
        messages: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<usize>, BusError> {
        match &self.kind {
            Kind::Memory(_) => Err(BusError::Config("sharded pub/sub needs a Redis".into())),
            Kind::Redis(r) => {
                r.publish_many_kind(switchboard_redis::PublishKind::Sharded, &messages)
                    .await
            }
            Kind::Streams(_) => Err(BusError::Config(
                "sharded pub/sub cannot be combined with redis.bus = \"streams\"".into(),
            )),
        }
    }

    /// Publishes `payload` on `channel`; returns how many subscribers
    /// received it.
    pub async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<usize, BusError> {
        match &self.kind {
            Kind::Memory(m) => Ok(m.publish(channel, payload.into())),
            Kind::Redis(r) => r.publish(channel, &payload).await,
            Kind::Streams(s) => s.pubsub().publish(channel, &payload).await,
        }
    }

    /// Publishes every `(channel, payload)` in one pipeline (one round
    /// trip); the receiver counts, in order. On error any subset may have
    /// been published.
    pub async fn publish_many(
        &self,
        messages: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<usize>, BusError> {
        match &self.kind {
            Kind::Memory(m) => Ok(messages
                .into_iter()
                .map(|(channel, payload)| m.publish(&channel, payload.into()))
                .collect()),
            Kind::Redis(r) => r.publish_many(&messages).await,
            Kind::Streams(s) => s.pubsub().publish_many(&messages).await,
        }
    }

    /// Claims `tag` in the peer registry hash `hash` with `entry` if no
    /// entry holds it; false if one does.
    ///
    /// The bus runs no raw Redis command: besides pub/sub it offers only
    /// these typed operations, the four `registry_*` ones being the peer
    /// directory's storage ([`crate::peer_directory`]). All use the
    /// publisher's pipelined connection, within `redis.publish_timeout_ms`;
    /// the embedded bus has no Redis and answers each with an error.
    pub async fn registry_claim(
        &self,
        hash: &str,
        tag: &str,
        entry: &str,
    ) -> Result<bool, BusError> {
        match &self.kind {
            Kind::Memory(_) => Err(no_redis()),
            Kind::Redis(r) => r.hash_set_nx(hash, tag, entry).await,
            Kind::Streams(s) => s.pubsub().hash_set_nx(hash, tag, entry).await,
        }
    }

    /// Writes (or overwrites) `tag`'s entry in the registry hash.
    pub async fn registry_write(&self, hash: &str, tag: &str, entry: &str) -> Result<(), BusError> {
        match &self.kind {
            Kind::Memory(_) => Err(no_redis()),
            Kind::Redis(r) => r.hash_set(hash, tag, entry).await,
            Kind::Streams(s) => s.pubsub().hash_set(hash, tag, entry).await,
        }
    }

    /// Every `(tag, entry)` in the registry hash.
    pub async fn registry_entries(&self, hash: &str) -> Result<HashMap<String, String>, BusError> {
        match &self.kind {
            Kind::Memory(_) => Err(no_redis()),
            Kind::Redis(r) => r.hash_get_all(hash).await,
            Kind::Streams(s) => s.pubsub().hash_get_all(hash).await,
        }
    }

    /// Removes the entries of `tags` from the registry hash (none: no-op).
    pub async fn registry_remove(&self, hash: &str, tags: &[String]) -> Result<(), BusError> {
        if tags.is_empty() {
            return Ok(());
        }
        match &self.kind {
            Kind::Memory(_) => Err(no_redis()),
            Kind::Redis(r) => r.hash_del(hash, tags).await,
            Kind::Streams(s) => s.pubsub().hash_del(hash, tags).await,
        }
    }

    /// How many clients subscribe to `channel` on Redis (this gateway
    /// included, if it does); the admin UI asks before a fleet-wide fetch.
    /// The embedded bus has no other subscribers and answers with an error.
    pub async fn subscribers(&self, channel: &str) -> Result<usize, BusError> {
        match &self.kind {
            Kind::Memory(_) => Err(no_redis()),
            Kind::Redis(r) => r.subscribers(channel).await,
            Kind::Streams(s) => s.pubsub().subscribers(channel).await,
        }
    }

    /// Saves an admin UI login session under `key` for `ttl`, as
    /// `@socket.io/admin-ui`'s `RedisStore` does (`SET key true EX ttl`),
    /// so every gateway and Node server on this Redis accepts it.
    pub async fn save_admin_session(&self, key: &str, ttl: Duration) -> Result<(), BusError> {
        match &self.kind {
            Kind::Memory(_) => Err(no_redis()),
            Kind::Redis(r) => r.set_ex(key, "true", ttl).await,
            Kind::Streams(s) => s.pubsub().set_ex(key, "true", ttl).await,
        }
    }

    /// Whether the admin UI login session `key` exists (unexpired).
    pub async fn admin_session_exists(&self, key: &str) -> Result<bool, BusError> {
        match &self.kind {
            Kind::Memory(_) => Err(no_redis()),
            Kind::Redis(r) => r.exists(key).await,
            Kind::Streams(s) => s.pubsub().exists(key).await,
        }
    }

    /// The Redis connection for a store that owns its own keys (presence,
    /// client-action streams); `None` for the embedded bus.
    pub fn store_link(&self) -> Option<StoreLink> {
        match &self.kind {
            Kind::Memory(_) => None,
            Kind::Redis(r) => Some(r.store_link()),
            Kind::Streams(s) => Some(s.pubsub().store_link()),
        }
    }

    /// Brings the publishing side's state up to date before `/readyz`
    /// reads it: a probe publish unless one ended within the last few
    /// seconds (see `bus/publish_health.rs`); bounded by
    /// `redis.publish_timeout_ms`. The embedded bus cannot fail to publish.
    pub async fn check_publishing(&self) {
        match &self.kind {
            Kind::Memory(_) => {}
            Kind::Redis(r) => r.check_publishing().await,
            Kind::Streams(s) => s.pubsub().check_publishing().await,
        }
    }

    /// The bus state for `/readyz`.
    pub fn status(&self) -> BusStatus {
        match &self.kind {
            Kind::Memory(m) => m.status(),
            Kind::Redis(r) => r.status(),
            Kind::Streams(s) => s.status(),
        }
    }

    /// The streams bus, in `redis.bus = "streams"` mode.
    pub fn streams(&self) -> Option<&StreamsBus> {
        match &self.kind {
            Kind::Streams(s) => Some(s),
            _ => None,
        }
    }
}

/// The embedded bus's answer to an operation only Redis can do.
fn no_redis() -> BusError {
    BusError::Command("no redis configured".into())
}

/// Redis glob matching for the only pattern form the gateway uses: a
/// literal prefix followed by `*`, or a literal channel.
pub(crate) fn pattern_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}
