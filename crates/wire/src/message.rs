//! Broadcast messages: what `@socket.io/redis-emitter` and Node servers using
//! `@socket.io/redis-adapter` publish on `socket.io#<nsp>#` and `socket.io#<nsp>#<room>#`.
//!
//! The payload is the notepack encoding of `[uid, packet, opts]`:
//! `packet = {type, data, nsp}` and, from the emitter, `opts = {rooms, flags, except}`
//! (a Node server sends `{rooms, except, flags}`).

use std::borrow::Cow;

use rmpv::Value;

use crate::WireError;
use crate::js::Js;
use crate::msgpack::{self, MAX_DEPTH};

/// The `uid` the Node emitter puts in every message. Servers drop messages carrying their own
/// uid, so an emitter uid is never dropped.
pub const EMITTER_UID: &str = "emitter";

/// One broadcast on the bus: who sent it, what to send, and to whom.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastMessage {
    /// Sender id: `"emitter"` for emitters, a server's 6-character uid for Node servers.
    pub uid: String,
    /// The Socket.IO packet to deliver.
    pub packet: BusPacket,
    /// Rooms, exclusions and flags.
    pub opts: BroadcastOptions,
}

/// The Socket.IO packet inside a bus message (before Socket.IO text encoding).
#[derive(Debug, Clone, PartialEq)]
pub struct BusPacket {
    /// Socket.IO packet type: 2 EVENT (what the emitter and servers send), 5 BINARY_EVENT, ...
    pub packet_type: u8,
    /// `[event, ...args]`.
    pub data: Value,
    /// Namespace, `"/"` by default.
    pub nsp: String,
    /// Ack id, when present (not sent by the emitter nor by Node servers on this channel).
    pub id: Option<u64>,
}

impl BusPacket {
    /// An EVENT packet with `data = [event, ...args]` for namespace `nsp`.
    pub fn event(nsp: impl Into<String>, data: Value) -> Self {
        BusPacket {
            packet_type: crate::socketio::EVENT,
            data,
            nsp: nsp.into(),
            id: None,
        }
    }
}

/// Targeting of a broadcast: to sockets in any of `rooms` (everyone in the namespace when
/// empty), except sockets in any of `except` (rooms or socket ids).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BroadcastOptions {
    /// Target rooms; empty means the whole namespace.
    pub rooms: Vec<String>,
    /// Excluded rooms / socket ids.
    pub except: Vec<String>,
    /// Delivery flags.
    pub flags: BroadcastFlags,
}

/// Broadcast flags as Socket.IO's `BroadcastOperator` sets them.
///
/// Encoded in the order `volatile`, `compress`, `local`, `timeout`, then [`Self::other`]; only
/// set flags are written (the emitter writes `{}` when none is set, and `{volatile: true}` for
/// `.volatile`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BroadcastFlags {
    /// Drop the event for clients that are not ready to receive it right now.
    pub volatile: bool,
    /// Per-message compression (`compress(bool)`); `None` when not set.
    pub compress: Option<bool>,
    /// Only for sockets on the emitting server (never useful on the bus; kept for fidelity).
    pub local: bool,
    /// Ack timeout in milliseconds (`timeout(ms)`), for broadcasts with acknowledgements.
    pub timeout: Option<u64>,
    /// Flags this crate does not interpret, kept in order for re-encoding.
    pub other: Vec<(String, Value)>,
}

impl BroadcastFlags {
    /// The msgpack map of the flags.
    pub fn to_value(&self) -> Value {
        let mut entries = Vec::new();
        if self.volatile {
            entries.push((Value::from("volatile"), Value::Boolean(true)));
        }
        if let Some(c) = self.compress {
            entries.push((Value::from("compress"), Value::Boolean(c)));
        }
        if self.local {
            entries.push((Value::from("local"), Value::Boolean(true)));
        }
        if let Some(t) = self.timeout {
            entries.push((Value::from("timeout"), Value::from(t)));
        }
        for (k, v) in &self.other {
            entries.push((Value::from(k.as_str()), v.clone()));
        }
        Value::Map(entries)
    }

