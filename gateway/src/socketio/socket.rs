//! A Socket.IO socket: one client connected to one namespace.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use engineioxide_core::Sid;
use parking_lot::Mutex;
use switchboard_wire::recovery::StreamId;

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
    /// The authenticated user, if any (shared with the Hub's registry and
    /// per-user counts).
    pub user: Option<Arc<str>>,
    /// Verified token claims kept for `fetchSockets()` (`socket.data`).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Unix seconds at which the token expires.
    pub expires_at: Option<u64>,
    /// Rate of events this socket may emit, when limited.
    event_budget: Option<Mutex<TokenBucket>>,
    /// Connection state recovery: the private session id (`pid`) the client
    /// got in its CONNECT reply.
    pub pid: Option<Box<str>>,
    /// True while a recovered socket's missed events are replayed: live
    /// stream entries are held in `held` meanwhile.
    replaying: AtomicBool,
    /// Live stream entries (id, frames) that arrived during the replay.
    /// Boxed: one pointer per socket instead of a `Vec`'s three words, for
    /// a buffer that exists only during a replay.
    #[allow(clippy::box_collection)]
    held: Mutex<Option<Box<Vec<HeldEntry>>>>,
}

/// Frames of one stream entry held back during a replay.
pub type HeldEntry = (StreamId, Vec<Frame>);

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
            user: user.map(Arc::from),
            claims,
            expires_at,
            event_budget: event_budget.map(Mutex::new),
            pid: None,
            replaying: AtomicBool::new(false),
            held: Mutex::new(None),
        }
    }

    /// The same socket with a recovery session: `id` (a restored socket's
    /// old id, or its new one) and `pid`; `replaying` holds live stream
    /// entries back until [`Socket::end_replay`].
    pub fn with_session(mut self, id: Sid, pid: Box<str>, replaying: bool) -> Socket {
        self.id = id;
        self.pid = Some(pid);
        if replaying {
            self.replaying = AtomicBool::new(true);
            self.held = Mutex::new(Some(Box::default()));
        }
        self
    }

    /// Whether live stream entries are being held back (a replay runs).
    pub fn is_replaying(&self) -> bool {
        self.replaying.load(Ordering::Acquire)
    }

    /// During a replay, holds a live stream entry back and returns `None`;
    /// otherwise hands the frames back to be sent now.
    pub fn hold(&self, id: StreamId, frames: Vec<Frame>) -> Option<Vec<Frame>> {
        if !self.replaying.load(Ordering::Acquire) {
            return Some(frames);
        }
        match self.held.lock().as_mut() {
            Some(held) => {
                held.push((id, frames));
                None
            }
            None => Some(frames),
        }
    }

    /// Ends the replay: queues, under the same lock that `hold` takes, the
    /// held entries after `after` (the last one replayed), so that nothing
    /// is sent twice or out of order.
    pub fn end_replay(&self, after: Option<StreamId>) {
        let mut held = self.held.lock();
        if let Some(entries) = held.take() {
            for (id, frames) in entries.into_iter() {
                if after.is_none_or(|after| id > after) {
                    self.conn.send_all(&frames);
                }
            }
        }
        self.replaying.store(false, Ordering::Release);
    }

    /// Sends frames to this socket's connection.
    pub fn send_all(&self, frames: &[Frame]) -> bool {
        self.conn.send_all(frames)
    }

    /// Answers the client's ack `id` with JSON arguments (an array).
    pub fn ack(&self, id: i64, args: &serde_json::Value) -> bool {
        self.send_all(&[super::packets::ack(&self.nsp, id, args)])
    }

    /// Takes one event from the socket's budget; false when over its rate.
    pub fn allow_event(&self) -> bool {
        self.event_budget
            .as_ref()
            .is_none_or(|bucket| bucket.lock().try_take())
    }
}
