//! The Socket.IO state of one Engine.IO session.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU8, Ordering},
};

use engineioxide_core::Sid;
use parking_lot::Mutex;
use socketioxide_core::parser::ParserState;

/// Per-connection Socket.IO state, stored in the Engine.IO
/// [`Connection`](crate::engine::Connection): the parser's partial binary
/// packet and the ids of its sockets (one per connected namespace).
///
/// Only ids: the sockets themselves live in the [`Hub`](crate::hub::Hub),
/// so there is no reference cycle socket -> connection -> socket.
#[derive(Default)]
pub struct Client {
    pub(crate) parser: ParserState,
    sockets: Mutex<Vec<(Arc<str>, Sid)>>,
    /// An Admin UI is connected on this connection (its socket lives in
    /// `admin::Admin`, outside the hub).
    admin: AtomicBool,
    /// CONNECTs refused on this session so far (bounded retries).
    refused_connects: AtomicU8,
}

impl Client {
    /// The id of the socket connected to `nsp`, if any.
    pub fn socket(&self, nsp: &str) -> Option<Sid> {
        self.sockets
            .lock()
            .iter()
            .find(|(n, _)| &**n == nsp)
            .map(|(_, id)| *id)
    }

    /// Counts one refused CONNECT; returns how many there have been.
    pub(crate) fn count_refused_connect(&self) -> u8 {
        self.refused_connects
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    /// Whether any namespace (the admin's included) is connected.
    pub fn has_sockets(&self) -> bool {
        self.is_admin() || !self.sockets.lock().is_empty()
    }

    /// The ids of the app sockets of this connection.
    pub fn sockets(&self) -> Vec<Sid> {
        self.sockets.lock().iter().map(|(_, id)| *id).collect()
    }

    /// Whether an Admin UI is connected on this connection.
    pub fn is_admin(&self) -> bool {
        self.admin.load(Ordering::Acquire)
    }

    pub(crate) fn set_admin(&self, on: bool) {
        self.admin.store(on, Ordering::Release);
    }

    pub(crate) fn add(&self, nsp: Arc<str>, id: Sid) {
        let mut sockets = self.sockets.lock();
        // Almost every connection has one namespace: room for exactly one
        // (a `Vec` would reserve four, 96 bytes more per connection).
        if sockets.capacity() == 0 {
            sockets.reserve_exact(1);
        }
        sockets.push((nsp, id));
    }

    /// Forgets the socket of `nsp`; returns its id.
    pub(crate) fn remove(&self, nsp: &str) -> Option<Sid> {
        let mut sockets = self.sockets.lock();
        let index = sockets.iter().position(|(n, _)| &**n == nsp)?;
        Some(sockets.swap_remove(index).1)
    }

    /// Forgets socket `id`; false when it was not (or no longer) here.
    pub(crate) fn remove_id(&self, id: Sid) -> bool {
        let mut sockets = self.sockets.lock();
        match sockets.iter().position(|(_, s)| *s == id) {
            Some(index) => {
                sockets.swap_remove(index);
                true
            }
            None => false,
        }
    }

    /// Takes every socket id (the connection closed).
    pub(crate) fn take_all(&self) -> Vec<Sid> {
        std::mem::take(&mut *self.sockets.lock())
            .into_iter()
            .map(|(_, id)| id)
            .collect()
    }
}