    /// Reads a flags map; anything but a map (or absent) means no flags.
    pub fn from_value(v: &Value) -> Self {
        let mut flags = BroadcastFlags::default();
        let Value::Map(entries) = v else {
            return flags;
        };
        for (k, v) in entries {
            let Some(key) = k.as_str() else { continue };
            match key {
                "volatile" => flags.volatile = truthy(v),
                "local" => flags.local = truthy(v),
                "compress" => {
                    flags.compress = if v.is_nil() { None } else { Some(truthy(v)) };
                }
                "timeout" => flags.timeout = as_u64_lenient(v),
                _ => flags.other.push((key.to_string(), v.clone())),
            }
        }
        flags
    }
}

/// JavaScript truthiness of a decoded value.
pub(crate) fn truthy(v: &Value) -> bool {
    match Js::from_msgpack(v) {
        Js::Undefined | Js::Null => false,
        Js::Bool(b) => b,
        Js::Number(n) => n != 0.0 && !n.is_nan(),
        Js::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// A non-negative integer from an integer or a float (truncated), if it is one.
pub(crate) fn as_u64_lenient(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => i.as_u64(),
        Value::F64(f) if f.is_finite() && *f >= 0.0 && *f < 1.8e19 => Some(f.trunc() as u64),
        Value::F32(f) if f.is_finite() && *f >= 0.0 && *f < 1.8e19 => Some(f.trunc() as u64),
        _ => None,
    }
}

/// A room name from the bus: a string, or a number (socket.io allows numeric rooms), which
/// becomes its JavaScript string form.
pub(crate) fn room_name(v: &Value) -> Result<String, WireError> {
    match v {
        Value::String(s) => Ok(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Integer(_) | Value::F32(_) | Value::F64(_) => {
            Ok(Js::from_msgpack(v).to_property_key())
        }
        other => Err(WireError::Shape(format!(
            "room names must be strings or numbers, got {other}"
        ))),
    }
}

/// [`room_name`] of a value the caller owns: a string is moved, not
/// copied. A broadcast from the redis adapter reaches every gateway, and
/// one naming thousands of rooms (a message to many users' rooms) was
/// decoded into one string per room and copied into another; each
/// gateway paid both allocations for every room, most of them rooms it
/// does not hold (issue #17's restart probes).
fn room_name_owned(v: Value) -> Result<String, WireError> {
    match v {
        // Not UTF-8: replaced characters, as `room_name` does.
        Value::String(s) if s.as_str().is_none() => {
            Ok(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        Value::String(s) => Ok(s.into_str().unwrap_or_default()),
        other => room_name(&other),
    }
}

/// [`room_list`] of a value the caller owns (see [`room_name_owned`]).
fn room_list_owned(v: Option<Value>, what: &str) -> Result<Vec<String>, WireError> {
    match v {
        None | Some(Value::Nil) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.into_iter().map(room_name_owned).collect(),
        Some(other) => Err(WireError::Shape(format!(
            "{what} must be an array, got {other}"
        ))),
    }
}

/// Moves the value of `key` (the last one, like `JSON.parse` and [`get`] keep) out of a
/// map's entries without cloning it, leaving nil in its place.
pub(crate) fn take(entries: &mut [(Value, Value)], key: &str) -> Option<Value> {
    entries
        .iter_mut()
        .rev()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| std::mem::replace(v, Value::Nil))
}

/// A list of rooms; absent / nil means empty.
pub(crate) fn room_list(v: Option<&Value>, what: &str) -> Result<Vec<String>, WireError> {
    match v {
        None | Some(Value::Nil) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(room_name).collect(),
        Some(other) => Err(WireError::Shape(format!(
            "{what} must be an array, got {other}"
        ))),
    }
}

/// Looks up `key` in a msgpack map.
pub(crate) fn get<'a>(entries: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    entries
        .iter()
        .rev()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// A string from the bus (numbers are stringified like JavaScript would).
pub(crate) fn string_lenient(v: &Value, what: &str) -> Result<String, WireError> {
    match v {
        Value::String(s) => Ok(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Integer(_) | Value::F32(_) | Value::F64(_) => {
            Ok(Js::from_msgpack(v).to_property_key())
        }
        other => Err(WireError::Shape(format!(
            "{what} must be a string, got {other}"
        ))),
    }
}

/// A packet's `type`: absent or nil means EVENT, else an integer 0..6.
pub(crate) fn packet_type(v: Option<&Value>) -> Result<u8, WireError> {
    match v {
        None | Some(Value::Nil) => Ok(crate::socketio::EVENT),
        Some(Value::Integer(i)) => i
            .as_u64()
            .filter(|t| *t <= 6)
            .map(|t| t as u8)
            .ok_or_else(|| WireError::Shape(format!("packet.type {i} is not 0..6"))),
        Some(other) => Err(WireError::Shape(format!(
            "packet.type must be an integer, got {other}"
        ))),
    }
}

impl BusPacket {
    /// Reads a packet map `{type, data, nsp, id?}`; a missing `type` means EVENT and a missing
    /// `nsp` means `"/"` (as the Node adapter assumes).
    pub fn from_value(v: &Value) -> Result<Self, WireError> {
        let Value::Map(entries) = v else {
            return Err(WireError::Shape(format!("packet must be a map, got {v}")));
        };
        let packet_type = packet_type(get(entries, "type"))?;
        let data = get(entries, "data").cloned().unwrap_or(Value::Nil);
        let nsp = match get(entries, "nsp") {
            None | Some(Value::Nil) => "/".to_string(),
            Some(v) => string_lenient(v, "packet.nsp")?,
        };
        let id = get(entries, "id").and_then(as_u64_lenient);
        Ok(BusPacket {
            packet_type,
            data,
            nsp,
            id,
        })
    }

    /// The packet map in the emitter's key order: `type`, `data`, `nsp` (then `id` if set).
    pub fn to_value(&self) -> Value {
        let mut entries = vec![
            (Value::from("type"), Value::from(self.packet_type)),
            (Value::from("data"), self.data.clone()),
            (Value::from("nsp"), Value::from(self.nsp.as_str())),
        ];
        if let Some(id) = self.id {
            entries.push((Value::from("id"), Value::from(id)));
        }
        Value::Map(entries)
    }
}

impl BroadcastOptions {
    /// [`BroadcastOptions::from_value`] of an opts map the caller owns: the room names are
    /// moved out of it rather than copied.
    pub fn from_owned(v: Option<Value>) -> Result<Self, WireError> {
        let mut entries = match v {
            None | Some(Value::Nil) => return Ok(BroadcastOptions::default()),
            Some(Value::Map(entries)) => entries,
            Some(other) => {
                return Err(WireError::Shape(format!("opts must be a map, got {other}")));
            }
        };
        Ok(BroadcastOptions {
            rooms: room_list_owned(take(&mut entries, "rooms"), "opts.rooms")?,
            except: room_list_owned(take(&mut entries, "except"), "opts.except")?,
            flags: get(&entries, "flags")
                .map(BroadcastFlags::from_value)
                .unwrap_or_default(),
        })
    }

    /// Reads an opts map; absent keys (or absent opts) mean no rooms, no exclusions, no flags.
    pub fn from_value(v: Option<&Value>) -> Result<Self, WireError> {
        let entries = match v {
            None | Some(Value::Nil) => return Ok(BroadcastOptions::default()),
            Some(Value::Map(entries)) => entries,
            Some(other) => {
                return Err(WireError::Shape(format!("opts must be a map, got {other}")));
            }
        };
        Ok(BroadcastOptions {
            rooms: room_list(get(entries, "rooms"), "opts.rooms")?,
            except: room_list(get(entries, "except"), "opts.except")?,
            flags: get(entries, "flags")
                .map(BroadcastFlags::from_value)
                .unwrap_or_default(),
        })
    }

    fn rooms_value(rooms: &[String]) -> Value {
        Value::Array(rooms.iter().map(|r| Value::from(r.as_str())).collect())
    }

    /// The opts map in the emitter's key order: `rooms`, `flags`, `except`.
    pub fn to_emitter_value(&self) -> Value {
        Value::Map(vec![
            (Value::from("rooms"), Self::rooms_value(&self.rooms)),
            (Value::from("flags"), self.flags.to_value()),
            (Value::from("except"), Self::rooms_value(&self.except)),
        ])
    }

    /// The opts map in a Node server's key order: `rooms`, `except`, `flags`.
    pub fn to_server_value(&self) -> Value {
        Value::Map(vec![
            (Value::from("rooms"), Self::rooms_value(&self.rooms)),
            (Value::from("except"), Self::rooms_value(&self.except)),
            (Value::from("flags"), self.flags.to_value()),
        ])
    }
}

impl BroadcastMessage {
    /// The channel this message goes to: the room channel when exactly one room is targeted,
    /// else the namespace channel (the emitter's and adapter's rule).
    pub fn channel(&self, channels: &crate::Channels) -> String {
        match self.opts.rooms.as_slice() {
            [room] => channels.room(&self.packet.nsp, room),
            _ => channels.broadcast(&self.packet.nsp),
        }
    }
}

/// Decodes a broadcast message published by the Node emitter, a Node server (adapter) or
/// [`encode_broadcast`]. Key order does not matter; `packet.nsp` defaults to `"/"`, missing
/// `opts`/`rooms`/`except`/`flags` mean none; numeric room names are stringified.
pub fn decode_broadcast(bytes: &[u8]) -> Result<BroadcastMessage, WireError> {
    let value = msgpack::decode(bytes)?;
    let Value::Array(items) = value else {
        return Err(WireError::Shape(format!(
            "a broadcast message is an array [uid, packet, opts], got {value}"
        )));
    };
    let mut items = items.into_iter();
    let uid = match items.next() {
        Some(Value::Nil) | None => {
            return Err(WireError::Shape("broadcast message has no uid".into()));
        }
        Some(v) => string_lenient(&v, "uid")?,
    };
    let packet = match items.next() {
        Some(v) => BusPacket::from_value(&v)?,
        None => return Err(WireError::Shape("broadcast message has no packet".into())),
    };
    let opts = BroadcastOptions::from_owned(items.next())?;
    Ok(BroadcastMessage { uid, packet, opts })
}

/// A broadcast message whose room names borrow from the payload it was
/// decoded from ([`decode_broadcast_ref`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastRef<'a> {
    /// Uid of the publishing server.
    pub uid: String,
    /// The Socket.IO packet.
    pub packet: BusPacket,
    /// Target rooms; empty means the whole namespace.
    pub rooms: Vec<Cow<'a, str>>,
    /// Excluded rooms / socket ids.
    pub except: Vec<Cow<'a, str>>,
    /// Delivery flags.
    pub flags: BroadcastFlags,
}

impl From<BroadcastMessage> for BroadcastRef<'_> {
    fn from(msg: BroadcastMessage) -> Self {
        BroadcastRef {
            uid: msg.uid,
            packet: msg.packet,
            rooms: msg.opts.rooms.into_iter().map(Cow::Owned).collect(),
            except: msg.opts.except.into_iter().map(Cow::Owned).collect(),
            flags: msg.opts.flags,
        }
    }
}

/// [`decode_broadcast`] without an allocation per room: each room name
/// that is a UTF-8 string is borrowed from `bytes`. A broadcast from the
/// redis adapter reaches every gateway, and one naming thousands of rooms
/// (a message to many users' rooms; issue #17's restart probes: 10,000
/// rooms on 58 gateways, each holding ~1/58 of them) cost each gateway one
/// allocation and one free per room, for rooms it mostly does not hold.
///
/// Same result as [`decode_broadcast`] for every input it accepts (a
/// message of another shape than `[uid, packet]` or `[uid, packet, opts]`
/// goes through [`decode_broadcast`] itself); a malformed message is an
/// error from both, though not always the same one.
pub fn decode_broadcast_ref(bytes: &[u8]) -> Result<BroadcastRef<'_>, WireError> {
    if bytes.is_empty() {
        return Err(WireError::Empty);
    }
    let mut rd = msgpack::Reader::new(bytes);
    // The depths [`msgpack::decode`] gives each level: the elements of the
    // top array, the entries of the opts map, the names in a room list.
    let (top, opts_depth, name_depth) = (MAX_DEPTH - 1, MAX_DEPTH - 2, MAX_DEPTH - 3);
    let items = match rd.array_header()? {
        Some(n @ 2..=3) => n,
        _ => return decode_broadcast(bytes).map(BroadcastRef::from),
    };
    let uid = match rd.value(top)? {
        Value::Nil => return Err(WireError::Shape("broadcast message has no uid".into())),
        v => string_lenient(&v, "uid")?,
    };
    let packet = BusPacket::from_value(&rd.value(top)?)?;
    let mut msg = BroadcastRef {
        uid,
        packet,
        rooms: Vec::new(),
        except: Vec::new(),
        flags: BroadcastFlags::default(),
    };
    if items == 3 {
        match rd.map_header()? {
            Some(entries) => {
                for _ in 0..entries {
                    // As `take` and `get`: the last of a repeated key counts.
                    match rd.value(opts_depth)?.as_str() {
                        Some("rooms") => {
                            msg.rooms =
                                room_list_ref(&mut rd, opts_depth, name_depth, "opts.rooms")?;
                        }
                        Some("except") => {
                            msg.except =
                                room_list_ref(&mut rd, opts_depth, name_depth, "opts.except")?;
                        }
                        Some("flags") => {
                            msg.flags = BroadcastFlags::from_value(&rd.value(opts_depth)?);
                        }
                        _ => {
                            rd.value(opts_depth)?;
                        }
                    }
                }
            }
            None => match rd.value(top)? {
                Value::Nil => {}
                other => {
                    return Err(WireError::Shape(format!("opts must be a map, got {other}")));
                }
            },
        }
    }
    if rd.remaining() != 0 {
        return Err(WireError::TrailingBytes(rd.remaining()));
    }
    Ok(msg)
}

/// [`room_list`] read from `rd`, each UTF-8 string borrowed.
fn room_list_ref<'a>(
    rd: &mut msgpack::Reader<'a>,
    depth: usize,
    name_depth: usize,
    what: &str,
) -> Result<Vec<Cow<'a, str>>, WireError> {
    let Some(len) = rd.array_header()? else {
        return match rd.value(depth)? {
            Value::Nil => Ok(Vec::new()),
            other => Err(WireError::Shape(format!(
                "{what} must be an array, got {other}"
            ))),
        };
    };
    // Every name takes at least one byte: never preallocate beyond that.
    let mut names = Vec::with_capacity(len.min(rd.remaining()));
    for _ in 0..len {
        match rd.borrowed_str()? {
            Some(name) => names.push(Cow::Borrowed(name)),
            None => names.push(Cow::Owned(room_name(&rd.value(name_depth)?)?)),
        }
    }
    Ok(names)
}

