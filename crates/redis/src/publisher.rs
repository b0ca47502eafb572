//! Publishing: `PUBLISH` / `SPUBLISH` (and any other command) on shared
//! multiplexed connections, one round trip per call, every call bounded by
//! the timeout.
//!
//! Concurrent calls are pipelined: each one queues its command on the
//! connection's writer and waits for its own reply, so throughput is not
//! capped by a pool size times the round-trip time, and no command is sent
//! besides the caller's (no health-check `PING` per call: a dead connection
//! is noticed when the server closes it or a call fails, and replaced).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use futures_util::future::try_join_all;
use redis::{
    Cmd, FromRedisValue, Pipeline, RedisError, Value, aio::ConnectionLike,
    cluster_async::ClusterConnection,
};

use crate::{
    Error,
    connectors::{ClusterConnector, MasterConnector},
    link::{Connector, Link},
    slot::slot,
    target::{Target, TargetKind},
};

/// `PUBLISH` (classic pub/sub: every subscriber of the channel anywhere) or
/// `SPUBLISH` (sharded pub/sub, Redis >= 7: the subscribers on the shard that
/// owns the channel's slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublishKind {
    /// `PUBLISH`.
    #[default]
    Classic,
    /// `SPUBLISH`.
    Sharded,
}

impl PublishKind {
    fn command(self) -> &'static str {
        match self {
            PublishKind::Classic => "PUBLISH",
            PublishKind::Sharded => "SPUBLISH",
        }
    }
}

/// One message of a batch ([`Publisher::publish_batch`]).
#[derive(Debug, Clone, Copy)]
pub struct Publication<'a> {
    /// `PUBLISH` or `SPUBLISH`.
    pub kind: PublishKind,
    /// The channel.
    pub channel: &'a [u8],
    /// The message.
    pub payload: &'a [u8],
}

/// Publishes to Redis (and runs other commands) on shared, self-healing
/// connections. Cheap to clone; share one per process.
///
/// - Standalone / Sentinel: `redis.connections` multiplexed connections to
///   the master (default 1), used in turn. Sentinel: a lost connection is
///   replaced by one to whichever server the sentinels then name master.
/// - Cluster: one redis-rs cluster connection, which routes each command by
///   slot to a multiplexed connection per node and follows MOVED/ASK and
///   topology changes itself.
///
/// Connections are opened on first use (publishing needs a Tokio runtime).
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    target: Arc<Target>,
    backend: Backend,
}

enum Backend {
    Master {
        links: Box<[Link<MasterConnector>]>,
        next: AtomicUsize,
    },
    Cluster(Link<ClusterConnector>),
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("redis", &self.inner.target.describe)
            .finish()
    }
}

impl Publisher {
    pub(crate) fn new(target: Arc<Target>) -> Result<Self, RedisError> {
        let backend = match &target.kind {
            TargetKind::Cluster(params) => {
                let connector = ClusterConnector::new(params, target.timeout);
                Backend::Cluster(Link::new(target.clone(), connector, None))
            }
            TargetKind::Standalone(_) | TargetKind::Sentinel(_) => {
                let mut links = Vec::with_capacity(target.connections);
                for _ in 0..target.connections {
                    let connector = MasterConnector::new(&target, None)?;
                    links.push(Link::new(target.clone(), connector, None));
                }
                Backend::Master {
                    links: links.into(),
                    next: AtomicUsize::new(0),
                }
            }
        };
        Ok(Publisher {
            inner: Arc::new(Inner { target, backend }),
        })
    }

    /// The Redis this publishes to (URL or addresses, password removed).
    pub fn target(&self) -> &str {
        &self.inner.target.describe
    }

    /// `PUBLISH channel payload`; the number of subscribers that received
    /// it (in a cluster: on the node that took the command).
    pub async fn publish(
        &self,
        channel: impl AsRef<[u8]>,
        payload: impl AsRef<[u8]>,
    ) -> Result<u64, Error> {
        self.publish_kind(PublishKind::Classic, channel.as_ref(), payload.as_ref())
            .await
    }

