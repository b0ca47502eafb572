//! Request channel messages (`socket.io-request#<nsp>#`) and their responses
//! (`socket.io-response#<nsp>#` or `socket.io-response#<nsp>#<uid>#`), as
//! `@socket.io/redis-adapter` 8.x and `@socket.io/redis-emitter` 5.x write them.
//!
//! Requests are JSON (first byte `{`) except BROADCAST (7) which is msgpack; responses are JSON
//! except BROADCAST_ACK (9). Decoders accept either encoding for every type, like the adapter.

use rmpv::Value;

use crate::WireError;
use crate::message::{
    BroadcastOptions, BusPacket, as_u64_lenient, get, room_list, string_lenient, truthy,
};
use crate::socketio::{js_json_string, json_str_to_msgpack};

/// The adapter's request types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RequestType {
    /// Socket ids in some rooms (answered by servers; not sent by adapter 8.x any more).
    Sockets = 0,
    /// All rooms of all servers (`io.of(nsp).adapter.allRooms()`).
    AllRooms = 1,
    /// Make matching sockets join rooms (`socketsJoin`).
    RemoteJoin = 2,
    /// Make matching sockets leave rooms (`socketsLeave`).
    RemoteLeave = 3,
    /// Disconnect matching sockets (`disconnectSockets`).
    RemoteDisconnect = 4,
    /// Describe matching sockets (`fetchSockets`).
    RemoteFetch = 5,
    /// A server-to-server event (`serverSideEmit`), or its acknowledgement on the response channel.
    ServerSideEmit = 6,
    /// A broadcast expecting client acknowledgements (`io.timeout(ms).emit(..., cb)`).
    Broadcast = 7,
    /// Response: how many clients a server sent a BROADCAST to.
    BroadcastClientCount = 8,
    /// Response: one client acknowledgement of a BROADCAST.
    BroadcastAck = 9,
    /// Switchboard's own: describe the server (`switchboard status`). Not an adapter type:
    /// Node servers ignore it (`ignoring unknown request type`), gateways answer it.
    ServerStatus = 100,
}

impl RequestType {
    /// The type for a wire number.
    pub fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            0 => RequestType::Sockets,
            1 => RequestType::AllRooms,
            2 => RequestType::RemoteJoin,
            3 => RequestType::RemoteLeave,
            4 => RequestType::RemoteDisconnect,
            5 => RequestType::RemoteFetch,
            6 => RequestType::ServerSideEmit,
            7 => RequestType::Broadcast,
            8 => RequestType::BroadcastClientCount,
            9 => RequestType::BroadcastAck,
            100 => RequestType::ServerStatus,
            _ => return None,
        })
    }
}

/// Socket selection in requests: sockets in any of `rooms` (all sockets when empty) minus
/// sockets in any of `except` (the `opts` field).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestOpts {
    /// Target rooms; empty means every socket of the namespace.
    pub rooms: Vec<String>,
    /// Excluded rooms / socket ids.
    pub except: Vec<String>,
}

impl RequestOpts {
    fn to_value(&self) -> Value {
        Value::Map(vec![
            (Value::from("rooms"), strings(&self.rooms)),
            (Value::from("except"), strings(&self.except)),
        ])
    }

    fn from_value(v: &Value) -> Result<Self, WireError> {
        let Value::Map(entries) = v else {
            return Err(WireError::Shape(format!("opts must be a map, got {v}")));
        };
        Ok(RequestOpts {
            rooms: room_list(get(entries, "rooms"), "opts.rooms")?,
            except: room_list(get(entries, "except"), "opts.except")?,
        })
    }
}

/// REMOTE_JOIN / REMOTE_LEAVE: either the selection form `{opts, rooms}` (emitter, adapter
/// 8.x) or the legacy single-socket form `{requestId, sid, room}` (older adapters, answered
/// with [`Response::Ack`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomsRequest {
    /// Sender uid (absent from emitter requests).
    pub uid: Option<String>,
    /// Request id (legacy form only).
    pub request_id: Option<String>,
    /// Which sockets (selection form). `None` means the legacy form.
    pub opts: Option<RequestOpts>,
    /// Rooms to join / leave (selection form).
    pub rooms: Vec<String>,
    /// Socket id (legacy form).
    pub sid: Option<String>,
    /// Room to join / leave (legacy form).
    pub room: Option<String>,
}

/// REMOTE_DISCONNECT: selection form `{opts, close}` or legacy `{requestId, sid, close}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisconnectRequest {
    /// Sender uid (absent from emitter requests).
    pub uid: Option<String>,
    /// Request id (legacy form only).
    pub request_id: Option<String>,
    /// Which sockets (selection form). `None` means the legacy form.
    pub opts: Option<RequestOpts>,
    /// Socket id (legacy form).
    pub sid: Option<String>,
    /// Also close the underlying Engine.IO connection.
    pub close: bool,
}

