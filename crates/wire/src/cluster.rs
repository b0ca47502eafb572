//! The message model of `socket.io-adapter` 2.5's `ClusterAdapter`, which both
//! `@socket.io/redis-streams-adapter` 0.3 and `@socket.io/redis-adapter` 8.3's
//! `createShardedAdapter` extend.
//!
//! Every message is the JavaScript object `{type, data, uid, nsp}` (in that key order; `data`
//! is absent for heartbeats). What differs between the two adapters is only how that object
//! travels: [`crate::sharded`] (JSON, or notepack when it holds binary) and [`crate::streams`]
//! (XADD fields, or `@msgpack/msgpack` over pub/sub). This module holds the typed message, its
//! map form, and the channel names both adapters use.
//!
//! ```
//! use switchboard_wire::cluster::{ClusterBody, ClusterBroadcast, ClusterMessage, MessageType};
//! use switchboard_wire::BroadcastOptions;
//! use rmpv::Value;
//!
//! let msg = ClusterMessage::new(
//!     "5a0e3f4c2b1d0e9f",
//!     "/",
//!     ClusterBody::Broadcast(ClusterBroadcast::new(
//!         Value::Array(vec!["news".into(), 1.into()]),
//!         BroadcastOptions { rooms: vec!["room1".into()], ..Default::default() },
//!     )),
//! );
//! assert_eq!(msg.message_type(), MessageType::Broadcast);
//! assert_eq!(
//!     switchboard_wire::sharded::encode(&msg),
//!     br#"{"type":3,"data":{"packet":{"type":2,"data":["news",1]},"opts":{"rooms":["room1"],"except":[],"flags":{}}},"uid":"5a0e3f4c2b1d0e9f","nsp":"/"}"#
//! );
//! ```

use rmpv::Value;

use crate::WireError;
use crate::js::value_has_binary;
use crate::message::{
    BroadcastOptions, as_u64_lenient, get, packet_type, room_list, string_lenient, take, truthy,
};
use crate::request::FetchedSocket;

/// The default `channelPrefix` of both adapters.
pub const DEFAULT_CHANNEL_PREFIX: &str = "socket.io";

/// `MessageType` of socket.io-adapter 2.5 (`cluster-adapter.js`): the `type` of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// A server announces itself (heartbeat adapters only: redis-streams-adapter 0.2.x).
    InitialHeartbeat = 1,
    /// A server is still alive (heartbeat adapters only).
    Heartbeat = 2,
    /// `io.emit` / `io.to(...).emit`, with or without acknowledgements.
    Broadcast = 3,
    /// `socketsJoin`.
    SocketsJoin = 4,
    /// `socketsLeave`.
    SocketsLeave = 5,
    /// `disconnectSockets`.
    DisconnectSockets = 6,
    /// `fetchSockets` request.
    FetchSockets = 7,
    /// Response to [`MessageType::FetchSockets`].
    FetchSocketsResponse = 8,
    /// `serverSideEmit`, with or without acknowledgement.
    ServerSideEmit = 9,
    /// Response to a [`MessageType::ServerSideEmit`] with acknowledgement.
    ServerSideEmitResponse = 10,
    /// Response to a broadcast with acknowledgements: how many clients a server sent it to.
    BroadcastClientCount = 11,
    /// Response to a broadcast with acknowledgements: one client's acknowledgement.
    BroadcastAck = 12,
    /// A server leaves (heartbeat adapters only).
    AdapterClose = 13,
}

impl MessageType {
    /// The type for a wire number, `None` for numbers socket.io-adapter 2.5 does not define.
    pub fn from_number(n: i64) -> Option<Self> {
        Some(match n {
            1 => MessageType::InitialHeartbeat,
            2 => MessageType::Heartbeat,
            3 => MessageType::Broadcast,
            4 => MessageType::SocketsJoin,
            5 => MessageType::SocketsLeave,
            6 => MessageType::DisconnectSockets,
            7 => MessageType::FetchSockets,
            8 => MessageType::FetchSocketsResponse,
            9 => MessageType::ServerSideEmit,
            10 => MessageType::ServerSideEmitResponse,
            11 => MessageType::BroadcastClientCount,
            12 => MessageType::BroadcastAck,
            13 => MessageType::AdapterClose,
            _ => return None,
        })
    }