    /// `SPUBLISH channel payload` (sharded pub/sub, Redis >= 7); the number
    /// of shard subscribers that received it.
    pub async fn spublish(
        &self,
        channel: impl AsRef<[u8]>,
        payload: impl AsRef<[u8]>,
    ) -> Result<u64, Error> {
        self.publish_kind(PublishKind::Sharded, channel.as_ref(), payload.as_ref())
            .await
    }

    /// Publishes with `kind`.
    pub async fn publish_kind(
        &self,
        kind: PublishKind,
        channel: &[u8],
        payload: &[u8],
    ) -> Result<u64, Error> {
        let mut cmd = Cmd::with_capacity(3, 8 + channel.len() + payload.len());
        cmd.arg(kind.command()).arg(channel).arg(payload);
        let reply = self.command_value(&cmd).await?;
        self.count(reply)
    }

    /// Publishes every message in one pipeline (one per slot in a cluster,
    /// sent concurrently) within one timeout; the receiver counts, in order.
    /// On error any subset may have been published.
    pub async fn publish_batch(&self, batch: &[Publication<'_>]) -> Result<Vec<u64>, Error> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = |items: &mut dyn Iterator<Item = &Publication<'_>>| {
            let mut pipe = Pipeline::with_capacity(batch.len());
            for p in items {
                pipe.cmd(p.kind.command()).arg(p.channel).arg(p.payload);
            }
            pipe
        };
        let replies = match &self.inner.backend {
            Backend::Master { .. } => self.pipeline_values(&pipeline(&mut batch.iter())).await?,
            Backend::Cluster(link) => {
                // A pipeline must stay within one slot: one per slot, all at once.
                let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
                for (i, p) in batch.iter().enumerate() {
                    let s = slot(p.channel);
                    match groups.iter_mut().find(|(g, _)| *g == s) {
                        Some((_, members)) => members.push(i),
                        None => groups.push((s, vec![i])),
                    }
                }
                let pipes: Vec<(Vec<usize>, Pipeline)> = groups
                    .into_iter()
                    .map(|(_, members)| {
                        let pipe = pipeline(&mut members.iter().map(|&i| &batch[i]));
                        (members, pipe)
                    })
                    .collect();
                let target = &self.inner.target;
                let results = self
                    .bounded(link, |conn: ClusterConnection| {
                        let pipes = &pipes;
                        async move {
                            try_join_all(pipes.iter().map(|(_, pipe)| {
                                let mut conn = conn.clone();
                                async move { conn.req_packed_commands(pipe, 0, pipe.len()).await }
                            }))
                            .await
                            .map_err(|e| Error::from_redis(target, &e))
                        }
                    })
                    .await?;
                let mut replies = vec![Value::Nil; batch.len()];
                for ((members, _), values) in pipes.iter().zip(results) {
                    for (&i, v) in members.iter().zip(values) {
                        replies[i] = v;
                    }
                }
                replies
            }
        };
        replies.into_iter().map(|v| self.count(v)).collect()
    }

    /// Runs any command (routed by its key in a cluster), bounded by the
    /// timeout: for the gateway's registry and presence keys.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        let value = self.command_value(cmd).await?;
        redis::from_redis_value(value).map_err(|e| Error::from_redis(&self.inner.target, &e.into()))
    }

