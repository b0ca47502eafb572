//! Sockets per user and namespace, for `limits.max_connections_per_user`.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;

use super::{HubHasher, hub_hasher};

/// A user within a namespace; both strings are shared with the sockets, so
/// a key costs no allocation of its own.
type UserKey = (Arc<str>, Arc<str>);

/// Socket counts per user, sharded by the user's hash (the Hub picks the
/// shard so that one hasher serves every registry).
pub(super) struct Users {
    shards: Box<[Mutex<HashMap<UserKey, usize, HubHasher>>]>,
}

impl Users {
    pub(super) fn new(shards: usize) -> Self {
        Users {
            shards: (0..shards)
                .map(|_| Mutex::new(HashMap::with_hasher(hub_hasher())))
                .collect(),
        }
    }

    /// Counts one more socket for the user; false (and nothing counted) when
    /// the user already holds `max` (0 = unlimited).
    pub(super) fn claim(&self, shard: usize, nsp: &Arc<str>, user: &Arc<str>, max: usize) -> bool {
        let mut counts = self.shards[shard].lock();
        let key = (nsp.clone(), user.clone());
        let count = counts.get(&key).copied().unwrap_or(0);
        if max > 0 && count >= max {
            return false;
        }
        counts.insert(key, count + 1);
        true
    }

    /// Counts one socket less; the user is forgotten at zero.
    pub(super) fn release(&self, shard: usize, nsp: &Arc<str>, user: &Arc<str>) {
        let mut counts = self.shards[shard].lock();
        let key = (nsp.clone(), user.clone());
        if let Some(count) = counts.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&key);
            }
        }
    }

    /// Sockets the user holds in `nsp`.
    #[cfg(test)]
    pub(super) fn count(&self, shard: usize, nsp: &str, user: &str) -> usize {
        self.shards[shard]
            .lock()
            .iter()
            .find(|((n, u), _)| &**n == nsp && &**u == user)
            .map_or(0, |(_, c)| *c)
    }

    /// Users with at least one socket, over all namespaces.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}
