//! Subscribing: channels, patterns and shard channels that stay subscribed
//! across reconnections, Sentinel failovers and (in a cluster) slot moves,
//! with every message delivered on one stream.
//!
//! - Standalone / Sentinel: one RESP3 connection to the master. The
//!   subscriber remembers what it subscribed to and subscribes again on
//!   every new connection (after a failover: on the new master).
//! - Cluster: a redis-rs cluster connection with a push sender. It keeps
//!   the subscriptions itself: classic ones on a node, each shard channel on
//!   the node that owns its slot, moved when the slot moves.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard},
};

use futures_util::future::BoxFuture;
use redis::{PushInfo, PushKind, RedisResult, Value, aio::MultiplexedConnection};
use tokio::{sync::mpsc, task::AbortHandle};

use crate::{
    Error,
    connectors::{ClusterConnector, MasterConnector, OnConnect},
    link::{Link, LinkStatus, PushHandler, backoff},
    target::{Target, TargetKind},
};

/// Which kind of subscription a message arrived through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// `SUBSCRIBE` (a `message`).
    Channel,
    /// `PSUBSCRIBE` (a `pmessage`).
    Pattern,
    /// `SSUBSCRIBE` (an `smessage`, sharded pub/sub).
    Shard,
}

/// A message received on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// How it was subscribed to.
    pub kind: SubscriptionKind,
    /// The pattern that matched, for [`SubscriptionKind::Pattern`].
    pub pattern: Option<Vec<u8>>,
    /// The channel it was published on.
    pub channel: Vec<u8>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// Decodes a pub/sub push; `None` for other pushes (confirmations...).
    fn from_push(push: PushInfo) -> Option<Message> {
        let mut data = push.data.into_iter();
        let mut next = || match data.next() {
            Some(Value::BulkString(b)) => Some(b),
            Some(Value::SimpleString(s)) => Some(s.into_bytes()),
            _ => None,
        };
        let (kind, pattern) = match push.kind {
            PushKind::Message => (SubscriptionKind::Channel, None),
            PushKind::SMessage => (SubscriptionKind::Shard, None),
            PushKind::PMessage => (SubscriptionKind::Pattern, Some(next()?)),
            _ => return None,
        };
        Some(Message {
            kind,
            pattern,
            channel: next()?,
            payload: next()?,
        })
    }
}

/// The subscriptions a standalone/sentinel subscriber restores on every
/// new connection.
#[derive(Default)]
struct Subscriptions {
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    shard_channels: BTreeSet<Vec<u8>>,
}

impl Subscriptions {
    fn set(&mut self, kind: SubscriptionKind) -> &mut BTreeSet<Vec<u8>> {
        match kind {
            SubscriptionKind::Channel => &mut self.channels,
            SubscriptionKind::Pattern => &mut self.patterns,
            SubscriptionKind::Shard => &mut self.shard_channels,
        }
    }
}

type Tracked = Arc<Mutex<Subscriptions>>;

fn lock(t: &Tracked) -> MutexGuard<'_, Subscriptions> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// Subscribes to channels, patterns and shard channels; the messages arrive
/// on the [`Messages`] returned with it. Subscriptions survive
/// reconnections; a message published while the connection is down is
/// lost (pub/sub is at-most-once). Cheap to clone.
#[derive(Clone)]
pub struct Subscriber {
    inner: Arc<Inner>,
}

/// The messages of a [`Subscriber`], in the order each connection received
/// them. Ends when every clone of the subscriber is dropped.
pub type Messages = mpsc::UnboundedReceiver<Message>;

struct Inner {
    target: Arc<Target>,
    backend: Backend,
}

enum Backend {
    Master {
        link: Link<MasterConnector>,
        tracked: Tracked,
    },
    Cluster {
        link: Arc<Link<ClusterConnector>>,
        /// Only the shard channels: the server drops those when their slot
        /// moves, and [`restore_shard_channels`] subscribes them again.
        tracked: Tracked,
        restorer: AbortHandle,
    },
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Backend::Cluster { restorer, .. } = &self.backend {
            restorer.abort();
        }
    }
}

