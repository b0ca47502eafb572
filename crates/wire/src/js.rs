//! A model of the JavaScript values notepack.io produces when it decodes MessagePack, and of
//! `JSON.stringify` / `Number.prototype.toString` / `Date.prototype.toJSON` on them.
//!
//! This is what makes [`crate::socketio::encode_event`] produce the same text as a Node
//! socket.io server that received the same bus message.

use rmpv::Value;

/// `hasBinary` (socket.io-parser, and the adapters' copy of it) of the JavaScript value that
/// `v` decodes to, without building that value: a Buffer anywhere in it (an ext value counts
/// when it decodes to one, i.e. every ext but dates and notepack's legacy `undefined`).
pub(crate) fn value_has_binary(v: &Value) -> bool {
    match v {
        Value::Binary(_) => true,
        Value::Ext(ty, data) => Js::from_ext(*ty, data).has_binary(),
        Value::Array(items) => items.iter().any(value_has_binary),
        Value::Map(entries) => entries.iter().any(|(_, v)| value_has_binary(v)),
        _ => false,
    }
}

/// A JavaScript value as notepack.io 3.x decodes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Js {
    Undefined,
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    /// A `Buffer` (msgpack bin) or an `ArrayBuffer` (legacy notepack ext type 0).
    Binary(Vec<u8>),
    /// A `Date`, holding its time value in milliseconds (NaN for an invalid date).
    Date(f64),
    Array(Vec<Js>),
    /// An ordinary object: own enumerable properties in JS property order.
    Object(Vec<(String, Js)>),
}

const MAX_TIME: f64 = 8.64e15;
const TWO_POW_32: f64 = 4_294_967_296.0;

