//! The Redis connection layer of Switchboard, shared by the broadcaster (and
//! the `switchboard` CLI) and the gateway: one typed [`RedisSettings`] for
//! every setup teams run (TLS and mutual TLS, ACL users, Sentinel, Cluster),
//! validated with errors that name the bad key, and the connections built
//! from it:
//!
//! - [`Publisher`]: `PUBLISH` / `SPUBLISH` (and other commands) with one
//!   round trip per call, concurrent calls pipelined on shared multiplexed
//!   connections, batches in one pipeline, a timeout on every call, and
//!   reconnection (to the new master after a Sentinel failover) by itself;
//! - [`Subscriber`]: subscriptions (channels, patterns, shard channels) that
//!   survive reconnections, failovers and cluster slot moves.
//!
//! ```no_run
//! use switchboard_redis::{Redis, RedisSettings};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = Redis::new(&RedisSettings::from_url("rediss://app:secret@redis.internal:6380"))?;
//! let publisher = redis.publisher()?;
//! let receivers = publisher.publish("socket.io#/#", b"...").await?;
//!
//! let (subscriber, mut messages) = redis.subscriber()?;
//! subscriber.subscribe(&["socket.io#/#"]).await?;
//! while let Some(message) = messages.recv().await {
//!     println!("{:?}", message.channel);
//! }
//! # Ok(()) }
//! ```
//!
//! Everything is built on redis-rs: its multiplexed connections (pipelining),
//! `tls-rustls` (TLS, server name checked), `sentinel` (master lookup),
//! `cluster-async` (slot routing, redirections, topology refresh, sharded
//! subscriptions). What is ours is the supervision of the connection to the
//! master ([`link`]-level reconnection that looks the master up again) and
//! the error messages.

#![warn(missing_docs)]

mod connectors;
mod error;
mod link;
mod publisher;
mod settings;
pub mod slot;
mod subscriber;
mod target;

use std::sync::Arc;

pub use error::Error;
pub use link::LinkStatus;
pub use publisher::{Publication, PublishKind, Publisher};
pub use settings::{Mode, RedisSettings, Secret, SettingsError};
pub use subscriber::{Message, Messages, Subscriber, SubscriptionKind};
pub use target::redact_url;

use target::Target;

/// Validated Redis settings with their TLS material and passwords loaded:
/// the factory of [`Publisher`]s and [`Subscriber`]s. Building one does no
/// I/O besides reading the files the settings name; cheap to clone.
#[derive(Clone)]
pub struct Redis {
    target: Arc<Target>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("target", &self.target.describe)
            .finish()
    }
}

impl Redis {
    /// Validates `settings`, reads the password and TLS files they name.
    pub fn new(settings: &RedisSettings) -> Result<Redis, SettingsError> {
        Ok(Redis {
            target: Target::resolve(settings)?,
        })
    }

    /// The Redis these settings reach (URL or addresses, password removed).
    pub fn describe(&self) -> &str {
        &self.target.describe
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.target.mode()
    }

    /// A publisher; its connections open on first use.
    pub fn publisher(&self) -> Result<Publisher, SettingsError> {
        Publisher::new(self.target.clone()).map_err(|e| self.rejected(e))
    }

    /// A subscriber and the stream of its messages; its connection opens on
    /// the first subscription.
    pub fn subscriber(&self) -> Result<(Subscriber, Messages), SettingsError> {
        Subscriber::new(self.target.clone()).map_err(|e| self.rejected(e))
    }

    /// A client-side error redis-rs raised while building a client
    /// (validation builds every client once, so this does not happen).
    fn rejected(&self, e: redis::RedisError) -> SettingsError {
        let key = match self.target.mode() {
            Mode::Standalone => "url",
            Mode::Sentinel => "sentinels",
            Mode::Cluster => "nodes",
        };
        SettingsError {
            key,
            message: e.to_string(),
        }
    }
}