/// A message on the request channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// SOCKETS (0): `{uid, requestId, type, rooms}` -> [`Response::Sockets`].
    Sockets {
        /// Sender uid.
        uid: Option<String>,
        /// Request id to echo.
        request_id: String,
        /// Rooms to look in (all sockets when empty).
        rooms: Vec<String>,
    },
    /// ALL_ROOMS (1): `{uid, requestId, type}` -> [`Response::AllRooms`].
    AllRooms {
        /// Sender uid.
        uid: Option<String>,
        /// Request id to echo.
        request_id: String,
    },
    /// REMOTE_JOIN (2).
    RemoteJoin(RoomsRequest),
    /// REMOTE_LEAVE (3).
    RemoteLeave(RoomsRequest),
    /// REMOTE_DISCONNECT (4).
    RemoteDisconnect(DisconnectRequest),
    /// REMOTE_FETCH (5): `{uid, requestId, type, opts}` -> [`Response::FetchSockets`].
    RemoteFetch {
        /// Sender uid.
        uid: Option<String>,
        /// Request id to echo.
        request_id: String,
        /// Which sockets.
        opts: RequestOpts,
    },
    /// SERVER_SIDE_EMIT (6): `{uid, requestId?, type, data}`; with a request id the sender
    /// waits for one [`Response::ServerSideEmit`] per other server.
    ServerSideEmit {
        /// Sender uid (`"emitter"` for the emitter); servers ignore their own.
        uid: Option<String>,
        /// Present when the sender expects acknowledgements.
        request_id: Option<String>,
        /// `[event, ...args]`.
        data: Vec<Value>,
    },
    /// BROADCAST (7, msgpack): `{uid, requestId, type, packet, opts}`; answered with
    /// [`Response::BroadcastClientCount`] then one [`Response::BroadcastAck`] per client ack.
    Broadcast {
        /// Sender uid.
        uid: Option<String>,
        /// Request id to echo.
        request_id: String,
        /// The packet to broadcast.
        packet: BusPacket,
        /// Targeting and flags (`flags.timeout` is the ack timeout).
        opts: BroadcastOptions,
    },
    /// BROADCAST_CLIENT_COUNT (8). Adapter 8.x sends it on the response channel (see
    /// [`Response::BroadcastClientCount`]); accepted here for completeness.
    BroadcastClientCount {
        /// Sender uid, if any.
        uid: Option<String>,
        /// Request id of the BROADCAST.
        request_id: String,
        /// Number of clients the packet was sent to.
        client_count: u64,
    },
    /// BROADCAST_ACK (9). Adapter 8.x sends it on the response channel (see
    /// [`Response::BroadcastAck`]); accepted here for completeness.
    BroadcastAck {
        /// Sender uid, if any.
        uid: Option<String>,
        /// Request id of the BROADCAST.
        request_id: String,
        /// The client's ack arguments.
        packet: Value,
    },
    /// SERVER_STATUS (100, Switchboard only): `{uid, requestId, type: 100}` ->
    /// [`Response::ServerStatus`] from every gateway; Node servers ignore it.
    ServerStatus {
        /// Sender uid.
        uid: Option<String>,
        /// Request id to echo.
        request_id: String,
    },
}

impl Request {
    /// The request type.
    pub fn request_type(&self) -> RequestType {
        match self {
            Request::Sockets { .. } => RequestType::Sockets,
            Request::AllRooms { .. } => RequestType::AllRooms,
            Request::RemoteJoin(_) => RequestType::RemoteJoin,
            Request::RemoteLeave(_) => RequestType::RemoteLeave,
            Request::RemoteDisconnect(_) => RequestType::RemoteDisconnect,
            Request::RemoteFetch { .. } => RequestType::RemoteFetch,
            Request::ServerSideEmit { .. } => RequestType::ServerSideEmit,
            Request::Broadcast { .. } => RequestType::Broadcast,
            Request::BroadcastClientCount { .. } => RequestType::BroadcastClientCount,
            Request::BroadcastAck { .. } => RequestType::BroadcastAck,
            Request::ServerStatus { .. } => RequestType::ServerStatus,
        }
    }

    /// The sender uid, if the request carries one.
    pub fn uid(&self) -> Option<&str> {
        match self {
            Request::Sockets { uid, .. }
            | Request::AllRooms { uid, .. }
            | Request::RemoteFetch { uid, .. }
            | Request::ServerSideEmit { uid, .. }
            | Request::Broadcast { uid, .. }
            | Request::BroadcastClientCount { uid, .. }
            | Request::BroadcastAck { uid, .. }
            | Request::ServerStatus { uid, .. } => uid.as_deref(),
            Request::RemoteJoin(r) | Request::RemoteLeave(r) => r.uid.as_deref(),
            Request::RemoteDisconnect(r) => r.uid.as_deref(),
        }
    }