/// ECMAScript TimeClip.
fn time_clip(t: f64) -> f64 {
    if !t.is_finite() || t.abs() > MAX_TIME {
        return f64::NAN;
    }
    t.trunc() + 0.0
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_i32(b: &[u8]) -> i32 {
    be_u32(b) as i32
}

impl Js {
    /// What notepack's decoder returns for `v`.
    ///
    /// rmpv does not keep whether an ext value used a fixext or an ext8/16/32 marker; values of
    /// fixext sizes (1, 2, 4, 8, 16) are read as their fixext form, as notepack would.
    pub(crate) fn from_msgpack(v: &Value) -> Js {
        match v {
            Value::Nil => Js::Null,
            Value::Boolean(b) => Js::Bool(*b),
            Value::Integer(i) => {
                if let Some(u) = i.as_u64() {
                    Js::Number(u as f64)
                } else if let Some(n) = i.as_i64() {
                    Js::Number(n as f64)
                } else {
                    Js::Number(f64::NAN)
                }
            }
            Value::F32(f) => Js::Number(f64::from(*f)),
            Value::F64(f) => Js::Number(*f),
            Value::String(s) => Js::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            Value::Binary(b) => Js::Binary(b.clone()),
            Value::Ext(ty, data) => Js::from_ext(*ty, data),
            Value::Array(items) => Js::Array(items.iter().map(Js::from_msgpack).collect()),
            Value::Map(entries) => {
                let mut obj = ObjectBuilder::default();
                for (k, v) in entries {
                    obj.set(Js::from_msgpack(k).to_property_key(), Js::from_msgpack(v));
                }
                obj.finish()
            }
        }
    }

    pub(crate) fn from_ext(ty: i8, data: &[u8]) -> Js {
        let len = data.len();
        match (ty, len) {
            // fixext 1 type 0: notepack's legacy `undefined`.
            (0, 1) => Js::Undefined,
            // fixext 8 type 0: notepack's legacy Date (milliseconds as int64).
            (0, 8) => Js::Date(time_clip(
                f64::from(be_i32(data)) * TWO_POW_32 + f64::from(be_u32(&data[4..])),
            )),
            (0, 2) | (0, 4) | (0, 16) => {
                Js::Array(vec![Js::Number(f64::from(ty)), Js::Binary(data.to_vec())])
            }
            // ext 8/16/32 type 0: notepack's legacy ArrayBuffer.
            (0, _) => Js::Binary(data.to_vec()),
            (-1, 4) => Js::Date(time_clip(f64::from(be_u32(data)) * 1e3)),
            (-1, 8) => {
                let hi = be_u32(data);
                let lo = be_u32(&data[4..]);
                let s = f64::from(hi & 0x3) * TWO_POW_32 + f64::from(lo);
                Js::Date(time_clip(s * 1e3 + f64::from(hi >> 2) / 1e6))
            }
            (-1, 12) => {
                let ns = be_u32(data);
                let hi = be_i32(&data[4..]);
                let lo = be_u32(&data[8..]);
                Js::Date(time_clip(
                    (f64::from(hi) * TWO_POW_32 + f64::from(lo)) * 1e3 + f64::from(ns) / 1e6,
                ))
            }
            _ => Js::Array(vec![Js::Number(f64::from(ty)), Js::Binary(data.to_vec())]),
        }
    }

    /// ToPropertyKey (ToString) of this value, as used when notepack sets `obj[key] = value`.
    pub(crate) fn to_property_key(&self) -> String {
        match self {
            Js::Undefined => "undefined".into(),
            Js::Null => "null".into(),
            Js::Bool(b) => b.to_string(),
            Js::Number(n) => number_to_string(*n),
            Js::String(s) => s.clone(),
            Js::Binary(b) => String::from_utf8_lossy(b).into_owned(),
            Js::Date(t) => date_to_string(*t),
            Js::Array(items) => items
                .iter()
                .map(|i| match i {
                    Js::Undefined | Js::Null => String::new(),
                    other => other.to_property_key(),
                })
                .collect::<Vec<_>>()
                .join(","),
            Js::Object(_) => "[object Object]".into(),
        }
    }

    /// `hasBinary` of socket.io-parser.
    pub(crate) fn has_binary(&self) -> bool {
        match self {
            Js::Binary(_) => true,
            Js::Array(items) => items.iter().any(Js::has_binary),
            Js::Object(entries) => entries.iter().any(|(_, v)| v.has_binary()),
            _ => false,
        }
    }

    /// `deconstructPacket` of socket.io-parser: replaces every binary value with
    /// `{"_placeholder":true,"num":N}` (depth-first order) and collects the buffers.
    pub(crate) fn deconstruct(self, buffers: &mut Vec<Vec<u8>>) -> Js {
        match self {
            Js::Binary(b) => {
                let num = buffers.len();
                buffers.push(b);
                Js::Object(vec![
                    ("_placeholder".into(), Js::Bool(true)),
                    ("num".into(), Js::Number(num as f64)),
                ])
            }
            Js::Array(items) => {
                Js::Array(items.into_iter().map(|i| i.deconstruct(buffers)).collect())
            }
            Js::Object(entries) => Js::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, v.deconstruct(buffers)))
                    .collect(),
            ),
            other => other,
        }
    }

    /// `JSON.stringify(this)`; `None` when the result is `undefined` (top-level undefined).
    pub(crate) fn stringify(&self) -> Option<String> {
        let mut out = String::new();
        if self.write_json(&mut out) {
            Some(out)
        } else {
            None
        }
    }

    /// Writes the JSON text of this value; returns false (writing nothing) for `undefined`.
    fn write_json(&self, out: &mut String) -> bool {
        match self {
            Js::Undefined => return false,
            Js::Null => out.push_str("null"),
            Js::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Js::Number(n) => {
                if n.is_finite() {
                    out.push_str(&number_to_string(*n));
                } else {
                    out.push_str("null");
                }
            }
            Js::String(s) => quote(out, s),
            Js::Binary(b) => {
                // Buffer.prototype.toJSON
                out.push_str("{\"type\":\"Buffer\",\"data\":[");
                for (i, byte) in b.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&byte.to_string());
                }
                out.push_str("]}");
            }
            Js::Date(t) => match date_to_iso(*t) {
                Some(s) => quote(out, &s),
                None => out.push_str("null"),
            },
            Js::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if !item.write_json(out) {
                        out.push_str("null");
                    }
                }
                out.push(']');
            }
            Js::Object(entries) => {
                out.push('{');
                let mut first = true;
                for (k, v) in entries {
                    if matches!(v, Js::Undefined) {
                        continue;
                    }
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    quote(out, k);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
        true
    }
}

/// Builds an ordinary object like repeated `obj[key] = value` assignments do.
#[derive(Default)]
pub(crate) struct ObjectBuilder {
    entries: Vec<(String, Js)>,
    index: std::collections::HashMap<String, usize>,
}

