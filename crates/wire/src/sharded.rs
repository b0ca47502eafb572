//! The wire format of `@socket.io/redis-adapter` 8.3's `createShardedAdapter` (Redis 7
//! sharded pub/sub: `SSUBSCRIBE` / `SPUBLISH`).
//!
//! * Payload: the whole [`ClusterMessage`] `{type, data, uid, nsp}` as `JSON.stringify` writes
//!   it, or as notepack msgpack when its type may carry binary and its data holds some
//!   ([`ClusterMessage::has_binary`]). Receivers tell them apart by the first byte: `{` (0x7b)
//!   is JSON, anything else msgpack ([`decode`]).
//! * Channels ([`ClusterChannels`]): every server `SSUBSCRIBE`s `socket.io#<nsp>#` and its own
//!   `socket.io#<nsp>#<uid>#`; in the dynamic modes also `socket.io#<nsp>#<room>#` for each
//!   local room ([`ShardedOptions::subscribes_to_room`]).
//! * Publishing ([`ShardedOptions::channel_for`]): a BROADCAST without acknowledgements that
//!   targets exactly one room goes to that room's channel (except, in `dynamic` mode, when the
//!   room looks like a socket id); everything else to the namespace channel; responses to the
//!   requester's channel ([`ShardedOptions::response_channel`]).

use crate::WireError;
use crate::cluster::{ClusterBody, ClusterChannels, ClusterMessage, Undefined};
use crate::socketio::{js_json_string, json_str_to_msgpack};
use crate::{cluster, msgpack};

/// `subscriptionMode` of the sharded adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriptionMode {
    /// Only the namespace channel and the server's own channel.
    Static,
    /// Also one channel per local public room (not socket-id rooms). The Node default.
    #[default]
    Dynamic,
    /// Also one channel per local room, socket-id rooms included.
    DynamicPrivate,
}

impl SubscriptionMode {
    /// Node's option string: `"static"`, `"dynamic"`, `"dynamic-private"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionMode::Static => "static",
            SubscriptionMode::Dynamic => "dynamic",
            SubscriptionMode::DynamicPrivate => "dynamic-private",
        }
    }
}

impl std::str::FromStr for SubscriptionMode {
    type Err = WireError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "static" => Ok(SubscriptionMode::Static),
            "dynamic" => Ok(SubscriptionMode::Dynamic),
            "dynamic-private" => Ok(SubscriptionMode::DynamicPrivate),
            other => Err(WireError::Shape(format!(
                "unknown subscription mode {other:?}: use \"static\", \"dynamic\" or \"dynamic-private\""
            ))),
        }
    }
}

/// The sharded adapter's options that shape the wire: `channelPrefix` and `subscriptionMode`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardedOptions {
    /// Channel names.
    pub channels: ClusterChannels,
    /// Which room channels exist.
    pub mode: SubscriptionMode,
}

/// Node's `looksLikeASocketId`: a room name of exactly 20 UTF-16 code units (the length of a
/// Socket.IO socket id, `base64id`). Counted in UTF-16 like JavaScript's `length`, so a
/// 20-character room of astral characters (2 units each) does not look like one.
pub fn looks_like_socket_id(room: &str) -> bool {
    room.encode_utf16().count() == 20
}

impl ShardedOptions {
    /// Options for `channelPrefix` `prefix` and `mode`.
    pub fn new(prefix: impl Into<String>, mode: SubscriptionMode) -> Self {
        ShardedOptions {
            channels: ClusterChannels::new(prefix),
            mode,
        }
    }

    /// The channels a server with adapter uid `uid` always subscribes to for `nsp`: the
    /// namespace channel and its own (response) channel.
    pub fn base_subscriptions(&self, nsp: &str, uid: &str) -> [String; 2] {
        [self.channels.namespace(nsp), self.channels.server(nsp, uid)]
    }

