//! Presence: who is online, and who is in a room, across every gateway.
//!
//! The session layer reports what happens to its sockets ([`Presence::
//! connected`], [`Presence::joined`], [`Presence::left`], [`Presence::
//! disconnected`]); these calls only update this gateway's counts in
//! memory (no I/O) and mark what changed. One task ([`Presence::run`])
//! writes the changes to the store ([`store`]: Redis for a fleet, memory
//! in the embedded mode), refreshes every entry every `ttl_s / 3`, reaps
//! the entries of gateways that died, and announces:
//!
//! - `presence:join` / `presence:leave` to a room with presence when a
//!   user's first socket (fleet-wide) joins it or its last one leaves;
//! - `presence:online` / `presence:offline` to the user's
//!   `presence.online_rooms` on their first connect and last disconnect.
//!
//! A user counts once per gateway in the store (its sockets are counted
//! here), so a second tab changes a socket count but announces nothing.
//! Announcements are published through the bus as room broadcasts, so
//! every gateway delivers them. Anonymous sockets have no presence.

mod config;
mod store;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use engineioxide_core::Sid;
use futures_util::future::join_all;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use switchboard_wire::{
    BroadcastFlags, BroadcastMessage, BroadcastOptions, BusPacket, Channels, encode_broadcast,
    json_to_msgpack,
    presence::{Info, Member, room_scope, user_scope},
    room_template::{RoomTemplate, Vars},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use config::PresenceConfig;
use store::{Left, Store, Write};

use crate::{
    bus::{Bus, BusError},
    metrics::Metrics,
    socketio::Socket,
};

/// The uid announcements are published under: not any gateway's own, so
/// every gateway (the publisher included) delivers them.
const PRESENCE_UID: &str = "switchboard-presence";
/// Store calls in flight at once during a flush or refresh.
const IN_FLIGHT: usize = 256;

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One member this gateway holds in a scope.
struct Held {
    /// Sockets of the member here.
    sockets: u32,
    /// What is stored with it when it joins the fleet.
    info: Info,
}

/// This gateway's presence, in memory.
#[derive(Default)]
struct Local {
    /// scope -> member -> held.
    scopes: HashMap<String, HashMap<String, Held>>,
    /// socket -> the (scope, member) pairs it counts in.
    sockets: HashMap<Sid, Vec<(String, String)>>,
    /// (scope, member) pairs changed since the last flush.
    dirty: HashSet<(String, String)>,
}

/// Presence of one gateway; see the module documentation.
pub struct Presence {
    gateway: String,
    ttl_ms: u64,
    refresh: Duration,
    online_templates: Vec<RoomTemplate>,
    track_online: bool,
    /// Some `[[client.rooms]]` rule has `presence = true`.
    has_rooms: bool,
    claims: Vec<String>,
    /// The namespace `presence:online` / `offline` are announced in.
    announce_nsp: String,
    store: Store,
    bus: Arc<Bus>,
    channels: Channels,
    metrics: Metrics,
    local: Mutex<Local>,
    wake: Notify,
    /// Expiry (Unix ms) of entries written now: the last lease written, so
    /// that no entry outlives its gateway's lease.
    expiry: AtomicU64,
}

/// A scope parsed back: a room's presence or a user's online state.
enum Scope<'a> {
    Room { nsp: &'a str, room: &'a str },
    User,
}

fn parse_scope(scope: &str) -> Option<Scope<'_>> {
    if let Some(rest) = scope.strip_prefix("r:") {
        let (nsp, room) = rest.split_once(':')?;
        return Some(Scope::Room { nsp, room });
    }
    scope.strip_prefix("u:").map(|_| Scope::User)
}

impl Presence {
    /// Presence for `config`, on `bus` (Redis when the bus is Redis);
    /// `gateway` is this gateway's uid. The config was validated.
    pub(crate) fn new(
        config: &crate::config::Config,
        gateway: &str,
        bus: Arc<Bus>,
        metrics: Metrics,
    ) -> Presence {
        let p = &config.presence;
        Presence {
            gateway: gateway.to_string(),
            ttl_ms: p.ttl_s * 1000,
            refresh: p.refresh_period(),
            online_templates: p.online_templates().unwrap_or_default(),
            track_online: p.tracks_online(),
            has_rooms: config.client.rooms.iter().any(|r| r.presence),
            claims: p.claims.clone(),
            announce_nsp: config
                .socketio
                .namespaces
                .first()
                .cloned()
                .unwrap_or_else(|| "/".into()),
            store: Store::new(bus.store_link(), &config.redis.key),
            bus,
            channels: Channels::new(config.redis.key.clone()),
            metrics,
            local: Mutex::new(Local::default()),
            wake: Notify::new(),
            expiry: AtomicU64::new(0),
        }
    }

