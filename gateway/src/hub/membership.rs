//! Room membership, the room -> members side: one shard of it.
//!
//! One flat table of rooms per shard, looked up with the hash the Hub
//! computed once for the room's name (which also chose the shard): a
//! broadcast naming thousands of rooms, most of them held by other
//! gateways (issue #17's probes), costs one hash per room instead of three
//! (shard, namespace, room).

use std::{hash::BuildHasher, sync::Arc};

use engineioxide_core::Sid;
use hashbrown::HashTable;
use parking_lot::RwLock;

use super::HubHasher;

/// A room of one namespace and its members.
struct Room<T> {
    nsp: Arc<str>,
    name: Arc<str>,
    /// Members by socket id, hashed with the Hub's hasher.
    members: HashTable<(Sid, T)>,
}

impl<T> Room<T> {
    fn is(&self, nsp: &str, name: &str) -> bool {
        &*self.name == name && &*self.nsp == nsp
    }
}

/// One shard of the room registry: the rooms whose name hashes to it.
pub(super) struct RoomShard<T> {
    rooms: RwLock<HashTable<Room<T>>>,
}

impl<T> Default for RoomShard<T> {
    fn default() -> Self {
        RoomShard {
            rooms: RwLock::new(HashTable::new()),
        }
    }
}

impl<T> RoomShard<T> {
    /// Adds a member to the room whose name hashes to `hash`; returns the
    /// interned room name and whether the room was created.
    pub(super) fn insert(
        &self,
        hasher: &HubHasher,
        hash: u64,
        nsp: &Arc<str>,
        room: &str,
        id: Sid,
        handle: T,
    ) -> (Arc<str>, bool) {
        let mut rooms = self.rooms.write();
        let member_hash = hasher.hash_one(id);
        let rehash_member = |m: &(Sid, T)| hasher.hash_one(m.0);
        if let Some(found) = rooms.find_mut(hash, |r| r.is(nsp, room)) {
            match found
                .members
                .find_mut(member_hash, |(member, _)| *member == id)
            {
                Some(member) => member.1 = handle,
                None => {
                    found
                        .members
                        .insert_unique(member_hash, (id, handle), rehash_member);
                }
            }
            return (found.name.clone(), false);
        }
        let name: Arc<str> = Arc::from(room);
        let mut members = HashTable::new();
        members.insert_unique(member_hash, (id, handle), rehash_member);
        rooms.insert_unique(
            hash,
            Room {
                nsp: nsp.clone(),
                name: name.clone(),
                members,
            },
            |r| room_hash(hasher, &r.name),
        );
        (name, true)
    }

    /// Removes a member; returns whether the room emptied (and so is gone).
    pub(super) fn remove(
        &self,
        hasher: &HubHasher,
        hash: u64,
        nsp: &str,
        room: &str,
        id: Sid,
    ) -> bool {
        let mut rooms = self.rooms.write();
        let Ok(mut entry) = rooms.find_entry(hash, |r| r.is(nsp, room)) else {
            return false;
        };
        let found = entry.get_mut();
        let Ok(member) = found
            .members
            .find_entry(hasher.hash_one(id), |(member, _)| *member == id)
        else {
            return false;
        };
        member.remove();
        if !found.members.is_empty() {
            return false;
        }
        entry.remove();
        true
    }

    /// Calls `f` for each member of `room` (whose name hashes to `hash`);
    /// false when there is no such room.
    pub(super) fn for_each(
        &self,
        hash: u64,
        nsp: &str,
        room: &str,
        f: &mut impl FnMut(Sid, &T),
    ) -> bool {
        let rooms = self.rooms.read();
        let Some(found) = rooms.find(hash, |r| r.is(nsp, room)) else {
            return false;
        };
        for (id, handle) in &found.members {
            f(*id, handle);
        }
        true
    }

    /// Appends the names of the rooms of `nsp` in this shard.
    pub(super) fn names(&self, nsp: &str, out: &mut Vec<String>) {
        out.extend(
            self.rooms
                .read()
                .iter()
                .filter(|r| &*r.nsp == nsp)
                .map(|r| r.name.to_string()),
        );
    }

    /// Rooms in this shard, over all namespaces.
    pub(super) fn len(&self) -> usize {
        self.rooms.read().len()
    }
}

/// The hash of a room's name: what picks its shard and finds it there.
pub(super) fn room_hash(hasher: &HubHasher, name: &str) -> u64 {
    hasher.hash_one(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A room costs no more than it did as an entry of the nested maps
    /// (its name, 16 bytes, and a member map with its SipHash keys, 48):
    /// the namespace it now carries takes the place of the per-map keys
    /// (memory per idle session, docs/benchmarks.md).
    #[test]
    fn a_room_is_no_bigger_than_before() {
        assert!(
            std::mem::size_of::<Room<Arc<()>>>() <= 64,
            "{}",
            std::mem::size_of::<Room<Arc<()>>>()
        );
    }
}
