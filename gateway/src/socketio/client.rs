//! The Socket.IO state of one Engine.IO session.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU8, Ordering},
};

use parking_lot::Mutex;
use socketioxide_core::parser::ParserState;

use super::socket::Socket;

/// Per-connection Socket.IO state, stored in the Engine.IO
/// [`Connection`](crate::engine::Connection): the parser's partial binary
/// packet and the sockets (one per connected namespace).
#[derive(Default)]
pub struct Client {
    pub(crate) parser: ParserState,
    sockets: Mutex<Vec<Arc<Socket>>>,
    /// An Admin UI is connected on this connection (its socket lives in
    /// `admin::Admin`, outside the room index).
    admin: AtomicBool,
    /// CONNECTs refused on this session so far (bounded retries).
    refused_connects: AtomicU8,
}

impl Client {
    /// The socket connected to `nsp`, if any.
    pub fn socket(&self, nsp: &str) -> Option<Arc<Socket>> {
        self.sockets.lock().iter().find(|s| &*s.nsp == nsp).cloned()
    }

    /// Counts one refused CONNECT; returns how many there have been.
    pub(crate) fn count_refused_connect(&self) -> u8 {
        self.refused_connects
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    pub fn has_sockets(&self) -> bool {
        self.is_admin() || !self.sockets.lock().is_empty()
    }

    /// The app sockets of this connection.
    pub fn sockets(&self) -> Vec<Arc<Socket>> {
        self.sockets.lock().clone()
    }

    /// Whether an Admin UI is connected on this connection.
    pub fn is_admin(&self) -> bool {
        self.admin.load(Ordering::Acquire)
    }

    pub(crate) fn set_admin(&self, on: bool) {
        self.admin.store(on, Ordering::Release);
    }

    pub(crate) fn add(&self, socket: Arc<Socket>) {
        self.sockets.lock().push(socket);
    }

    pub(crate) fn remove(&self, nsp: &str) -> Option<Arc<Socket>> {
        let mut sockets = self.sockets.lock();
        let index = sockets.iter().position(|s| &*s.nsp == nsp)?;
        Some(sockets.swap_remove(index))
    }

    /// Takes every socket, ending the reference cycle socket -> connection.
    pub(crate) fn take_all(&self) -> Vec<Arc<Socket>> {
        std::mem::take(&mut *self.sockets.lock())
    }
}
