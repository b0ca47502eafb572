//! The Redis bus, on `switchboard-redis`: a [`Publisher`] whose publishes
//! are one `PUBLISH` each, pipelined on a shared multiplexed connection (no
//! pool, no `PING` per use), and a [`Subscriber`] that restores its
//! subscriptions on every new connection (after a Redis restart, on the new
//! master after a Sentinel failover, on the new owner after a slot move).
//!
//! Pub/sub delivers at most once: whatever is published while the
//! subscription is down is lost, which is why the subscriber reconnects
//! quickly, reports its state on `/readyz` and counts the outage.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use switchboard_redis::{
    LinkStatus, Messages, PublishKind, Publisher, Redis, Subscriber, SubscriptionKind,
};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{BusError, BusHandler, BusStatus, publish_health::PublishHealth};
use crate::{config::RedisConfig, metrics::Metrics};

/// Subscription state shared between the subscriber task and `/readyz`.
#[derive(Default)]
struct State {
    subscribed: bool,
    subscriptions: usize,
    reconnects: u64,
    last_error: Option<String>,
}

/// Redis pub/sub in the `@socket.io/redis-adapter` channel layout.
pub(super) struct RedisBus {
    redis: Redis,
    publisher: Publisher,
    /// Taken by [`RedisBus::start`] (the bus subscribes once).
    subscriber: Mutex<Option<(Subscriber, Messages)>>,
    publish_timeout_ms: u64,
    state: Arc<Mutex<State>>,
    /// The outcome of recent publishes, for `/readyz`.
    health: Arc<PublishHealth>,
    /// What `/readyz`'s probe publishes on when no publish ended lately:
    /// under the adapter's key (so an ACL that scopes channels by it allows
    /// it) but outside every namespace (which starts with `/`), so no
    /// adapter subscribes to it; with `SPUBLISH` in sharded mode.
    probe: (PublishKind, String),
    metrics: Metrics,
}

impl RedisBus {
    /// Builds the publisher and the subscriber; connects on first use.
    pub fn new(config: &RedisConfig, metrics: Metrics) -> Result<Self, BusError> {
        let redis = Redis::new(&config.settings()).map_err(|e| BusError::Config(e.to_string()))?;
        let publisher = redis
            .publisher()
            .map_err(|e| BusError::Config(e.to_string()))?;
        let subscriber = redis
            .subscriber()
            .map_err(|e| BusError::Config(e.to_string()))?;
        Ok(RedisBus {
            redis,
            publisher,
            subscriber: Mutex::new(Some(subscriber)),
            publish_timeout_ms: config.publish_timeout_ms,
            state: Arc::new(Mutex::new(State::default())),
            health: Arc::new(PublishHealth::new(metrics.clone())),
            probe: (
                match config.pubsub {
                    crate::config::PubsubMode::Sharded => PublishKind::Sharded,
                    _ => PublishKind::Classic,
                },
                format!("{}#switchboard-probe#", config.key),
            ),
            metrics,
        })
    }

    /// A handle on the subscriber (for the sharded side's own
    /// subscriptions); `None` once started.
    pub fn subscriber(&self) -> Option<Subscriber> {
        self.subscriber.lock().as_ref().map(|(s, _)| s.clone())
    }

    /// The Redis this bus talks to (password removed), for logs.
    pub fn describe(&self) -> &str {
        self.redis.describe()
    }

    /// Subscribes to what `handler` asks for and delivers to it until
    /// `shutdown`; keeps `/readyz` and the bus metrics up to date.
    pub fn start(
        &self,
        handler: Arc<dyn BusHandler>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let Some((subscriber, messages)) = self.subscriber.lock().take() else {
            tracing::error!("the redis bus was started twice; ignoring the second start");
            return tokio::spawn(async {});
        };
        let channels = handler.channels();
        let patterns = handler.patterns();
        self.state.lock().subscriptions = channels.len() + patterns.len();
        let watcher = Watcher {
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            seen: LinkStatus::default(),
        };
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            // The subscriber remembers these before sending them: if Redis is
            // down now, the first connection subscribes to them.
            let status = subscriber.status();
            let subscribe = async {
                let result = match subscriber.subscribe(&channels).await {
                    Ok(()) => subscriber.psubscribe(&patterns).await,
                    Err(err) => Err(err),
                };
                match result {
                    Ok(()) => {
                        tracing::info!(channels = ?channels, patterns = ?patterns, "subscribed to redis")
                    }
                    Err(err) => {
                        tracing::warn!(%err, "cannot subscribe to redis yet; subscribing on the next connection")
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = async {
                    subscribe.await;
                    tokio::join!(watcher.run(status), deliver(messages, handler, metrics));
                } => {}
            }
            drop(subscriber);
        })
    }

