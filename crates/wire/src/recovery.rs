//! Connection state recovery (socket.io >= 4.6) as `@socket.io/redis-streams-adapter` 0.3
//! stores it in Redis, and the offsets socket.io 4.8 puts into events.
//!
//! * Session record: `SET sio:session:<pid> <base64(msgpack({sid, pid, rooms, data}))> PX
//!   <maxDisconnectionDuration>` ([`Session`]), written with `@msgpack/msgpack` when a socket
//!   disconnects for a recoverable reason, read and deleted (`MULTI GET DEL`) on reconnect.
//! * Offset: the stream entry id (`<ms>-<seq>`, [`StreamId`]). It is appended as the LAST
//!   argument of every EVENT without ack id whose `volatile` flag is unset
//!   ([`should_add_offset`], [`append_offset`]); the client remembers the last string argument
//!   of every event and sends it back with its `pid` in the CONNECT auth.
//! * Replay: the entries after the offset whose BROADCAST targets the session
//!   ([`should_include_packet`], [`replayed_event`]), each with its own id appended.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use rmpv::Value;

use crate::WireError;
use crate::cluster::{ClusterBody, ClusterMessage, ClusterPacket};
use crate::message::{BroadcastOptions, get, room_list, string_lenient};
use crate::socketio::{BINARY_EVENT, EVENT, EncodedPacket};
use crate::{js, msgpack};

/// The adapter's default `sessionKeyPrefix`.
pub const DEFAULT_SESSION_KEY_PREFIX: &str = "sio:session:";

/// The session key for `pid` under `prefix`: `sio:session:<pid>` with the default prefix.
pub fn session_key(prefix: &str, pid: &str) -> String {
    format!("{prefix}{pid}")
}

/// A socket's recoverable state, as `socket.io` hands it to `adapter.persistSession` and the
/// streams adapter stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// The socket id the client gets back on recovery.
    pub sid: String,
    /// The private session id (sent to the client in the CONNECT reply as `pid`).
    pub pid: String,
    /// The socket's rooms, its own id included (`[...socket.rooms]`).
    pub rooms: Vec<String>,
    /// `socket.data` (`{}` unless the application set something).
    pub data: Value,
}

impl Session {
    /// The record the adapter stores: standard base64 (with padding) of `@msgpack/msgpack`'s
    /// encoding of `{sid, pid, rooms, data}`.
    pub fn encode(&self) -> String {
        let value = Value::Map(vec![
            (Value::from("sid"), Value::from(self.sid.as_str())),
            (Value::from("pid"), Value::from(self.pid.as_str())),
            (
                Value::from("rooms"),
                Value::Array(self.rooms.iter().map(|r| Value::from(r.as_str())).collect()),
            ),
            (Value::from("data"), self.data.clone()),
        ]);
        base64::engine::general_purpose::STANDARD.encode(msgpack::encode_msgpack_js(&value))
    }

    /// Reads a stored record (the value of `GET sio:session:<pid>`). Key order does not
    /// matter; `sid`, `pid` and `rooms` are required, a missing `data` is nil.
    pub fn decode(record: &[u8]) -> Result<Session, WireError> {
        let bytes = crate::streams::decode_base64(record)?;
        let Value::Map(mut entries) = msgpack::decode(&bytes)? else {
            return Err(WireError::Shape(
                "a session record is a map {sid, pid, rooms, data}".into(),
            ));
        };
        let required = |entries: &[(Value, Value)], key: &str| match get(entries, key) {
            None | Some(Value::Nil) => Err(WireError::Shape(format!("session has no {key}"))),
            Some(v) => string_lenient(v, key),
        };
        let sid = required(&entries, "sid")?;
        let pid = required(&entries, "pid")?;
        let rooms = match get(&entries, "rooms") {
            None | Some(Value::Nil) => {
                return Err(WireError::Shape("session has no rooms".into()));
            }
            v => room_list(v, "session.rooms")?,
        };
        let data = entries
            .iter_mut()
            .rev()
            .find(|(k, _)| k.as_str() == Some("data"))
            .map(|(_, v)| std::mem::replace(v, Value::Nil))
            .unwrap_or(Value::Nil);
        Ok(Session {
            sid,
            pid,
            rooms,
            data,
        })
    }

