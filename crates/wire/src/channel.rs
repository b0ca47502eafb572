//! Redis channel names used by `@socket.io/redis-adapter` (classic mode) and
//! `@socket.io/redis-emitter`.

/// The default key prefix of the Node adapter and emitter (`key` option).
pub const DEFAULT_KEY: &str = "socket.io";

/// Builds the channel names for one key prefix (the `key` option of the Node packages,
/// `"socket.io"` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    key: String,
}

impl Default for Channels {
    fn default() -> Self {
        Channels::new(DEFAULT_KEY)
    }
}

impl Channels {
    /// Channels under the prefix `key` (`"socket.io"` for the Node defaults).
    pub fn new(key: impl Into<String>) -> Self {
        Channels { key: key.into() }
    }

    /// The key prefix.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Namespace-wide broadcast channel: `socket.io#/#`.
    pub fn broadcast(&self, nsp: &str) -> String {
        format!("{}#{}#", self.key, nsp)
    }

    /// Channel for a broadcast that targets exactly one room: `socket.io#/#room#`.
    pub fn room(&self, nsp: &str, room: &str) -> String {
        format!("{}#{}#{}#", self.key, nsp, room)
    }

    /// The pattern the Node adapter `PSUBSCRIBE`s for a namespace: `socket.io#/#*`.
    pub fn broadcast_pattern(&self, nsp: &str) -> String {
        format!("{}#{}#*", self.key, nsp)
    }

    /// Request channel of a namespace: `socket.io-request#/#`.
    pub fn request(&self, nsp: &str) -> String {
        format!("{}-request#{}#", self.key, nsp)
    }

    /// Shared response channel of a namespace: `socket.io-response#/#`.
    pub fn response(&self, nsp: &str) -> String {
        format!("{}-response#{}#", self.key, nsp)
    }

    /// Per-server response channel (used with `publishOnSpecificResponseChannel`):
    /// `socket.io-response#/#<uid>#`.
    pub fn response_for(&self, nsp: &str, uid: &str) -> String {
        format!("{}-response#{}#{}#", self.key, nsp, uid)
    }

    /// For a channel received on the broadcast pattern of `nsp`: `None` if it does not start
    /// with this namespace's broadcast channel, `Some(None)` for the namespace-wide channel and
    /// `Some(Some(room))` for a room channel.
    ///
    /// Same slicing as the Node adapter (`channel.slice(prefix.length, -1)`): whatever follows
    /// the prefix minus its last character is the room, and an empty room means namespace-wide.
    pub fn room_of<'a>(&self, nsp: &str, channel: &'a str) -> Option<Option<&'a str>> {
        let prefix_len = self.key.len() + nsp.len() + 2;
        let rest = channel
            .strip_prefix(self.key.as_str())?
            .strip_prefix('#')?
            .strip_prefix(nsp)?
            .strip_prefix('#')?;
        debug_assert_eq!(channel.len() - rest.len(), prefix_len);
        let mut chars = rest.chars();
        chars.next_back();
        let room = chars.as_str();
        if room.is_empty() {
            Some(None)
        } else {
            Some(Some(room))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let c = Channels::default();
        assert_eq!(c.key(), "socket.io");
        assert_eq!(c.broadcast("/"), "socket.io#/#");
        assert_eq!(c.room("/", "room"), "socket.io#/#room#");
        assert_eq!(c.broadcast_pattern("/"), "socket.io#/#*");
        assert_eq!(c.request("/"), "socket.io-request#/#");
        assert_eq!(c.response("/"), "socket.io-response#/#");
        assert_eq!(
            c.response_for("/", "abc123"),
            "socket.io-response#/#abc123#"
        );
        let c = Channels::new("myapp");
        assert_eq!(c.room("/admin", "ops"), "myapp#/admin#ops#");
        assert_eq!(c.request("/admin"), "myapp-request#/admin#");
    }

    #[test]
    fn room_of_slices_like_node() {
        let c = Channels::default();
        assert_eq!(c.room_of("/", "socket.io#/#"), Some(None));
        assert_eq!(c.room_of("/", "socket.io#/#room#"), Some(Some("room")));
        assert_eq!(c.room_of("/", "socket.io#/#a#b#"), Some(Some("a#b")));
        assert_eq!(
            c.room_of("/", "socket.io#/#salle-é#"),
            Some(Some("salle-é"))
        );
        // Node: "socket.io#/#x".slice(12, -1) === "" -> namespace-wide.
        assert_eq!(c.room_of("/", "socket.io#/#x"), Some(None));
        assert_eq!(c.room_of("/", "socket.io#/admin#ops#"), None);
        assert_eq!(
            c.room_of("/admin", "socket.io#/admin#ops#"),
            Some(Some("ops"))
        );
        assert_eq!(c.room_of("/", "other#/#room#"), None);
        assert_eq!(c.room_of("/", "socket.io#/"), None);
        assert_eq!(c.room_of("/", ""), None);
        assert_eq!(c.room_of("/", "socket.io-request#/#"), None);
    }
}