    /// Whether this is a response, which goes to the requester's own channel
    /// (`socket.io#<nsp>#<requesterUid>#`) instead of the namespace channel.
    pub fn is_response(self) -> bool {
        matches!(
            self,
            MessageType::FetchSocketsResponse
                | MessageType::ServerSideEmitResponse
                | MessageType::BroadcastClientCount
                | MessageType::BroadcastAck
        )
    }

    /// Whether the adapters look for binary in this type's `data` (their `mayContainBinary`
    /// list). Binary in any other type is sent as JSON like the rest.
    pub fn may_contain_binary(self) -> bool {
        matches!(
            self,
            MessageType::Broadcast
                | MessageType::FetchSocketsResponse
                | MessageType::ServerSideEmit
                | MessageType::ServerSideEmitResponse
                | MessageType::BroadcastAck
        )
    }
}

/// One message between the servers of a cluster: who sent it, for which namespace, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMessage {
    /// The sender's adapter uid (`randomId()`: 16 hex characters). Servers drop messages
    /// carrying their own uid.
    pub uid: String,
    /// Namespace name, e.g. `"/"`. Servers drop messages for another namespace.
    pub nsp: String,
    /// The typed `type` + `data`.
    pub body: ClusterBody,
}

/// The `type` and `data` of a [`ClusterMessage`], one variant per [`MessageType`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterBody {
    /// Type 1, no data.
    InitialHeartbeat,
    /// Type 2, no data.
    Heartbeat,
    /// Type 3.
    Broadcast(ClusterBroadcast),
    /// Type 4.
    SocketsJoin(RoomsChange),
    /// Type 5.
    SocketsLeave(RoomsChange),
    /// Type 6.
    DisconnectSockets(DisconnectSockets),
    /// Type 7.
    FetchSockets(FetchSockets),
    /// Type 8.
    FetchSocketsResponse(FetchSocketsResponse),
    /// Type 9.
    ServerSideEmit(ServerSideEmit),
    /// Type 10.
    ServerSideEmitResponse(AckResponse),
    /// Type 11.
    BroadcastClientCount(BroadcastClientCount),
    /// Type 12.
    BroadcastAck(AckResponse),
    /// Type 13, no data.
    AdapterClose,
}

/// BROADCAST data: `{packet, opts}`, or `{packet, requestId, opts}` when the sender waits for
/// client acknowledgements.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterBroadcast {
    /// The Socket.IO packet to deliver.
    pub packet: ClusterPacket,
    /// Present when the sender expects acknowledgements: every server answers with
    /// [`ClusterBody::BroadcastClientCount`] and one [`ClusterBody::BroadcastAck`] per client ack.
    pub request_id: Option<String>,
    /// Rooms, exclusions and flags (`{rooms, except, flags}`).
    pub opts: BroadcastOptions,
}

impl ClusterBroadcast {
    /// A broadcast of an EVENT with `data = [event, ...args]`, without acknowledgements.
    pub fn new(data: Value, opts: BroadcastOptions) -> Self {
        ClusterBroadcast {
            packet: ClusterPacket::event(data),
            request_id: None,
            opts,
        }
    }
}

/// The Socket.IO packet inside a cluster BROADCAST: `{type, data}` plus `id` when a server-side
/// `socket.emit(..., ack)` went through the adapter (connection state recovery on). Unlike the
/// classic adapter's packet it has no `nsp`: the message's `nsp` says it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPacket {
    /// Socket.IO packet type, 2 (EVENT) in everything the adapters send.
    pub packet_type: u8,
    /// `[event, ...args]`.
    pub data: Value,
    /// Ack id, when present.
    pub id: Option<u64>,
}

impl ClusterPacket {
    /// An EVENT packet with `data = [event, ...args]`.
    pub fn event(data: Value) -> Self {
        ClusterPacket {
            packet_type: crate::socketio::EVENT,
            data,
            id: None,
        }
    }

