//! Client acks awaited for broadcasts-with-ack from Node servers
//! (`io.timeout(..).emit(..., ack)`): which socket owes which ack id to which
//! adapter request, until when.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicI64, Ordering},
    time::Instant,
};

use engineioxide_core::Sid;
use parking_lot::{Mutex, MutexGuard};

/// An awaited ack: (ack id, adapter request id, deadline).
type Awaited = (i64, String, Instant);

/// Pending acks per socket, so a socket's removal forgets them at once.
#[derive(Default)]
pub(crate) struct Acks {
    by_socket: Mutex<HashMap<Sid, Vec<Awaited>>>,
    next_id: AtomicI64,
}

/// The pending acks locked once for a whole broadcast.
pub(crate) struct AcksGuard<'a>(MutexGuard<'a, HashMap<Sid, Vec<Awaited>>>);

impl AcksGuard<'_> {
    /// Awaits ack `ack_id` from socket `id` for `request_id` until `deadline`.
    pub(crate) fn insert(&mut self, id: Sid, ack_id: i64, request_id: String, deadline: Instant) {
        self.0
            .entry(id)
            .or_default()
            .push((ack_id, request_id, deadline));
    }
}

impl Acks {
    /// A fresh ack id for one broadcast-with-ack.
    pub(crate) fn next_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Locks the pending acks for one broadcast's recipients.
    pub(crate) fn lock(&self) -> AcksGuard<'_> {
        AcksGuard(self.by_socket.lock())
    }

    /// The request an ack from `id` answers, if it was awaited (taken once).
    pub(crate) fn take(&self, id: Sid, ack_id: i64) -> Option<String> {
        let mut by_socket = self.by_socket.lock();
        let awaited = by_socket.get_mut(&id)?;
        let at = awaited.iter().position(|(a, _, _)| *a == ack_id)?;
        let (_, request_id, _) = awaited.swap_remove(at);
        if awaited.is_empty() {
            by_socket.remove(&id);
        }
        Some(request_id)
    }

    /// Forgets acks whose deadline passed (the Node caller has given up).
    pub(crate) fn expire(&self, now: Instant) {
        self.by_socket.lock().retain(|_, awaited| {
            awaited.retain(|(_, _, deadline)| *deadline > now);
            !awaited.is_empty()
        });
    }

    /// Forgets every ack a removed socket owed.
    pub(super) fn forget_socket(&self, id: Sid) {
        self.by_socket.lock().remove(&id);
    }

    /// Acks awaited, over all sockets.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_socket.lock().values().map(Vec::len).sum()
    }
}
