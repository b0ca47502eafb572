//! From bus packet data to what a Socket.IO client receives, and JSON <-> msgpack values.

use bytes::Bytes;
use rmpv::Value;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::WireError;
use crate::js::Js;
use crate::msgpack::js_number;

/// Socket.IO packet type EVENT.
pub const EVENT: u8 = 2;
/// Socket.IO packet type BINARY_EVENT.
pub const BINARY_EVENT: u8 = 5;

/// Event names Socket.IO reserves: clients may not emit them and the Node
/// emitter refuses to publish them.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// A Socket.IO v5 packet ready for the Engine.IO layer: the packet text (without the Engine.IO
/// `4` message prefix) and the binary attachments to send after it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPacket {
    /// `2["ev",1]`, `2/admin,["ev"]`, `51-["ev",{"_placeholder":true,"num":0}]`, ...
    pub text: String,
    /// One entry per `{"_placeholder":true,"num":N}`, in `num` order.
    pub attachments: Vec<Bytes>,
}

/// Encodes an EVENT (or BINARY_EVENT when `data` holds msgpack `bin` values) exactly as a Node
/// socket.io 4.x server sends the same bus packet to its clients.
///
/// `data` is the packet data from the bus, `[event, ...args]`; it must be an array whose first
/// element is a string. The conversion follows what Node does with it: notepack decoding
/// (bin -> Buffer, timestamp ext -> Date, ...), then socket.io-parser (`hasBinary`,
/// `deconstructPacket`) and `JSON.stringify` (Dates as ISO strings, NaN/Infinity as `null`,
/// integers beyond 2^53 rounded like JS numbers, map keys stringified, integer-like keys first,
/// duplicate keys last-wins, `__proto__` keys dropped).
pub fn encode_event(
    nsp: &str,
    data: &Value,
    ack_id: Option<u64>,
) -> Result<EncodedPacket, WireError> {
    let Value::Array(items) = data else {
        return Err(WireError::InvalidEvent(
            "event data must be an array [event, ...args]".into(),
        ));
    };
    match items.first() {
        Some(Value::String(s)) if s.as_str().is_some() => {}
        Some(Value::String(_)) => {
            return Err(WireError::InvalidEvent(
                "event name is not valid UTF-8".into(),
            ));
        }
        Some(_) => {
            return Err(WireError::InvalidEvent(
                "the first element of event data must be the event name (a string)".into(),
            ));
        }
        None => {
            return Err(WireError::InvalidEvent(
                "event data is empty: it needs at least an event name".into(),
            ));
        }
    }
    let js = Js::from_msgpack(data);
    let mut text = String::new();
    let mut attachments = Vec::new();
    let js = if js.has_binary() {
        let mut buffers = Vec::new();
        let js = js.deconstruct(&mut buffers);
        text.push_str(&BINARY_EVENT.to_string());
        text.push_str(&buffers.len().to_string());
        text.push('-');
        attachments = buffers.into_iter().map(Bytes::from).collect();
        js
    } else {
        text.push_str(&EVENT.to_string());
        js
    };
    if !nsp.is_empty() && nsp != "/" {
        text.push_str(nsp);
        text.push(',');
    }
    if let Some(id) = ack_id {
        text.push_str(&id.to_string());
    }
    if let Some(json) = js.stringify() {
        text.push_str(&json);
    }
    Ok(EncodedPacket { text, attachments })
}

/// `JSON.stringify` of a msgpack value as a Node server would compute it after notepack
/// decoding (Buffers become `{"type":"Buffer","data":[...]}`, Dates ISO strings).
pub fn js_json_string(v: &Value) -> String {
    Js::from_msgpack(v)
        .stringify()
        .unwrap_or_else(|| "null".into())
}

/// Converts a JSON value into the msgpack value JavaScript would encode for it: integers stay
/// integers, floats with a zero fraction become integers (`2.0` -> `2`, as in JS), other floats
/// stay float64.
///
/// Object entries follow the iteration order of [`serde_json::Map`] (sorted by key unless the
/// `preserve_order` feature of serde_json is enabled in the build); use
/// [`json_str_to_msgpack`] to keep the order of a JSON text.
pub fn json_to_msgpack(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                js_number(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::Array(items.iter().map(json_to_msgpack).collect())
        }
        serde_json::Value::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| (Value::from(k.as_str()), json_to_msgpack(v)))
                .collect(),
        ),
    }
}