    fn to_value(&self) -> Value {
        let mut entries = vec![
            kv("type", Value::from(self.packet_type)),
            kv("data", self.data.clone()),
        ];
        if let Some(id) = self.id {
            entries.push(kv("id", Value::from(id)));
        }
        Value::Map(entries)
    }

    fn from_value(v: Value) -> Result<Self, WireError> {
        let Value::Map(mut entries) = v else {
            return Err(WireError::Shape(format!(
                "data.packet must be a map, got {v}"
            )));
        };
        let packet_type = packet_type(get(&entries, "type"))?;
        let id = get(&entries, "id").and_then(as_u64_lenient);
        let data = take(&mut entries, "data").unwrap_or(Value::Nil);
        Ok(ClusterPacket {
            packet_type,
            data,
            id,
        })
    }
}

/// SOCKETS_JOIN / SOCKETS_LEAVE data: `{opts, rooms}`: make the sockets selected by `opts`
/// join / leave `rooms`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoomsChange {
    /// Which sockets.
    pub opts: BroadcastOptions,
    /// Rooms to join / leave.
    pub rooms: Vec<String>,
}

/// DISCONNECT_SOCKETS data: `{opts, close}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DisconnectSockets {
    /// Which sockets.
    pub opts: BroadcastOptions,
    /// Also close the underlying Engine.IO connection.
    pub close: bool,
}

/// FETCH_SOCKETS data: `{opts, requestId}`. Every other server answers with
/// [`ClusterBody::FetchSocketsResponse`] on the requester's channel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FetchSockets {
    /// Which sockets.
    pub opts: BroadcastOptions,
    /// Correlates the responses.
    pub request_id: String,
}

/// FETCH_SOCKETS_RESPONSE data: `{requestId, sockets: [{id, handshake, rooms, data}]}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FetchSocketsResponse {
    /// The request's id.
    pub request_id: String,
    /// The responding server's matching sockets.
    pub sockets: Vec<FetchedSocket>,
}

/// SERVER_SIDE_EMIT data: `{packet}`, or `{requestId, packet}` when the sender waits for one
/// [`ClusterBody::ServerSideEmitResponse`] per other server.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerSideEmit {
    /// Present when an acknowledgement is expected.
    pub request_id: Option<String>,
    /// `[event, ...args]`.
    pub packet: Vec<Value>,
}

/// SERVER_SIDE_EMIT_RESPONSE and BROADCAST_ACK data: `{requestId, packet}`, where `packet` is
/// the (first) argument the acknowledgement callback was called with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AckResponse {
    /// The request's id.
    pub request_id: String,
    /// The acknowledgement argument; `None` is JavaScript `undefined` (the callback was called
    /// without arguments), which JSON and notepack leave out and `@msgpack/msgpack` writes as nil.
    pub packet: Option<Value>,
}

/// BROADCAST_CLIENT_COUNT data: `{requestId, clientCount}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BroadcastClientCount {
    /// The request's id.
    pub request_id: String,
    /// How many clients this server sent the broadcast to (how many acks to expect from it).
    pub client_count: u64,
}

/// How JavaScript `undefined` in an object is written: left out (JSON.stringify, notepack) or
/// as nil (`@msgpack/msgpack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undefined {
    Omit,
    Nil,
}

impl ClusterMessage {
    /// A message from the adapter `uid` for namespace `nsp`.
    pub fn new(uid: impl Into<String>, nsp: impl Into<String>, body: ClusterBody) -> Self {
        ClusterMessage {
            uid: uid.into(),
            nsp: nsp.into(),
            body,
        }
    }