    /// Whether a server subscribes to `room`'s channel while it has local sockets in it
    /// (`shouldUseASeparateNamespace`): never in `static` mode, for public rooms in `dynamic`
    /// mode, for every room in `dynamic-private`. `is_socket_id` tells whether `room` is the
    /// id of a local socket (Node checks its `sids` map, not the name's length).
    pub fn subscribes_to_room(&self, is_socket_id: bool) -> bool {
        match self.mode {
            SubscriptionMode::Static => false,
            SubscriptionMode::Dynamic => !is_socket_id,
            SubscriptionMode::DynamicPrivate => true,
        }
    }

    /// Where a server publishes `msg` (Node's `computeChannel`): the room channel for a
    /// BROADCAST without acknowledgements to exactly one room, when the mode subscribes to
    /// such rooms (`dynamic` skips rooms that [`look like a socket id`](looks_like_socket_id),
    /// `static` has no room channels); otherwise the namespace channel.
    ///
    /// Responses do not go through here: use [`Self::response_channel`].
    pub fn channel_for(&self, msg: &ClusterMessage) -> String {
        if let ClusterBody::Broadcast(b) = &msg.body
            && b.request_id.is_none()
            && let [room] = b.opts.rooms.as_slice()
        {
            let dynamic = match self.mode {
                SubscriptionMode::Static => false,
                SubscriptionMode::Dynamic => !looks_like_socket_id(room),
                SubscriptionMode::DynamicPrivate => true,
            };
            if dynamic {
                return self.channels.room(&msg.nsp, room);
            }
        }
        self.channels.namespace(&msg.nsp)
    }

    /// Where a response to the server `requester_uid` goes: `socket.io#<nsp>#<requesterUid>#`.
    pub fn response_channel(&self, nsp: &str, requester_uid: &str) -> String {
        self.channels.server(nsp, requester_uid)
    }
}

/// Encodes `msg` byte for byte as the sharded adapter's `encode`: `JSON.stringify(message)`
/// with keys `type, data, uid, nsp`, or notepack of the same object when it has binary.
pub fn encode(msg: &ClusterMessage) -> Vec<u8> {
    let value = msg.to_value(Undefined::Omit);
    if msg.has_binary() {
        msgpack::encode(&value)
    } else {
        js_json_string(&value).into_bytes()
    }
}

/// Whether a sharded payload is JSON (first byte `{`) rather than msgpack.
pub fn is_json(payload: &[u8]) -> bool {
    payload.first() == Some(&b'{')
}

/// Decodes a payload received on a sharded channel, JSON or msgpack by its first byte as the
/// Node adapter does. Key order does not matter; see [`ClusterMessage`] for what is required.
pub fn decode(payload: &[u8]) -> Result<ClusterMessage, WireError> {
    if payload.is_empty() {
        return Err(WireError::Empty);
    }
    let value = if is_json(payload) {
        // Node reads the buffer with `toString()`: invalid UTF-8 becomes U+FFFD.
        json_str_to_msgpack(&String::from_utf8_lossy(payload))?
    } else {
        msgpack::decode(payload)?
    };
    cluster::ClusterMessage::from_value(value)
}

#[cfg(test)]
mod tests {
    use rmpv::Value;

    use super::*;
    use crate::BroadcastOptions;
    use crate::cluster::{AckResponse, ClusterBroadcast};

    fn broadcast(rooms: &[&str], ack: bool) -> ClusterMessage {
        let mut b = ClusterBroadcast::new(
            Value::Array(vec!["ev".into()]),
            BroadcastOptions {
                rooms: rooms.iter().map(|r| r.to_string()).collect(),
                ..Default::default()
            },
        );
        if ack {
            b.request_id = Some("0123456789abcdef".into());
        }
        ClusterMessage::new("u", "/", ClusterBody::Broadcast(b))
    }

