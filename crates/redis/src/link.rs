//! A self-healing connection: one supervisor task keeps a connection (a
//! multiplexed connection to the current master, or a cluster connection)
//! and replaces it when it breaks; callers clone the current one without
//! waiting, or wait for the next one within their own timeout.
//!
//! Why not redis-rs's `ConnectionManager`: it reconnects to one fixed
//! address (Sentinel needs the master looked up again on every
//! reconnection), and after its retries are spent it fails every waiting
//! call with the same error, where here each call waits up to its own
//! timeout and a failover that completes within it costs nothing.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use rand::Rng;
use redis::{PushInfo, PushKind, RedisResult};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::AbortHandle,
};

use crate::{error::Error, target::Target};

/// Opens the connection a [`Link`] keeps.
pub(crate) trait Connector: Send + Sync + 'static {
    /// The connection; clones share it.
    type Conn: Clone + Send + Sync + 'static;
    /// Whether a `Disconnection` push means this connection is gone (true
    /// for a multiplexed connection; a cluster connection reports one
    /// node's and heals itself).
    const DISCONNECT_ENDS_CONNECTION: bool;
    /// Opens a connection whose RESP3 pushes go to `pushes`.
    fn connect(
        &self,
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> BoxFuture<'_, RedisResult<Self::Conn>>;
}

/// Called with every push that does not end the connection (pub/sub
/// messages, subscription confirmations; for a cluster connection, one
/// node's disconnection too).
pub(crate) type PushHandler = Box<dyn Fn(PushInfo) + Send + Sync>;

/// The connection's state, as callers see it.
#[derive(Clone)]
enum State<C> {
    /// No usable connection: the supervisor is (re)connecting.
    Down {
        /// Why the last attempt failed (or why the connection was lost).
        last_error: Option<Error>,
        /// When the connection was lost; `None` if it never was up.
        since: Option<Instant>,
    },
    /// Connected; `generation` counts connections, so that a report about
    /// an old one does not drop the new one.
    Up { conn: C, generation: u64 },
}

struct Shared<C: Connector> {
    target: Arc<Target>,
    connector: C,
    state: watch::Sender<State<C::Conn>>,
    /// What [`Link::status`] watchers see (the state without the connection).
    status: watch::Sender<LinkStatus>,
    /// Generation a caller found broken; the supervisor replaces it.
    broken_generation: AtomicU64,
    broken: Notify,
    on_push: Option<PushHandler>,
}

/// The state of a kept connection as a readiness probe or a metric sees
/// it: counters are cumulative since start, so a watcher that misses
/// intermediate states still counts every connection and failure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// A connection is up (for a subscriber: with every subscription it
    /// tracks restored on it).
    pub up: bool,
    /// Connections established since start (the generation of the current one).
    pub connections: u64,
    /// Connection attempts that failed since start.
    pub failed_attempts: u64,
    /// Why the connection is down, while it is.
    pub last_error: Option<Error>,
}

/// A connection kept alive by a background task (started on first use,
/// stopped when the `Link` is dropped).
pub(crate) struct Link<C: Connector> {
    shared: Arc<Shared<C>>,
    supervisor: OnceLock<AbortHandle>,
}

impl<C: Connector> Drop for Link<C> {
    fn drop(&mut self) {
        if let Some(task) = self.supervisor.get() {
            task.abort();
        }
    }
}

impl<C: Connector> Link<C> {
    pub fn new(target: Arc<Target>, connector: C, on_push: Option<PushHandler>) -> Self {
        let (state, _) = watch::channel(State::Down {
            last_error: None,
            since: None,
        });
        let (status, _) = watch::channel(LinkStatus::default());
        Link {
            shared: Arc::new(Shared {
                target,
                connector,
                state,
                status,
                broken_generation: AtomicU64::new(0),
                broken: Notify::new(),
                on_push,
            }),
            supervisor: OnceLock::new(),
        }
    }

