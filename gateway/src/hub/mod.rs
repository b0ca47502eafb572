//! The Hub: the one owner of this gateway's connection state.
//!
//! Which sockets exist (by id, per namespace), which rooms each is in, how
//! many sockets each user holds, when each token expires and which client
//! acks are awaited. It is synchronous (no I/O, no async) so that every rule
//! about that state is unit-tested without a connection; the Socket.IO layer
//! (`session`) does the I/O and asks the Hub.
//!
//! Built like centrifuge's `hub.go`: the registries are split in
//! [`SHARDS`] shards by hash, each behind its own `parking_lot` lock, so that
//! connects, joins and fan-outs touching different sockets and rooms do not
//! wait for each other.
//!
//! Room membership is stored once, as two indexes kept in step under the
//! socket's shard lock: room -> members (what a fan-out reads) and socket ->
//! rooms (what a disconnect or `fetchSockets` reads). Room names are
//! interned `Arc<str>` shared by both. A socket's own id acts as a room
//! (Socket.IO's private room) without being stored as one.
//!
//! Lock order, to stay deadlock-free: a socket shard, then room shards one at
//! a time; readers never hold a room shard while taking a socket shard.

mod acks;
mod expiries;
mod membership;
mod sockets;
mod users;

#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, Hash},
    sync::{Arc, OnceLock},
};

use engineioxide_core::Sid;

pub(crate) use acks::Acks;
use expiries::Expiries;
use membership::{RoomShard, room_hash};
use sockets::{Entry, SocketShard};
use users::Users;

/// How many shards each registry is split into (a power of two).
pub const SHARDS: usize = 16;

/// The hasher of every registry of the Hub: foldhash, keyed with seeds
/// from the OS's random generator ([`hub_hasher`]). Room names are chosen
/// by clients and the API, so the hasher must be keyed; std's SipHash cost
/// three hashes of ~20 ns per room of a many-room broadcast, most of whose
/// rooms this gateway does not hold. Why a keyed foldhash is enough here:
/// docs/architecture.md, "The Hub's hasher".
pub(crate) type HubHasher = foldhash::fast::SeedableRandomState;

/// A hasher for one of the Hub's tables: the process's shared seed and a
/// seed of its own, both from the OS's generator (foldhash's default seed
/// is the process's address layout, which it does not claim is secret).
pub(crate) fn hub_hasher() -> HubHasher {
    static SHARED: OnceLock<foldhash::SharedSeed> = OnceLock::new();
    let shared = SHARED.get_or_init(|| foldhash::SharedSeed::from_u64(rand::random()));
    HubHasher::with_seed(rand::random(), shared)
}

/// Which room shard a room's hash picks: bits above those a table of
/// fewer than 2^32 buckets indexes with, and below the 7 it keeps as tags,
/// so that the rooms of one shard still spread over its whole table.
fn room_shard_index(hash: u64) -> usize {
    ((hash >> 32) as usize) & (SHARDS - 1)
}

/// Why the Hub refused a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The user already holds `limits.max_connections_per_user` sockets in
    /// this namespace.
    TooManyForUser,
}

/// What the Hub knows of a socket when it is added.
#[derive(Debug, Clone)]
pub struct NewSocket<'a> {
    /// The namespace it connected to.
    pub nsp: &'a Arc<str>,
    /// Its Socket.IO id.
    pub id: Sid,
    /// The authenticated user, if any: the socket's own string, shared (not
    /// copied) by the registry and the per-user counts.
    pub user: Option<&'a Arc<str>>,
    /// Unix seconds at which its token expires.
    pub expires_at: Option<u64>,
}

/// The connection state of one gateway; `T` is the handle a fan-out needs
/// to reach a socket (the session layer's `Arc<Socket>`; plain values in
/// tests).
pub struct Hub<T> {
    hasher: HubHasher,
    sockets: Box<[SocketShard<T>]>,
    rooms: Box<[RoomShard<T>]>,
    users: Users,
    expiries: Expiries,
    /// Client acks awaited for broadcasts-with-ack.
    pub(crate) acks: Acks,
    /// Told the namespace and name of each room created or emptied (the
    /// sharded bus subscribes to a room's channel while it exists here).
    room_watcher: OnceLock<RoomWatcher>,
}

/// Called with `(nsp, room)` when a room appears or disappears on this
/// gateway; it must not block (it runs under a socket's shard lock). Calls
/// for one room may arrive out of order across threads: the watcher reads
/// [`Hub::has_named_room`] to learn the current state.
pub type RoomWatcher = Box<dyn Fn(&Arc<str>, &Arc<str>) + Send + Sync>;

impl<T: Clone> Default for Hub<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> Hub<T> {
    /// An empty hub.
    pub fn new() -> Self {
        Hub {
            hasher: hub_hasher(),
            sockets: (0..SHARDS)
                .map(|_| SocketShard::new(HashMap::with_hasher(hub_hasher())))
                .collect(),
            rooms: (0..SHARDS).map(|_| RoomShard::default()).collect(),
            users: Users::new(SHARDS),
            expiries: Expiries::default(),
            acks: Acks::default(),
            room_watcher: OnceLock::new(),
        }
    }