    /// The request id, if the request carries one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Request::Sockets { request_id, .. }
            | Request::AllRooms { request_id, .. }
            | Request::RemoteFetch { request_id, .. }
            | Request::Broadcast { request_id, .. }
            | Request::BroadcastClientCount { request_id, .. }
            | Request::BroadcastAck { request_id, .. }
            | Request::ServerStatus { request_id, .. } => Some(request_id),
            Request::ServerSideEmit { request_id, .. } => request_id.as_deref(),
            Request::RemoteJoin(r) | Request::RemoteLeave(r) => r.request_id.as_deref(),
            Request::RemoteDisconnect(r) => r.request_id.as_deref(),
        }
    }
}

/// What a server publishes on the response channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// Answer to SOCKETS: `{requestId, sockets: [id...]}`.
    Sockets {
        /// Echoed request id.
        request_id: String,
        /// Socket ids.
        sockets: Vec<String>,
    },
    /// Answer to ALL_ROOMS: `{requestId, rooms}`.
    AllRooms {
        /// Echoed request id.
        request_id: String,
        /// Every room of this server (socket ids included, as in Node).
        rooms: Vec<String>,
    },
    /// Answer to REMOTE_FETCH: `{requestId, sockets: [{id, handshake, rooms, data}]}`.
    /// An empty `sockets` array decodes as this variant (use [`Response::socket_ids`] when
    /// expecting [`Response::Sockets`]).
    FetchSockets {
        /// Echoed request id.
        request_id: String,
        /// The matching sockets of this server.
        sockets: Vec<FetchedSocket>,
    },
    /// Answer to a legacy single-socket join/leave/disconnect: `{requestId}`.
    Ack {
        /// Echoed request id.
        request_id: String,
    },
    /// Acknowledgement of a SERVER_SIDE_EMIT: `{type: 6, requestId, data}`.
    ServerSideEmit {
        /// Echoed request id.
        request_id: String,
        /// The single argument the handler acknowledged with.
        data: Value,
    },
    /// `{type: 8, requestId, clientCount}`.
    BroadcastClientCount {
        /// Echoed request id.
        request_id: String,
        /// Number of clients the packet was sent to.
        client_count: u64,
    },
    /// msgpack `{type: 9, requestId, packet}`.
    BroadcastAck {
        /// Echoed request id.
        request_id: String,
        /// The client's ack arguments.
        packet: Value,
    },
    /// Answer to SERVER_STATUS: `{type: 100, requestId, server: {...}}` (see
    /// docs/protocol.md for the fields of `server`).
    ServerStatus {
        /// Echoed request id.
        request_id: String,
        /// The gateway's description: a map.
        server: Value,
    },
}

impl Response {
    /// The echoed request id.
    pub fn request_id(&self) -> &str {
        match self {
            Response::Sockets { request_id, .. }
            | Response::AllRooms { request_id, .. }
            | Response::FetchSockets { request_id, .. }
            | Response::Ack { request_id }
            | Response::ServerSideEmit { request_id, .. }
            | Response::BroadcastClientCount { request_id, .. }
            | Response::BroadcastAck { request_id, .. }
            | Response::ServerStatus { request_id, .. } => request_id,
        }
    }

    /// Socket ids of a [`Response::Sockets`] or [`Response::FetchSockets`] answer.
    pub fn socket_ids(&self) -> Option<Vec<String>> {
        match self {
            Response::Sockets { sockets, .. } => Some(sockets.clone()),
            Response::FetchSockets { sockets, .. } => {
                Some(sockets.iter().map(|s| s.id.clone()).collect())
            }
            _ => None,
        }
    }
}

/// One socket in a REMOTE_FETCH answer, as Node's `fetchSockets()` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedSocket {
    /// Socket.IO socket id.
    pub id: String,
    /// The handshake object (`headers`, `time`, `address`, `xdomain`, `secure`, `issued`,
    /// `url`, `query`, `auth`).
    pub handshake: Value,
    /// Rooms the socket is in (its own id included).
    pub rooms: Vec<String>,
    /// `socket.data`.
    pub data: Value,
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(s.as_str())).collect())
}

fn kv(key: &str, value: Value) -> (Value, Value) {
    (Value::from(key), value)
}

fn opt_str(entries: &mut Vec<(Value, Value)>, key: &str, v: &Option<String>) {
    if let Some(s) = v {
        entries.push(kv(key, Value::from(s.as_str())));
    }
}

fn json(entries: Vec<(Value, Value)>) -> Vec<u8> {
    js_json_string(&Value::Map(entries)).into_bytes()
}

fn rooms_request(ty: RequestType, r: &RoomsRequest) -> Vec<u8> {
    let mut e = Vec::new();
    opt_str(&mut e, "uid", &r.uid);
    opt_str(&mut e, "requestId", &r.request_id);
    e.push(kv("type", Value::from(ty as u8)));
    opt_str(&mut e, "sid", &r.sid);
    opt_str(&mut e, "room", &r.room);
    if let Some(opts) = &r.opts {
        e.push(kv("opts", opts.to_value()));
    }
    if r.opts.is_some() || !r.rooms.is_empty() {
        e.push(kv("rooms", strings(&r.rooms)));
    }
    json(e)
}