    /// The message's `type`.
    pub fn message_type(&self) -> MessageType {
        match &self.body {
            ClusterBody::InitialHeartbeat => MessageType::InitialHeartbeat,
            ClusterBody::Heartbeat => MessageType::Heartbeat,
            ClusterBody::Broadcast(_) => MessageType::Broadcast,
            ClusterBody::SocketsJoin(_) => MessageType::SocketsJoin,
            ClusterBody::SocketsLeave(_) => MessageType::SocketsLeave,
            ClusterBody::DisconnectSockets(_) => MessageType::DisconnectSockets,
            ClusterBody::FetchSockets(_) => MessageType::FetchSockets,
            ClusterBody::FetchSocketsResponse(_) => MessageType::FetchSocketsResponse,
            ClusterBody::ServerSideEmit(_) => MessageType::ServerSideEmit,
            ClusterBody::ServerSideEmitResponse(_) => MessageType::ServerSideEmitResponse,
            ClusterBody::BroadcastClientCount(_) => MessageType::BroadcastClientCount,
            ClusterBody::BroadcastAck(_) => MessageType::BroadcastAck,
            ClusterBody::AdapterClose => MessageType::AdapterClose,
        }
    }

    /// The `requestId` of a request that expects responses, or of a response.
    pub fn request_id(&self) -> Option<&str> {
        match &self.body {
            ClusterBody::Broadcast(b) => b.request_id.as_deref(),
            ClusterBody::FetchSockets(f) => Some(&f.request_id),
            ClusterBody::FetchSocketsResponse(r) => Some(&r.request_id),
            ClusterBody::ServerSideEmit(e) => e.request_id.as_deref(),
            ClusterBody::ServerSideEmitResponse(r) | ClusterBody::BroadcastAck(r) => {
                Some(&r.request_id)
            }
            ClusterBody::BroadcastClientCount(c) => Some(&c.request_id),
            _ => None,
        }
    }

    /// Whether the adapters would send this message in binary form: its type may carry binary
    /// ([`MessageType::may_contain_binary`]) and `hasBinary(data)` holds.
    pub fn has_binary(&self) -> bool {
        self.message_type().may_contain_binary()
            && match &self.body {
                // Node checks the whole data object; only the event and unknown flags can hold
                // binary (rooms are strings).
                ClusterBody::Broadcast(b) => {
                    value_has_binary(&b.packet.data)
                        || b.opts.flags.other.iter().any(|(_, v)| value_has_binary(v))
                }
                ClusterBody::FetchSocketsResponse(r) => r
                    .sockets
                    .iter()
                    .any(|s| value_has_binary(&s.handshake) || value_has_binary(&s.data)),
                ClusterBody::ServerSideEmit(e) => e.packet.iter().any(value_has_binary),
                ClusterBody::ServerSideEmitResponse(r) | ClusterBody::BroadcastAck(r) => {
                    r.packet.as_ref().is_some_and(value_has_binary)
                }
                _ => false,
            }
    }

    /// The whole message as the JavaScript object `{type, data, uid, nsp}`.
    pub(crate) fn to_value(&self, undefined: Undefined) -> Value {
        let mut entries = vec![kv("type", Value::from(self.message_type() as u8))];
        if let Some(data) = self.data_value(undefined) {
            entries.push(kv("data", data));
        }
        entries.push(kv("uid", Value::from(self.uid.as_str())));
        entries.push(kv("nsp", Value::from(self.nsp.as_str())));
        Value::Map(entries)
    }