    pub async fn publish(&self, channel: &str, payload: &[u8]) -> Result<usize, BusError> {
        self.publish_one(PublishKind::Classic, channel, payload)
            .await
    }

    /// `SPUBLISH` on a shard channel.
    pub async fn spublish(&self, channel: &str, payload: &[u8]) -> Result<usize, BusError> {
        self.publish_one(PublishKind::Sharded, channel, payload)
            .await
    }

    /// One `PUBLISH` or `SPUBLISH`, its outcome recorded for `/readyz`.
    async fn publish_one(
        &self,
        kind: PublishKind,
        channel: &str,
        payload: &[u8],
    ) -> Result<usize, BusError> {
        self.health.record(
            self.publisher
                .publish_kind(kind, channel.as_bytes(), payload)
                .await
                .map(|n| n as usize)
                .map_err(|e| self.error(e)),
        )
    }

    /// Records the outcome of a publish made elsewhere on this Redis (the
    /// streams bus's `XADD`).
    pub fn record_publish<T>(&self, result: Result<T, BusError>) -> Result<T, BusError> {
        self.health.record(result)
    }

    /// Brings the publishing side's state up to date for `/readyz`: unless
    /// a publish ended within the last few seconds, publishes one empty
    /// probe message (bounded by `redis.publish_timeout_ms`). Skipped while
    /// unsubscribed: `/readyz` is unready then anyway.
    pub async fn check_publishing(&self) {
        if self.health.fresh() || !self.state.lock().subscribed {
            return;
        }
        let health = self.health.clone();
        let publisher = self.publisher.clone();
        let (kind, channel) = self.probe.clone();
        let timeout_ms = self.publish_timeout_ms;
        // Its own task, so that the outcome is recorded even when the
        // `/readyz` caller gives up first (a probe timeout at or below
        // `redis.publish_timeout_ms`): the next request then finds it fresh.
        let probe = tokio::spawn(async move {
            health
                .refresh(async {
                    publisher
                        .publish_kind(kind, channel.as_bytes(), b"")
                        .await
                        .map(|_| ())
                        .map_err(|e| super::store_link::to_bus_error(e, timeout_ms))
                })
                .await;
        });
        let _ = probe.await;
    }

    /// Publishes every message in one pipeline.
    pub async fn publish_many(
        &self,
        messages: &[(String, Vec<u8>)],
    ) -> Result<Vec<usize>, BusError> {
        self.publish_many_kind(PublishKind::Classic, messages).await
    }

    /// Publishes every message in one pipeline (per slot in a cluster),
    /// with `PUBLISH` or `SPUBLISH`.
    pub async fn publish_many_kind(
        &self,
        kind: PublishKind,
        messages: &[(String, Vec<u8>)],
    ) -> Result<Vec<usize>, BusError> {
        let batch: Vec<_> = messages
            .iter()
            .map(|(channel, payload)| switchboard_redis::Publication {
                kind,
                channel: channel.as_bytes(),
                payload,
            })
            .collect();
        self.health.record(
            self.publisher
                .publish_batch(&batch)
                .await
                .map(|counts| counts.into_iter().map(|n| n as usize).collect())
                .map_err(|e| self.error(e)),
        )
    }

    /// `HSETNX hash field value`: whether the field was free and is now set.
    pub async fn hash_set_nx(
        &self,
        hash: &str,
        field: &str,
        value: &str,
    ) -> Result<bool, BusError> {
        let cmd = redis::cmd("HSETNX").arg(hash).arg(field).arg(value).clone();
        self.query(&cmd).await
    }