/// Encodes a request as the Node packages do: JSON in their key order (byte-identical to the
/// emitter for socketsJoin / socketsLeave / disconnectSockets / serverSideEmit, and to the
/// adapter for the requests it sends), msgpack for BROADCAST and BROADCAST_ACK.
pub fn encode_request(req: &Request) -> Vec<u8> {
    let ty = Value::from(req.request_type() as u8);
    match req {
        Request::Sockets {
            uid,
            request_id,
            rooms,
        } => {
            let mut e = Vec::new();
            opt_str(&mut e, "uid", uid);
            e.push(kv("requestId", Value::from(request_id.as_str())));
            e.push(kv("type", ty));
            e.push(kv("rooms", strings(rooms)));
            json(e)
        }
        Request::AllRooms { uid, request_id } | Request::ServerStatus { uid, request_id } => {
            let mut e = Vec::new();
            opt_str(&mut e, "uid", uid);
            e.push(kv("requestId", Value::from(request_id.as_str())));
            e.push(kv("type", ty));
            json(e)
        }
        Request::RemoteJoin(r) => rooms_request(RequestType::RemoteJoin, r),
        Request::RemoteLeave(r) => rooms_request(RequestType::RemoteLeave, r),
        Request::RemoteDisconnect(r) => {
            let mut e = Vec::new();
            opt_str(&mut e, "uid", &r.uid);
            opt_str(&mut e, "requestId", &r.request_id);
            e.push(kv("type", ty));
            opt_str(&mut e, "sid", &r.sid);
            if let Some(opts) = &r.opts {
                e.push(kv("opts", opts.to_value()));
            }
            e.push(kv("close", Value::Boolean(r.close)));
            json(e)
        }
        Request::RemoteFetch {
            uid,
            request_id,
            opts,
        } => {
            let mut e = Vec::new();
            opt_str(&mut e, "uid", uid);
            e.push(kv("requestId", Value::from(request_id.as_str())));
            e.push(kv("type", ty));
            e.push(kv("opts", opts.to_value()));
            json(e)
        }
        Request::ServerSideEmit {
            uid,
            request_id,
            data,
        } => {
            let mut e = Vec::new();
            opt_str(&mut e, "uid", uid);
            opt_str(&mut e, "requestId", request_id);
            e.push(kv("type", ty));
            e.push(kv("data", Value::Array(data.clone())));
            json(e)
        }
        Request::Broadcast {
            uid,
            request_id,
            packet,
            opts,
        } => {
            let mut e = Vec::new();
            opt_str(&mut e, "uid", uid);
            e.push(kv("requestId", Value::from(request_id.as_str())));
            e.push(kv("type", ty));
            e.push(kv("packet", packet.to_value()));
            e.push(kv("opts", opts.to_server_value()));
            crate::msgpack::encode(&Value::Map(e))
        }
        Request::BroadcastClientCount {
            uid,
            request_id,
            client_count,
        } => {
            let mut e = Vec::new();
            opt_str(&mut e, "uid", uid);
            e.push(kv("type", ty));
            e.push(kv("requestId", Value::from(request_id.as_str())));
            e.push(kv("clientCount", Value::from(*client_count)));
            json(e)
        }
        Request::BroadcastAck {
            uid,
            request_id,
            packet,
        } => {
            let mut e = Vec::new();
            opt_str(&mut e, "uid", uid);
            e.push(kv("type", ty));
            e.push(kv("requestId", Value::from(request_id.as_str())));
            e.push(kv("packet", packet.clone()));
            crate::msgpack::encode(&Value::Map(e))
        }
    }
}

/// JSON when the first byte is `{` (as the adapter checks), msgpack otherwise; must be a map.
fn parse_map(bytes: &[u8]) -> Result<Vec<(Value, Value)>, WireError> {
    let value = match bytes.first() {
        None => return Err(WireError::Empty),
        Some(b'{') => {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| WireError::Json(format!("not UTF-8: {e}")))?;
            json_str_to_msgpack(text)?
        }
        Some(_) => crate::msgpack::decode(bytes)?,
    };
    match value {
        Value::Map(entries) => Ok(entries),
        other => Err(WireError::Shape(format!(
            "requests and responses are maps, got {other}"
        ))),
    }
}

fn opt_string(entries: &[(Value, Value)], key: &str) -> Result<Option<String>, WireError> {
    match get(entries, key) {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => string_lenient(v, key).map(Some),
    }
}

fn req_string(entries: &[(Value, Value)], key: &str) -> Result<String, WireError> {
    opt_string(entries, key)?.ok_or_else(|| WireError::Shape(format!("missing {key}")))
}