    /// Installs the room watcher (once; a second one is refused and
    /// returned).
    pub fn watch_rooms(&self, watcher: RoomWatcher) -> Result<(), RoomWatcher> {
        self.room_watcher.set(watcher)
    }

    fn room_changed(&self, nsp: &Arc<str>, room: &Arc<str>) {
        if let Some(watch) = self.room_watcher.get() {
            watch(nsp, room);
        }
    }

    /// Whether the room `room` of `nsp` exists here (a socket id is not a
    /// named room).
    pub fn has_named_room(&self, nsp: &str, room: &str) -> bool {
        let hash = room_hash(&self.hasher, room);
        self.room_shard(hash)
            .for_each(hash, nsp, room, &mut |_, _| {})
    }

    fn shard_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize) & (SHARDS - 1)
    }

    fn socket_shard(&self, id: &Sid) -> &SocketShard<T> {
        &self.sockets[self.shard_of(id)]
    }

    fn room_shard(&self, hash: u64) -> &RoomShard<T> {
        &self.rooms[room_shard_index(hash)]
    }

    /// Removes socket `id` from `room`; whether the room emptied.
    fn remove_member(&self, nsp: &str, room: &str, id: Sid) -> bool {
        let hash = room_hash(&self.hasher, room);
        self.room_shard(hash)
            .remove(&self.hasher, hash, nsp, room, id)
    }

    /// Registers a connected socket (in no room yet), counting it against its
    /// user's limit (`max_per_user`, 0 = unlimited) and recording its expiry.
    pub fn add(
        &self,
        socket: NewSocket<'_>,
        handle: T,
        max_per_user: usize,
    ) -> Result<(), Refused> {
        if let Some(user) = socket.user
            && !self
                .users
                .claim(self.shard_of(&**user), socket.nsp, user, max_per_user)
        {
            return Err(Refused::TooManyForUser);
        }
        if let Some(exp) = socket.expires_at {
            self.expiries.insert(exp, socket.id);
        }
        self.socket_shard(&socket.id).write().insert(
            socket.id,
            Box::new(Entry {
                nsp: socket.nsp.clone(),
                handle,
                user: socket.user.cloned(),
                expires_at: socket.expires_at,
                rooms: Vec::new(),
            }),
        );
        Ok(())
    }

    /// Removes a socket with its memberships, user slot, expiry and pending
    /// acks; returns how many rooms emptied (0 when it was not here).
    pub fn remove(&self, id: Sid) -> usize {
        let mut shard = self.socket_shard(&id).write();
        let Some(entry) = shard.remove(&id) else {
            return 0;
        };
        if let Some(user) = &entry.user {
            self.users.release(self.shard_of(&**user), &entry.nsp, user);
        }
        if let Some(exp) = entry.expires_at {
            self.expiries.remove(exp, id);
        }
        self.acks.forget_socket(id);
        entry
            .rooms
            .iter()
            .filter(|room| self.remove_member(&entry.nsp, room, id))
            .inspect(|room| self.room_changed(&entry.nsp, room))
            .count()
    }

    /// Adds a socket to rooms; returns how many rooms were created. A socket
    /// not (or no longer) here joins nothing, so a late join cannot leak it.
    pub fn join<S: AsRef<str>>(&self, id: Sid, rooms: &[S]) -> usize {
        let mut shard = self.socket_shard(&id).write();
        let Some(entry) = shard.get_mut(&id) else {
            return 0;
        };
        if entry.rooms.capacity() == 0 {
            // The rooms of a connect (its user and role rooms, usually two)
            // get exactly their room, not a `Vec`'s minimum of four
            // (memory per idle connection); later joins grow it as usual.
            entry.rooms.reserve_exact(rooms.len());
        }
        let mut created = 0;
        for room in rooms {
            let room = room.as_ref();
            if entry.rooms.iter().any(|r| &**r == room) {
                continue;
            }
            let hash = room_hash(&self.hasher, room);
            let (name, new) = self.room_shard(hash).insert(
                &self.hasher,
                hash,
                &entry.nsp,
                room,
                id,
                entry.handle.clone(),
            );
            created += usize::from(new);
            if new {
                self.room_changed(&entry.nsp, &name);
            }
            entry.rooms.push(name);
        }
        created
    }

    /// Removes a socket from rooms; returns how many rooms emptied.
    pub fn leave<S: AsRef<str>>(&self, id: Sid, rooms: &[S]) -> usize {
        let mut shard = self.socket_shard(&id).write();
        let Some(entry) = shard.get_mut(&id) else {
            return 0;
        };
        let mut emptied = 0;
        for room in rooms {
            let room = room.as_ref();
            let Some(at) = entry.rooms.iter().position(|r| &**r == room) else {
                continue;
            };
            let name = entry.rooms.swap_remove(at);
            if self.remove_member(&entry.nsp, room, id) {
                emptied += 1;
                self.room_changed(&entry.nsp, &name);
            }
        }
        emptied
    }

    /// The sockets of `nsp` in any of `rooms` (every socket of the namespace
    /// when `rooms` is empty) and in none of `except`, each once.
    ///
    /// The fan-out's hot path: one vector per call, no allocation or lock
    /// per recipient (the exception set is only built when there are
    /// exceptions).
    pub fn targets<S: AsRef<str>>(&self, nsp: &str, rooms: &[S], except: &[S]) -> Vec<T> {
        let mut excluded = HashSet::with_hasher(self.hasher.clone());
        for room in except {
            self.for_each_member(nsp, room.as_ref(), |id, _| {
                excluded.insert(id);
            });
        }
        let mut out = Vec::new();
        match rooms {
            [] => {
                for shard in &self.sockets {
                    for (id, entry) in shard.read().iter() {
                        if &*entry.nsp == nsp && !excluded.contains(id) {
                            out.push(entry.handle.clone());
                        }
                    }
                }
            }
            [room] => self.for_each_member(nsp, room.as_ref(), |id, handle| {
                if !excluded.contains(&id) {
                    out.push(handle.clone());
                }
            }),
            _ => {
                // Several rooms: a socket in more than one is sent once.
                let mut seen = excluded;
                for room in rooms {
                    self.for_each_member(nsp, room.as_ref(), |id, handle| {
                        if seen.insert(id) {
                            out.push(handle.clone());
                        }
                    });
                }
            }
        }
        out
    }

    /// Calls `f` for each member of `room` in `nsp`, or for the socket whose
    /// id is `room`.
    fn for_each_member(&self, nsp: &str, room: &str, mut f: impl FnMut(Sid, &T)) {
        let hash = room_hash(&self.hasher, room);
        if self.room_shard(hash).for_each(hash, nsp, room, &mut f) {
            return;
        }
        if let Ok(id) = room.parse::<Sid>()
            && let Some(entry) = self.socket_shard(&id).read().get(&id)
            && &*entry.nsp == nsp
        {
            f(id, &entry.handle);
        }
    }

    /// Whether any socket of `nsp` is in `room` (a room channel for an empty
    /// room can be skipped without decoding it).
    pub fn has_room(&self, nsp: &str, room: &str) -> bool {
        let mut any = false;
        self.for_each_member(nsp, room, |_, _| any = true);
        any
    }

    /// The socket with this id, if it is here.
    pub fn get(&self, id: Sid) -> Option<T> {
        self.socket_shard(&id)
            .read()
            .get(&id)
            .map(|e| e.handle.clone())
    }

    /// The rooms a socket is in (its own id not included).
    pub fn rooms_of(&self, id: Sid) -> Vec<String> {
        self.socket_shard(&id)
            .read()
            .get(&id)
            .map(|e| e.rooms.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default()
    }

    /// Whether socket `id` is in `room` (its own id not counted).
    pub fn is_in(&self, id: Sid, room: &str) -> bool {
        self.socket_shard(&id)
            .read()
            .get(&id)
            .is_some_and(|e| e.rooms.iter().any(|r| &**r == room))
    }

    /// How many rooms socket `id` is in (its own id not counted).
    pub fn rooms_len(&self, id: Sid) -> usize {
        self.socket_shard(&id)
            .read()
            .get(&id)
            .map_or(0, |e| e.rooms.len())
    }

    /// Every room name of `nsp` (for the adapter's `allRooms`), socket ids
    /// included as Socket.IO does.
    pub fn all_rooms(&self, nsp: &str) -> Vec<String> {
        let mut out = Vec::new();
        for shard in &self.rooms {
            shard.names(nsp, &mut out);
        }
        for shard in &self.sockets {
            out.extend(
                shard
                    .read()
                    .iter()
                    .filter(|(_, e)| &*e.nsp == nsp)
                    .map(|(id, _)| id.to_string()),
            );
        }
        out
    }

    /// Rooms that hold at least one socket, over all namespaces.
    pub fn room_count(&self) -> usize {
        self.rooms.iter().map(RoomShard::len).sum()
    }

    /// Sockets of `nsp`.
    pub fn socket_count(&self, nsp: &str) -> usize {
        self.sockets
            .iter()
            .map(|s| s.read().values().filter(|e| &*e.nsp == nsp).count())
            .sum()
    }

    /// Sockets `user` holds in `nsp`.
    #[cfg(test)]
    pub fn user_count(&self, nsp: &str, user: &str) -> usize {
        self.users.count(self.shard_of(user), nsp, user)
    }

    /// Takes the sockets whose token expired before `cutoff` (Unix seconds);
    /// they stay registered until the caller removes them.
    pub fn take_expired(&self, cutoff: u64) -> Vec<T> {
        self.expiries
            .take_before(cutoff)
            .into_iter()
            .filter_map(|id| {
                self.socket_shard(&id)
                    .read()
                    .get(&id)
                    .map(|e| e.handle.clone())
            })
            .collect()
    }
}
