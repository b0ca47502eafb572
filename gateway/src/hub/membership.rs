//! Room membership, the room -> members side: one shard of it.

use std::{collections::HashMap, sync::Arc};

use engineioxide_core::Sid;
use parking_lot::RwLock;

/// Rooms per namespace, then members by socket id.
type Namespaces<T> = HashMap<Arc<str>, HashMap<Arc<str>, HashMap<Sid, T>>>;

/// One shard of the room registry: the rooms whose name hashes to it.
pub(super) struct RoomShard<T> {
    namespaces: RwLock<Namespaces<T>>,
}

impl<T> Default for RoomShard<T> {
    fn default() -> Self {
        RoomShard {
            namespaces: RwLock::new(HashMap::new()),
        }
    }
}

impl<T> RoomShard<T> {
    /// Adds a member; returns the interned room name and whether the room
    /// was created.
    pub(super) fn insert(
        &self,
        nsp: &Arc<str>,
        room: &str,
        id: Sid,
        handle: T,
    ) -> (Arc<str>, bool) {
        let mut namespaces = self.namespaces.write();
        let rooms = match namespaces.get_mut(&**nsp) {
            Some(rooms) => rooms,
            None => namespaces.entry(nsp.clone()).or_default(),
        };
        match rooms.get_key_value(room) {
            Some((name, _)) => {
                let name = name.clone();
                if let Some(members) = rooms.get_mut(&name) {
                    members.insert(id, handle);
                }
                (name, false)
            }
            None => {
                let name: Arc<str> = Arc::from(room);
                rooms.insert(name.clone(), HashMap::from([(id, handle)]));
                (name, true)
            }
        }
    }

    /// Removes a member; returns whether the room emptied (and so is gone).
    pub(super) fn remove(&self, nsp: &str, room: &str, id: Sid) -> bool {
        let mut namespaces = self.namespaces.write();
        let Some(rooms) = namespaces.get_mut(nsp) else {
            return false;
        };
        let Some(members) = rooms.get_mut(room) else {
            return false;
        };
        if members.remove(&id).is_none() || !members.is_empty() {
            return false;
        }
        rooms.remove(room);
        if rooms.is_empty() {
            namespaces.remove(nsp);
        }
        true
    }

    /// Calls `f` for each member of `room`; false when there is no such room.
    pub(super) fn for_each(&self, nsp: &str, room: &str, f: &mut impl FnMut(Sid, &T)) -> bool {
        let namespaces = self.namespaces.read();
        let Some(members) = namespaces.get(nsp).and_then(|rooms| rooms.get(room)) else {
            return false;
        };
        for (id, handle) in members {
            f(*id, handle);
        }
        true
    }

    /// Appends the names of the rooms of `nsp` in this shard.
    pub(super) fn names(&self, nsp: &str, out: &mut Vec<String>) {
        if let Some(rooms) = self.namespaces.read().get(nsp) {
            out.extend(rooms.keys().map(|r| r.to_string()));
        }
    }

    /// Rooms in this shard, over all namespaces.
    pub(super) fn len(&self) -> usize {
        self.namespaces.read().values().map(HashMap::len).sum()
    }
}