fn message_type(entries: &[(Value, Value)]) -> Result<Option<u8>, WireError> {
    match get(entries, "type") {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Integer(i)) => match i.as_u64() {
            Some(n) if n <= 9 || n == RequestType::ServerStatus as u64 => Ok(Some(n as u8)),
            _ => Err(WireError::UnknownType(i.as_i64().unwrap_or(i64::MAX))),
        },
        Some(other) => Err(WireError::Shape(format!(
            "type must be an integer, got {other}"
        ))),
    }
}

fn opts_field(entries: &[(Value, Value)]) -> Result<Option<RequestOpts>, WireError> {
    match get(entries, "opts") {
        None | Some(Value::Nil) => Ok(None),
        // Node checks `if (request.opts)`: false/0/"" mean legacy form too.
        Some(v) if !truthy(v) => Ok(None),
        Some(v) => RequestOpts::from_value(v).map(Some),
    }
}

fn rooms_request_from(entries: &[(Value, Value)]) -> Result<RoomsRequest, WireError> {
    Ok(RoomsRequest {
        uid: opt_string(entries, "uid")?,
        request_id: opt_string(entries, "requestId")?,
        opts: opts_field(entries)?,
        rooms: room_list(get(entries, "rooms"), "rooms")?,
        sid: opt_string(entries, "sid")?,
        room: match get(entries, "room") {
            None | Some(Value::Nil) => None,
            Some(v) => Some(crate::message::room_name(v)?),
        },
    })
}

/// Decodes a request-channel message (JSON, or msgpack as for BROADCAST), whatever its key
/// order. Unknown types are [`WireError::UnknownType`].
pub fn decode_request(bytes: &[u8]) -> Result<Request, WireError> {
    let e = parse_map(bytes)?;
    let ty = message_type(&e)?.ok_or_else(|| WireError::Shape("request has no type".into()))?;
    let uid = opt_string(&e, "uid")?;
    let ty = RequestType::from_u8(ty).ok_or(WireError::UnknownType(i64::from(ty)))?;
    Ok(match ty {
        RequestType::Sockets => Request::Sockets {
            uid,
            request_id: req_string(&e, "requestId")?,
            rooms: room_list(get(&e, "rooms"), "rooms")?,
        },
        RequestType::AllRooms => Request::AllRooms {
            uid,
            request_id: req_string(&e, "requestId")?,
        },
        RequestType::ServerStatus => Request::ServerStatus {
            uid,
            request_id: req_string(&e, "requestId")?,
        },
        RequestType::RemoteJoin => Request::RemoteJoin(rooms_request_from(&e)?),
        RequestType::RemoteLeave => Request::RemoteLeave(rooms_request_from(&e)?),
        RequestType::RemoteDisconnect => Request::RemoteDisconnect(DisconnectRequest {
            uid,
            request_id: opt_string(&e, "requestId")?,
            opts: opts_field(&e)?,
            sid: opt_string(&e, "sid")?,
            close: get(&e, "close").is_some_and(truthy),
        }),
        RequestType::RemoteFetch => Request::RemoteFetch {
            uid,
            request_id: req_string(&e, "requestId")?,
            opts: opts_field(&e)?.unwrap_or_default(),
        },
        RequestType::ServerSideEmit => Request::ServerSideEmit {
            uid,
            request_id: opt_string(&e, "requestId")?,
            data: match get(&e, "data") {
                Some(Value::Array(items)) => items.clone(),
                Some(other) => {
                    return Err(WireError::Shape(format!(
                        "serverSideEmit data must be an array, got {other}"
                    )));
                }
                None => return Err(WireError::Shape("serverSideEmit without data".into())),
            },
        },
        RequestType::Broadcast => Request::Broadcast {
            uid,
            request_id: req_string(&e, "requestId")?,
            packet: BusPacket::from_value(
                get(&e, "packet").ok_or_else(|| WireError::Shape("missing packet".into()))?,
            )?,
            opts: BroadcastOptions::from_value(get(&e, "opts"))?,
        },
        RequestType::BroadcastClientCount => Request::BroadcastClientCount {
            uid,
            request_id: req_string(&e, "requestId")?,
            client_count: get(&e, "clientCount").and_then(as_u64_lenient).unwrap_or(0),
        },
        RequestType::BroadcastAck => Request::BroadcastAck {
            uid,
            request_id: req_string(&e, "requestId")?,
            packet: get(&e, "packet").cloned().unwrap_or(Value::Nil),
        },
    })
}

impl FetchedSocket {
    fn to_value(&self) -> Value {
        Value::Map(vec![
            kv("id", Value::from(self.id.as_str())),
            kv("handshake", self.handshake.clone()),
            kv("rooms", strings(&self.rooms)),
            kv("data", self.data.clone()),
        ])
    }

