//! Engine.IO v4 / Socket.IO v5 text frames, as far as the load generator needs
//! them: the open packet, ping/pong, the CONNECT exchange and EVENT packets.
//!
//! Parsing borrows from the frame; nothing here allocates except the JSON
//! helpers.

use std::fmt;

/// An Engine.IO v4 text packet (the type digit, then the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EioPacket<'a> {
    /// `0{...}`: the handshake (sid, pingInterval, pingTimeout, maxPayload).
    Open(&'a str),
    /// `1`
    Close,
    /// `2` (or `2probe`)
    Ping(&'a str),
    /// `3` (or `3probe`)
    Pong(&'a str),
    /// `4...`: a Socket.IO packet.
    Message(&'a str),
    /// `5`
    Upgrade,
    /// `6`
    Noop,
}

/// What was wrong with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub String);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtoError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ProtoError> {
    Err(ProtoError(msg.into()))
}

/// Parses one Engine.IO v4 text frame (websocket transport: one packet per frame).
pub fn parse_eio(frame: &str) -> Result<EioPacket<'_>, ProtoError> {
    let mut chars = frame.chars();
    let Some(kind) = chars.next() else {
        return err("empty engine.io frame");
    };
    let rest = chars.as_str();
    Ok(match kind {
        '0' => EioPacket::Open(rest),
        '1' => EioPacket::Close,
        '2' => EioPacket::Ping(rest),
        '3' => EioPacket::Pong(rest),
        '4' => EioPacket::Message(rest),
        '5' => EioPacket::Upgrade,
        '6' => EioPacket::Noop,
        other => return err(format!("unknown engine.io packet type {other:?}")),
    })
}

/// Socket.IO v5 packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SioKind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

/// A Socket.IO v5 packet, borrowed from the Engine.IO message payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SioPacket<'a> {
    pub kind: SioKind,
    /// `/` unless the packet names another namespace.
    pub nsp: &'a str,
    /// Announced binary attachments (binary packets only).
    pub attachments: u32,
    /// Ack id.
    pub id: Option<u64>,
    /// The JSON payload, empty when absent.
    pub data: &'a str,
}

/// Parses a Socket.IO v5 packet: `<type>[<attachments>-][<nsp>,][<id>][<json>]`.
pub fn parse_sio(payload: &str) -> Result<SioPacket<'_>, ProtoError> {
    let bytes = payload.as_bytes();
    let Some(&first) = bytes.first() else {
        return err("empty socket.io packet");
    };
    let kind = match first {
        b'0' => SioKind::Connect,
        b'1' => SioKind::Disconnect,
        b'2' => SioKind::Event,
        b'3' => SioKind::Ack,
        b'4' => SioKind::ConnectError,
        b'5' => SioKind::BinaryEvent,
        b'6' => SioKind::BinaryAck,
        other => return err(format!("unknown socket.io packet type {:?}", other as char)),
    };
    let mut pos = 1;
    let mut attachments = 0;
    if matches!(kind, SioKind::BinaryEvent | SioKind::BinaryAck) {
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == start || bytes.get(pos) != Some(&b'-') {
            return err("binary packet without `<n>-` attachment count");
        }
        attachments = payload[start..pos]
            .parse()
            .map_err(|_| ProtoError("attachment count out of range".into()))?;
        pos += 1;
    }
    let mut nsp = "/";
    if bytes.get(pos) == Some(&b'/') {
        let end = payload[pos..]
            .find(',')
            .map(|i| pos + i)
            .unwrap_or(bytes.len());
        nsp = &payload[pos..end];
        pos = (end + 1).min(bytes.len());
    }
    let start = pos;
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let id = if pos > start {
        Some(
            payload[start..pos]
                .parse()
                .map_err(|_| ProtoError("ack id out of range".into()))?,
        )
    } else {
        None
    };
    let data = &payload[pos..];
    if let Some(&c) = data.as_bytes().first()
        && c != b'{'
        && c != b'['
    {
        return err(format!("unexpected {:?} where JSON data starts", c as char));
    }
    Ok(SioPacket {
        kind,
        nsp,
        attachments,
        id,
        data,
    })
}

/// The Engine.IO frame that connects to the main namespace with a token:
/// `40{"token":"..."}`.
pub fn connect_frame(token: &str) -> String {
    let auth = serde_json::json!({ "token": token });
    format!("40{auth}")
}

/// What the open packet tells the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInfo {
    pub sid: String,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
}