    /// `HSET hash field value`.
    pub async fn hash_set(&self, hash: &str, field: &str, value: &str) -> Result<(), BusError> {
        let cmd = redis::cmd("HSET").arg(hash).arg(field).arg(value).clone();
        self.query::<i64>(&cmd).await.map(|_| ())
    }

    /// `HGETALL hash`.
    pub async fn hash_get_all(&self, hash: &str) -> Result<HashMap<String, String>, BusError> {
        self.query(redis::cmd("HGETALL").arg(hash)).await
    }

    /// `HDEL hash field...` (at least one field).
    pub async fn hash_del(&self, hash: &str, fields: &[String]) -> Result<(), BusError> {
        let cmd = redis::cmd("HDEL").arg(hash).arg(fields).clone();
        self.query::<i64>(&cmd).await.map(|_| ())
    }

    /// `PUBSUB NUMSUB channel`: how many clients subscribe to `channel`.
    pub async fn subscribers(&self, channel: &str) -> Result<usize, BusError> {
        let counts: Vec<(String, usize)> = self
            .query(redis::cmd("PUBSUB").arg("NUMSUB").arg(channel))
            .await?;
        Ok(counts.first().map_or(0, |(_, n)| *n))
    }

    /// `SET key value EX ttl`.
    pub async fn set_ex(&self, key: &str, value: &str, ttl: Duration) -> Result<(), BusError> {
        let cmd = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("EX")
            .arg(ttl.as_secs())
            .clone();
        self.query(&cmd).await
    }

    /// `EXISTS key`.
    pub async fn exists(&self, key: &str) -> Result<bool, BusError> {
        self.query::<i64>(redis::cmd("EXISTS").arg(key))
            .await
            .map(|n| n == 1)
    }

    /// Runs one of the commands above on the publisher's connection, within
    /// the publish timeout.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BusError> {
        self.publisher.query(cmd).await.map_err(|e| self.error(e))
    }

    /// Checks once that Redis answers with these credentials (one `PING`).
    pub async fn ping(&self) -> Result<(), switchboard_redis::Error> {
        self.publisher.ping().await
    }

    fn error(&self, e: switchboard_redis::Error) -> BusError {
        super::store_link::to_bus_error(e, self.publish_timeout_ms)
    }

    /// The publisher's connection for a store's own commands.
    pub fn store_link(&self) -> super::StoreLink {
        super::StoreLink::new(self.publisher.clone(), self.publish_timeout_ms)
    }

    pub fn status(&self) -> BusStatus {
        let (publishing, publish_error) = self.health.status();
        let s = self.state.lock();
        BusStatus {
            mode: "redis",
            subscribed: s.subscribed,
            subscriptions: s.subscriptions,
            reconnects: s.reconnects,
            last_error: s.last_error.clone(),
            publishing,
            publish_error,
        }
    }
}

/// Hands every message to the handler, in the order Redis sent them
/// (shard channel messages to its sharded side), counting what Redis sent
/// and how many still wait behind the one in hand.
async fn deliver(mut messages: Messages, handler: Arc<dyn BusHandler>, metrics: Metrics) {
    while let Some(m) = messages.recv().await {
        metrics.bus_backlog.set(gauge_value(messages.len()));
        let kind = match m.kind {
            SubscriptionKind::Channel => "channel",
            SubscriptionKind::Pattern => "pattern",
            SubscriptionKind::Shard => "shard",
        };
        metrics.bus_received.with_label_values(&[kind]).inc();
        metrics
            .bus_received_bytes
            .with_label_values(&[kind])
            .inc_by(m.payload.len() as u64);
        match (std::str::from_utf8(&m.channel), m.kind) {
            (Ok(channel), SubscriptionKind::Shard) => {
                handler.on_shard_message(channel, m.payload.into())
            }
            (Ok(channel), _) => handler.on_bus_message(channel, m.payload.into()),
            (Err(_), _) => tracing::debug!("dropped a bus message on a non-UTF-8 channel"),
        }
    }
}

/// A count as a gauge value (saturating; a queue never holds `i64::MAX`).
fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Follows the subscriber's connection: `/readyz` state, `switchboard_bus_up`,
/// reconnect and outage counters.
struct Watcher {
    state: Arc<Mutex<State>>,
    metrics: Metrics,
    /// The last status seen, to count what changed since.
    seen: LinkStatus,
}