    #[test]
    fn compute_channel() {
        let sid = "AAAAAAAAAAAAAAAAAAAA";
        let cases = [
            (
                SubscriptionMode::Dynamic,
                &["room1"][..],
                false,
                "socket.io#/#room1#",
            ),
            (SubscriptionMode::Dynamic, &["room1"], true, "socket.io#/#"),
            (
                SubscriptionMode::Dynamic,
                &["a", "b"],
                false,
                "socket.io#/#",
            ),
            (SubscriptionMode::Dynamic, &[], false, "socket.io#/#"),
            (SubscriptionMode::Dynamic, &[sid], false, "socket.io#/#"),
            (
                SubscriptionMode::DynamicPrivate,
                &[sid],
                false,
                "socket.io#/#AAAAAAAAAAAAAAAAAAAA#",
            ),
            (SubscriptionMode::Static, &["room1"], false, "socket.io#/#"),
        ];
        for (mode, rooms, ack, want) in cases {
            let opts = ShardedOptions::new("socket.io", mode);
            assert_eq!(
                opts.channel_for(&broadcast(rooms, ack)),
                want,
                "{mode:?} {rooms:?}"
            );
        }
        let opts = ShardedOptions::default();
        assert_eq!(
            opts.base_subscriptions("/", "u1"),
            ["socket.io#/#".to_string(), "socket.io#/#u1#".to_string()]
        );
        assert_eq!(opts.response_channel("/a", "u1"), "socket.io#/a#u1#");
        assert!(opts.subscribes_to_room(false));
        assert!(!opts.subscribes_to_room(true));
    }

    #[test]
    fn numbers_read_like_json_parse() {
        // serde_json's fast float parsing reads this one ULP off (found by the fuzzer); Node's
        // JSON.parse is correctly rounded, and so must we be to re-encode the same text.
        let text = br#"{"type":9,"data":{"packet":["n",1.7957833233333333e+33,0.1,5e-324]},"uid":"u","nsp":"/"}"#;
        assert_eq!(encode(&decode(text).unwrap()), text);
    }

    #[test]
    fn socket_id_length_counts_utf16_units() {
        assert!(looks_like_socket_id("abcdefghijklmnopqrst"));
        assert!(!looks_like_socket_id("abcdefghijklmnopqrs"));
        // 19 ASCII + "é" (1 unit, 2 bytes) = 20 units.
        assert!(looks_like_socket_id("abcdefghijklmnopqrsé"));
        // 10 emoji = 20 UTF-16 units, 10 chars, 40 bytes.
        assert!(looks_like_socket_id(&"😀".repeat(10)));
        assert!(!looks_like_socket_id(&"😀".repeat(20)));
    }

    #[test]
    fn json_or_msgpack() {
        let msg = broadcast(&["room1"], false);
        let json = encode(&msg);
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"type":3,"data":{"packet":{"type":2,"data":["ev"]},"opts":{"rooms":["room1"],"except":[],"flags":{}}},"uid":"u","nsp":"/"}"#
        );
        assert_eq!(decode(&json).unwrap(), msg);
        let mut bin = msg.clone();
        if let ClusterBody::Broadcast(b) = &mut bin.body {
            b.packet.data = Value::Array(vec!["ev".into(), Value::Binary(vec![1])]);
        }
        let bytes = encode(&bin);
        assert_eq!(bytes[0], 0x84);
        assert_eq!(decode(&bytes).unwrap(), bin);
        // Undefined ack argument: left out, as JSON.stringify does.
        let ack = ClusterMessage::new(
            "u",
            "/",
            ClusterBody::BroadcastAck(AckResponse {
                request_id: "r".into(),
                packet: None,
            }),
        );
        assert_eq!(
            encode(&ack),
            br#"{"type":12,"data":{"requestId":"r"},"uid":"u","nsp":"/"}"#
        );
        assert_eq!(decode(&encode(&ack)).unwrap(), ack);
        for bad in [
            &b""[..],
            b"{",
            b"{}",
            b"\xc1",
            b"[1]",
            b"{\"type\":3,\"nsp\":\"/\"}",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            "dynamic-private"
                .parse::<SubscriptionMode>()
                .unwrap()
                .as_str(),
            "dynamic-private"
        );
        assert!("Dynamic".parse::<SubscriptionMode>().is_err());
    }
}