    fn from_value(v: &Value) -> Result<Self, WireError> {
        let Value::Map(e) = v else {
            return Err(WireError::Shape(format!(
                "fetched socket must be a map, got {v}"
            )));
        };
        Ok(FetchedSocket {
            id: req_string(e, "id")?,
            handshake: get(e, "handshake").cloned().unwrap_or(Value::Nil),
            rooms: room_list(get(e, "rooms"), "rooms")?,
            data: get(e, "data").cloned().unwrap_or(Value::Nil),
        })
    }
}

/// Encodes a response as a Node server does: JSON in its key order, msgpack for
/// BROADCAST_ACK.
pub fn encode_response(resp: &Response) -> Vec<u8> {
    match resp {
        Response::Sockets {
            request_id,
            sockets,
        } => json(vec![
            kv("requestId", Value::from(request_id.as_str())),
            kv("sockets", strings(sockets)),
        ]),
        Response::AllRooms { request_id, rooms } => json(vec![
            kv("requestId", Value::from(request_id.as_str())),
            kv("rooms", strings(rooms)),
        ]),
        Response::FetchSockets {
            request_id,
            sockets,
        } => json(vec![
            kv("requestId", Value::from(request_id.as_str())),
            kv(
                "sockets",
                Value::Array(sockets.iter().map(FetchedSocket::to_value).collect()),
            ),
        ]),
        Response::Ack { request_id } => {
            json(vec![kv("requestId", Value::from(request_id.as_str()))])
        }
        Response::ServerSideEmit { request_id, data } => json(vec![
            kv("type", Value::from(RequestType::ServerSideEmit as u8)),
            kv("requestId", Value::from(request_id.as_str())),
            kv("data", data.clone()),
        ]),
        Response::BroadcastClientCount {
            request_id,
            client_count,
        } => json(vec![
            kv("type", Value::from(RequestType::BroadcastClientCount as u8)),
            kv("requestId", Value::from(request_id.as_str())),
            kv("clientCount", Value::from(*client_count)),
        ]),
        Response::ServerStatus { request_id, server } => json(vec![
            kv("type", Value::from(RequestType::ServerStatus as u8)),
            kv("requestId", Value::from(request_id.as_str())),
            kv("server", server.clone()),
        ]),
        Response::BroadcastAck { request_id, packet } => crate::msgpack::encode(&Value::Map(vec![
            kv("type", Value::from(RequestType::BroadcastAck as u8)),
            kv("requestId", Value::from(request_id.as_str())),
            kv("packet", packet.clone()),
        ])),
    }
}