impl ObjectBuilder {
    pub(crate) fn set(&mut self, key: String, value: Js) {
        if key == "__proto__" {
            // `obj.__proto__ = v` sets the prototype (or does nothing): never an own property.
            return;
        }
        if let Some(&i) = self.index.get(&key) {
            self.entries[i].1 = value;
        } else {
            self.index.insert(key.clone(), self.entries.len());
            self.entries.push((key, value));
        }
    }

    /// Own property order: array indices ascending, then the other keys in insertion order.
    pub(crate) fn finish(self) -> Js {
        let mut entries = self.entries;
        if entries.iter().any(|(k, _)| array_index(k).is_some()) {
            let (mut indices, others): (Vec<_>, Vec<_>) = entries
                .into_iter()
                .partition(|(k, _)| array_index(k).is_some());
            indices.sort_by_key(|(k, _)| array_index(k).unwrap_or(u32::MAX));
            indices.extend(others);
            entries = indices;
        }
        Js::Object(entries)
    }
}

/// `Some(n)` if `key` is a canonical array index ("0".."4294967294").
fn array_index(key: &str) -> Option<u32> {
    if key.is_empty() || key.len() > 10 || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    if !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = key.parse().ok()?;
    if n < u64::from(u32::MAX) {
        Some(n as u32)
    } else {
        None
    }
}

/// `JSON.stringify` string quoting.
pub(crate) fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `Number.prototype.toString()` (radix 10), per ECMAScript Number::toString.
pub(crate) fn number_to_string(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if v < 0.0 {
        return format!("-{}", number_to_string(-v));
    }
    // Shortest round-trip digits, e.g. "1.2345e3".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exp + 1;
    if k <= n && n <= 21 {
        let mut s = digits;
        s.extend(std::iter::repeat_n('0', (n - k) as usize));
        s
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{}", "0".repeat((-n) as usize), digits)
    } else {
        let e = n - 1;
        let sign = if e < 0 { '-' } else { '+' };
        if k == 1 {
            format!("{digits}e{sign}{}", e.abs())
        } else {
            format!("{}.{}e{sign}{}", &digits[..1], &digits[1..], e.abs())
        }
    }
}

/// Days since 1970-01-01 -> (year, month 1..=12, day 1..=31) (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: i64,
    minute: i64,
    second: i64,
    ms: i64,
    weekday: usize,
}

fn parts(t: f64) -> Option<Parts> {
    if !t.is_finite() {
        return None;
    }
    let t = t as i64;
    let days = t.div_euclid(86_400_000);
    let in_day = t.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    Some(Parts {
        year,
        month,
        day,
        hour: in_day / 3_600_000,
        minute: in_day / 60_000 % 60,
        second: in_day / 1000 % 60,
        ms: in_day % 1000,
        // 1970-01-01 was a Thursday (index 4 with Sunday = 0).
        weekday: (days + 4).rem_euclid(7) as usize,
    })
}

/// `Date.prototype.toJSON()`: the ISO string, or `None` (JSON `null`) for an invalid date.
pub(crate) fn date_to_iso(t: f64) -> Option<String> {
    let p = parts(t)?;
    let year = if (0..=9999).contains(&p.year) {
        format!("{:04}", p.year)
    } else if p.year < 0 {
        format!("-{:06}", -p.year)
    } else {
        format!("+{:06}", p.year)
    };
    Some(format!(
        "{year}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        p.month, p.day, p.hour, p.minute, p.second, p.ms
    ))
}

