//! A Socket.IO socket: one client connected to one namespace.

use std::sync::Arc;

use engineioxide_core::Sid;
use parking_lot::Mutex;

use super::client::Client;
use crate::engine::{Connection, Frame, TokenBucket};

/// One client in one namespace: the unit rooms hold and fan-out reaches.
///
/// Kept small on purpose (it exists once per connected user): the identity
/// is reduced to the user id and expiry. Its rooms live in the
/// [`Hub`](crate::hub::Hub), the one copy of room membership.
pub struct Socket {
    /// The Socket.IO socket id (distinct from the Engine.IO session id).
    pub id: Sid,
    pub nsp: Arc<str>,
    /// The Engine.IO session carrying this socket.
    pub conn: Arc<Connection<Client>>,
    /// The authenticated user, if any.
    pub user: Option<Box<str>>,
    /// Verified token claims kept for `fetchSockets()` (`socket.data`).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Unix seconds at which the token expires.
    pub expires_at: Option<u64>,
    /// Rate of events this socket may emit, when limited.
    event_budget: Option<Mutex<TokenBucket>>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("nsp", &self.nsp)
            .field("user", &self.user)
            .finish()
    }
}

impl Socket {
    pub fn new(
        nsp: Arc<str>,
        conn: Arc<Connection<Client>>,
        user: Option<String>,
        claims: serde_json::Map<String, serde_json::Value>,
        expires_at: Option<u64>,
        event_budget: Option<TokenBucket>,
    ) -> Socket {
        Socket {
            id: Sid::new(),
            nsp,
            conn,
            user: user.map(String::into_boxed_str),
            claims,
            expires_at,
            event_budget: event_budget.map(Mutex::new),
        }
    }

    /// Queues frames to this socket's connection.
    pub fn send_all(&self, frames: impl IntoIterator<Item = Frame>) -> bool {
        self.conn.send_all(frames)
    }

    /// Answers the client's ack `id` with JSON arguments (an array).
    pub fn ack(&self, id: i64, args: &serde_json::Value) -> bool {
        self.send_all([super::packets::ack(&self.nsp, id, args)])
    }

    /// Takes one event from the socket's budget; false when over its rate.
    pub fn allow_event(&self) -> bool {
        self.event_budget
            .as_ref()
            .is_none_or(|bucket| bucket.lock().try_take())
    }
}