    /// Claims the authenticator must keep for presence (the public claims
    /// and those `online_rooms` read).
    pub(crate) fn claims_needed(config: &PresenceConfig) -> Vec<String> {
        let mut names = config.claims.clone();
        for t in config.online_templates().unwrap_or_default() {
            names.extend(t.variables().map(str::to_string));
        }
        names
    }

    /// Whether some room rule has presence (the `presence` client event is
    /// then the members query).
    pub fn has_rooms(&self) -> bool {
        self.has_rooms
    }

    /// Whether online state is tracked.
    pub fn tracks_online(&self) -> bool {
        self.track_online
    }

    fn info(&self, socket: &Socket, announce: Vec<String>) -> Info {
        Info {
            joined_at: now_ms(),
            claims: public_claims(&socket.claims, &self.claims),
            announce,
        }
    }

    /// A socket connected: its user is online (when tracked).
    pub(crate) fn connected(&self, socket: &Socket) {
        let Some(user) = socket.user.as_deref() else {
            return;
        };
        if !self.track_online {
            return;
        }
        let scope = user_scope(user);
        self.add(socket.id, scope, user, || {
            let rooms = self
                .online_templates
                .iter()
                .filter_map(|t| t.expand_one(&Vars::claims(&socket.claims)))
                .collect();
            self.info(socket, rooms)
        });
    }

    /// A socket joined a room with presence.
    pub(crate) fn joined(&self, socket: &Socket, room: &str) {
        let Some(user) = socket.user.as_deref() else {
            return;
        };
        self.add(socket.id, room_scope(&socket.nsp, room), user, || {
            self.info(socket, Vec::new())
        });
    }

    /// A socket left a room with presence (it may not have been in it).
    pub(crate) fn left(&self, socket: &Socket, room: &str) {
        let Some(user) = socket.user.as_deref() else {
            return;
        };
        let key = (room_scope(&socket.nsp, room), user.to_string());
        let mut local = self.local.lock();
        let Some(list) = local.sockets.get_mut(&socket.id) else {
            return;
        };
        let Some(at) = list.iter().position(|k| *k == key) else {
            return;
        };
        list.swap_remove(at);
        self.release(&mut local, key);
        drop(local);
        self.wake.notify_one();
    }

    /// A socket is gone: it leaves every presence it counted in.
    pub(crate) fn disconnected(&self, socket: &Socket) {
        let mut local = self.local.lock();
        let Some(list) = local.sockets.remove(&socket.id) else {
            return;
        };
        for key in list {
            self.release(&mut local, key);
        }
        drop(local);
        self.wake.notify_one();
    }

    fn add(&self, id: Sid, scope: String, member: &str, info: impl FnOnce() -> Info) {
        let key = (scope, member.to_string());
        let mut local = self.local.lock();
        let list = local.sockets.entry(id).or_default();
        if list.contains(&key) {
            return;
        }
        list.push(key.clone());
        let is_room = key.0.starts_with("r:");
        let members = local.scopes.entry(key.0.clone()).or_default();
        if members.is_empty() && is_room {
            self.metrics.presence_rooms.inc();
        }
        let held = members.entry(key.1.clone()).or_insert_with(|| {
            self.metrics.presence_members.inc();
            Held {
                sockets: 0,
                info: info(),
            }
        });
        held.sockets += 1;
        local.dirty.insert(key);
        drop(local);
        self.wake.notify_one();
    }

    fn release(&self, local: &mut Local, key: (String, String)) {
        let Some(members) = local.scopes.get_mut(&key.0) else {
            return;
        };
        if let Some(held) = members.get_mut(&key.1) {
            held.sockets = held.sockets.saturating_sub(1);
            if held.sockets == 0 {
                members.remove(&key.1);
                self.metrics.presence_members.dec();
            }
        }
        if members.is_empty() {
            local.scopes.remove(&key.0);
            if key.0.starts_with("r:") {
                self.metrics.presence_rooms.dec();
            }
        }
        local.dirty.insert(key);
    }