impl Subscriber {
    pub(crate) fn new(target: Arc<Target>) -> RedisResult<(Subscriber, Messages)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let tracked: Tracked = Arc::default();
        let backend = match &target.kind {
            TargetKind::Cluster(params) => {
                let connector = ClusterConnector::new(params, target.timeout);
                // When a slot moves, its old owner unsubscribes the shard
                // channels of that slot (a `sunsubscribe` push nobody asked
                // for); those still wanted are subscribed again, which
                // redis-rs routes to the new owner. When a node is lost
                // (killed, failed over), every shard channel is subscribed
                // again until each succeeds: those of the lost node's slots
                // land on the replica promoted in its place.
                let (lost_tx, lost_rx) = mpsc::unbounded_channel();
                let wanted = tracked.clone();
                let forward: PushHandler = Box::new(move |push| {
                    if push.kind == PushKind::Disconnection {
                        let _ = lost_tx.send(Lost::Node);
                        return;
                    }
                    if push.kind == PushKind::SUnsubscribe {
                        if let Some(Value::BulkString(channel)) = push.data.first()
                            && lock(&wanted).shard_channels.contains(channel)
                        {
                            let _ = lost_tx.send(Lost::Channel(channel.clone()));
                        }
                        return;
                    }
                    if let Some(m) = Message::from_push(push) {
                        let _ = tx.send(m);
                    }
                });
                let link = Arc::new(Link::new(target.clone(), connector, Some(forward)));
                let restorer = tokio::spawn(restore_shard_channels(
                    link.clone(),
                    tracked.clone(),
                    lost_rx,
                    target.clone(),
                ))
                .abort_handle();
                Backend::Cluster {
                    link,
                    tracked,
                    restorer,
                }
            }
            TargetKind::Standalone(_) | TargetKind::Sentinel(_) => {
                let forward: PushHandler = Box::new(move |push| {
                    if let Some(m) = Message::from_push(push) {
                        let _ = tx.send(m);
                    }
                });
                let restore = tracked.clone();
                let on_connect: OnConnect = Box::new(move |conn| resubscribe(conn, &restore));
                let connector = MasterConnector::new(&target, Some(on_connect))?;
                Backend::Master {
                    link: Link::new(target.clone(), connector, Some(forward)),
                    tracked,
                }
            }
        };
        Ok((
            Subscriber {
                inner: Arc::new(Inner { target, backend }),
            },
            rx,
        ))
    }

    /// `SUBSCRIBE` to `channels`.
    pub async fn subscribe<C: AsRef<[u8]>>(&self, channels: &[C]) -> Result<(), Error> {
        self.change(SubscriptionKind::Channel, true, channels).await
    }

    /// `UNSUBSCRIBE` from `channels`.
    pub async fn unsubscribe<C: AsRef<[u8]>>(&self, channels: &[C]) -> Result<(), Error> {
        self.change(SubscriptionKind::Channel, false, channels)
            .await
    }

    /// `PSUBSCRIBE` to `patterns`.
    pub async fn psubscribe<C: AsRef<[u8]>>(&self, patterns: &[C]) -> Result<(), Error> {
        self.change(SubscriptionKind::Pattern, true, patterns).await
    }

    /// `PUNSUBSCRIBE` from `patterns`.
    pub async fn punsubscribe<C: AsRef<[u8]>>(&self, patterns: &[C]) -> Result<(), Error> {
        self.change(SubscriptionKind::Pattern, false, patterns)
            .await
    }

    /// `SSUBSCRIBE` to shard `channels` (Redis >= 7); in a cluster, each on
    /// the node that owns its slot.
    pub async fn ssubscribe<C: AsRef<[u8]>>(&self, channels: &[C]) -> Result<(), Error> {
        self.change(SubscriptionKind::Shard, true, channels).await
    }

    /// `SUNSUBSCRIBE` from shard `channels`.
    pub async fn sunsubscribe<C: AsRef<[u8]>>(&self, channels: &[C]) -> Result<(), Error> {
        self.change(SubscriptionKind::Shard, false, channels).await
    }

    /// True while the subscriber has a connection (for a readiness probe).
    pub fn is_connected(&self) -> bool {
        match &self.inner.backend {
            Backend::Master { link, .. } => link.is_up(),
            Backend::Cluster { link, .. } => link.is_up(),
        }
    }

    /// Watches the subscriber's connection (up, connections and failed
    /// attempts since start, last error), for readiness and metrics; starts
    /// connecting if nothing did yet. Standalone / Sentinel: `up` means
    /// every tracked subscription is restored on the connection.
    pub fn status(&self) -> tokio::sync::watch::Receiver<LinkStatus> {
        match &self.inner.backend {
            Backend::Master { link, .. } => link.status(),
            Backend::Cluster { link, .. } => link.status(),
        }
    }

    /// Why the subscriber has no connection, if it has none.
    pub fn last_error(&self) -> Option<Error> {
        match &self.inner.backend {
            Backend::Master { link, .. } => link.last_error(),
            Backend::Cluster { link, .. } => link.last_error(),
        }
    }

    async fn change<C: AsRef<[u8]>>(
        &self,
        kind: SubscriptionKind,
        add: bool,
        names: &[C],
    ) -> Result<(), Error> {
        if names.is_empty() {
            return Ok(());
        }
        let target = &self.inner.target;
        let names: Vec<Vec<u8>> = names.iter().map(|n| n.as_ref().to_vec()).collect();
        let work = async {
            match &self.inner.backend {
                Backend::Master { link, tracked } => {
                    // Remember first: a reconnection from now on restores it.
                    track(tracked, kind, add, &names);
                    if !add && !link.is_up() {
                        // Nothing to undo on a connection that is gone.
                        return Ok(());
                    }
                    let (conn, generation) = link.get().await?;
                    send_master(conn, kind, add, names).await.map_err(|e| {
                        if e.is_io_error() || e.is_connection_dropped() {
                            link.report_broken(generation);
                        }
                        Error::from_redis(target, &e)
                    })
                }
                Backend::Cluster { link, tracked, .. } => {
                    if kind == SubscriptionKind::Shard {
                        track(tracked, kind, add, &names);
                    }
                    let (mut conn, _) = link.get().await?;
                    let r = match (kind, add) {
                        (SubscriptionKind::Channel, true) => conn.subscribe(names).await,
                        (SubscriptionKind::Channel, false) => conn.unsubscribe(names).await,
                        (SubscriptionKind::Pattern, true) => conn.psubscribe(names).await,
                        (SubscriptionKind::Pattern, false) => conn.punsubscribe(names).await,
                        // One command per slot: Redis refuses shard channels
                        // of several slots in one (CROSSSLOT). The commands
                        // go out together (pipelined per node), so that
                        // thousands of room channels take a few round trips.
                        (SubscriptionKind::Shard, add) => {
                            let changes = by_slot(names).into_iter().map(|group| {
                                let mut conn = conn.clone();
                                async move {
                                    if add {
                                        conn.ssubscribe(group).await
                                    } else {
                                        conn.sunsubscribe(group).await
                                    }
                                }
                            });
                            futures_util::future::join_all(changes)
                                .await
                                .into_iter()
                                .collect::<RedisResult<Vec<()>>>()
                                .map(drop)
                        }
                    };
                    r.map_err(|e| Error::from_redis(target, &e))
                }
            }
        };
        match tokio::time::timeout(target.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::timeout(
                target,
                self.last_error().map(|e| e.reason()),
            )),
        }
    }
}

