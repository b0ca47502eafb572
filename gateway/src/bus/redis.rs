//! The Redis bus: one pub/sub connection that (re)subscribes with backoff,
//! and a `deadpool-redis` pool for publishing.
//!
//! Pub/sub delivers at most once: whatever is published while the
//! subscription is down is lost, which is why the subscriber reconnects
//! quickly, reports its state on `/readyz` and counts the outage.

use std::{sync::Arc, time::Duration};

use deadpool_redis::{Pool, Runtime};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{BusError, BusHandler, BusStatus};
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
    client: redis::Client,
    pool: Pool,
    publish_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    state: Arc<Mutex<State>>,
    metrics: Metrics,
}

impl RedisBus {
    pub fn new(config: &RedisConfig, url: &str, metrics: Metrics) -> Result<Self, BusError> {
        let client = redis::Client::open(url).map_err(|e| BusError::Unreachable(e.to_string()))?;
        let pool = deadpool_redis::Config::from_url(url)
            .builder()
            .map_err(|e| BusError::Unreachable(e.to_string()))?
            .max_size(16)
            .wait_timeout(Some(Duration::from_millis(config.publish_timeout_ms)))
            .create_timeout(Some(Duration::from_millis(config.publish_timeout_ms)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| BusError::Unreachable(e.to_string()))?;
        Ok(RedisBus {
            client,
            pool,
            publish_timeout: Duration::from_millis(config.publish_timeout_ms),
            backoff_min: Duration::from_millis(config.reconnect_min_ms),
            backoff_max: Duration::from_millis(config.reconnect_max_ms),
            state: Arc::new(Mutex::new(State::default())),
            metrics,
        })
    }

    pub fn start(
        &self,
        handler: Arc<dyn BusHandler>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let subscriber = Subscriber {
            client: self.client.clone(),
            handler,
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = subscriber.run() => {}
            }
        })
    }

    pub async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<usize, BusError> {
        self.command(redis::cmd("PUBLISH").arg(channel).arg(payload).clone())
            .await
    }

    /// Runs one command on a pooled connection, within the publish timeout.
    pub async fn command<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, BusError> {
        let timeout_ms = self.publish_timeout.as_millis() as u64;
        let run = async {
            let mut conn = self.pool.get().await.map_err(|e| match e {
                deadpool_redis::PoolError::Timeout(_) => BusError::Timeout(timeout_ms),
                other => BusError::Unreachable(other.to_string()),
            })?;
            cmd.query_async::<T>(&mut *conn).await.map_err(|e| {
                if e.is_io_error() || e.is_connection_dropped() {
                    BusError::Unreachable(e.to_string())
                } else {
                    BusError::Command(e.to_string())
                }
            })
        };
        tokio::time::timeout(self.publish_timeout, run)
            .await
            .unwrap_or(Err(BusError::Timeout(timeout_ms)))
    }

    pub fn status(&self) -> BusStatus {
        let s = self.state.lock();
        BusStatus {
            mode: "redis",
            subscribed: s.subscribed,
            subscriptions: s.subscriptions,
            reconnects: s.reconnects,
            last_error: s.last_error.clone(),
        }
    }
}

/// The task that keeps one subscription alive.
struct Subscriber {
    client: redis::Client,
    handler: Arc<dyn BusHandler>,
    state: Arc<Mutex<State>>,
    metrics: Metrics,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl Subscriber {
    /// Subscribes, delivers until the connection drops, and starts over
    /// after an exponential backoff with jitter. Never returns.
    async fn run(self) {
        let mut backoff = self.backoff_min;
        loop {
            match self.subscribe_and_deliver().await {
                Ok(()) => {
                    tracing::warn!("redis subscription connection closed; resubscribing");
                    backoff = self.backoff_min;
                    self.set_down("connection closed".into());
                }
                Err(err) => {
                    tracing::warn!(%err, retry_in_ms = backoff.as_millis() as u64, "redis subscription failed");
                    self.set_down(err.to_string());
                }
            }
            self.metrics.bus_reconnects.inc();
            self.state.lock().reconnects += 1;
            let jitter = rand::random_range(0.5..1.0);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(self.backoff_max);
        }
    }

    fn set_down(&self, error: String) {
        let mut s = self.state.lock();
        if s.subscribed {
            self.metrics.bus_outages.inc();
        }
        s.subscribed = false;
        s.last_error = Some(error);
        self.metrics.bus_up.set(0);
    }

    /// One connection's life: returns Ok when the server closed it.
    async fn subscribe_and_deliver(&self) -> redis::RedisResult<()> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        let channels = self.handler.channels();
        let patterns = self.handler.patterns();
        for channel in &channels {
            pubsub.subscribe(channel).await?;
        }
        for pattern in &patterns {
            pubsub.psubscribe(pattern).await?;
        }
        {
            let mut s = self.state.lock();
            s.subscribed = true;
            s.subscriptions = channels.len() + patterns.len();
            s.last_error = None;
        }
        self.metrics.bus_up.set(1);
        tracing::info!(channels = ?channels, patterns = ?patterns, "subscribed to redis");
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let channel = msg.get_channel_name().to_string();
            let payload = bytes::Bytes::copy_from_slice(msg.get_payload_bytes());
            self.handler.on_bus_message(&channel, payload);
        }
        Ok(())
    }
}