    /// `XADD` with `args` (everything after the command name: key, trimming,
    /// `*`, fields); the new entry's id. A failure that may be temporary
    /// (connection lost, Redis restarting, no answer) is retried with a short
    /// backoff until the timeout has passed since the first attempt; only
    /// then is it an error. A retry after a connection that broke mid-call
    /// may append the entry twice: the reply was lost, maybe not the command.
    pub async fn xadd<A: redis::ToRedisArgs>(&self, args: &[A]) -> Result<String, Error> {
        let target = &self.inner.target;
        let mut cmd = redis::cmd("XADD");
        for arg in args {
            cmd.arg(arg);
        }
        let deadline = tokio::time::Instant::now() + target.timeout;
        let mut delay = std::time::Duration::from_millis(20);
        loop {
            let attempt = tokio::time::timeout_at(deadline, self.command_value(&cmd));
            match attempt.await {
                Ok(Ok(Value::BulkString(id))) => return Ok(String::from_utf8_lossy(&id).into()),
                Ok(Ok(Value::SimpleString(id))) => return Ok(id),
                Ok(Ok(other)) => {
                    return Err(Error::Server {
                        target: target.describe.clone(),
                        code: None,
                        reason: format!("unexpected reply to XADD: {other:?}"),
                    });
                }
                Ok(Err(e))
                    if e.is_unavailable() && tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::debug!(error = %e, "XADD failed; retrying within the timeout");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_millis(500));
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::timeout(target, None)),
            }
        }
    }

    /// Sends `PING` (to every master in a cluster): a startup check that Redis
    /// is reachable with these credentials. Publishing never sends it.
    pub async fn ping(&self) -> Result<(), Error> {
        let _: Value = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    async fn command_value(&self, cmd: &Cmd) -> Result<Value, Error> {
        let target = &self.inner.target;
        let value = match &self.inner.backend {
            Backend::Master { links, next } => {
                let link = pick(links, next);
                self.bounded_master(link, |mut conn| async move {
                    conn.send_packed_command(cmd).await
                })
                .await?
            }
            Backend::Cluster(link) => {
                self.bounded(link, |mut conn: ClusterConnection| async move {
                    conn.req_packed_command(cmd)
                        .await
                        .map_err(|e| Error::from_redis(target, &e))
                })
                .await?
            }
        };
        match value {
            Value::ServerError(e) => Err(Error::from_redis(target, &e.into())),
            v => Ok(v),
        }
    }

    async fn pipeline_values(&self, pipe: &Pipeline) -> Result<Vec<Value>, Error> {
        let Backend::Master { links, next } = &self.inner.backend else {
            unreachable!("cluster batches are split by slot");
        };
        let link = pick(links, next);
        self.bounded_master(link, |mut conn| async move {
            conn.send_packed_commands(pipe, 0, pipe.len()).await
        })
        .await
    }

    /// Runs `op` on the master connection of `link` within the timeout;
    /// reports the connection broken when the call shows it is (I/O error,
    /// no answer in time) so that the link replaces it.
    async fn bounded_master<T, F, Fut>(
        &self,
        link: &Link<MasterConnector>,
        op: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let target = &self.inner.target;
        // The generation of the connection the call went out on (0: none yet).
        let used = AtomicU64::new(0);
        let work = async {
            let (conn, generation) = link.get().await?;
            used.store(generation, Ordering::Relaxed);
            op(conn).await.map_err(|e| {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    link.report_broken(generation);
                }
                Error::from_redis(target, &e)
            })
        };
        match tokio::time::timeout(target.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(match used.load(Ordering::Relaxed) {
                0 => Error::timeout(target, link.last_error().map(|e| e.reason())),
                generation => {
                    link.report_broken(generation);
                    Error::timeout(target, None)
                }
            }),
        }
    }

    /// Runs `op` on the connection of `link` within the timeout (for the
    /// cluster connection, which heals itself).
    async fn bounded<C, T, F, Fut>(&self, link: &Link<C>, op: F) -> Result<T, Error>
    where
        C: Connector,
        F: FnOnce(C::Conn) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let target = &self.inner.target;
        let work = async {
            let (conn, _) = link.get().await?;
            op(conn).await
        };
        match tokio::time::timeout(target.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(
                target,
                link.last_error().map(|e| e.reason()),
            )),
        }
    }

    fn count(&self, reply: Value) -> Result<u64, Error> {
        match reply {
            Value::Int(n) => Ok(n.max(0) as u64),
            Value::ServerError(e) => Err(Error::from_redis(&self.inner.target, &e.into())),
            other => Err(Error::Server {
                target: self.inner.target.describe.clone(),
                code: None,
                reason: format!("unexpected reply to a publish: {other:?}"),
            }),
        }
    }
}

/// The next connection, in turn.
fn pick<'a, C: Connector>(links: &'a [Link<C>], next: &AtomicUsize) -> &'a Link<C> {
    if links.len() == 1 {
        return &links[0];
    }
    &links[next.fetch_add(1, Ordering::Relaxed) % links.len()]
}