    /// Whether `socket` counts in the presence of `room` (it joined the
    /// room through a rule with presence and has not left).
    pub(crate) fn counts_in(&self, socket: &Socket, room: &str) -> bool {
        let Some(user) = socket.user.as_deref() else {
            return false;
        };
        let key = (room_scope(&socket.nsp, room), user.to_string());
        self.local
            .lock()
            .sockets
            .get(&socket.id)
            .is_some_and(|list| list.contains(&key))
    }

    /// The members of `room` in `nsp`, across the fleet.
    pub async fn members(&self, nsp: &str, room: &str) -> Result<Vec<Member>, BusError> {
        self.store
            .members(&self.metrics, &room_scope(nsp, room))
            .await
    }

    /// The user's presence when online anywhere (sockets summed over the
    /// fleet); `None` when offline.
    pub async fn online(&self, user: &str) -> Result<Option<Member>, BusError> {
        let members = self.store.members(&self.metrics, &user_scope(user)).await?;
        Ok(members.into_iter().find(|m| m.user == user))
    }

    /// Writes, refreshes and reaps until `shutdown`; then removes what is
    /// left (the sessions are being closed) for up to `drain`, and retires
    /// this gateway's lease.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, drain: Duration) {
        let mut registered: HashSet<String> = HashSet::new();
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => self.flush(&mut registered).await,
                _ = tick.tick() => {
                    self.refresh_all(&mut registered).await;
                    self.reap().await;
                }
            }
        }
        let drained = tokio::time::timeout(drain, async {
            loop {
                self.flush(&mut registered).await;
                if self.local.lock().scopes.is_empty() {
                    return;
                }
                self.wake.notified().await;
            }
        })
        .await;
        if drained.is_ok()
            && let Err(e) = self.store.retire(&self.gateway).await
        {
            tracing::warn!(error = %e, "presence: could not remove this gateway's lease; it expires");
        }
    }

    /// Writes what changed since the last flush.
    async fn flush(&self, registered: &mut HashSet<String>) {
        let expiry = self.expiry.load(Ordering::Acquire);
        let writable = expiry > now_ms() || matches!(self.store, Store::Memory(_));
        let (ups, rems) = {
            let mut local = self.local.lock();
            if local.dirty.is_empty() {
                return;
            }
            let dirty = std::mem::take(&mut local.dirty);
            let mut ups: HashMap<String, Vec<(String, u32, Info)>> = HashMap::new();
            let mut rems: HashMap<String, Vec<String>> = HashMap::new();
            for (scope, member) in dirty {
                match local.scopes.get(&scope).and_then(|m| m.get(&member)) {
                    Some(held) if writable => ups.entry(scope).or_default().push((
                        member,
                        held.sockets,
                        held.info.clone(),
                    )),
                    Some(_) => {
                        // No live lease yet (Redis down): written by the
                        // refresh that renews it.
                        local.dirty.insert((scope, member));
                    }
                    None => rems.entry(scope).or_default().push(member),
                }
            }
            (ups, rems)
        };
        self.write(ups, registered, expiry).await;
        self.remove(rems, registered).await;
    }

    /// Upserts members per scope, registering new scopes first (so a
    /// reaper finds every scope this gateway ever wrote to).
    async fn write(
        &self,
        ups: HashMap<String, Vec<(String, u32, Info)>>,
        registered: &mut HashSet<String>,
        expiry: u64,
    ) {
        if ups.is_empty() {
            return;
        }
        let new: Vec<&str> = ups
            .keys()
            .filter(|s| !registered.contains(*s))
            .map(String::as_str)
            .collect();
        if let Err(e) = self.store.register(&self.gateway, &new, true).await {
            self.failed("register", &e);
            let mut local = self.local.lock();
            for (scope, members) in ups {
                for (member, _, _) in members {
                    local.dirty.insert((scope.clone(), member));
                }
            }
            return;
        }
        registered.extend(new.into_iter().map(str::to_string));
        let items: Vec<_> = ups.iter().collect();
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(IN_FLIGHT) {
            let mut calls = Vec::with_capacity(chunk.len());
            for (scope, members) in chunk {
                calls.push(self.upsert_one(scope, members, expiry));
            }
            results.extend(join_all(calls).await);
        }
        let mut announcements = Vec::new();
        for ((scope, members), result) in items.into_iter().zip(results) {
            self.metrics
                .presence_updates
                .with_label_values(&["upsert"])
                .inc();
            match result {
                Ok(joined) => {
                    for member in joined {
                        if let Some((_, _, info)) = members.iter().find(|(m, _, _)| *m == member) {
                            self.announce_join(scope, &member, info, &mut announcements);
                        }
                    }
                }
                Err(e) => {
                    self.failed("upsert", &e);
                    let mut local = self.local.lock();
                    for (member, _, _) in members {
                        local.dirty.insert((scope.clone(), member.clone()));
                    }
                }
            }
        }
        self.publish(announcements).await;
    }

    /// Removes members per scope; a scope this gateway holds no member of
    /// any more is unregistered. A failed removal is retried at the next
    /// refresh (this gateway's lease keeps its entries from being reaped).
    async fn remove(&self, rems: HashMap<String, Vec<String>>, registered: &mut HashSet<String>) {
        if rems.is_empty() {
            return;
        }
        let items: Vec<_> = rems.iter().collect();
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(IN_FLIGHT) {
            let mut calls = Vec::with_capacity(chunk.len());
            for (scope, members) in chunk {
                calls.push(self.remove_one(scope, members));
            }
            results.extend(join_all(calls).await);
        }
        let mut announcements = Vec::new();
        let mut emptied = Vec::new();
        for ((scope, members), result) in items.into_iter().zip(results) {
            self.metrics
                .presence_updates
                .with_label_values(&["remove"])
                .inc();
            match result {
                Ok(left) => {
                    self.announce_leaves(scope, &left, &mut announcements);
                    if !self.local.lock().scopes.contains_key(scope) {
                        emptied.push(scope.as_str());
                    }
                }
                Err(e) => {
                    self.failed("remove", &e);
                    let mut local = self.local.lock();
                    for member in members {
                        local.dirty.insert((scope.clone(), member.clone()));
                    }
                }
            }
        }
        self.publish(announcements).await;
        match self.store.register(&self.gateway, &emptied, false).await {
            Ok(()) => {
                for scope in emptied {
                    registered.remove(scope);
                }
            }
            Err(e) => self.failed("unregister", &e),
        }
    }

    async fn upsert_one(
        &self,
        scope: &str,
        members: &[(String, u32, Info)],
        expiry: u64,
    ) -> Result<Vec<String>, BusError> {
        let writes: Vec<Write<'_>> = members
            .iter()
            .map(|(member, sockets, info)| Write {
                member,
                sockets: *sockets,
                info,
            })
            .collect();
        self.store
            .upsert(&self.metrics, scope, &self.gateway, expiry, &writes)
            .await
    }

    async fn refresh_one(
        &self,
        scope: &str,
        members: &[String],
        expiry: u64,
    ) -> Result<Vec<String>, BusError> {
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        self.store
            .refresh(&self.metrics, scope, &self.gateway, expiry, &refs)
            .await
    }

    async fn remove_one(&self, scope: &str, members: &[String]) -> Result<Vec<Left>, BusError> {
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        self.store
            .remove(&self.metrics, scope, &self.gateway, &refs)
            .await
    }

    /// Renews the lease, then every entry this gateway holds.
    async fn refresh_all(&self, registered: &mut HashSet<String>) {
        let expiry = now_ms().saturating_add(self.ttl_ms);
        match self.store.lease(&self.gateway, expiry).await {
            Ok(missing) => {
                if missing && !registered.is_empty() {
                    tracing::warn!(
                        "presence: this gateway's lease was gone (taken for dead); writing its entries again"
                    );
                    registered.clear();
                }
            }
            Err(e) => {
                self.failed("lease", &e);
                return;
            }
        }
        self.expiry.store(expiry, Ordering::Release);
        if registered.is_empty() {
            // Nothing registered (first refresh, or the lease was taken):
            // write every entry in full, registering its scope.
            let mut local = self.local.lock();
            let all: Vec<(String, String)> = local
                .scopes
                .iter()
                .flat_map(|(scope, members)| members.keys().map(|m| (scope.clone(), m.clone())))
                .collect();
            local.dirty.extend(all);
        } else {
            let scopes: Vec<(String, Vec<String>)> = {
                let local = self.local.lock();
                local
                    .scopes
                    .iter()
                    .map(|(scope, members)| (scope.clone(), members.keys().cloned().collect()))
                    .collect()
            };
            let mut results = Vec::with_capacity(scopes.len());
            for chunk in scopes.chunks(IN_FLIGHT) {
                let mut calls = Vec::with_capacity(chunk.len());
                for (scope, members) in chunk {
                    calls.push(self.refresh_one(scope, members, expiry));
                }
                results.extend(join_all(calls).await);
            }
            self.metrics
                .presence_updates
                .with_label_values(&["refresh"])
                .inc_by(scopes.len() as u64);
            let mut local = self.local.lock();
            for ((scope, _), result) in scopes.into_iter().zip(results) {
                match result {
                    // Entries reaped meanwhile: written again in full.
                    Ok(gone) => local
                        .dirty
                        .extend(gone.into_iter().map(|m| (scope.clone(), m))),
                    Err(e) => self.failed("refresh", &e),
                }
            }
        }
        self.flush(registered).await;
    }

    /// Removes the entries of gateways whose lease expired, announcing
    /// what this gateway's reaper won.
    async fn reap(&self) {
        match self
            .store
            .reap(&self.metrics, &self.gateway, self.ttl_ms)
            .await
        {
            Ok(reaped) => {
                let mut announcements = Vec::new();
                for (scope, left) in &reaped {
                    self.metrics
                        .presence_updates
                        .with_label_values(&["reap"])
                        .inc_by(left.len() as u64);
                    self.announce_leaves(scope, left, &mut announcements);
                }
                self.publish(announcements).await;
            }
            Err(e) => self.failed("reap", &e),
        }
    }

    fn failed(&self, op: &'static str, e: &BusError) {
        self.metrics
            .presence_updates
            .with_label_values(&[&format!("{op}_failed")])
            .inc();
        if let Some(suppressed) = FAILURE_LOG.allow() {
            tracing::warn!(op, error = %e, suppressed, "presence: store call failed; retried at the next refresh");
        }
    }

    fn announce_join(&self, scope: &str, member: &str, info: &Info, out: &mut Vec<Announcement>) {
        match parse_scope(scope) {
            Some(Scope::Room { nsp, room }) => out.push(Announcement {
                nsp: nsp.to_string(),
                room: room.to_string(),
                event: "presence:join",
                data: json!({"room": room, "user": member, "joined_at": info.joined_at, "claims": info.claims}),
            }),
            Some(Scope::User) => {
                for room in &info.announce {
                    out.push(Announcement {
                        nsp: self.announce_nsp.clone(),
                        room: room.clone(),
                        event: "presence:online",
                        data: json!({"room": room, "user": member, "claims": info.claims}),
                    });
                }
            }
            None => {}
        }
    }

    fn announce_leaves(&self, scope: &str, left: &[Left], out: &mut Vec<Announcement>) {
        for (member, info) in left {
            match parse_scope(scope) {
                Some(Scope::Room { nsp, room }) => out.push(Announcement {
                    nsp: nsp.to_string(),
                    room: room.to_string(),
                    event: "presence:leave",
                    data: json!({"room": room, "user": member}),
                }),
                Some(Scope::User) => {
                    for room in &info.announce {
                        out.push(Announcement {
                            nsp: self.announce_nsp.clone(),
                            room: room.clone(),
                            event: "presence:offline",
                            data: json!({"room": room, "user": member}),
                        });
                    }
                }
                None => {}
            }
        }
    }

    /// Publishes announcements as room broadcasts, in one pipeline.
    async fn publish(&self, announcements: Vec<Announcement>) {
        if announcements.is_empty() {
            return;
        }
        self.metrics
            .presence_updates
            .with_label_values(&["announce"])
            .inc_by(announcements.len() as u64);
        let messages = announcements
            .into_iter()
            .map(|a| {
                let msg = BroadcastMessage {
                    uid: PRESENCE_UID.into(),
                    packet: BusPacket {
                        packet_type: 2,
                        data: json_to_msgpack(&json!([a.event, a.data])),
                        nsp: a.nsp.clone(),
                        id: None,
                    },
                    opts: BroadcastOptions {
                        rooms: vec![a.room.clone()],
                        except: Vec::new(),
                        flags: BroadcastFlags::default(),
                    },
                };
                (self.channels.room(&a.nsp, &a.room), encode_broadcast(&msg))
            })
            .collect();
        if let Err(e) = self.bus.publish_many(messages).await {
            self.failed("announce", &e);
        }
    }
}

/// One presence event to publish.
struct Announcement {
    nsp: String,
    room: String,
    event: &'static str,
    data: Value,
}

/// Store failures happen at the rate of changes while Redis is down.
static FAILURE_LOG: crate::log_throttle::LogThrottle =
    crate::log_throttle::LogThrottle::new(Duration::from_secs(10));

/// The claims listed in `presence.claims`, from a socket's kept claims.
fn public_claims(claims: &Map<String, Value>, names: &[String]) -> Map<String, Value> {
    names
        .iter()
        .filter_map(|n| claims.get(n).map(|v| (n.clone(), v.clone())))
        .collect()
}