/// `Date.prototype.toString()` in a UTC process (only used for dates as map keys).
fn date_to_string(t: f64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let Some(p) = parts(t) else {
        return "Invalid Date".into();
    };
    let year = if p.year < 0 {
        format!("-{:06}", -p.year)
    } else {
        format!("{:04}", p.year)
    };
    format!(
        "{} {} {:02} {year} {:02}:{:02}:{:02} GMT+0000 (Coordinated Universal Time)",
        DAYS[p.weekday],
        MONTHS[(p.month as usize).saturating_sub(1) % 12],
        p.day,
        p.hour,
        p.minute,
        p.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_like_js() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (1.5, "1.5"),
            (-0.25, "-0.25"),
            (0.1, "0.1"),
            (123456789.0, "123456789"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123e18, "123000000000000000000"),
            (1.5e21, "1.5e+21"),
            (1e300, "1e+300"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.25e-7, "1.25e-7"),
            (0.000123, "0.000123"),
            (9007199254740993.0, "9007199254740992"),
            (18446744073709551615.0, "18446744073709552000"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (f64::from(0.1f32), "0.10000000149011612"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (v, s) in cases {
            assert_eq!(number_to_string(*v), *s, "{v:e}");
        }
    }

    #[test]
    fn dates_like_js() {
        assert_eq!(date_to_iso(0.0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            date_to_iso(1_700_000_000_123.0).unwrap(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(date_to_iso(-1.0).unwrap(), "1969-12-31T23:59:59.999Z");
        assert_eq!(date_to_iso(8.64e15).unwrap(), "+275760-09-13T00:00:00.000Z");
        assert_eq!(
            date_to_iso(-8.64e15).unwrap(),
            "-271821-04-20T00:00:00.000Z"
        );
        assert_eq!(
            date_to_iso(-62198755200000.0).unwrap(),
            "-000001-01-01T00:00:00.000Z"
        );
        assert_eq!(
            date_to_iso(253402300800000.0).unwrap(),
            "+010000-01-01T00:00:00.000Z"
        );
        assert_eq!(date_to_iso(f64::NAN), None);
        assert_eq!(
            date_to_string(0.0),
            "Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)"
        );
        assert_eq!(date_to_string(f64::NAN), "Invalid Date");
    }

    #[test]
    fn object_key_order_like_js() {
        let mut b = ObjectBuilder::default();
        b.set("b".into(), Js::Number(1.0));
        b.set("10".into(), Js::Number(2.0));
        b.set("a".into(), Js::Number(3.0));
        b.set("2".into(), Js::Number(4.0));
        b.set("01".into(), Js::Number(5.0));
        b.set("4294967295".into(), Js::Number(6.0));
        b.set("b".into(), Js::Number(7.0));
        b.set("__proto__".into(), Js::Number(8.0));
        let s = b.finish().stringify().unwrap();
        assert_eq!(s, r#"{"2":4,"10":2,"b":7,"a":3,"01":5,"4294967295":6}"#);
    }

    #[test]
    fn strings_escape_like_json_stringify() {
        let mut out = String::new();
        quote(
            &mut out,
            "a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é\u{2028}😀",
        );
        assert_eq!(
            out,
            "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f\u{7f}é\u{2028}😀\""
        );
    }

    #[test]
    fn ext_values_like_notepack() {
        assert_eq!(Js::from_ext(-1, &[0, 0, 0, 1]), Js::Date(1000.0));
        assert_eq!(Js::from_ext(0, &[0]), Js::Undefined);
        assert_eq!(Js::from_ext(0, &[1, 2, 3]), Js::Binary(vec![1, 2, 3]));
        assert_eq!(
            Js::from_ext(5, &[1]),
            Js::Array(vec![Js::Number(5.0), Js::Binary(vec![1])])
        );
        // timestamp 64: 1 s + 500_000_000 ns
        let ns: u64 = 500_000_000;
        let v = (ns << 34) | 1;
        assert_eq!(Js::from_ext(-1, &v.to_be_bytes()), Js::Date(1500.0));
        // timestamp 96: -1 s, 0 ns
        let mut b = vec![0, 0, 0, 0];
        b.extend_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(Js::from_ext(-1, &b), Js::Date(-1000.0));
        // legacy date
        assert_eq!(Js::from_ext(0, &1234i64.to_be_bytes()), Js::Date(1234.0));
        // ns = 2^32-1 is out of spec but notepack just adds it: -1000 + 4294.967295 ms -> 3294
        assert_eq!(Js::from_ext(-1, &[0xff; 12]), Js::Date(3294.0));
    }

    #[test]
    fn property_keys() {
        assert_eq!(Js::Number(1.0).to_property_key(), "1");
        assert_eq!(Js::Null.to_property_key(), "null");
        assert_eq!(
            Js::Array(vec![Js::Number(1.0), Js::Null, Js::String("a".into())]).to_property_key(),
            "1,,a"
        );
        assert_eq!(Js::Object(vec![]).to_property_key(), "[object Object]");
        assert_eq!(Js::Bool(true).to_property_key(), "true");
    }
}
