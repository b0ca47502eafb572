//! Whether publishing into Redis works, for `/readyz` and
//! `switchboard_bus_publish_up`.
//!
//! The subscriber's connection says nothing about the publishing side: an
//! ACL user without `PUBLISH`, a broken publish connection or a Redis that
//! refuses writes leave the subscription up while every client event meant
//! for the other instances is lost. So the outcome of every publish
//! (`PUBLISH`, `SPUBLISH`, a pipelined batch, a streams `XADD`) is recorded
//! here, which costs a clock read and an atomic compare per publish, and
//! `/readyz` reads the most recent one. When no publish ended within
//! [`FRESH`], `/readyz` first sends one probe publish itself (an empty
//! message on a channel no adapter subscribes to), at most one at a time and
//! bounded by `redis.publish_timeout_ms`; nothing runs on a timer, per
//! connection or per heartbeat.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use super::BusError;
use crate::{log_throttle::LogThrottle, metrics::Metrics};

/// How long the outcome of a publish stands for the publishing side; older
/// than this, `/readyz` probes.
pub(super) const FRESH: Duration = Duration::from_secs(2);

/// The "publishing fails" line: at most one per period (a Redis refusing
/// only some channels could flip the state with every publish).
static FAILING_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));

/// The publishing side's state, shared by every publish and `/readyz` (and
/// by the probe task `/readyz` spawns).
pub(super) struct PublishHealth {
    /// The clock `last` counts from.
    base: Instant,
    /// Milliseconds from `base` to the last recorded outcome, plus one (0:
    /// none yet).
    last: AtomicU64,
    /// The last outcome was a success (true before any publish: nothing has
    /// failed, and the first `/readyz` probes).
    ok: AtomicBool,
    /// Why the last failed publish failed, while `ok` is false.
    error: Mutex<Option<String>>,
    /// Held by the probe in flight, so concurrent `/readyz` requests send one.
    probing: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

impl PublishHealth {
    pub(super) fn new(metrics: Metrics) -> PublishHealth {
        metrics.bus_publish_up.set(1);
        PublishHealth {
            base: Instant::now(),
            last: AtomicU64::new(0),
            ok: AtomicBool::new(true),
            error: Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    /// Records the outcome of one publish (or batch) and passes it on.
    pub(super) fn record<T>(&self, result: Result<T, BusError>) -> Result<T, BusError> {
        self.touch();
        match &result {
            Ok(_) => {
                // The common case is one relaxed load: only a change takes
                // the lock and logs.
                if !self.ok.load(Ordering::Relaxed) {
                    self.succeeded();
                }
            }
            Err(e) => self.failed(e),
        }
        result
    }

    /// `(ok, error)`: the last outcome.
    pub(super) fn status(&self) -> (bool, Option<String>) {
        let error = self.error.lock();
        (self.ok.load(Ordering::Acquire), error.clone())
    }

    /// Probes with `probe` unless a publish ended within [`FRESH`] or another
    /// probe is already running (this one then waits for its outcome).
    pub(super) async fn refresh<F>(&self, probe: F)
    where
        F: std::future::Future<Output = Result<(), BusError>>,
    {
        if self.fresh() {
            return;
        }
        let _probing = self.probing.lock().await;
        if self.fresh() {
            return;
        }
        let _ = self.record(probe.await);
    }

    /// Whether a publish ended within [`FRESH`] (no probe needed).
    pub(super) fn fresh(&self) -> bool {
        let last = self.last.load(Ordering::Acquire);
        last != 0 && self.now_ms().saturating_sub(last) < FRESH.as_millis() as u64
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    fn touch(&self) {
        let now = self.now_ms();
        // Written once per millisecond at most: publishes on every core
        // would otherwise all write the same cache line.
        if self.last.load(Ordering::Relaxed) != now {
            self.last.store(now, Ordering::Release);
        }
    }

    fn succeeded(&self) {
        let mut error = self.error.lock();
        if !self.ok.swap(true, Ordering::AcqRel) {
            self.metrics.bus_publish_up.set(1);
            tracing::info!(was = ?error.as_deref(), "publishing to redis works again; /readyz follows");
            *error = None;
        }
    }

    fn failed(&self, e: &BusError) {
        let mut error = self.error.lock();
        *error = Some(e.to_string());
        if self.ok.swap(false, Ordering::AcqRel) {
            self.metrics.bus_publish_up.set(0);
            if let Some(suppressed) = FAILING_LOG.allow() {
                tracing::warn!(error = %e, suppressed, "publishing to redis fails: client events do not reach the other instances; /readyz reports unready until a publish succeeds");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_outcome_sets_the_state_and_a_stale_one_is_probed() {
        let metrics = Metrics::new();
        let health = PublishHealth::new(metrics.clone());
        assert_eq!(health.status(), (true, None));
        assert_eq!(metrics.bus_publish_up.get(), 1);

        // Nothing recorded yet: the probe runs, and its failure counts.
        health
            .refresh(async { Err(BusError::Command("NOPERM".into())) })
            .await;
        let (ok, error) = health.status();
        assert!(!ok);
        assert!(error.is_some_and(|e| e.contains("NOPERM")));
        assert_eq!(metrics.bus_publish_up.get(), 0);

        // Fresh: no probe (it would succeed).
        health.refresh(async { Ok(()) }).await;
        assert!(!health.status().0);

        // A publish that succeeds restores it.
        assert!(health.record(Ok::<_, BusError>(3)).is_ok());
        assert_eq!(health.status(), (true, None));
        assert_eq!(metrics.bus_publish_up.get(), 1);
    }
}
