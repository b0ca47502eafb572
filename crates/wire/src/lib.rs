//! The Redis bus wire format shared by the Switchboard gateway and broadcaster.
//!
//! Everything here is byte-compatible with the official Node packages:
//! `@socket.io/redis-emitter` 5.x (what API services publish) and
//! `@socket.io/redis-adapter` 8.x in classic (`PUBLISH`/`PSUBSCRIBE`) mode (what Node
//! Socket.IO servers on the same Redis publish and expect to receive), and the two adapters
//! built on socket.io-adapter 2.5's `ClusterAdapter`: `@socket.io/redis-adapter` 8.3's
//! `createShardedAdapter` and `@socket.io/redis-streams-adapter` 0.3 (with connection state
//! recovery).
//!
//! * [`channel`]: channel names (`socket.io#/#`, `socket.io#/#room#`, request/response channels).
//! * [`message`]: the broadcast message `[uid, packet, opts]` published on broadcast channels.
//! * [`request`]: the request/response channel messages (types 0..9).
//! * [`msgpack`]: a notepack.io 3.x compatible MessagePack encoder for [`rmpv::Value`],
//!   a never-panicking decoder, and a serde serializer into [`rmpv::Value`].
//! * [`cluster`]: the `ClusterAdapter` message `{type, data, uid, nsp}` (types 1..13) and its
//!   channel names, shared by the two formats below.
//! * [`sharded`]: the sharded adapter's encoding (JSON, or notepack with binary) and its
//!   publishing rule (`computeChannel`).
//! * [`streams`]: the streams adapter's stream keys (`hashCode` sharding), XADD fields and
//!   pub/sub messages.
//! * [`recovery`]: connection state recovery: session records, offsets, replay filtering.
//! * [`client_event`]: a client event as the gateway forwards it to the API (HTTP body, stream
//!   entry), read by the broadcaster's stream consumer.
//! * [`room_template`]: room names from templates (`user:{sub}`, `role:{role}`, `chat_{arg}`),
//!   shared by the gateway's auth, HTTP API and client rules and by the broadcaster.
//! * [`socketio`]: turns bus packet data into the Socket.IO v5 packet text (plus binary
//!   attachments) exactly as a Node `socket.io` 4.x server would, and JSON <-> msgpack values.
//!
//! ```
//! use switchboard_wire::{decode_broadcast, encode_event, Channels};
//!
//! let channels = Channels::default();
//! assert_eq!(channels.room("/", "role:admin"), "socket.io#/#role:admin#");
//!
//! // What `emitter.to("role:admin").emit("ticket_updated", {id: 7})` publishes:
//! let bytes = b"\x93\xa7emitter\x83\xa4type\x02\xa4data\x92\xaeticket_updated\x81\xa2id\x07\xa3nsp\xa1/\x83\xa5rooms\x91\xaarole:admin\xa5flags\x80\xa6except\x90";
//! let msg = decode_broadcast(bytes).unwrap();
//! assert_eq!(msg.opts.rooms, vec!["role:admin".to_string()]);
//! let packet = encode_event(&msg.packet.nsp, &msg.packet.data, None).unwrap();
//! assert_eq!(packet.text, r#"2["ticket_updated",{"id":7}]"#);
//! ```

#![warn(missing_docs)]

pub mod channel;
pub mod client_event;
pub mod cluster;
mod js;
pub mod message;
pub mod msgpack;
pub mod presence;
pub mod recovery;
pub mod request;
pub mod room_template;
pub mod sharded;
pub mod socketio;
pub mod streams;

pub use channel::Channels;
pub use cluster::{ClusterBody, ClusterChannels, ClusterMessage, MessageType};
pub use message::{
    BroadcastFlags, BroadcastMessage, BroadcastOptions, BroadcastRef, BusPacket, EMITTER_UID,
    decode_broadcast, decode_broadcast_ref, encode_broadcast,
};
pub use request::{
    DisconnectRequest, FetchedSocket, Request, RequestOpts, RequestType, Response, RoomsRequest,
    decode_request, decode_response, encode_request, encode_response,
};
pub use socketio::{
    EncodedPacket, RESERVED_EVENTS, encode_event, json_str_to_msgpack, json_to_msgpack,
    msgpack_to_json,
};

/// Everything that can go wrong decoding or encoding bus messages.
///
/// Decoding never panics: malformed, truncated or unexpected input always ends up here with a
/// message that says what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes are not valid MessagePack (truncated, reserved marker, too deeply nested...).
    #[error("invalid msgpack: {0}")]
    Msgpack(String),
    /// The bytes are not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A MessagePack value was followed by extra bytes.
    #[error("{0} trailing bytes after the msgpack value")]
    TrailingBytes(usize),
    /// The input was empty.
    #[error("empty message")]
    Empty,
    /// The message decoded, but its shape is not what the protocol defines.
    #[error("unexpected message shape: {0}")]
    Shape(String),
    /// A request or response carries a `type` this crate does not know.
    #[error("unknown request type {0}")]
    UnknownType(i64),
    /// Event data is not an array starting with a string event name.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// A value could not be serialized into a MessagePack value.
    #[error("cannot serialize: {0}")]
    Serialize(String),
}

impl serde::ser::Error for WireError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        WireError::Serialize(msg.to_string())
    }
}