    /// The `data` object in the key order the Node adapter builds it; `None` for heartbeats.
    pub(crate) fn data_value(&self, undefined: Undefined) -> Option<Value> {
        Some(Value::Map(match &self.body {
            ClusterBody::InitialHeartbeat | ClusterBody::Heartbeat | ClusterBody::AdapterClose => {
                return None;
            }
            ClusterBody::Broadcast(b) => {
                let mut e = vec![kv("packet", b.packet.to_value())];
                if let Some(id) = &b.request_id {
                    e.push(kv("requestId", Value::from(id.as_str())));
                }
                e.push(kv("opts", b.opts.to_server_value()));
                e
            }
            ClusterBody::SocketsJoin(r) | ClusterBody::SocketsLeave(r) => vec![
                kv("opts", r.opts.to_server_value()),
                kv("rooms", strings(&r.rooms)),
            ],
            ClusterBody::DisconnectSockets(d) => vec![
                kv("opts", d.opts.to_server_value()),
                kv("close", Value::Boolean(d.close)),
            ],
            ClusterBody::FetchSockets(f) => vec![
                kv("opts", f.opts.to_server_value()),
                kv("requestId", Value::from(f.request_id.as_str())),
            ],
            ClusterBody::FetchSocketsResponse(r) => vec![
                kv("requestId", Value::from(r.request_id.as_str())),
                kv(
                    "sockets",
                    Value::Array(r.sockets.iter().map(socket_value).collect()),
                ),
            ],
            ClusterBody::ServerSideEmit(e) => {
                let mut entries = Vec::with_capacity(2);
                if let Some(id) = &e.request_id {
                    entries.push(kv("requestId", Value::from(id.as_str())));
                }
                entries.push(kv("packet", Value::Array(e.packet.clone())));
                entries
            }
            ClusterBody::ServerSideEmitResponse(r) | ClusterBody::BroadcastAck(r) => {
                let mut e = vec![kv("requestId", Value::from(r.request_id.as_str()))];
                match (&r.packet, undefined) {
                    (Some(p), _) => e.push(kv("packet", p.clone())),
                    (None, Undefined::Nil) => e.push(kv("packet", Value::Nil)),
                    (None, Undefined::Omit) => {}
                }
                e
            }
            ClusterBody::BroadcastClientCount(c) => vec![
                kv("requestId", Value::from(c.request_id.as_str())),
                kv("clientCount", Value::from(c.client_count)),
            ],
        }))
    }

    /// Reads the whole-message map `{type, data, uid, nsp}` (any key order).
    pub(crate) fn from_value(v: Value) -> Result<Self, WireError> {
        let Value::Map(mut entries) = v else {
            return Err(WireError::Shape(format!(
                "a cluster message is a map {{type, data, uid, nsp}}, got {v}"
            )));
        };
        let message_type = match get(&entries, "type") {
            Some(Value::Integer(i)) => i.as_i64().unwrap_or(i64::MAX),
            Some(Value::F64(f)) if f.fract() == 0.0 && f.abs() < 1e15 => *f as i64,
            Some(other) => {
                return Err(WireError::Shape(format!(
                    "message type must be an integer, got {other}"
                )));
            }
            None => return Err(WireError::Shape("message has no type".into())),
        };
        let uid = match get(&entries, "uid") {
            // ClusterAdapter processes a message without uid (it only drops its own uid).
            None | Some(Value::Nil) => String::new(),
            Some(v) => string_lenient(v, "uid")?,
        };
        let nsp = match get(&entries, "nsp") {
            Some(Value::Nil) | None => {
                return Err(WireError::Shape(
                    "message has no nsp (every adapter would ignore it)".into(),
                ));
            }
            Some(v) => string_lenient(v, "nsp")?,
        };
        let data = take(&mut entries, "data");
        Self::from_parts(uid, nsp, message_type, data)
    }

    /// Builds a message from its four fields, `data` as decoded from JSON or msgpack.
    pub(crate) fn from_parts(
        uid: String,
        nsp: String,
        message_type: i64,
        data: Option<Value>,
    ) -> Result<Self, WireError> {
        let ty =
            MessageType::from_number(message_type).ok_or(WireError::UnknownType(message_type))?;
        let body = match ty {
            MessageType::InitialHeartbeat => ClusterBody::InitialHeartbeat,
            MessageType::Heartbeat => ClusterBody::Heartbeat,
            MessageType::AdapterClose => ClusterBody::AdapterClose,
            _ => {
                let mut data = match data {
                    Some(Value::Map(entries)) => entries,
                    Some(other) => {
                        return Err(WireError::Shape(format!(
                            "data of a type {message_type} message must be a map, got {other}"
                        )));
                    }
                    None => {
                        return Err(WireError::Shape(format!(
                            "a type {message_type} message needs data"
                        )));
                    }
                };
                body_from_data(ty, &mut data)?
            }
        };
        Ok(ClusterMessage { uid, nsp, body })
    }
}

