//! Sharded pub/sub (`[redis] pubsub = "sharded"`, Redis >= 7): the gateway
//! joins a fleet of Node servers on `@socket.io/redis-adapter` 8.3's
//! `createShardedAdapter` with the same channels and encoding
//! (`switchboard_wire::sharded`).
//!
//! - Every gateway `SSUBSCRIBE`s, per namespace, `socket.io#<nsp>#` and its
//!   own `socket.io#<nsp>#<uid>#` (where responses to it arrive).
//! - `subscription = "dynamic"` (Node's default) also subscribes
//!   `socket.io#<nsp>#<room>#` while the room has local sockets: the Hub
//!   tells [`Sharded`] when a room appears or disappears
//!   ([`Sharded::room_watcher`]); one task ([`follow_rooms`]) reads the
//!   Hub's current state for each changed room and sends the
//!   `SSUBSCRIBE` / `SUNSUBSCRIBE` that brings Redis in line, batched per
//!   slot. A room that appears and disappears before the task runs costs
//!   nothing.
//! - Publishing (the HTTP API; responses to sharded requests) is `SPUBLISH`
//!   of the JSON (or msgpack, with binary) `ClusterMessage` on the channel
//!   Node's `computeChannel` picks: the room's channel for a broadcast to
//!   exactly one room, else the namespace channel.
//!
//! In a cluster, `switchboard-redis` subscribes each shard channel on the
//! master that owns its slot and subscribes it again on the new owner when
//! the slot moves or a node fails (see `crates/redis/src/subscriber.rs`).
//!
//! The classic subscriptions stay (upstream channel, the emitter's classic
//! `PUBLISH`, the Admin UI): nothing publishes on them in a sharded fleet,
//! so they cost nothing, and the official emitter still reaches gateways.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
    time::Duration,
};