/// Parses a JSON text into a msgpack value, keeping object keys in the order of the text
/// (like `JSON.parse` followed by notepack, except that integer-like keys are not reordered and
/// duplicate keys are kept). Numbers are typed as in [`json_to_msgpack`].
pub fn json_str_to_msgpack(text: &str) -> Result<Value, WireError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = JsonSeed
        .deserialize(&mut de)
        .map_err(|e| WireError::Json(e.to_string()))?;
    de.end().map_err(|e| WireError::Json(e.to_string()))?;
    Ok(v)
}

/// A plain, lossless-enough JSON view of a msgpack value (for logs, HTTP APIs, CLIs):
///
/// * integers exactly (even beyond 2^53), floats as numbers, NaN/Infinity as `null`;
/// * strings (invalid UTF-8 replaced by U+FFFD);
/// * `bin` as `{"type":"Buffer","data":[bytes...]}`, i.e. what `JSON.stringify` gives for a
///   Node Buffer;
/// * timestamp ext (-1) as the ISO string `Date.toJSON` gives (`null` if out of range); other
///   ext values as `[type, {"type":"Buffer","data":[...]}]` (notepack's decoding of them);
/// * map keys that are not strings are stringified like JavaScript property keys (`1` -> `"1"`);
///   for duplicate keys the last value wins.
pub fn msgpack_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Nil => serde_json::Value::Null,
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Integer(i) => {
            if let Some(u) = i.as_u64() {
                serde_json::Value::from(u)
            } else if let Some(n) = i.as_i64() {
                serde_json::Value::from(n)
            } else {
                serde_json::Value::Null
            }
        }
        Value::F32(f) => float_json(f64::from(*f)),
        Value::F64(f) => float_json(*f),
        Value::String(s) => {
            serde_json::Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        Value::Binary(b) => buffer_json(b),
        Value::Ext(-1, data) => match Js::from_ext(-1, data) {
            Js::Date(t) => crate::js::date_to_iso(t)
                .map(serde_json::Value::String)
                .unwrap_or(serde_json::Value::Null),
            _ => serde_json::Value::Array(vec![serde_json::Value::from(-1), buffer_json(data)]),
        },
        Value::Ext(ty, data) => {
            serde_json::Value::Array(vec![serde_json::Value::from(*ty), buffer_json(data)])
        }
        Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(msgpack_to_json).collect())
        }
        Value::Map(entries) => {
            let mut map = serde_json::Map::new();
            for (k, v) in entries {
                let key = match k {
                    Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    other => Js::from_msgpack(other).to_property_key(),
                };
                map.insert(key, msgpack_to_json(v));
            }
            serde_json::Value::Object(map)
        }
    }
}