    /// The adapter's `SET` for this session: `["SET", "<prefix><pid>", record, "PX", ttl_ms]`
    /// (`ttl_ms` is `connectionStateRecovery.maxDisconnectionDuration`).
    pub fn set_command(&self, prefix: &str, ttl_ms: u64) -> Vec<String> {
        vec![
            "SET".into(),
            session_key(prefix, &self.pid),
            self.encode(),
            "PX".into(),
            ttl_ms.to_string(),
        ]
    }
}

/// A stream entry id, which is also a recovery offset: `<milliseconds>-<sequence>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

/// The adapter's offset check, `/^[0-9]+-[0-9]+$/`: ASCII digits, one dash, ASCII digits.
/// Offsets that fail it are rejected before Redis is asked.
pub fn is_valid_offset(offset: &str) -> bool {
    match offset.split_once('-') {
        Some((ms, seq)) => {
            !ms.is_empty()
                && !seq.is_empty()
                && ms.bytes().all(|b| b.is_ascii_digit())
                && seq.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

impl FromStr for StreamId {
    type Err = WireError;

    /// Parses an offset that passes [`is_valid_offset`] and fits Redis' two u64 parts.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            WireError::Shape(format!(
                "invalid offset {s:?}: expected <milliseconds>-<sequence>, e.g. 1700000000000-0"
            ))
        };
        if !is_valid_offset(s) {
            return Err(invalid());
        }
        let (ms, seq) = s.split_once('-').ok_or_else(invalid)?;
        Ok(StreamId {
            ms: ms.parse().map_err(|_| invalid())?,
            seq: seq.parse().map_err(|_| invalid())?,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl StreamId {
    /// The smallest id after this one: where the replay `XRANGE` starts (the adapter's
    /// `nextOffset`, `<ms>-<seq + 1>`; it avoids exclusive ranges for Redis < 6.2).
    /// `None` after the largest possible id.
    ///
    /// Node computes `parseInt(seq) + 1` in floating point, which is wrong for sequences
    /// beyond 2^53 (never seen in practice); this is exact and carries into `ms`.
    pub fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 }),
        }
    }
}

/// Whether a broadcast gets an offset (`ClusterAdapter.addOffsetIfNecessary`, with connection
/// state recovery on): an EVENT packet (type 2), without ack id, whose `volatile` flag is unset.
///
/// Node tests `flags.volatile === undefined`, so even `volatile: false` suppresses the offset;
/// [`crate::BroadcastFlags`] cannot tell `false` from unset and treats it as unset.
pub fn should_add_offset(packet: &ClusterPacket, opts: &BroadcastOptions) -> bool {
    packet.packet_type == EVENT && packet.id.is_none() && !opts.flags.volatile
}

