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
    /// True while live stream entries must go through [`Socket::hold`]:
    /// during a recovered socket's replay, and after it until the first
    /// live entry newer than the replay's last one.
    replaying: AtomicBool,
    /// The replay's state. Boxed: one pointer per socket, for state that
    /// exists only around a replay.
    held: Mutex<Option<Box<Replay>>>,
}

/// Frames of one stream entry held back during a replay.
pub type HeldEntry = (StreamId, Vec<Frame>);

/// A recovered socket's replay of missed stream entries, as the live
/// entries see it.
#[derive(Default)]
struct Replay {
    /// Live entries that arrived during the replay.
    held: Vec<HeldEntry>,
    /// The replay has ended, having sent everything up to `through`.
    ended: bool,
    /// The last entry the replay sent. The live reader can be behind the
    /// replay's `XRANGE`, so a live entry up to this one may still arrive
    /// after the replay ended: it was sent already and is dropped.
    through: Option<StreamId>,
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
    /// after it, drops (`None`) an entry the replay already sent; otherwise
    /// hands the frames back to be sent now.
    pub fn hold(&self, id: StreamId, frames: Vec<Frame>) -> Option<Vec<Frame>> {
        if !self.replaying.load(Ordering::Acquire) {
            return Some(frames);
        }
        let mut guard = self.held.lock();
        match guard.as_mut() {
            Some(replay) if !replay.ended => {
                replay.held.push((id, frames));
                None
            }
            Some(replay) if replay.through.is_some_and(|through| id <= through) => None,
            Some(_) => {
                // Newer than anything replayed: the live reader has caught
                // up (it reads in stream order), so no more checks.
                *guard = None;
                self.replaying.store(false, Ordering::Release);
                Some(frames)
            }
            None => Some(frames),
        }
    }

    /// Ends the replay: queues, under the same lock that `hold` takes, the
    /// held entries after `after` (the last one replayed), so that nothing
    /// is sent twice or out of order; live entries up to `after` that
    /// arrive later are dropped by `hold`.
    pub fn end_replay(&self, after: Option<StreamId>) {
        let mut guard = self.held.lock();
        let Some(replay) = guard.as_mut() else {
            self.replaying.store(false, Ordering::Release);
            return;
        };
        let mut caught_up = after.is_none();
        for (id, frames) in std::mem::take(&mut replay.held) {
            if after.is_none_or(|after| id > after) {
                self.conn.send_all(&frames);
                caught_up = true;
            }
        }
        if caught_up {
            *guard = None;
            self.replaying.store(false, Ordering::Release);
        } else {
            replay.ended = true;
            replay.through = after;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A recovered socket in its replay, on a connection whose queued
    /// frames the test reads back.
    fn replaying_socket() -> Socket {
        let conn = Arc::new(crate::engine::test_conn_with(Client::default()));
        Socket::new("/".into(), conn, None, Default::default(), None, None).with_session(
            Sid::new(),
            "pid".into(),
            true,
        )
    }

    fn id(seq: u64) -> StreamId {
        StreamId { ms: 1, seq }
    }

    fn frames(text: &str) -> Vec<Frame> {
        vec![Frame::message(text)]
    }

    /// What the socket's connection has queued, as text.
    fn sent(socket: &Socket) -> Vec<String> {
        socket
            .conn
            .take_frames()
            .iter()
            .map(|f| match f {
                Frame::Text(t) => t.as_str().to_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// The live reader can be behind the replay's `XRANGE`: an entry the
    /// replay already sent may come live after the replay ended, and must
    /// not go out twice (CI saw `news 396` twice in `recovery_streams`).
    #[test]
    fn a_live_entry_the_replay_sent_is_not_sent_again_after_it() {
        let socket = replaying_socket();
        // Held during the replay: 4 (replayed too) and 6 (newer).
        assert!(socket.hold(id(4), frames("4")).is_none());
        assert!(socket.hold(id(6), frames("6")).is_none());
        // The replay sent 1..=5.
        socket.end_replay(Some(id(5)));
        assert_eq!(
            sent(&socket),
            vec!["46"],
            "only the held entry newer than the replay"
        );
        // Caught up: later entries go straight out.
        assert!(!socket.is_replaying());
        assert!(socket.hold(id(7), frames("7")).is_some());
    }

    #[test]
    fn live_entries_the_replay_sent_are_dropped_until_a_newer_one_comes() {
        let socket = replaying_socket();
        // Nothing arrived live during the replay, which sent up to 5.
        socket.end_replay(Some(id(5)));
        assert!(sent(&socket).is_empty());
        // The live reader is behind: 4 and 5 come now, sent already.
        assert!(socket.hold(id(4), frames("4")).is_none());
        assert!(socket.hold(id(5), frames("5")).is_none());
        // 6 is new: it goes out, and the socket stops checking.
        assert!(socket.hold(id(6), frames("6")).is_some());
        assert!(!socket.is_replaying());
    }
}
