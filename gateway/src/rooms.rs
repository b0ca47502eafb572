//! The room index: which sockets are in which room, per namespace.
//!
//! Every fan-out reads it, so it is built for lookups: room names are
//! interned `Arc<str>` shared by every member, and a socket's own id acts as
//! a room (Socket.IO's "private room") without being stored as one.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use engineioxide_core::Sid;
use parking_lot::RwLock;

use crate::session::Socket;

/// Rooms and sockets of one namespace.
#[derive(Default)]
struct Namespace {
    sockets: HashMap<Sid, Arc<Socket>>,
    rooms: HashMap<Arc<str>, HashMap<Sid, Arc<Socket>>>,
}

impl Namespace {
    /// Members of a room, or the socket whose id is the room name.
    fn members<'a>(&'a self, room: &str) -> Box<dyn Iterator<Item = &'a Arc<Socket>> + 'a> {
        if let Some(members) = self.rooms.get(room) {
            return Box::new(members.values());
        }
        match room
            .parse::<Sid>()
            .ok()
            .and_then(|sid| self.sockets.get(&sid))
        {
            Some(socket) => Box::new(std::iter::once(socket)),
            None => Box::new(std::iter::empty()),
        }
    }
}

/// Room membership of every connected socket on this gateway.
#[derive(Default)]
pub struct RoomIndex {
    namespaces: RwLock<HashMap<Arc<str>, Namespace>>,
}

impl RoomIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a connected socket (in no room yet).
    pub fn add_socket(&self, socket: &Arc<Socket>) {
        let mut namespaces = self.namespaces.write();
        namespaces
            .entry(socket.nsp.clone())
            .or_default()
            .sockets
            .insert(socket.id, socket.clone());
    }

    /// Removes a socket and its memberships; returns how many rooms emptied.
    pub fn remove_socket(&self, socket: &Socket) -> usize {
        let rooms = socket.take_rooms();
        let mut namespaces = self.namespaces.write();
        let Some(ns) = namespaces.get_mut(&*socket.nsp) else {
            return 0;
        };
        ns.sockets.remove(&socket.id);
        let mut emptied = 0;
        for room in rooms {
            if let Some(members) = ns.rooms.get_mut(&room) {
                members.remove(&socket.id);
                if members.is_empty() {
                    ns.rooms.remove(&room);
                    emptied += 1;
                }
            }
        }
        emptied
    }

    /// Adds a socket to rooms; returns how many rooms were created.
    pub fn join<S: AsRef<str>>(&self, socket: &Arc<Socket>, rooms: &[S]) -> usize {
        let mut namespaces = self.namespaces.write();
        let ns = namespaces.entry(socket.nsp.clone()).or_default();
        if !ns.sockets.contains_key(&socket.id) {
            // Disconnected meanwhile: joining would leak the socket.
            return 0;
        }
        let mut created = 0;
        for room in rooms {
            let room = room.as_ref();
            let (name, members) = match ns.rooms.get_key_value(room) {
                Some((name, _)) => {
                    let name = name.clone();
                    let members = ns.rooms.get_mut(&name);
                    (name, members)
                }
                None => {
                    created += 1;
                    let name: Arc<str> = Arc::from(room);
                    ns.rooms.insert(name.clone(), HashMap::new());
                    let members = ns.rooms.get_mut(&name);
                    (name, members)
                }
            };
            if let Some(members) = members
                && members.insert(socket.id, socket.clone()).is_none()
            {
                socket.add_room(name);
            }
        }
        created
    }

    /// Removes a socket from rooms; returns how many rooms emptied.
    pub fn leave<S: AsRef<str>>(&self, socket: &Socket, rooms: &[S]) -> usize {
        let mut namespaces = self.namespaces.write();
        let Some(ns) = namespaces.get_mut(&*socket.nsp) else {
            return 0;
        };
        let mut emptied = 0;
        for room in rooms {
            let room = room.as_ref();
            if let Some(members) = ns.rooms.get_mut(room) {
                if members.remove(&socket.id).is_some() {
                    socket.remove_room(room);
                }
                if members.is_empty() {
                    ns.rooms.remove(room);
                    emptied += 1;
                }
            }
        }
        emptied
    }

    /// The sockets of `nsp` in any of `rooms` (every socket of the namespace
    /// when `rooms` is empty) and in none of `except`, each once.
    pub fn targets<S: AsRef<str>>(&self, nsp: &str, rooms: &[S], except: &[S]) -> Vec<Arc<Socket>> {
        let namespaces = self.namespaces.read();
        let Some(ns) = namespaces.get(nsp) else {
            return Vec::new();
        };
        let excluded: HashSet<Sid> = except
            .iter()
            .flat_map(|room| ns.members(room.as_ref()))
            .map(|s| s.id)
            .collect();
        let keep = |s: &&Arc<Socket>| !excluded.contains(&s.id);
        match rooms {
            [] => ns.sockets.values().filter(keep).cloned().collect(),
            [room] => ns.members(room.as_ref()).filter(keep).cloned().collect(),
            _ => {
                let mut seen = HashSet::new();
                rooms
                    .iter()
                    .flat_map(|room| ns.members(room.as_ref()))
                    .filter(keep)
                    .filter(|s| seen.insert(s.id))
                    .cloned()
                    .collect()
            }
        }
    }

    /// Whether any socket of `nsp` is in `room` (a room channel for an empty
    /// room can be skipped without decoding it).
    pub fn has_room(&self, nsp: &str, room: &str) -> bool {
        let namespaces = self.namespaces.read();
        namespaces
            .get(nsp)
            .is_some_and(|ns| ns.members(room).next().is_some())
    }

    /// Every room name of `nsp` (for the adapter's `allRooms`), socket ids
    /// included as Socket.IO does.
    pub fn all_rooms(&self, nsp: &str) -> Vec<String> {
        let namespaces = self.namespaces.read();
        let Some(ns) = namespaces.get(nsp) else {
            return Vec::new();
        };
        ns.rooms
            .keys()
            .map(|r| r.to_string())
            .chain(ns.sockets.keys().map(|s| s.to_string()))
            .collect()
    }

    /// Rooms that hold at least one socket, over all namespaces.
    pub fn room_count(&self) -> usize {
        self.namespaces
            .read()
            .values()
            .map(|ns| ns.rooms.len())
            .sum()
    }
}