    /// The current connection and its generation, waiting for one if
    /// needed. Fails at once when there is no point waiting: the link never
    /// connected and the first attempt failed, or it has been down for
    /// longer than the timeout. Callers bound the wait with their timeout.
    ///
    /// A connection a caller has reported broken is not handed out again:
    /// the next caller waits for its replacement instead of failing on it
    /// before the supervisor has got to the report (a publish right after
    /// a Sentinel master died failed so while the failover was under way).
    pub async fn get(&self) -> Result<(C::Conn, u64), Error> {
        if let State::Up { conn, generation } = &*self.shared.state.borrow()
            && !self.shared.is_broken(*generation)
        {
            return Ok((conn.clone(), *generation));
        }
        self.start();
        let mut rx = self.shared.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                State::Up { conn, generation } if !self.shared.is_broken(*generation) => {
                    return Ok((conn.clone(), *generation));
                }
                // Reported broken: the supervisor replaces it.
                State::Up { .. } => {}
                State::Down {
                    last_error: Some(e),
                    since,
                } if since.is_none_or(|t| t.elapsed() >= self.shared.target.timeout) => {
                    return Err(e.clone());
                }
                State::Down { .. } => {}
            }
            // The sender lives in `shared`, which outlives this borrow.
            let _ = rx.changed().await;
        }
    }

    /// Watches the connection's state; starts connecting if nothing did yet.
    pub fn status(&self) -> watch::Receiver<LinkStatus> {
        self.start();
        self.shared.status.subscribe()
    }

    /// True while a connection is up.
    pub fn is_up(&self) -> bool {
        matches!(&*self.shared.state.borrow(), State::Up { .. })
    }

    /// The error that keeps the link down, if it is down.
    pub fn last_error(&self) -> Option<Error> {
        match &*self.shared.state.borrow() {
            State::Down { last_error, .. } => last_error.clone(),
            State::Up { .. } => None,
        }
    }

    /// Reports that connection `generation` failed in a way that means it
    /// is gone (I/O error, no answer within the timeout).
    pub fn report_broken(&self, generation: u64) {
        self.shared
            .broken_generation
            .store(generation, Ordering::Release);
        self.shared.broken.notify_one();
    }

    fn start(&self) {
        self.supervisor
            .get_or_init(|| tokio::spawn(supervise(self.shared.clone())).abort_handle());
    }
}

/// Connects, publishes the connection, waits until it breaks, repeats; with
/// exponential backoff and jitter between failed attempts.
async fn supervise<C: Connector>(shared: Arc<Shared<C>>) {
    let target = &shared.target;
    let mut generation = 0u64;
    let mut failures = 0u32;
    let mut lost_at: Option<Instant> = None;
    loop {
        let (push_tx, mut pushes) = mpsc::unbounded_channel();
        let attempt = tokio::time::timeout(target.timeout, shared.connector.connect(push_tx)).await;
        let conn = match attempt {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                let error = Error::from_redis(target, &e);
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(redis = %target.describe, attempt = failures, error = %error, "cannot connect to Redis");
                }
                shared.down(Some(error), lost_at, true);
                tokio::time::sleep(backoff(target, failures)).await;
                continue;
            }
            Err(_) => {
                failures += 1;
                tracing::warn!(redis = %target.describe, attempt = failures, "connecting to Redis timed out");
                shared.down(Some(Error::timeout(target, None)), lost_at, true);
                tokio::time::sleep(backoff(target, failures)).await;
                continue;
            }
        };
        generation += 1;
        if failures > 0 || lost_at.is_some() {
            tracing::info!(redis = %target.describe, after_attempts = failures, "reconnected to Redis");
        }
        failures = 0;
        shared.state.send_replace(State::Up { conn, generation });
        shared.status.send_modify(|s| {
            s.up = true;
            s.connections = generation;
            s.last_error = None;
        });
        let mut pushes_open = true;
        let reason = loop {
            tokio::select! {
                push = pushes.recv(), if pushes_open => match push {
                    Some(p) if p.kind == PushKind::Disconnection => {
                        if C::DISCONNECT_ENDS_CONNECTION {
                            break "the connection was closed";
                        }
                        // One node of a cluster: the handler decides (the
                        // subscriber restores what that node carried).
                        if let Some(handler) = &shared.on_push {
                            handler(p);
                        }
                    }
                    Some(p) => {
                        if let Some(handler) = &shared.on_push {
                            handler(p);
                        }
                    }
                    None => {
                        if C::DISCONNECT_ENDS_CONNECTION {
                            break "the connection was closed";
                        }
                        // A cluster connection heals itself without its push sender.
                        pushes_open = false;
                    }
                },
                () = shared.broken.notified() => {
                    if shared.broken_generation.load(Ordering::Acquire) == generation {
                        break "a command on the connection failed or timed out";
                    }
                }
            }
        };
        tracing::warn!(redis = %target.describe, reason, "lost the connection to Redis; reconnecting");
        lost_at = Some(Instant::now());
        let error = Error::Unreachable {
            target: target.describe.clone(),
            reason: reason.into(),
        };
        shared.down(Some(error), lost_at, false);
    }
}

impl<C: Connector> Shared<C> {
    /// Whether a caller reported connection `generation` broken.
    fn is_broken(&self, generation: u64) -> bool {
        self.broken_generation.load(Ordering::Acquire) == generation
    }

    /// Publishes a down state to callers and watchers.
    fn down(&self, last_error: Option<Error>, since: Option<Instant>, failed_attempt: bool) {
        self.status.send_modify(|s| {
            s.up = false;
            s.failed_attempts += u64::from(failed_attempt);
            s.last_error = last_error.clone();
        });
        self.state.send_replace(State::Down { last_error, since });
    }
}

/// `min * 2^(failures-1)`, capped at `max`, times a random factor in [0.5, 1).
pub(crate) fn backoff(target: &Target, failures: u32) -> Duration {
    let b = target.backoff;
    let exp = b
        .min
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(b.max);
    exp.mul_f64(rand::rng().random_range(0.5..1.0))
}