/// Reads the JSON of an open packet (`0{...}` without the `0`).
pub fn parse_open(json: &str) -> Result<OpenInfo, ProtoError> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| ProtoError(format!("open packet: {e}")))?;
    let sid = v
        .get("sid")
        .and_then(|s| s.as_str())
        .ok_or_else(|| ProtoError("open packet without sid".into()))?;
    let num = |k: &str| v.get(k).and_then(|n| n.as_u64()).unwrap_or(0);
    Ok(OpenInfo {
        sid: sid.to_string(),
        ping_interval_ms: num("pingInterval"),
        ping_timeout_ms: num("pingTimeout"),
    })
}

/// The answer to our CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectAnswer {
    /// `40{"sid":"..."}`
    Accepted { sid: String },
    /// `44{"message":"..."}`
    Refused { message: String },
}

/// Interprets the Engine.IO frame that answers the CONNECT; `None` when the
/// frame is something else (e.g. a ping arriving first).
pub fn parse_connect_answer(frame: &str) -> Result<Option<ConnectAnswer>, ProtoError> {
    let EioPacket::Message(payload) = parse_eio(frame)? else {
        return Ok(None);
    };
    let packet = parse_sio(payload)?;
    if packet.nsp != "/" {
        return Ok(None);
    }
    let field = |name: &str| -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(packet.data).ok()?;
        v.get(name)?.as_str().map(str::to_string)
    };
    match packet.kind {
        SioKind::Connect => Ok(Some(ConnectAnswer::Accepted {
            sid: field("sid").ok_or_else(|| ProtoError("CONNECT answer without sid".into()))?,
        })),
        SioKind::ConnectError => Ok(Some(ConnectAnswer::Refused {
            message: field("message").unwrap_or_default(),
        })),
        _ => Ok(None),
    }
}

/// The name of an EVENT packet's event (`["name", ...args]`), without
/// parsing the arguments.
pub fn event_name(data: &str) -> Option<&str> {
    let rest = data.strip_prefix("[\"")?;
    let end = rest.find('"')?;
    let name = &rest[..end];
    // Escapes would need a JSON parser; bench events never have them.
    (!name.contains('\\')).then_some(name)
}

/// The stamp the benchmark embeds in every event it publishes:
/// `["bench",{"t":<unix µs at publish>,"s":<sequence in its room>,"r":<room>,...}]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub t_us: u64,
    pub seq: u64,
    pub room: u32,
}

/// The benchmark event's payload text for `stamp` (arguments only, padded
/// with `pad` bytes of filler so message sizes can be chosen).
pub fn stamp_json(stamp: Stamp, pad: usize) -> String {
    format!(
        "{{\"t\":{},\"s\":{},\"r\":{},\"p\":\"{}\"}}",
        stamp.t_us,
        stamp.seq,
        stamp.room,
        "x".repeat(pad)
    )
}

/// The Socket.IO EVENT text a server sends for a benchmark event:
/// `2["bench",{...}]` (without the Engine.IO `4`).
pub fn bench_event_packet(stamp: Stamp, pad: usize) -> String {
    format!("2[\"bench\",{}]", stamp_json(stamp, pad))
}