/// Sends one subscription change on a multiplexed connection. Shard
/// channels go one per command: redis-rs counts one confirmation per
/// `SSUBSCRIBE` it is not told the arity of.
async fn send_master(
    mut conn: MultiplexedConnection,
    kind: SubscriptionKind,
    add: bool,
    names: Vec<Vec<u8>>,
) -> RedisResult<()> {
    match (kind, add) {
        (SubscriptionKind::Channel, true) => conn.subscribe(names).await,
        (SubscriptionKind::Channel, false) => conn.unsubscribe(names).await,
        (SubscriptionKind::Pattern, true) => conn.psubscribe(names).await,
        (SubscriptionKind::Pattern, false) => conn.punsubscribe(names).await,
        (SubscriptionKind::Shard, add) => {
            let name = if add { "SSUBSCRIBE" } else { "SUNSUBSCRIBE" };
            for n in names {
                redis::cmd(name).arg(n).exec_async(&mut conn).await?;
            }
            Ok(())
        }
    }
}

/// Records a subscription change.
fn track(tracked: &Tracked, kind: SubscriptionKind, add: bool, names: &[Vec<u8>]) {
    let mut t = lock(tracked);
    for n in names {
        if add {
            t.set(kind).insert(n.clone());
        } else {
            t.set(kind).remove(n);
        }
    }
}