fn body_from_data(ty: MessageType, data: &mut [(Value, Value)]) -> Result<ClusterBody, WireError> {
    Ok(match ty {
        MessageType::Broadcast => ClusterBody::Broadcast(ClusterBroadcast {
            packet: match take(data, "packet") {
                Some(p) => ClusterPacket::from_value(p)?,
                None => return Err(WireError::Shape("broadcast has no data.packet".into())),
            },
            request_id: optional_request_id(data)?,
            opts: required_opts(data)?,
        }),
        MessageType::SocketsJoin | MessageType::SocketsLeave => {
            let change = RoomsChange {
                opts: required_opts(data)?,
                rooms: room_list(get(data, "rooms"), "data.rooms")?,
            };
            if ty == MessageType::SocketsJoin {
                ClusterBody::SocketsJoin(change)
            } else {
                ClusterBody::SocketsLeave(change)
            }
        }
        MessageType::DisconnectSockets => ClusterBody::DisconnectSockets(DisconnectSockets {
            opts: required_opts(data)?,
            close: get(data, "close").is_some_and(truthy),
        }),
        MessageType::FetchSockets => ClusterBody::FetchSockets(FetchSockets {
            opts: required_opts(data)?,
            request_id: required_request_id(data)?,
        }),
        MessageType::FetchSocketsResponse => {
            let request_id = required_request_id(data)?;
            let sockets = match take(data, "sockets") {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .map(socket_from_value)
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(WireError::Shape(format!(
                        "data.sockets must be an array, got {}",
                        describe(other.as_ref())
                    )));
                }
            };
            ClusterBody::FetchSocketsResponse(FetchSocketsResponse {
                request_id,
                sockets,
            })
        }
        MessageType::ServerSideEmit => ClusterBody::ServerSideEmit(ServerSideEmit {
            request_id: optional_request_id(data)?,
            packet: match take(data, "packet") {
                Some(Value::Array(items)) => items,
                other => {
                    return Err(WireError::Shape(format!(
                        "data.packet of a server-side emit must be an array, got {}",
                        describe(other.as_ref())
                    )));
                }
            },
        }),
        MessageType::ServerSideEmitResponse | MessageType::BroadcastAck => {
            let response = AckResponse {
                request_id: required_request_id(data)?,
                packet: take(data, "packet"),
            };
            if ty == MessageType::BroadcastAck {
                ClusterBody::BroadcastAck(response)
            } else {
                ClusterBody::ServerSideEmitResponse(response)
            }
        }
        MessageType::BroadcastClientCount => {
            ClusterBody::BroadcastClientCount(BroadcastClientCount {
                request_id: required_request_id(data)?,
                client_count: get(data, "clientCount")
                    .and_then(as_u64_lenient)
                    .ok_or_else(|| {
                        WireError::Shape("data.clientCount must be a non-negative number".into())
                    })?,
            })
        }
        MessageType::InitialHeartbeat | MessageType::Heartbeat | MessageType::AdapterClose => {
            unreachable!("handled by from_parts")
        }
    })
}

fn required_opts(data: &[(Value, Value)]) -> Result<BroadcastOptions, WireError> {
    match get(data, "opts") {
        // Node's decodeOptions reads opts.rooms: without opts the message throws.
        None | Some(Value::Nil) => Err(WireError::Shape("message has no data.opts".into())),
        Some(v) => BroadcastOptions::from_value(Some(v)),
    }
}

fn optional_request_id(data: &[(Value, Value)]) -> Result<Option<String>, WireError> {
    match get(data, "requestId") {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => string_lenient(v, "data.requestId").map(Some),
    }
}

fn required_request_id(data: &[(Value, Value)]) -> Result<String, WireError> {
    optional_request_id(data)?
        .ok_or_else(|| WireError::Shape("message has no data.requestId".into()))
}

fn socket_value(s: &FetchedSocket) -> Value {
    Value::Map(vec![
        kv("id", Value::from(s.id.as_str())),
        kv("handshake", s.handshake.clone()),
        kv("rooms", strings(&s.rooms)),
        kv("data", s.data.clone()),
    ])
}

