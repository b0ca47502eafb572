//! Token expiries: sockets ordered by when their token runs out, so the
//! once-a-second sweep takes the expired ones without scanning the rest.

use std::collections::BTreeSet;

use engineioxide_core::Sid;
use parking_lot::Mutex;

/// Sockets by token expiry (Unix seconds).
#[derive(Default)]
pub(super) struct Expiries {
    by_time: Mutex<BTreeSet<(u64, Sid)>>,
}

impl Expiries {
    pub(super) fn insert(&self, exp: u64, id: Sid) {
        self.by_time.lock().insert((exp, id));
    }

    pub(super) fn remove(&self, exp: u64, id: Sid) {
        self.by_time.lock().remove(&(exp, id));
    }

    /// Takes every socket expiring before `cutoff`.
    pub(super) fn take_before(&self, cutoff: u64) -> Vec<Sid> {
        let mut by_time = self.by_time.lock();
        let keep = by_time.split_off(&(cutoff, Sid::ZERO));
        std::mem::replace(&mut *by_time, keep)
            .into_iter()
            .map(|(_, id)| id)
            .collect()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_time.lock().len()
    }
}