/// What the cluster subscriber lost.
enum Lost {
    /// A shard channel its node dropped (the slot moved).
    Channel(Vec<u8>),
    /// A node: whatever it carried is gone.
    Node,
}

/// Subscribes again, on whichever node now owns its slot, every shard
/// channel that was lost while it is still wanted (all of them when a node
/// is lost: subscribing one that is still in place changes nothing); one
/// command per slot, all at once, and those that fail (their node is down
/// and not yet replaced) again with backoff until they succeed.
async fn restore_shard_channels(
    link: Arc<Link<ClusterConnector>>,
    tracked: Tracked,
    mut lost: mpsc::UnboundedReceiver<Lost>,
    target: Arc<Target>,
) {
    let mut pending: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut failures = 0u32;
    let mut node_lost = false;
    loop {
        if pending.is_empty() {
            failures = 0;
            node_lost = false;
            let Some(first) = lost.recv().await else {
                return;
            };
            add_lost(&mut pending, &mut node_lost, &tracked, first);
        }
        while let Ok(more) = lost.try_recv() {
            add_lost(&mut pending, &mut node_lost, &tracked, more);
        }
        {
            let t = lock(&tracked);
            pending.retain(|c| t.shard_channels.contains(c));
        }
        if pending.is_empty() {
            continue;
        }
        let attempt = tokio::time::timeout(target.timeout, link.get()).await;
        let restored = match attempt {
            Ok(Ok((conn, _))) => {
                let groups = by_slot(pending.iter().cloned().collect());
                let results = futures_util::future::join_all(groups.into_iter().map(|group| {
                    let mut conn = conn.clone();
                    let timeout = target.timeout;
                    async move {
                        let ok = matches!(
                            tokio::time::timeout(timeout, conn.ssubscribe(group.clone())).await,
                            Ok(Ok(()))
                        );
                        (group, ok)
                    }
                }))
                .await;
                let mut restored = 0usize;
                for (group, ok) in results {
                    if ok {
                        restored += group.len();
                        for channel in &group {
                            pending.remove(channel);
                        }
                    }
                }
                restored
            }
            _ => 0,
        };
        if restored > 0 {
            tracing::info!(redis = %target.describe, channels = restored, after = if node_lost { "a node was lost" } else { "their slot moved" }, "shard channels subscribed again");
        }
        if !pending.is_empty() {
            failures += 1;
            if failures == 1 || failures.is_power_of_two() {
                tracing::warn!(redis = %target.describe, channels = pending.len(), attempt = failures, "cannot subscribe lost shard channels again yet (their node is down and not yet replaced?); retrying");
            }
            tokio::time::sleep(backoff(&target, failures)).await;
        }
    }
}

fn add_lost(pending: &mut BTreeSet<Vec<u8>>, node_lost: &mut bool, tracked: &Tracked, lost: Lost) {
    match lost {
        Lost::Channel(channel) => {
            pending.insert(channel);
        }
        Lost::Node => {
            *node_lost = true;
            pending.extend(lock(tracked).shard_channels.iter().cloned());
        }
    }
}

/// `names` grouped by hash slot.
fn by_slot(names: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let mut groups: std::collections::BTreeMap<u16, Vec<Vec<u8>>> = Default::default();
    for n in names {
        groups.entry(crate::slot::slot(&n)).or_default().push(n);
    }
    groups.into_values().collect()
}

/// Subscribes a new connection to everything tracked.
fn resubscribe(
    conn: MultiplexedConnection,
    tracked: &Tracked,
) -> BoxFuture<'static, RedisResult<()>> {
    let (channels, patterns, shards) = {
        let t = lock(tracked);
        let all = |s: &BTreeSet<Vec<u8>>| s.iter().cloned().collect::<Vec<_>>();
        (all(&t.channels), all(&t.patterns), all(&t.shard_channels))
    };
    Box::pin(async move {
        if !channels.is_empty() {
            send_master(conn.clone(), SubscriptionKind::Channel, true, channels).await?;
        }
        if !patterns.is_empty() {
            send_master(conn.clone(), SubscriptionKind::Pattern, true, patterns).await?;
        }
        if !shards.is_empty() {
            send_master(conn, SubscriptionKind::Shard, true, shards).await?;
        }
        Ok(())
    })
}