/// Encodes a broadcast message byte for byte as `@socket.io/redis-emitter` 5.x does:
/// `[uid, {type, data, nsp}, {rooms, flags, except}]` with notepack encoding.
pub fn encode_broadcast(msg: &BroadcastMessage) -> Vec<u8> {
    msgpack::encode(&Value::Array(vec![
        Value::from(msg.uid.as_str()),
        msg.packet.to_value(),
        msg.opts.to_emitter_value(),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // `emitter.to("role:admin").emit("ticket_updated", {id: 7})`, captured from the real emitter.
    const ROOM_ONE: &str = "93a7656d697474657283a47479706502a46461746192ae7469636b65745f7570646174656481a2696407a36e7370a12f83a5726f6f6d7391aa726f6c653a61646d696ea5666c61677380a665786365707490";

    #[test]
    fn emitter_roundtrip() {
        let bytes = unhex(ROOM_ONE);
        let msg = decode_broadcast(&bytes).unwrap();
        assert_eq!(msg.uid, "emitter");
        assert_eq!(msg.packet.packet_type, 2);
        assert_eq!(msg.packet.nsp, "/");
        assert_eq!(msg.opts.rooms, vec!["role:admin"]);
        assert!(msg.opts.except.is_empty());
        assert_eq!(msg.opts.flags, BroadcastFlags::default());
        assert_eq!(encode_broadcast(&msg), bytes);
        assert_eq!(
            msg.channel(&crate::Channels::default()),
            "socket.io#/#role:admin#"
        );
    }

    /// The owned decoding of opts (room names moved, not copied) reads
    /// what the borrowed one reads: strings, numbers, a name that is not
    /// UTF-8 (replacement characters), the last of a repeated key, flags.
    #[test]
    fn owned_opts_read_like_borrowed_ones() {
        let opts = Value::Map(vec![
            (Value::from("rooms"), Value::Array(vec![Value::from("old")])),
            (
                Value::from("rooms"),
                Value::Array(vec![
                    Value::from("user:a"),
                    Value::from(42),
                    // "r" and a byte that is not UTF-8.
                    crate::msgpack::decode(&[0xa2, b'r', 0xff]).unwrap(),
                ]),
            ),
            (
                Value::from("except"),
                Value::Array(vec![Value::from("sid1")]),
            ),
            (
                Value::from("flags"),
                Value::Map(vec![(Value::from("volatile"), Value::from(true))]),
            ),
        ]);
        let borrowed = BroadcastOptions::from_value(Some(&opts)).unwrap();
        let owned = BroadcastOptions::from_owned(Some(opts)).unwrap();
        assert_eq!(owned, borrowed);
        assert_eq!(owned.rooms, vec!["user:a", "42", "r\u{fffd}"]);
        assert_eq!(owned.except, vec!["sid1"]);
        assert!(owned.flags.volatile);
        assert_eq!(
            BroadcastOptions::from_owned(None).unwrap(),
            BroadcastOptions::default()
        );
        assert!(BroadcastOptions::from_owned(Some(Value::from(1))).is_err());
    }

    #[test]
    fn server_message_key_order_and_missing_keys() {
        // A Node server: [uid, {type, data, nsp}, {rooms, except, flags}] with numeric room.
        let v = Value::Array(vec![
            Value::from("abc123"),
            Value::Map(vec![
                (Value::from("data"), Value::Array(vec![Value::from("ev")])),
                (Value::from("type"), Value::from(2)),
            ]),
            Value::Map(vec![
                (
                    Value::from("except"),
                    Value::Array(vec![Value::from("sid1")]),
                ),
                (
                    Value::from("rooms"),
                    Value::Array(vec![Value::from(42), Value::F64(1.5)]),
                ),
                (
                    Value::from("flags"),
                    Value::Map(vec![
                        (Value::from("timeout"), Value::from(5000)),
                        (Value::from("volatile"), Value::from(true)),
                        (Value::from("expectSingleResponse"), Value::from(true)),
                        (Value::from("compress"), Value::from(false)),
                        (Value::from("local"), Value::from(1)),
                    ]),
                ),
            ]),
        ]);
        let msg = decode_broadcast(&msgpack::encode(&v)).unwrap();
        assert_eq!(msg.uid, "abc123");
        assert_eq!(msg.packet.nsp, "/");
        assert_eq!(msg.opts.rooms, vec!["42", "1.5"]);
        assert_eq!(msg.opts.except, vec!["sid1"]);
        assert!(msg.opts.flags.volatile);
        assert!(msg.opts.flags.local);
        assert_eq!(msg.opts.flags.compress, Some(false));
        assert_eq!(msg.opts.flags.timeout, Some(5000));
        assert_eq!(
            msg.opts.flags.other,
            vec![("expectSingleResponse".to_string(), Value::from(true))]
        );
        // No opts at all, no rooms key.
        let v = Value::Array(vec![
            Value::from("x"),
            Value::Map(vec![(Value::from("data"), Value::Array(vec![]))]),
        ]);
        let msg = decode_broadcast(&msgpack::encode(&v)).unwrap();
        assert_eq!(msg.opts, BroadcastOptions::default());
        let v = Value::Array(vec![
            Value::from("x"),
            Value::Map(vec![(Value::from("nsp"), Value::from("/a"))]),
            Value::Map(vec![(Value::from("flags"), Value::Nil)]),
        ]);
        let msg = decode_broadcast(&msgpack::encode(&v)).unwrap();
        assert_eq!(msg.packet.nsp, "/a");
        assert_eq!(msg.packet.data, Value::Nil);
    }

    #[test]
    fn garbage_is_an_error() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xc1],
            vec![0x90],
            vec![0x91, 0xa1, b'x'],
            vec![0x92, 0xc0, 0x80],
            vec![0x92, 0xa1, b'x', 0x01],
            vec![0x93, 0xa1, b'x', 0x80, 0x01],
            vec![
                0x93, 0xa1, b'x', 0x81, 0xa4, b't', b'y', b'p', b'e', 0xa1, b'x', 0x80,
            ],
            vec![
                0x93, 0xa1, b'x', 0x81, 0xa4, b't', b'y', b'p', b'e', 0x09, 0x80,
            ],
            vec![
                0x93, 0xa1, b'x', 0x80, 0x81, 0xa5, b'r', b'o', b'o', b'm', b's', 0x01,
            ],
            vec![
                0x93, 0xa1, b'x', 0x80, 0x81, 0xa5, b'r', b'o', b'o', b'm', b's', 0x91, 0xc0,
            ],
            b"{\"json\":1}".to_vec(),
        ];
        for c in cases {
            assert!(decode_broadcast(&c).is_err(), "{c:02x?}");
        }
        let full = unhex(ROOM_ONE);
        for i in 0..full.len() {
            assert!(decode_broadcast(&full[..i]).is_err());
        }
    }

    /// What `decode_broadcast_ref` reads, as `decode_broadcast` reads it.
    fn owned(msg: BroadcastRef<'_>) -> BroadcastMessage {
        BroadcastMessage {
            uid: msg.uid,
            packet: msg.packet,
            opts: BroadcastOptions {
                rooms: msg.rooms.into_iter().map(Cow::into_owned).collect(),
                except: msg.except.into_iter().map(Cow::into_owned).collect(),
                flags: msg.flags,
            },
        }
    }

    /// The decoding that borrows room names reads every message as the
    /// owning one does: the emitter's bytes, a Node server's key order,
    /// numbers and a name that is not UTF-8, the last of a repeated key,
    /// absent or nil opts, a message longer than three items; and the
    /// names that are UTF-8 strings are borrowed, not allocated.
    #[test]
    fn borrowed_rooms_read_like_owned_ones() {
        let packet = Value::Map(vec![
            (Value::from("type"), Value::from(2)),
            (Value::from("data"), Value::Array(vec![Value::from("ev")])),
            (Value::from("nsp"), Value::from("/")),
        ]);
        let not_utf8 = crate::msgpack::decode(&[0xa2, b'r', 0xff]).unwrap();
        let many: Vec<Value> = (0..3000)
            .map(|i| Value::from(format!("user:{i}")))
            .collect();
        let opts = [
            Value::Map(vec![
                (Value::from("rooms"), Value::Array(vec![Value::from("old")])),
                (
                    Value::from("rooms"),
                    Value::Array(vec![Value::from("user:a"), Value::from(42), not_utf8]),
                ),
                (
                    Value::from("flags"),
                    Value::Map(vec![(Value::from("volatile"), Value::from(true))]),
                ),
                (
                    Value::from("except"),
                    Value::Array(vec![Value::from("sid1")]),
                ),
                (Value::from("other"), Value::Array(vec![Value::Nil])),
            ]),
            Value::Map(vec![(Value::from("rooms"), Value::Array(many))]),
            Value::Map(vec![(Value::from("rooms"), Value::Nil)]),
            Value::Map(vec![]),
            Value::Nil,
        ];
        let mut messages: Vec<Vec<u8>> = opts
            .iter()
            .map(|o| {
                msgpack::encode(&Value::Array(vec![
                    Value::from("abc123"),
                    packet.clone(),
                    o.clone(),
                ]))
            })
            .collect();
        messages.push(unhex(ROOM_ONE));
        messages.push(msgpack::encode(&Value::Array(vec![
            Value::from(7),
            packet.clone(),
        ])));
        messages.push(msgpack::encode(&Value::Array(vec![
            Value::from("x"),
            packet.clone(),
            Value::Nil,
            Value::from(1),
        ])));
        for bytes in &messages {
            let want = decode_broadcast(bytes).unwrap();
            let got = decode_broadcast_ref(bytes).unwrap();
            assert_eq!(owned(got), want, "{bytes:02x?}");
        }
        let got = decode_broadcast_ref(&messages[0]).unwrap();
        assert!(matches!(got.rooms[0], Cow::Borrowed("user:a")));
        assert!(matches!(got.rooms[1], Cow::Owned(_)));
        assert_eq!(got.rooms[2], "r\u{fffd}");
        let got = decode_broadcast_ref(&messages[1]).unwrap();
        assert_eq!(got.rooms.len(), 3000);
        assert!(got.rooms.iter().all(|r| matches!(r, Cow::Borrowed(_))));
    }

    /// Whatever `decode_broadcast` refuses, the borrowing decoding refuses
    /// too: garbage, truncations, wrong shapes, trailing bytes.
    #[test]
    fn borrowed_rooms_refuse_what_owned_ones_refuse() {
        let opts = |o: Value| {
            msgpack::encode(&Value::Array(vec![
                Value::from("x"),
                Value::Map(vec![(Value::from("data"), Value::Array(vec![]))]),
                o,
            ]))
        };
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xc1],
            vec![0x90],
            vec![0x91, 0xa1, b'x'],
            vec![0x92, 0xc0, 0x80],
            vec![0x93, 0xa1, b'x', 0x80, 0x01],
            opts(Value::from(1)),
            opts(Value::Map(vec![(Value::from("rooms"), Value::from("r"))])),
            opts(Value::Map(vec![(
                Value::from("except"),
                Value::Array(vec![Value::Nil]),
            )])),
            opts(Value::Map(vec![(
                Value::from("rooms"),
                Value::Array(vec![Value::Map(vec![])]),
            )])),
        ];
        let mut trailing = opts(Value::Nil);
        trailing.push(0x01);
        cases.push(trailing);
        let full = unhex(ROOM_ONE);
        cases.extend((0..full.len()).map(|i| full[..i].to_vec()));
        for c in cases {
            assert!(decode_broadcast(&c).is_err(), "{c:02x?}");
            assert!(decode_broadcast_ref(&c).is_err(), "{c:02x?}");
        }
    }

    #[test]
    fn flags_encoding() {
        let flags = BroadcastFlags {
            volatile: true,
            compress: Some(false),
            local: true,
            timeout: Some(10),
            other: vec![("x".into(), Value::Nil)],
        };
        let v = flags.to_value();
        assert_eq!(BroadcastFlags::from_value(&v), flags);
        assert_eq!(
            msgpack::encode(&BroadcastFlags::default().to_value()),
            vec![0x80]
        );
        assert!(!truthy(&Value::from("")));
        assert!(truthy(&Value::from("a")));
        assert!(!truthy(&Value::from(0)));
        assert!(!truthy(&Value::F64(f64::NAN)));
        assert!(truthy(&Value::Array(vec![])));
    }
}