fn number_after(data: &str, key: &str) -> Option<u64> {
    let at = data.find(key)? + key.len();
    let digits = &data[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Extracts the [`Stamp`] from a `bench` EVENT's JSON data without a full
/// JSON parse (the load generator reads hundreds of thousands per second).
pub fn parse_stamp(data: &str) -> Option<Stamp> {
    if event_name(data)? != "bench" {
        return None;
    }
    let args = &data[8..];
    Some(Stamp {
        t_us: number_after(args, "\"t\":")?,
        seq: number_after(args, "\"s\":")?,
        room: u32::try_from(number_after(args, "\"r\":")?).ok()?,
    })
}

/// Encodes a server-to-client (unmasked) websocket text frame, as the floor
/// server writes it once and copies to every socket.
pub fn ws_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_io_packets() {
        assert_eq!(
            parse_eio(r#"0{"sid":"a"}"#).unwrap(),
            EioPacket::Open(r#"{"sid":"a"}"#)
        );
        assert_eq!(parse_eio("1").unwrap(), EioPacket::Close);
        assert_eq!(parse_eio("2").unwrap(), EioPacket::Ping(""));
        assert_eq!(parse_eio("2probe").unwrap(), EioPacket::Ping("probe"));
        assert_eq!(parse_eio("3").unwrap(), EioPacket::Pong(""));
        assert_eq!(parse_eio("40").unwrap(), EioPacket::Message("0"));
        assert_eq!(parse_eio("5").unwrap(), EioPacket::Upgrade);
        assert_eq!(parse_eio("6").unwrap(), EioPacket::Noop);
        assert!(parse_eio("").is_err());
        assert!(parse_eio("9").is_err());
    }

    #[test]
    fn open_packet() {
        let frame = r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        let EioPacket::Open(json) = parse_eio(frame).unwrap() else {
            panic!("not an open packet");
        };
        let open = parse_open(json).unwrap();
        assert_eq!(open.sid, "lv_VI97HAXpY6yYWAAAC");
        assert_eq!(open.ping_interval_ms, 25000);
        assert_eq!(open.ping_timeout_ms, 20000);
        assert!(parse_open("{}").is_err());
        assert!(parse_open("not json").is_err());
    }

    #[test]
    fn socket_io_packets() {
        let p = parse_sio(r#"0{"sid":"x"}"#).unwrap();
        assert_eq!(p.kind, SioKind::Connect);
        assert_eq!(p.nsp, "/");
        assert_eq!(p.id, None);
        assert_eq!(p.data, r#"{"sid":"x"}"#);

        let p = parse_sio(r#"2["hello",1]"#).unwrap();
        assert_eq!(p.kind, SioKind::Event);
        assert_eq!(p.data, r#"["hello",1]"#);

        let p = parse_sio(r#"2/admin,12["hello"]"#).unwrap();
        assert_eq!(p.nsp, "/admin");
        assert_eq!(p.id, Some(12));
        assert_eq!(p.data, r#"["hello"]"#);

        let p = parse_sio(r#"51-/admin,["file",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!(p.kind, SioKind::BinaryEvent);
        assert_eq!(p.attachments, 1);
        assert_eq!(p.nsp, "/admin");

        let p = parse_sio("1/admin,").unwrap();
        assert_eq!(p.kind, SioKind::Disconnect);
        assert_eq!(p.nsp, "/admin");
        assert_eq!(p.data, "");

        let p = parse_sio("0").unwrap();
        assert_eq!((p.kind, p.data), (SioKind::Connect, ""));

        assert!(parse_sio("").is_err());
        assert!(parse_sio("7").is_err());
        assert!(parse_sio("5[\"x\"]").is_err());
        assert!(parse_sio("2x").is_err());
    }

    #[test]
    fn connect_exchange() {
        assert_eq!(connect_frame("a.b.c"), r#"40{"token":"a.b.c"}"#);
        assert_eq!(connect_frame("q\""), r#"40{"token":"q\""}"#);
        assert_eq!(
            parse_connect_answer(r#"40{"sid":"abc"}"#).unwrap(),
            Some(ConnectAnswer::Accepted { sid: "abc".into() })
        );
        assert_eq!(
            parse_connect_answer(r#"44{"message":"unauthorized"}"#).unwrap(),
            Some(ConnectAnswer::Refused {
                message: "unauthorized".into()
            })
        );
        assert_eq!(parse_connect_answer("2").unwrap(), None);
        assert_eq!(
            parse_connect_answer(r#"40/admin,{"sid":"x"}"#).unwrap(),
            None
        );
        assert!(parse_connect_answer("40{}").is_err());
    }

    #[test]
    fn bench_events_round_trip() {
        let stamp = Stamp {
            t_us: 1_700_000_000_123_456,
            seq: 42,
            room: 7,
        };
        let packet = bench_event_packet(stamp, 3);
        assert_eq!(
            packet,
            r#"2["bench",{"t":1700000000123456,"s":42,"r":7,"p":"xxx"}]"#
        );
        let frame = format!("4{packet}");
        let EioPacket::Message(payload) = parse_eio(&frame).unwrap() else {
            panic!("not a message");
        };
        let sio = parse_sio(payload).unwrap();
        assert_eq!(sio.kind, SioKind::Event);
        assert_eq!(event_name(sio.data), Some("bench"));
        assert_eq!(parse_stamp(sio.data), Some(stamp));
        // Key order does not matter (Node re-serialises objects in insertion order).
        assert_eq!(
            parse_stamp(r#"["bench",{"r":7,"s":42,"t":1700000000123456}]"#),
            Some(stamp)
        );
        assert_eq!(parse_stamp(r#"["other",{"t":1,"s":2,"r":3}]"#), None);
        assert_eq!(parse_stamp(r#"["bench",{"t":1}]"#), None);
        assert_eq!(event_name(r#"["a\"b"]"#), None);
    }

    #[test]
    fn websocket_frames() {
        assert_eq!(ws_text_frame(b"42"), vec![0x81, 2, b'4', b'2']);
        let mid = ws_text_frame(&[b'x'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        assert_eq!(mid.len(), 304);
        let big = ws_text_frame(&vec![b'x'; 70_000]);
        assert_eq!(&big[..2], &[0x81, 127]);
        assert_eq!(big.len(), 70_010);
    }
}