use switchboard_redis::Subscriber;
use switchboard_wire::{
    BroadcastMessage, ClusterBody, ClusterMessage,
    cluster::{ClusterBroadcast, ClusterPacket},
    sharded::{self, ShardedOptions, SubscriptionMode as WireMode},
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::BusHandler;
use crate::{
    config::{RedisConfig, SubscriptionMode},
    hub::RoomWatcher,
    metrics::Metrics,
};

/// A room of a namespace that appeared or disappeared locally.
type RoomChange = (Arc<str>, Arc<str>);

/// Most room channels one subscription change carries (bounded so that one
/// change stays well within `redis.publish_timeout_ms`).
const BATCH: usize = 1000;

/// How long the room follower waits before retrying a subscription change
/// Redis refused or did not answer (the subscriber reconnects meanwhile).
const RETRY: Duration = Duration::from_millis(500);

/// The sharded side of the Redis bus: channel names and encoding, and the
/// per-room subscriptions of the dynamic mode.
pub struct Sharded {
    options: ShardedOptions,
    subscriber: Subscriber,
    rooms_tx: mpsc::UnboundedSender<RoomChange>,
    rooms_rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<RoomChange>>>,
    metrics: Metrics,
}

impl Sharded {
    /// Built by the Redis bus when `redis.pubsub = "sharded"`, on its subscriber.
    pub(super) fn new(config: &RedisConfig, subscriber: Subscriber, metrics: Metrics) -> Self {
        let mode = match config.subscription {
            SubscriptionMode::Static => WireMode::Static,
            SubscriptionMode::Dynamic => WireMode::Dynamic,
        };
        let (rooms_tx, rooms_rx) = mpsc::unbounded_channel();
        Sharded {
            options: ShardedOptions::new(config.key.clone(), mode),
            subscriber,
            rooms_tx,
            rooms_rx: parking_lot::Mutex::new(Some(rooms_rx)),
            metrics,
        }
    }

    /// The channel names and subscription mode.
    pub fn options(&self) -> &ShardedOptions {
        &self.options
    }

    /// Whether rooms get their own channel (`subscription = "dynamic"`).
    pub fn dynamic(&self) -> bool {
        self.options.mode != WireMode::Static
    }

    /// What the Hub calls when a room appears or disappears; `None` in
    /// static mode (no room channels).
    pub fn room_watcher(&self) -> Option<RoomWatcher> {
        if !self.dynamic() {
            return None;
        }
        let tx = self.rooms_tx.clone();
        Some(Box::new(move |nsp: &Arc<str>, room: &Arc<str>| {
            let _ = tx.send((nsp.clone(), room.clone()));
        }))
    }

    /// The channel and payload Node's sharded adapter would publish `msg`
    /// under (sent with `SPUBLISH`).
    pub fn encode_broadcast(&self, msg: &BroadcastMessage) -> (String, Vec<u8>) {
        let cluster = ClusterMessage::new(
            msg.uid.clone(),
            msg.packet.nsp.clone(),
            ClusterBody::Broadcast(ClusterBroadcast {
                packet: ClusterPacket::event(msg.packet.data.clone()),
                request_id: None,
                opts: msg.opts.clone(),
            }),
        );
        (
            self.options.channel_for(&cluster),
            sharded::encode(&cluster),
        )
    }

    /// The response channel of `requester` and the encoded `response`.
    pub fn encode_response(&self, requester: &str, response: &ClusterMessage) -> (String, Vec<u8>) {
        (
            self.options.response_channel(&response.nsp, requester),
            sharded::encode(response),
        )
    }

    /// Subscribes the base channels of `handler`'s namespaces and, in
    /// dynamic mode, follows its rooms until `shutdown`.
    pub(super) fn start(
        &self,
        handler: Arc<dyn BusHandler>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let base = handler.shard_channels();
        let subscriber = self.subscriber.clone();
        let rooms = self.rooms_rx.lock().take();
        let options = self.options.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            metrics.bus_shard_channels.set(base.len() as i64);
            let work = async {
                // Remembered before it is sent: a connection that is not up
                // yet subscribes them when it comes up.
                loop {
                    match subscriber.ssubscribe(&base).await {
                        Ok(()) => {
                            tracing::info!(channels = ?base, "subscribed to the shard channels");
                            break;
                        }
                        Err(err) => {
                            tracing::warn!(%err, "cannot subscribe to the shard channels yet; retrying");
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                }
                if let Some(rooms) = rooms {
                    follow_rooms(rooms, handler, subscriber.clone(), options, metrics).await;
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = work => {}
            }
        })
    }
}

/// Keeps one shard subscription per room that has local sockets: reads the
/// changed rooms in batches, compares each with the Hub's current state
/// and subscribes / unsubscribes the difference. A failed change is retried
/// after [`RETRY`] (state is re-read then, so a room gone meanwhile is
/// simply dropped).
async fn follow_rooms(
    mut changes: mpsc::UnboundedReceiver<RoomChange>,
    handler: Arc<dyn BusHandler>,
    subscriber: Subscriber,
    options: ShardedOptions,
    metrics: Metrics,
) {
    let mut subscribed: HashSet<RoomChange> = HashSet::new();
    let mut pending: BTreeSet<RoomChange> = BTreeSet::new();
    loop {
        if pending.is_empty() {
            match changes.recv().await {
                Some(change) => {
                    pending.insert(change);
                }
                None => return,
            }
        }
        while pending.len() < BATCH
            && let Ok(change) = changes.try_recv()
        {
            pending.insert(change);
        }
        let mut add = Vec::new();
        let mut remove = Vec::new();
        let batch: Vec<RoomChange> = std::iter::from_fn(|| pending.pop_first())
            .take(BATCH)
            .collect();
        for (nsp, room) in batch {
            let wanted = handler.has_local_room(&nsp, &room);
            let key = (nsp, room);
            match (wanted, subscribed.contains(&key)) {
                (true, false) => add.push(key),
                (false, true) => remove.push(key),
                _ => {}
            }
        }
        let channels = |keys: &[RoomChange]| -> Vec<String> {
            keys.iter()
                .map(|(nsp, room)| options.channels.room(nsp, room))
                .collect()
        };
        let mut failed = false;
        if !add.is_empty() {
            match subscriber.ssubscribe(&channels(&add)).await {
                Ok(()) => subscribed.extend(add),
                Err(err) => {
                    tracing::warn!(%err, rooms = add.len(), "cannot subscribe room channels; retrying");
                    pending.extend(add);
                    failed = true;
                }
            }
        }
        if !remove.is_empty() {
            match subscriber.sunsubscribe(&channels(&remove)).await {
                Ok(()) => {
                    for key in &remove {
                        subscribed.remove(key);
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, rooms = remove.len(), "cannot unsubscribe room channels; retrying");
                    pending.extend(remove);
                    failed = true;
                }
            }
        }
        metrics.bus_shard_room_channels.set(subscribed.len() as i64);
        if failed {
            metrics.bus_shard_subscribe_errors.inc();
            tokio::time::sleep(RETRY).await;
        }
    }
}