impl Watcher {
    async fn run(mut self, mut status: watch::Receiver<LinkStatus>) {
        loop {
            let now = status.borrow_and_update().clone();
            self.apply(now);
            if status.changed().await.is_err() {
                return;
            }
        }
    }

    fn apply(&mut self, now: LinkStatus) {
        // Every connection after the first and every failed attempt is a
        // reconnect attempt (as the metric's help says).
        let attempts = |s: &LinkStatus| s.connections.saturating_sub(1) + s.failed_attempts;
        let new_attempts = attempts(&now).saturating_sub(attempts(&self.seen));
        self.metrics.bus_reconnects.inc_by(new_attempts);
        let mut s = self.state.lock();
        s.reconnects += new_attempts;
        if now.up {
            if !s.subscribed {
                tracing::info!(connection = now.connections, "redis subscription up");
            }
            s.subscribed = true;
            s.last_error = None;
            self.metrics.bus_up.set(1);
        } else {
            if s.subscribed {
                self.metrics.bus_outages.inc();
                tracing::warn!(error = ?now.last_error.as_ref().map(|e| e.to_string()), "redis subscription lost; resubscribing");
            }
            s.subscribed = false;
            s.last_error = now.last_error.as_ref().map(|e| e.to_string());
            self.metrics.bus_up.set(0);
        }
        drop(s);
        self.seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(up: bool, connections: u64, failed_attempts: u64) -> LinkStatus {
        LinkStatus {
            up,
            connections,
            failed_attempts,
            last_error: None,
        }
    }

    /// Records the backlog gauge each time a message is handed over.
    struct BacklogProbe {
        metrics: Metrics,
        seen: Mutex<Vec<i64>>,
    }

    impl BusHandler for BacklogProbe {
        fn channels(&self) -> Vec<String> {
            Vec::new()
        }
        fn patterns(&self) -> Vec<String> {
            Vec::new()
        }
        fn on_bus_message(&self, _channel: &str, _payload: bytes::Bytes) {
            self.seen.lock().push(self.metrics.bus_backlog.get());
        }
    }

    #[tokio::test]
    async fn the_backlog_gauge_counts_the_messages_still_waiting() {
        let metrics = Metrics::new();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..3u8 {
            let message = switchboard_redis::Message {
                kind: SubscriptionKind::Pattern,
                pattern: Some(b"socket.io#/#*".to_vec()),
                channel: b"socket.io#/#".to_vec(),
                payload: vec![n],
            };
            assert!(tx.send(message).is_ok());
        }
        drop(tx);
        let probe = Arc::new(BacklogProbe {
            metrics: metrics.clone(),
            seen: Mutex::new(Vec::new()),
        });
        deliver(rx, probe.clone(), metrics.clone()).await;
        assert_eq!(*probe.seen.lock(), vec![2, 1, 0]);
        assert_eq!(metrics.bus_backlog.get(), 0);
    }

    #[test]
    fn watcher_counts_reconnects_and_outages_and_sets_bus_up() {
        let metrics = Metrics::new();
        let state = Arc::new(Mutex::new(State::default()));
        let mut w = Watcher {
            state: state.clone(),
            metrics: metrics.clone(),
            seen: LinkStatus::default(),
        };
        // Redis down at start: two failed attempts, then connected.
        w.apply(status(false, 0, 2));
        assert!(!state.lock().subscribed);
        assert_eq!(metrics.bus_up.get(), 0);
        w.apply(status(true, 1, 2));
        assert!(state.lock().subscribed);
        assert_eq!(metrics.bus_up.get(), 1);
        assert_eq!(metrics.bus_outages.get(), 0);
        // Lost, one failed attempt, back (a watcher may see only the end state).
        w.apply(status(false, 1, 2));
        assert_eq!(metrics.bus_outages.get(), 1);
        assert_eq!(metrics.bus_up.get(), 0);
        w.apply(status(true, 2, 3));
        assert_eq!(metrics.bus_up.get(), 1);
        // Every attempt after the first counts: 3 failed + 1 reconnection.
        assert_eq!(metrics.bus_reconnects.get(), 4);
        assert_eq!(state.lock().reconnects, 4);
    }
}
