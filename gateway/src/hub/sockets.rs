//! The socket registry: every connected socket by id, with what the Hub
//! must know to remove it without a trace.

use std::{collections::HashMap, sync::Arc};

use super::HubHasher;

use engineioxide_core::Sid;
use parking_lot::RwLock;

/// One shard of the socket registry. Entries are boxed: a hash table keeps
/// up to half of its buckets empty, and an empty bucket of a 24-byte
/// pointer costs less than one of the entry's 96 bytes (about 40 bytes per
/// connection at 19,000). Only a broadcast to a whole namespace reads
/// entries one by one; room broadcasts read the room index.
pub(super) type SocketShard<T> = RwLock<HashMap<Sid, Box<Entry<T>>, HubHasher>>;

/// A registered socket.
pub(super) struct Entry<T> {
    /// Its namespace.
    pub(super) nsp: Arc<str>,
    /// What a fan-out sends through.
    pub(super) handle: T,
    /// The user it counts against, if any (the socket's own string).
    pub(super) user: Option<Arc<str>>,
    /// Its token expiry (Unix seconds), if any.
    pub(super) expires_at: Option<u64>,
    /// Its rooms: the socket -> rooms side of the membership, sharing the
    /// interned names of the room -> members side.
    pub(super) rooms: Vec<Arc<str>>,
}