fn socket_from_value(v: Value) -> Result<FetchedSocket, WireError> {
    let Value::Map(mut entries) = v else {
        return Err(WireError::Shape(format!(
            "each fetched socket must be a map, got {v}"
        )));
    };
    let id = match get(&entries, "id") {
        Some(v) => string_lenient(v, "socket.id")?,
        None => return Err(WireError::Shape("fetched socket has no id".into())),
    };
    let rooms = room_list(get(&entries, "rooms"), "socket.rooms")?;
    Ok(FetchedSocket {
        id,
        handshake: take(&mut entries, "handshake").unwrap_or(Value::Nil),
        rooms,
        data: take(&mut entries, "data").unwrap_or(Value::Nil),
    })
}

fn describe(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing".to_string(), |v| v.to_string())
}

fn kv(key: &str, value: Value) -> (Value, Value) {
    (Value::from(key), value)
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(s.as_str())).collect())
}

/// The pub/sub channel names of both cluster adapters (`channelPrefix`, `"socket.io"` by
/// default). They are the same strings as the classic adapter's broadcast and room channels, so
/// a classic `PSUBSCRIBE socket.io#/#*` listener also sees these messages and must ignore what
/// is not a classic `[uid, packet, opts]` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterChannels {
    prefix: String,
}

impl Default for ClusterChannels {
    fn default() -> Self {
        ClusterChannels::new(DEFAULT_CHANNEL_PREFIX)
    }
}

impl ClusterChannels {
    /// Channels under `channelPrefix` `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        ClusterChannels {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace channel every server subscribes to: `socket.io#<nsp>#`. Its subscriber
    /// count (`PUBSUB NUMSUB` / `SHARDNUMSUB`) is how Node servers count the cluster.
    pub fn namespace(&self, nsp: &str) -> String {
        format!("{}#{}#", self.prefix, nsp)
    }

    /// A server's own channel, where responses to its requests arrive:
    /// `socket.io#<nsp>#<uid>#`.
    pub fn server(&self, nsp: &str, uid: &str) -> String {
        format!("{}#{}#{}#", self.prefix, nsp, uid)
    }