/// Decodes a response-channel message (JSON or msgpack).
///
/// Without a `type`, the shape decides: `rooms` -> AllRooms, `sockets` of strings ->
/// Sockets, other `sockets` (including an empty array) -> FetchSockets, else Ack.
pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    let e = parse_map(bytes)?;
    let request_id = req_string(&e, "requestId")?;
    match message_type(&e)? {
        Some(6) => Ok(Response::ServerSideEmit {
            request_id,
            data: get(&e, "data").cloned().unwrap_or(Value::Nil),
        }),
        Some(8) => Ok(Response::BroadcastClientCount {
            request_id,
            client_count: get(&e, "clientCount").and_then(as_u64_lenient).unwrap_or(0),
        }),
        Some(9) => Ok(Response::BroadcastAck {
            request_id,
            packet: get(&e, "packet").cloned().unwrap_or(Value::Nil),
        }),
        Some(100) => Ok(Response::ServerStatus {
            request_id,
            server: get(&e, "server").cloned().unwrap_or(Value::Nil),
        }),
        Some(other) => Err(WireError::UnknownType(i64::from(other))),
        None => {
            if let Some(rooms) = get(&e, "rooms") {
                return Ok(Response::AllRooms {
                    request_id,
                    rooms: room_list(Some(rooms), "rooms")?,
                });
            }
            match get(&e, "sockets") {
                Some(Value::Array(items))
                    if !items.is_empty() && items.iter().all(|i| i.is_str()) =>
                {
                    Ok(Response::Sockets {
                        request_id,
                        sockets: room_list(Some(&Value::Array(items.clone())), "sockets")?,
                    })
                }
                Some(Value::Array(items)) => Ok(Response::FetchSockets {
                    request_id,
                    sockets: items
                        .iter()
                        .map(FetchedSocket::from_value)
                        .collect::<Result<_, _>>()?,
                }),
                Some(other) => Err(WireError::Shape(format!(
                    "sockets must be an array, got {other}"
                ))),
                None => Ok(Response::Ack { request_id }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[u8]) -> &str {
        std::str::from_utf8(v).unwrap()
    }

    fn opts(rooms: &[&str], except: &[&str]) -> RequestOpts {
        RequestOpts {
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            except: except.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn server_status_round_trips_as_json() {
        let req = Request::ServerStatus {
            uid: Some("cli123".into()),
            request_id: "r1".into(),
        };
        let bytes = encode_request(&req);
        assert_eq!(s(&bytes), r#"{"uid":"cli123","requestId":"r1","type":100}"#);
        assert_eq!(decode_request(&bytes).unwrap(), req);
        let resp = Response::ServerStatus {
            request_id: "r1".into(),
            server: Value::Map(vec![(Value::from("uid"), Value::from("gw1"))]),
        };
        let bytes = encode_response(&resp);
        assert_eq!(
            s(&bytes),
            r#"{"type":100,"requestId":"r1","server":{"uid":"gw1"}}"#
        );
        assert_eq!(decode_response(&bytes).unwrap(), resp);
    }

    #[test]
    fn emitter_requests_byte_identical() {
        // Captured from @socket.io/redis-emitter 5.1.0.
        let join = Request::RemoteJoin(RoomsRequest {
            opts: Some(opts(&["user:42"], &[])),
            rooms: vec!["room:new".into()],
            ..Default::default()
        });
        let bytes = encode_request(&join);
        assert_eq!(
            s(&bytes),
            r#"{"type":2,"opts":{"rooms":["user:42"],"except":[]},"rooms":["room:new"]}"#
        );
        assert_eq!(decode_request(&bytes).unwrap(), join);

        let leave = Request::RemoteLeave(RoomsRequest {
            opts: Some(opts(&["user:42"], &[])),
            rooms: vec!["room:old".into()],
            ..Default::default()
        });
        assert_eq!(
            s(&encode_request(&leave)),
            r#"{"type":3,"opts":{"rooms":["user:42"],"except":[]},"rooms":["room:old"]}"#
        );

        let disc = Request::RemoteDisconnect(DisconnectRequest {
            opts: Some(opts(&["user:42"], &[])),
            close: false,
            ..Default::default()
        });
        let bytes = encode_request(&disc);
        assert_eq!(
            s(&bytes),
            r#"{"type":4,"opts":{"rooms":["user:42"],"except":[]},"close":false}"#
        );
        assert_eq!(decode_request(&bytes).unwrap(), disc);

        let sse = Request::ServerSideEmit {
            uid: Some("emitter".into()),
            request_id: None,
            data: vec![
                Value::from("hello"),
                Value::Map(vec![(Value::from("from"), Value::from("api"))]),
                Value::F64(1.5),
                Value::Array(vec![Value::from(1), Value::from(2)]),
            ],
        };
        let bytes = encode_request(&sse);
        assert_eq!(
            s(&bytes),
            r#"{"uid":"emitter","type":6,"data":["hello",{"from":"api"},1.5,[1,2]]}"#
        );
        assert_eq!(decode_request(&bytes).unwrap(), sse);
    }

    #[test]
    fn adapter_requests() {
        let all = decode_request(br#"{"uid":"abc123","requestId":"r1","type":1}"#).unwrap();
        assert_eq!(
            all,
            Request::AllRooms {
                uid: Some("abc123".into()),
                request_id: "r1".into()
            }
        );
        assert_eq!(
            encode_request(&all),
            br#"{"uid":"abc123","requestId":"r1","type":1}"#
        );
        let fetch = decode_request(
            br#"{"uid":"u","requestId":"r2","type":5,"opts":{"rooms":["a"],"except":["b"]}}"#,
        )
        .unwrap();
        assert_eq!(
            fetch,
            Request::RemoteFetch {
                uid: Some("u".into()),
                request_id: "r2".into(),
                opts: opts(&["a"], &["b"])
            }
        );
        assert_eq!(
            s(&encode_request(&fetch)),
            r#"{"uid":"u","requestId":"r2","type":5,"opts":{"rooms":["a"],"except":["b"]}}"#
        );
        // Legacy single-socket forms.
        let legacy =
            decode_request(br#"{"uid":"u","requestId":"r3","type":2,"sid":"s1","room":"x"}"#)
                .unwrap();
        let Request::RemoteJoin(r) = &legacy else {
            panic!("{legacy:?}")
        };
        assert_eq!(r.opts, None);
        assert_eq!(r.sid.as_deref(), Some("s1"));
        assert_eq!(r.room.as_deref(), Some("x"));
        assert_eq!(
            s(&encode_request(&legacy)),
            r#"{"uid":"u","requestId":"r3","type":2,"sid":"s1","room":"x"}"#
        );
        let sockets = decode_request(br#"{"requestId":"r4","type":0,"rooms":["a",1]}"#).unwrap();
        assert_eq!(
            sockets,
            Request::Sockets {
                uid: None,
                request_id: "r4".into(),
                rooms: vec!["a".into(), "1".into()]
            }
        );
        let sse =
            decode_request(br#"{"uid":"u","requestId":"r5","type":6,"data":["x",{"2":1,"1":2}]}"#)
                .unwrap();
        assert_eq!(sse.request_id(), Some("r5"));
        assert_eq!(sse.uid(), Some("u"));
        // Integer-like keys come first in JSON.stringify, as in Node.
        assert_eq!(
            s(&encode_request(&sse)),
            r#"{"uid":"u","requestId":"r5","type":6,"data":["x",{"1":2,"2":1}]}"#
        );
    }

    #[test]
    fn broadcast_with_ack_is_msgpack() {
        let req = Request::Broadcast {
            uid: Some("abc123".into()),
            request_id: "r6".into(),
            packet: BusPacket::event("/", Value::Array(vec![Value::from("ev")])),
            opts: BroadcastOptions {
                rooms: vec!["r".into()],
                except: vec![],
                flags: crate::BroadcastFlags {
                    timeout: Some(5000),
                    ..Default::default()
                },
            },
        };
        let bytes = encode_request(&req);
        assert_eq!(bytes[0] & 0xf0, 0x80);
        assert_eq!(decode_request(&bytes).unwrap(), req);
        for r in [
            Request::BroadcastClientCount {
                uid: None,
                request_id: "r".into(),
                client_count: 3,
            },
            Request::BroadcastAck {
                uid: None,
                request_id: "r".into(),
                packet: Value::Array(vec![Value::from(1)]),
            },
        ] {
            assert_eq!(decode_request(&encode_request(&r)).unwrap(), r);
        }
    }

    #[test]
    fn responses_roundtrip() {
        let cases = vec![
            Response::Sockets {
                request_id: "a".into(),
                sockets: vec!["s1".into()],
            },
            Response::AllRooms {
                request_id: "a".into(),
                rooms: vec!["r1".into(), "s1".into()],
            },
            Response::FetchSockets {
                request_id: "a".into(),
                sockets: vec![FetchedSocket {
                    id: "s1".into(),
                    handshake: Value::Map(vec![(Value::from("auth"), Value::Map(vec![]))]),
                    rooms: vec!["s1".into()],
                    data: Value::Map(vec![(Value::from("userId"), Value::from(42))]),
                }],
            },
            Response::FetchSockets {
                request_id: "a".into(),
                sockets: vec![],
            },
            Response::Ack {
                request_id: "a".into(),
            },
            Response::ServerSideEmit {
                request_id: "a".into(),
                data: Value::from("pong"),
            },
            Response::BroadcastClientCount {
                request_id: "a".into(),
                client_count: 2,
            },
            Response::BroadcastAck {
                request_id: "a".into(),
                packet: Value::Array(vec![Value::from("ok")]),
            },
        ];
        for c in cases {
            let bytes = encode_response(&c);
            assert_eq!(
                decode_response(&bytes).unwrap(),
                c,
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(c.request_id(), "a");
        }
        assert_eq!(
            s(&encode_response(&Response::AllRooms {
                request_id: "x".into(),
                rooms: vec!["r".into()]
            })),
            r#"{"requestId":"x","rooms":["r"]}"#
        );
        assert_eq!(
            s(&encode_response(&Response::BroadcastClientCount {
                request_id: "x".into(),
                client_count: 1
            })),
            r#"{"type":8,"requestId":"x","clientCount":1}"#
        );
        assert_eq!(
            Response::Sockets {
                request_id: "a".into(),
                sockets: vec!["x".into()]
            }
            .socket_ids(),
            Some(vec!["x".to_string()])
        );
    }

    #[test]
    fn garbage_requests_and_responses() {
        let cases: Vec<&[u8]> = vec![
            b"",
            b"{",
            b"{}",
            b"{\"type\":\"x\"}",
            b"{\"type\":42}",
            b"{\"type\":-1}",
            b"{\"type\":1}",
            b"{\"type\":5}",
            b"{\"type\":6,\"data\":1}",
            b"{\"type\":2,\"opts\":{\"rooms\":1}}",
            b"{\"type\":7,\"requestId\":\"x\"}",
            b"[1,2]",
            b"\xc1",
            b"\x80",
            b"{\xff}",
            b"{\"type\":2,\"opts\":{},\"rooms\":[null]}",
        ];
        for c in cases {
            assert!(decode_request(c).is_err(), "{}", String::from_utf8_lossy(c));
        }
        for c in [
            &b""[..],
            b"{}",
            b"{\"requestId\":1,\"type\":3}",
            b"{\"requestId\":\"a\",\"sockets\":1}",
            b"{\"requestId\":\"a\",\"sockets\":[1]}",
            b"{\"requestId\":\"a\",\"rooms\":{}}",
            b"nope",
        ] {
            assert!(
                decode_response(c).is_err(),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
        // Truncations of a valid msgpack request never panic.
        let full = encode_request(&Request::BroadcastAck {
            uid: None,
            request_id: "r".into(),
            packet: Value::Array(vec![Value::from(1)]),
        });
        for i in 0..full.len() {
            assert!(decode_request(&full[..i]).is_err());
        }
    }
}