fn float_json(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

fn buffer_json(b: &[u8]) -> serde_json::Value {
    serde_json::json!({ "type": "Buffer", "data": b })
}

/// Deserializes any JSON into a msgpack [`Value`], keeping key order.
struct JsonSeed;

impl<'de> DeserializeSeed<'de> for JsonSeed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Boolean(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(js_number(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(JsonSeed)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(JsonSeed)?;
            entries.push((Value::from(k), v));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    #[test]
    fn plain_events() {
        let data = arr(vec![Value::from("ev"), Value::from(1)]);
        assert_eq!(encode_event("/", &data, None).unwrap().text, r#"2["ev",1]"#);
        assert_eq!(encode_event("", &data, None).unwrap().text, r#"2["ev",1]"#);
        assert_eq!(
            encode_event("/admin", &arr(vec![Value::from("ev")]), None)
                .unwrap()
                .text,
            r#"2/admin,["ev"]"#
        );
        assert_eq!(
            encode_event("/", &data, Some(12)).unwrap().text,
            r#"212["ev",1]"#
        );
        assert_eq!(
            encode_event("/admin", &data, Some(3)).unwrap().text,
            r#"2/admin,3["ev",1]"#
        );
        let p = encode_event("/", &data, None).unwrap();
        assert!(p.attachments.is_empty());
    }

    #[test]
    fn binary_events() {
        let data = arr(vec![
            Value::from("file"),
            Value::Binary(vec![1, 2]),
            map(vec![
                ("nested", Value::Binary(vec![3])),
                ("n", Value::from(1)),
            ]),
        ]);
        let p = encode_event("/", &data, None).unwrap();
        assert_eq!(
            p.text,
            r#"52-["file",{"_placeholder":true,"num":0},{"nested":{"_placeholder":true,"num":1},"n":1}]"#
        );
        assert_eq!(
            p.attachments,
            vec![Bytes::from_static(&[1, 2]), Bytes::from_static(&[3])]
        );
        let p = encode_event("/admin", &data, Some(4)).unwrap();
        assert!(p.text.starts_with("52-/admin,4[\"file\""), "{}", p.text);
    }

    #[test]
    fn json_stringify_rules() {
        let data = arr(vec![
            Value::from("ev"),
            Value::F64(f64::NAN),
            Value::F64(f64::INFINITY),
            Value::F64(1e21),
            Value::F64(-0.0),
            Value::Ext(-1, vec![0, 0, 0, 1]),
            Value::from(u64::MAX),
            Value::Map(vec![
                (Value::from(2), Value::from("two")),
                (Value::from("b"), Value::Nil),
                (Value::from("1"), Value::from("one")),
                (Value::from("b"), Value::from(true)),
                (Value::Nil, Value::Ext(0, vec![0])),
            ]),
            Value::Ext(0, vec![0]),
        ]);
        assert_eq!(
            encode_event("/", &data, None).unwrap().text,
            r#"2["ev",null,null,1e+21,0,"1970-01-01T00:00:01.000Z",18446744073709552000,{"1":"one","2":"two","b":true},null]"#
        );
    }

    #[test]
    fn invalid_events() {
        for bad in [
            Value::Nil,
            Value::from("ev"),
            arr(vec![]),
            arr(vec![Value::from(1)]),
            arr(vec![Value::Nil, Value::from("x")]),
            Value::Map(vec![]),
        ] {
            assert!(
                matches!(
                    encode_event("/", &bad, None),
                    Err(WireError::InvalidEvent(_))
                ),
                "{bad:?}"
            );
        }
        let bytes = [0x91u8, 0xa2, 0xff, 0xfe];
        let v = crate::msgpack::decode(&bytes).unwrap();
        assert!(encode_event("/", &v, None).is_err());
    }

    #[test]
    fn json_conversions() {
        let j: serde_json::Value = serde_json::json!({"a": [1, -2, 2.0, 1.5, null, true, "s"]});
        let m = json_to_msgpack(&j);
        assert_eq!(
            m,
            map(vec![(
                "a",
                arr(vec![
                    Value::from(1),
                    Value::from(-2),
                    Value::from(2),
                    Value::F64(1.5),
                    Value::Nil,
                    Value::from(true),
                    Value::from("s"),
                ])
            )])
        );
        assert_eq!(
            msgpack_to_json(&m),
            serde_json::json!({"a": [1, -2, 2, 1.5, null, true, "s"]})
        );
        let ordered = json_str_to_msgpack(r#"{"z":1,"a":{"y":2.0,"b":1e300}}"#).unwrap();
        assert_eq!(
            ordered,
            map(vec![
                ("z", Value::from(1)),
                (
                    "a",
                    map(vec![("y", Value::from(2)), ("b", Value::F64(1e300))])
                )
            ])
        );
        assert_eq!(
            json_str_to_msgpack("18446744073709551615").unwrap(),
            Value::from(u64::MAX)
        );
        assert!(matches!(json_str_to_msgpack("{"), Err(WireError::Json(_))));
        assert!(matches!(
            json_str_to_msgpack("1 2"),
            Err(WireError::Json(_))
        ));
        assert!(matches!(json_str_to_msgpack(""), Err(WireError::Json(_))));
        let deep = "[".repeat(10_000);
        assert!(json_str_to_msgpack(&deep).is_err());

        let odd = Value::Map(vec![
            (Value::from(1), Value::Binary(vec![1, 2])),
            (Value::from("t"), Value::Ext(-1, vec![0, 0, 0, 1])),
            (Value::from("x"), Value::Ext(7, vec![9])),
            (Value::from("nan"), Value::F64(f64::NAN)),
            (Value::from("big"), Value::from(u64::MAX)),
        ]);
        assert_eq!(
            msgpack_to_json(&odd),
            serde_json::json!({
                "1": {"type": "Buffer", "data": [1, 2]},
                "t": "1970-01-01T00:00:01.000Z",
                "x": [7, {"type": "Buffer", "data": [9]}],
                "nan": null,
                "big": u64::MAX,
            })
        );
        assert_eq!(
            js_json_string(&odd),
            r#"{"1":{"type":"Buffer","data":[1,2]},"t":"1970-01-01T00:00:01.000Z","x":[7,{"type":"Buffer","data":[9]}],"nan":null,"big":18446744073709552000}"#
        );
    }
}