    /// A room channel (sharded adapter, dynamic modes): `socket.io#<nsp>#<room>#`.
    pub fn room(&self, nsp: &str, room: &str) -> String {
        format!("{}#{}#{}#", self.prefix, nsp, room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_bodies() -> Vec<ClusterBody> {
        let opts = BroadcastOptions {
            rooms: vec!["r1".into()],
            except: vec!["r2".into()],
            flags: Default::default(),
        };
        vec![
            ClusterBody::InitialHeartbeat,
            ClusterBody::Heartbeat,
            ClusterBody::Broadcast(ClusterBroadcast::new(
                Value::Array(vec!["ev".into(), Value::Binary(vec![1, 2])]),
                opts.clone(),
            )),
            ClusterBody::Broadcast(ClusterBroadcast {
                packet: ClusterPacket {
                    packet_type: 2,
                    data: Value::Array(vec!["ev".into()]),
                    id: Some(4),
                },
                request_id: Some("abc".into()),
                opts: opts.clone(),
            }),
            ClusterBody::SocketsJoin(RoomsChange {
                opts: opts.clone(),
                rooms: vec!["x".into()],
            }),
            ClusterBody::SocketsLeave(RoomsChange::default()),
            ClusterBody::DisconnectSockets(DisconnectSockets {
                opts: opts.clone(),
                close: true,
            }),
            ClusterBody::FetchSockets(FetchSockets {
                opts,
                request_id: "r".into(),
            }),
            ClusterBody::FetchSocketsResponse(FetchSocketsResponse {
                request_id: "r".into(),
                sockets: vec![FetchedSocket {
                    id: "sid".into(),
                    handshake: Value::Map(vec![]),
                    rooms: vec!["sid".into()],
                    data: Value::Nil,
                }],
            }),
            ClusterBody::ServerSideEmit(ServerSideEmit {
                request_id: None,
                packet: vec!["hello".into()],
            }),
            ClusterBody::ServerSideEmitResponse(AckResponse {
                request_id: "r".into(),
                packet: Some("pong".into()),
            }),
            ClusterBody::BroadcastClientCount(BroadcastClientCount {
                request_id: "r".into(),
                client_count: 3,
            }),
            ClusterBody::BroadcastAck(AckResponse {
                request_id: "r".into(),
                packet: None,
            }),
            ClusterBody::AdapterClose,
        ]
    }

    #[test]
    fn every_type_round_trips_through_its_map() {
        for (i, body) in all_bodies().into_iter().enumerate() {
            let msg = ClusterMessage::new("uid1", "/", body);
            for undefined in [Undefined::Omit, Undefined::Nil] {
                let back = ClusterMessage::from_value(msg.to_value(undefined)).unwrap();
                if undefined == Undefined::Nil
                    && let ClusterBody::BroadcastAck(r) = &back.body
                {
                    // nil is what @msgpack/msgpack makes of undefined: it decodes as null.
                    assert_eq!(r.packet, Some(Value::Nil));
                    continue;
                }
                assert_eq!(back, msg, "case {i}");
            }
        }
        assert_eq!(MessageType::from_number(0), None);
        assert_eq!(MessageType::from_number(14), None);
        for n in 1..=13 {
            assert_eq!(MessageType::from_number(n).unwrap() as i64, n);
        }
    }

    #[test]
    fn shape_errors() {
        let bad = [
            Value::Nil,
            Value::Map(vec![kv("type", 3.into()), kv("nsp", "/".into())]),
            Value::Map(vec![kv("type", "3".into()), kv("nsp", "/".into())]),
            Value::Map(vec![kv("type", 99.into()), kv("nsp", "/".into())]),
            Value::Map(vec![kv("type", 2.into())]),
            Value::Map(vec![
                kv("type", 3.into()),
                kv("nsp", "/".into()),
                kv("data", Value::Map(vec![kv("packet", Value::Map(vec![]))])),
            ]),
            Value::Map(vec![
                kv("type", 7.into()),
                kv("nsp", "/".into()),
                kv("data", Value::Map(vec![kv("opts", Value::Map(vec![]))])),
            ]),
            Value::Map(vec![
                kv("type", 9.into()),
                kv("nsp", "/".into()),
                kv("data", Value::Map(vec![kv("packet", "x".into())])),
            ]),
        ];
        for v in bad {
            assert!(ClusterMessage::from_value(v.clone()).is_err(), "{v}");
        }
        // A heartbeat needs no data and no uid.
        let hb = ClusterMessage::from_value(Value::Map(vec![
            kv("type", 2.into()),
            kv("nsp", "/".into()),
        ]))
        .unwrap();
        assert_eq!(hb.body, ClusterBody::Heartbeat);
        assert_eq!(hb.uid, "");
    }

    #[test]
    fn binary_detection_follows_may_contain_binary() {
        let bin = Value::Array(vec!["ev".into(), Value::Binary(vec![0])]);
        let msg = ClusterMessage::new(
            "u",
            "/",
            ClusterBody::Broadcast(ClusterBroadcast::new(bin, Default::default())),
        );
        assert!(msg.has_binary());
        let date = Value::Array(vec!["ev".into(), Value::Ext(-1, vec![0, 0, 0, 1])]);
        let msg = ClusterMessage::new(
            "u",
            "/",
            ClusterBody::Broadcast(ClusterBroadcast::new(date, Default::default())),
        );
        assert!(!msg.has_binary());
        let count = ClusterMessage::new(
            "u",
            "/",
            ClusterBody::BroadcastClientCount(BroadcastClientCount::default()),
        );
        assert!(!count.has_binary());
        assert!(MessageType::BroadcastAck.is_response());
        assert!(!MessageType::FetchSockets.is_response());
    }

    #[test]
    fn channel_names() {
        let c = ClusterChannels::default();
        assert_eq!(c.namespace("/"), "socket.io#/#");
        assert_eq!(c.server("/admin", "0123"), "socket.io#/admin#0123#");
        assert_eq!(c.room("/", "role:admin"), "socket.io#/#role:admin#");
        assert_eq!(ClusterChannels::new("app").namespace("/"), "app#/#");
    }
}