/// Appends `offset` as the last argument of an already encoded EVENT or BINARY_EVENT, exactly
/// as if socket.io had pushed it onto `packet.data` before encoding:
/// `2["ev",1]` -> `2["ev",1,"<offset>"]`, `2/admin,["ev"]` -> `2/admin,["ev","<offset>"]`,
/// `51-["ev",{"_placeholder":true,"num":0}]` -> `51-["ev",{"_placeholder":true,"num":0},"<offset>"]`
/// (attachments unchanged). On the wire the Engine.IO message prefix `4` comes first:
/// `42["ev",1,"<offset>"]`.
///
/// Refuses packets with an ack id (Socket.IO never gives them an offset: the client would
/// read the offset as an ack argument) and anything that is not an event.
pub fn append_offset(packet: &mut EncodedPacket, offset: &str) -> Result<(), WireError> {
    let text = packet.text.as_bytes();
    let fail = |why: &str| {
        Err(WireError::InvalidEvent(format!(
            "cannot append an offset to {:?}: {why}",
            truncate(&packet.text)
        )))
    };
    let mut i = 1;
    match text.first() {
        Some(&t) if t == b'0' + EVENT => {}
        Some(&t) if t == b'0' + BINARY_EVENT => {
            let digits = text[1..].iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 || text.get(1 + digits) != Some(&b'-') {
                return fail("binary event without an attachment count");
            }
            i += digits + 1;
        }
        _ => return fail("not an EVENT or BINARY_EVENT packet"),
    }
    // Namespace, read as socket.io-parser reads it: up to the first comma.
    if text.get(i) == Some(&b'/') {
        match text[i..].iter().position(|&b| b == b',') {
            Some(comma) => i += comma + 1,
            None => return fail("namespace without a comma"),
        }
    }
    if text.get(i).is_some_and(u8::is_ascii_digit) {
        return fail("it has an ack id");
    }
    if text.get(i) != Some(&b'[') || text.last() != Some(&b']') || text.len() < i + 2 {
        return fail("the payload is not a JSON array");
    }
    let empty = text.len() == i + 2;
    let mut suffix = String::with_capacity(offset.len() + 4);
    if !empty {
        suffix.push(',');
    }
    js::quote(&mut suffix, offset);
    suffix.push(']');
    packet.text.pop();
    packet.text.push_str(&suffix);
    Ok(())
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The adapter's `shouldIncludePacket`: a stored broadcast is replayed to a session when it
/// targets the whole namespace or one of the session's rooms, and excludes none of them.
/// `session_rooms` includes the socket's own id, so broadcasts to (or excepting) the socket id
/// count too.
pub fn should_include_packet(session_rooms: &[String], opts: &BroadcastOptions) -> bool {
    let included = opts.rooms.is_empty() || session_rooms.iter().any(|r| opts.rooms.contains(r));
    let not_excluded = session_rooms.iter().all(|r| !opts.except.contains(r));
    included && not_excluded
}

/// What the adapter's `restoreSession` replays for one stream entry: for a BROADCAST of
/// namespace `nsp` that [`should_include_packet`] accepts for `session`, the packet data with
/// the entry id appended (`[event, ...args, "<entry id>"]`); `None` otherwise.
///
/// Like Node, this replays volatile broadcasts too and drops the ack id of a stored
/// `socket.emit(..., ack)`; a gateway may choose to skip those.
pub fn replayed_event(
    msg: &ClusterMessage,
    entry_id: &str,
    nsp: &str,
    session: &Session,
) -> Option<Value> {
    let ClusterBody::Broadcast(b) = &msg.body else {
        return None;
    };
    if msg.nsp != nsp || !should_include_packet(&session.rooms, &b.opts) {
        return None;
    }
    let mut data = b.packet.data.clone();
    match &mut data {
        Value::Array(items) => items.push(Value::from(entry_id)),
        // `packet.data.push` on a non-array throws in Node and fails the whole restore.
        _ => return None,
    }
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_event;

    fn session() -> Session {
        Session {
            sid: "4AZXaaaaaaaaaaaaaaaa".into(),
            pid: "kRLBbbbbbbbbbbbbbbbb".into(),
            rooms: vec!["4AZXaaaaaaaaaaaaaaaa".into(), "room1".into()],
            data: Value::Map(vec![(Value::from("user"), Value::from("alice"))]),
        }
    }

    #[test]
    fn session_record_round_trip() {
        let s = session();
        let record = s.encode();
        assert_eq!(Session::decode(record.as_bytes()).unwrap(), s);
        // Missing padding is accepted like Node's Buffer.from(.., "base64").
        assert_eq!(
            Session::decode(record.trim_end_matches('=').as_bytes()).unwrap(),
            s
        );
        let set = s.set_command(DEFAULT_SESSION_KEY_PREFIX, 120_000);
        assert_eq!(set[1], "sio:session:kRLBbbbbbbbbbbbbbbbb");
        assert_eq!(set[3..], ["PX".to_string(), "120000".to_string()]);
        for bad in ["", "!!", "kA==", "gaNzaWSg"] {
            assert!(Session::decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn offsets() {
        assert!(is_valid_offset("1795784060600-0"));
        assert!(is_valid_offset("0-0"));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1-2-3",
            "a-1",
            "1 -1",
            "１-1",
            "$",
            "1795784060600",
        ] {
            assert!(!is_valid_offset(bad), "{bad}");
            assert!(bad.parse::<StreamId>().is_err());
        }
        let id: StreamId = "1795784060600-7".parse().unwrap();
        assert_eq!(id.to_string(), "1795784060600-7");
        assert_eq!(id.next().unwrap().to_string(), "1795784060600-8");
        let max_seq = StreamId {
            ms: 5,
            seq: u64::MAX,
        };
        assert_eq!(max_seq.next(), Some(StreamId { ms: 6, seq: 0 }));
        assert_eq!(
            StreamId {
                ms: u64::MAX,
                seq: u64::MAX
            }
            .next(),
            None
        );
        // Valid for the regex, too large for Redis.
        assert!(is_valid_offset("99999999999999999999999-0"));
        assert!("99999999999999999999999-0".parse::<StreamId>().is_err());
    }

    #[test]
    fn append_offset_to_encoded_packets() {
        let cases = [
            (r#"2["ev",1]"#, r#"2["ev",1,"1-0"]"#),
            (r#"2/admin,["ev"]"#, r#"2/admin,["ev","1-0"]"#),
            (
                r#"51-["bin",{"_placeholder":true,"num":0}]"#,
                r#"51-["bin",{"_placeholder":true,"num":0},"1-0"]"#,
            ),
            (r#"51-/a,["b"]"#, r#"51-/a,["b","1-0"]"#),
            ("2[]", r#"2["1-0"]"#),
        ];
        for (input, want) in cases {
            let mut p = EncodedPacket {
                text: input.into(),
                attachments: vec![],
            };
            append_offset(&mut p, "1-0").unwrap();
            assert_eq!(p.text, want);
        }
        for bad in [
            r#"2["ev"]x"#,
            "2",
            r#"21["ev"]"#,
            r#"2/a,3["ev"]"#,
            r#"3["ev"]"#,
            r#"5-["x"]"#,
            r#"2/a["x"]"#,
            r#"2{"a":1}"#,
            "",
        ] {
            let mut p = EncodedPacket {
                text: bad.into(),
                attachments: vec![],
            };
            assert!(append_offset(&mut p, "1-0").is_err(), "{bad}");
            assert_eq!(p.text, bad);
        }
        // Same text as encoding the data with the offset pushed (what socket.io does).
        let data = Value::Array(vec!["ev".into(), Value::Binary(vec![1]), "x\"y".into()]);
        let mut with_push = data.clone();
        if let Value::Array(items) = &mut with_push {
            items.push("9-9".into());
        }
        let mut appended = encode_event("/", &data, None).unwrap();
        append_offset(&mut appended, "9-9").unwrap();
        assert_eq!(appended, encode_event("/", &with_push, None).unwrap());
    }

    #[test]
    fn include_rules() {
        let rooms: Vec<String> = vec!["sid1".into(), "room1".into()];
        let opts = |r: &[&str], e: &[&str]| BroadcastOptions {
            rooms: r.iter().map(|s| s.to_string()).collect(),
            except: e.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(should_include_packet(&rooms, &opts(&[], &[])));
        assert!(should_include_packet(&rooms, &opts(&["room1", "x"], &[])));
        assert!(should_include_packet(&rooms, &opts(&["sid1"], &["x"])));
        assert!(!should_include_packet(&rooms, &opts(&["x"], &[])));
        assert!(!should_include_packet(&rooms, &opts(&[], &["sid1"])));
        assert!(!should_include_packet(
            &rooms,
            &opts(&["room1"], &["room1"])
        ));
        let packet = ClusterPacket::event(Value::Array(vec!["ev".into()]));
        let mut o = opts(&[], &[]);
        assert!(should_add_offset(&packet, &o));
        o.flags.volatile = true;
        assert!(!should_add_offset(&packet, &o));
        let with_id = ClusterPacket {
            id: Some(1),
            ..packet
        };
        assert!(!should_add_offset(&with_id, &opts(&[], &[])));
    }
}
