//! notepack.io 3.x compatible MessagePack.
//!
//! [`encode`] produces the bytes `notepack.io`'s `encode` produces for the same JavaScript
//! value, which is what `@socket.io/redis-emitter` and `@socket.io/redis-adapter` publish:
//!
//! * non-negative integers use the smallest unsigned form (positive fixint, uint8/16/32/64);
//! * negative integers use negative fixint (>= -32), then int8/16/32/64;
//! * every number with a fractional part, and NaN/Infinity, is a float64. JavaScript has only
//!   one number type, so a float with a zero fraction (`2.0`, `-0.0`) IS an integer and is
//!   encoded as one, and `f32` values are widened to float64 like every JS number;
//! * strings fixstr/str8/str16/str32, binary bin8/16/32, arrays fixarray/array16/array32,
//!   maps fixmap/map16/map32, ext as fixext when the length allows it, else ext8/16/32.
//!
//! One deliberate difference: for an integer-valued float at or beyond 2^64 (or below -2^63)
//! notepack wraps the value modulo 2^64 (`1e300` becomes `cf 00 00 00 00 00 00 00 00`, i.e. 0,
//! and `1e21` becomes 3875820019684212736). This encoder keeps such values as float64 so the
//! receiver gets the number that was sent. Integers beyond 2^53 held in [`rmpv::Value::Integer`]
//! are encoded exactly (JavaScript could not represent them in the first place).
//!
//! [`decode`] accepts any valid MessagePack and never panics; [`to_value`] turns any
//! `serde::Serialize` into a [`Value`] with `serde_json`'s data model, except that byte
//! strings (`serde_bytes`, `bytes::Bytes`) become msgpack `bin` (binary attachments on the
//! client side).

use rmpv::{Integer, Value};
use serde::Serialize;
use serde::ser::{self, Impossible};

use crate::WireError;

const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Encodes `value` exactly as notepack.io 3.x encodes the equivalent JavaScript value.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_into(&mut out, value);
    out
}

/// Appends the notepack-compatible encoding of `value` to `out`.
pub fn encode_into(out: &mut Vec<u8>, value: &Value) {
    encode_flavored(out, value, Flavor::Notepack);
}

/// Encodes `value` exactly as `@msgpack/msgpack` 2.x (`encode` with default options) encodes
/// the equivalent JavaScript value: what `@socket.io/redis-streams-adapter` 0.3 writes.
///
/// The one difference from [`encode`] is the integer test for numbers: `@msgpack/msgpack` uses
/// `Number.isSafeInteger`, so an integer-valued float beyond ±(2^53 - 1) stays a float64
/// (notepack writes it as an int64/uint64). Everything else (smallest int forms, str8, bin8,
/// fixext) is the same. JavaScript `undefined` (which `@msgpack/msgpack` writes as nil,
/// notepack drops from maps) has no [`Value`]; callers decide where nil stands for it.
pub fn encode_msgpack_js(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_flavored(&mut out, value, Flavor::MsgpackJs);
    out
}

/// Which JavaScript MessagePack library's output to reproduce.
#[derive(Clone, Copy)]
enum Flavor {
    /// notepack.io 3.x.
    Notepack,
    /// @msgpack/msgpack 2.x.
    MsgpackJs,
}

fn encode_flavored(out: &mut Vec<u8>, value: &Value, flavor: Flavor) {
    match value {
        Value::Nil => out.push(0xc0),
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(i) => encode_integer(out, *i),
        Value::F32(f) => encode_f64(out, f64::from(*f), flavor),
        Value::F64(f) => encode_f64(out, *f, flavor),
        Value::String(s) => {
            let bytes = s.as_bytes();
            let len = bytes.len();
            if len < 0x20 {
                out.push(0xa0 | len as u8);
            } else if len < 0x100 {
                out.extend_from_slice(&[0xd9, len as u8]);
            } else if len < 0x10000 {
                out.push(0xda);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                out.push(0xdb);
                out.extend_from_slice(&(len as u32).to_be_bytes());
            }
            out.extend_from_slice(bytes);
        }
        Value::Binary(b) => {
            let len = b.len();
            if len < 0x100 {
                out.extend_from_slice(&[0xc4, len as u8]);
            } else if len < 0x10000 {
                out.push(0xc5);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                out.push(0xc6);
                out.extend_from_slice(&(len as u32).to_be_bytes());
            }
            out.extend_from_slice(b);
        }
        Value::Array(items) => {
            let len = items.len();
            if len < 0x10 {
                out.push(0x90 | len as u8);
            } else if len < 0x10000 {
                out.push(0xdc);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                out.push(0xdd);
                out.extend_from_slice(&(len as u32).to_be_bytes());
            }
            for item in items {
                encode_flavored(out, item, flavor);
            }
        }
        Value::Map(entries) => {
            let len = entries.len();
            if len < 0x10 {
                out.push(0x80 | len as u8);
            } else if len < 0x10000 {
                out.push(0xde);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                out.push(0xdf);
                out.extend_from_slice(&(len as u32).to_be_bytes());
            }
            for (k, v) in entries {
                encode_flavored(out, k, flavor);
                encode_flavored(out, v, flavor);
            }
        }
        Value::Ext(ty, data) => {
            let len = data.len();
            match len {
                1 => out.push(0xd4),
                2 => out.push(0xd5),
                4 => out.push(0xd6),
                8 => out.push(0xd7),
                16 => out.push(0xd8),
                _ if len < 0x100 => out.extend_from_slice(&[0xc7, len as u8]),
                _ if len < 0x10000 => {
                    out.push(0xc8);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    out.push(0xc9);
                    out.extend_from_slice(&(len as u32).to_be_bytes());
                }
            }
            out.push(*ty as u8);
            out.extend_from_slice(data);
        }
    }
}

fn encode_integer(out: &mut Vec<u8>, i: Integer) {
    if let Some(u) = i.as_u64() {
        encode_unsigned(out, u);
    } else if let Some(n) = i.as_i64() {
        encode_negative(out, n);
    }
}

fn encode_unsigned(out: &mut Vec<u8>, u: u64) {
    if u < 0x80 {
        out.push(u as u8);
    } else if u < 0x100 {
        out.extend_from_slice(&[0xcc, u as u8]);
    } else if u < 0x10000 {
        out.push(0xcd);
        out.extend_from_slice(&(u as u16).to_be_bytes());
    } else if u < 0x1_0000_0000 {
        out.push(0xce);
        out.extend_from_slice(&(u as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

/// `n` must be negative (non-negative values go through [`encode_unsigned`]).
fn encode_negative(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        encode_unsigned(out, n as u64);
    } else if n >= -0x20 {
        out.push(n as u8);
    } else if n >= -0x80 {
        out.extend_from_slice(&[0xd0, n as u8]);
    } else if n >= -0x8000 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -0x8000_0000 {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// 2^53 - 1, `Number.MAX_SAFE_INTEGER`.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

fn encode_f64(out: &mut Vec<u8>, f: f64, flavor: Flavor) {
    let integral = match flavor {
        Flavor::Notepack => integral(f),
        // `Number.isSafeInteger(f)`.
        Flavor::MsgpackJs if f.abs() <= MAX_SAFE_INTEGER => integral(f),
        Flavor::MsgpackJs => None,
    };
    match integral {
        Some(Integral::Unsigned(u)) => encode_unsigned(out, u),
        Some(Integral::Negative(n)) => encode_negative(out, n),
        None => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
    }
}

enum Integral {
    Unsigned(u64),
    Negative(i64),
}

/// notepack's "is this number an integer" test (`Math.floor(v) === v && isFinite(v)`), limited
/// to the range where its integer encoding is exact.
fn integral(f: f64) -> Option<Integral> {
    if !f.is_finite() || f.floor() != f {
        return None;
    }
    if f >= 0.0 {
        // -0.0 >= 0.0 (in JS too): notepack encodes -0 as positive fixint 0.
        if f < TWO_POW_64 {
            return Some(Integral::Unsigned(f as u64));
        }
        return None;
    }
    if f >= -TWO_POW_63 {
        return Some(Integral::Negative(f as i64));
    }
    None
}

/// The [`Value`] a JavaScript number `f` is: an integer when notepack would encode it as one,
/// otherwise a float64.
pub fn js_number(f: f64) -> Value {
    match integral(f) {
        Some(Integral::Unsigned(u)) => Value::from(u),
        Some(Integral::Negative(n)) => Value::from(n),
        None => Value::F64(f),
    }
}

/// Maximum nesting depth accepted by [`decode`] (the same limit `serde_json` applies to JSON).
pub const MAX_DEPTH: usize = 128;

/// Decodes exactly one MessagePack value that must span all of `bytes`.
///
/// Accepts any valid MessagePack (not only what notepack produces). Never panics and never
/// trusts declared lengths for allocation: truncated input, the reserved marker `0xc1` (which
/// notepack also refuses), nesting deeper than [`MAX_DEPTH`] and trailing bytes are errors.
/// Strings that are not valid UTF-8 are kept as raw bytes in the [`Value::String`].
pub fn decode(bytes: &[u8]) -> Result<Value, WireError> {
    if bytes.is_empty() {
        return Err(WireError::Empty);
    }
    let mut rd = Reader::new(bytes);
    let value = rd.value(MAX_DEPTH)?;
    let rest = bytes.len() - rd.pos;
    if rest != 0 {
        return Err(WireError::TrailingBytes(rest));
    }
    Ok(value)
}

/// Reads MessagePack values one at a time from a buffer (see [`decode`]);
/// the crate's own decoders also read headers and borrow strings with it.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Consumes the header of an array and returns its length; `None`, with
    /// nothing consumed, when the next value is not an array.
    pub(crate) fn array_header(&mut self) -> Result<Option<usize>, WireError> {
        self.header(0x90, 0xdc)
    }

    /// [`Reader::array_header`] for a map: its number of entries.
    pub(crate) fn map_header(&mut self) -> Result<Option<usize>, WireError> {
        self.header(0x80, 0xde)
    }

    /// The header of an array or a map: its fix form's marker with a zero
    /// length (`0x90`, `0x80`), and its 16-bit form's (the 32-bit form's is
    /// the next one).
    fn header(&mut self, fix: u8, wide16: u8) -> Result<Option<usize>, WireError> {
        let len = match self.buf.get(self.pos).copied() {
            Some(m) if m & 0xf0 == fix => {
                self.pos += 1;
                usize::from(m & 0x0f)
            }
            Some(m) if m == wide16 || m == wide16 + 1 => {
                self.pos += 1;
                self.len(if m == wide16 { 2 } else { 4 })?
            }
            _ => return Ok(None),
        };
        Ok(Some(len))
    }

    /// The next value when it is a UTF-8 string, borrowed from the buffer
    /// (no allocation); `None`, with nothing consumed, for anything else.
    pub(crate) fn borrowed_str(&mut self) -> Result<Option<&'a str>, WireError> {
        let start = self.pos;
        let len = match self.buf.get(self.pos).copied() {
            Some(m @ 0xa0..=0xbf) => {
                self.pos += 1;
                usize::from(m & 0x1f)
            }
            Some(m @ 0xd9..=0xdb) => {
                self.pos += 1;
                self.len(1 << (m - 0xd9))?
            }
            _ => return Ok(None),
        };
        match std::str::from_utf8(self.take(len)?) {
            Ok(s) => Ok(Some(s)),
            Err(_) => {
                self.pos = start;
                Ok(None)
            }
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| {
                WireError::Msgpack(format!(
                    "truncated: needs {n} more bytes at offset {}, {} left",
                    self.pos,
                    self.buf.len() - self.pos
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn len(&mut self, width: usize) -> Result<usize, WireError> {
        Ok(match width {
            1 => usize::from(self.u8()?),
            2 => usize::from(u16::from_be_bytes(self.be()?)),
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    /// A string of `len` bytes whose marker started at `start`.
    fn str(&mut self, start: usize, len: usize) -> Result<Value, WireError> {
        let b = self.take(len)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(Value::from(s)),
            // rmpv has no public constructor for a non-UTF-8 string: let it read this one.
            Err(_) => rmpv::decode::read_value(&mut &self.buf[start..self.pos])
                .map_err(|e| WireError::Msgpack(e.to_string())),
        }
    }

    fn array(&mut self, len: usize, depth: usize) -> Result<Value, WireError> {
        // Every element takes at least one byte: never preallocate beyond what is left.
        let mut items = Vec::with_capacity(len.min(self.buf.len() - self.pos));
        for _ in 0..len {
            items.push(self.value(depth)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> Result<Value, WireError> {
        let mut entries = Vec::with_capacity(len.min((self.buf.len() - self.pos) / 2));
        for _ in 0..len {
            let k = self.value(depth)?;
            let v = self.value(depth)?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }

    fn ext(&mut self, len: usize) -> Result<Value, WireError> {
        let ty = self.u8()? as i8;
        Ok(Value::Ext(ty, self.take(len)?.to_vec()))
    }

    pub(crate) fn value(&mut self, depth: usize) -> Result<Value, WireError> {
        if depth == 0 {
            return Err(WireError::Msgpack(format!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        let d = depth - 1;
        let start = self.pos;
        let m = self.u8()?;
        Ok(match m {
            0x00..=0x7f => Value::from(m),
            0x80..=0x8f => self.map(usize::from(m & 0x0f), d)?,
            0x90..=0x9f => self.array(usize::from(m & 0x0f), d)?,
            0xa0..=0xbf => self.str(start, usize::from(m & 0x1f))?,
            0xc0 => Value::Nil,
            0xc1 => {
                return Err(WireError::Msgpack(format!(
                    "reserved marker 0xc1 at offset {}",
                    self.pos - 1
                )));
            }
            0xc2 => Value::Boolean(false),
            0xc3 => Value::Boolean(true),
            0xc4..=0xc6 => {
                let len = self.len(1 << (m - 0xc4))?;
                Value::Binary(self.take(len)?.to_vec())
            }
            0xc7..=0xc9 => {
                let len = self.len(1 << (m - 0xc7))?;
                self.ext(len)?
            }
            0xca => Value::F32(f32::from_be_bytes(self.be()?)),
            0xcb => Value::F64(f64::from_be_bytes(self.be()?)),
            0xcc => Value::from(self.u8()?),
            0xcd => Value::from(u16::from_be_bytes(self.be()?)),
            0xce => Value::from(u32::from_be_bytes(self.be()?)),
            0xcf => Value::from(u64::from_be_bytes(self.be()?)),
            0xd0 => Value::from(self.u8()? as i8),
            0xd1 => Value::from(i16::from_be_bytes(self.be()?)),
            0xd2 => Value::from(i32::from_be_bytes(self.be()?)),
            0xd3 => Value::from(i64::from_be_bytes(self.be()?)),
            0xd4..=0xd8 => self.ext(1 << (m - 0xd4))?,
            0xd9..=0xdb => {
                let len = self.len(1 << (m - 0xd9))?;
                self.str(start, len)?
            }
            0xdc | 0xdd => {
                let len = self.len(if m == 0xdc { 2 } else { 4 })?;
                self.array(len, d)?
            }
            0xde | 0xdf => {
                let len = self.len(if m == 0xde { 2 } else { 4 })?;
                self.map(len, d)?
            }
            0xe0..=0xff => Value::from(m as i8),
        })
    }
}

/// Serializes any `serde::Serialize` into a [`Value`], with `serde_json`'s data model:
/// structs and maps become msgpack maps with string keys (in field / iteration order), `None`
/// and `()` become nil, enums are externally tagged, integer-valued floats become integers (like
/// JS numbers), `f32` goes through its shortest decimal form (`0.1f32` is sent as `0.1`), and
/// byte strings (`serde_bytes`, `bytes::Bytes`) become msgpack `bin`.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, WireError> {
    value.serialize(ValueSerializer)
}

/// Serializes event arguments: a top-level tuple spreads into several arguments, `()` means
/// no arguments, anything else is one argument.
///
/// `emit("ev", (1, "a"))` sends `["ev", 1, "a"]`, `emit("ev", vec![1, 2])` sends
/// `["ev", [1, 2]]`, `emit("ev", ())` sends `["ev"]`. Note that serde treats fixed-size arrays
/// (`[T; N]`) as tuples, so they spread too: pass a `Vec` or a slice for one array argument.
pub fn to_args<T: Serialize + ?Sized>(value: &T) -> Result<Vec<Value>, WireError> {
    value.serialize(ArgsSerializer)
}

/// Top-level serializer of [`to_args`].
struct ArgsSerializer;

/// Wraps a value serializer's result as a single argument.
struct Single<S>(S);

macro_rules! single_scalar {
    ($($name:ident($ty:ty)),* $(,)?) => {
        $(fn $name(self, v: $ty) -> Result<Vec<Value>, WireError> {
            Ok(vec![ValueSerializer.$name(v)?])
        })*
    };
}

impl ser::Serializer for ArgsSerializer {
    type Ok = Vec<Value>;
    type Error = WireError;
    type SerializeSeq = Single<SeqSerializer>;
    type SerializeTuple = Spread;
    type SerializeTupleStruct = Single<SeqSerializer>;
    type SerializeTupleVariant = Single<VariantSeqSerializer>;
    type SerializeMap = Single<MapSerializer>;
    type SerializeStruct = Single<MapSerializer>;
    type SerializeStructVariant = Single<VariantMapSerializer>;

    single_scalar!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
    );

    fn serialize_none(self) -> Result<Vec<Value>, WireError> {
        Ok(vec![Value::Nil])
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<Value>, WireError> {
        Ok(vec![value.serialize(ValueSerializer)?])
    }
    fn serialize_unit(self) -> Result<Vec<Value>, WireError> {
        Ok(Vec::new())
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<Vec<Value>, WireError> {
        Ok(vec![ValueSerializer.serialize_unit_struct(name)?])
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<Vec<Value>, WireError> {
        Ok(vec![
            ValueSerializer.serialize_unit_variant(name, index, variant)?,
        ])
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Vec<Value>, WireError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Vec<Value>, WireError> {
        Ok(vec![
            ValueSerializer.serialize_newtype_variant(name, index, variant, value)?,
        ])
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, WireError> {
        Ok(Single(ValueSerializer.serialize_seq(len)?))
    }
    fn serialize_tuple(self, len: usize) -> Result<Spread, WireError> {
        Ok(Spread(Vec::with_capacity(len.min(4096))))
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, WireError> {
        Ok(Single(ValueSerializer.serialize_tuple_struct(name, len)?))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, WireError> {
        Ok(Single(
            ValueSerializer.serialize_tuple_variant(name, index, variant, len)?,
        ))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, WireError> {
        Ok(Single(ValueSerializer.serialize_map(len)?))
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, WireError> {
        Ok(Single(ValueSerializer.serialize_struct(name, len)?))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, WireError> {
        Ok(Single(
            ValueSerializer.serialize_struct_variant(name, index, variant, len)?,
        ))
    }
}

/// A top-level tuple: each element is one argument.
struct Spread(Vec<Value>);

impl ser::SerializeTuple for Spread {
    type Ok = Vec<Value>;
    type Error = WireError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WireError> {
        self.0.push(value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Vec<Value>, WireError> {
        Ok(self.0)
    }
}

impl<S: ser::SerializeSeq<Ok = Value, Error = WireError>> ser::SerializeSeq for Single<S> {
    type Ok = Vec<Value>;
    type Error = WireError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WireError> {
        self.0.serialize_element(value)
    }
    fn end(self) -> Result<Vec<Value>, WireError> {
        Ok(vec![self.0.end()?])
    }
}

impl<S: ser::SerializeTupleStruct<Ok = Value, Error = WireError>> ser::SerializeTupleStruct
    for Single<S>
{
    type Ok = Vec<Value>;
    type Error = WireError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WireError> {
        self.0.serialize_field(value)
    }
    fn end(self) -> Result<Vec<Value>, WireError> {
        Ok(vec![self.0.end()?])
    }
}

impl<S: ser::SerializeTupleVariant<Ok = Value, Error = WireError>> ser::SerializeTupleVariant
    for Single<S>
{
    type Ok = Vec<Value>;
    type Error = WireError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WireError> {
        self.0.serialize_field(value)
    }
    fn end(self) -> Result<Vec<Value>, WireError> {
        Ok(vec![self.0.end()?])
    }
}

impl<S: ser::SerializeMap<Ok = Value, Error = WireError>> ser::SerializeMap for Single<S> {
    type Ok = Vec<Value>;
    type Error = WireError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), WireError> {
        self.0.serialize_key(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WireError> {
        self.0.serialize_value(value)
    }
    fn end(self) -> Result<Vec<Value>, WireError> {
        Ok(vec![self.0.end()?])
    }
}

impl<S: ser::SerializeStruct<Ok = Value, Error = WireError>> ser::SerializeStruct for Single<S> {
    type Ok = Vec<Value>;
    type Error = WireError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), WireError> {
        self.0.serialize_field(key, value)
    }
    fn end(self) -> Result<Vec<Value>, WireError> {
        Ok(vec![self.0.end()?])
    }
}

impl<S: ser::SerializeStructVariant<Ok = Value, Error = WireError>> ser::SerializeStructVariant
    for Single<S>
{
    type Ok = Vec<Value>;
    type Error = WireError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), WireError> {
        self.0.serialize_field(key, value)
    }
    fn end(self) -> Result<Vec<Value>, WireError> {
        Ok(vec![self.0.end()?])
    }
}

/// The serde serializer behind [`to_value`].
struct ValueSerializer;

fn f32_to_value(v: f32) -> Value {
    if v.is_finite() {
        match v.to_string().parse::<f64>() {
            Ok(f) => js_number(f),
            Err(_) => js_number(f64::from(v)),
        }
    } else {
        Value::F64(f64::from(v))
    }
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = WireError;
    type SerializeSeq = SeqSerializer;
    type SerializeTuple = SeqSerializer;
    type SerializeTupleStruct = SeqSerializer;
    type SerializeTupleVariant = VariantSeqSerializer;
    type SerializeMap = MapSerializer;
    type SerializeStruct = MapSerializer;
    type SerializeStructVariant = VariantMapSerializer;

    fn serialize_bool(self, v: bool) -> Result<Value, WireError> {
        Ok(Value::Boolean(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, WireError> {
        Ok(Value::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, WireError> {
        Ok(Value::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, WireError> {
        Ok(Value::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, WireError> {
        Ok(Value::from(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, WireError> {
        if let Ok(u) = u64::try_from(v) {
            Ok(Value::from(u))
        } else if let Ok(i) = i64::try_from(v) {
            Ok(Value::from(i))
        } else {
            Err(WireError::Serialize(format!(
                "integer {v} does not fit in 64 bits"
            )))
        }
    }
    fn serialize_u8(self, v: u8) -> Result<Value, WireError> {
        Ok(Value::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, WireError> {
        Ok(Value::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, WireError> {
        Ok(Value::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, WireError> {
        Ok(Value::from(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, WireError> {
        u64::try_from(v)
            .map(Value::from)
            .map_err(|_| WireError::Serialize(format!("integer {v} does not fit in 64 bits")))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, WireError> {
        Ok(f32_to_value(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, WireError> {
        Ok(js_number(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, WireError> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, WireError> {
        Ok(Value::from(v))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, WireError> {
        Ok(Value::Binary(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value, WireError> {
        Ok(Value::Nil)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, WireError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, WireError> {
        Ok(Value::Nil)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, WireError> {
        Ok(Value::Nil)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, WireError> {
        Ok(Value::from(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, WireError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, WireError> {
        Ok(Value::Map(vec![(
            Value::from(variant),
            value.serialize(ValueSerializer)?,
        )]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSerializer, WireError> {
        Ok(SeqSerializer {
            items: Vec::with_capacity(len.unwrap_or(0).min(4096)),
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSerializer, WireError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqSerializer, WireError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSeqSerializer, WireError> {
        Ok(VariantSeqSerializer {
            variant,
            items: Vec::with_capacity(len.min(4096)),
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapSerializer, WireError> {
        Ok(MapSerializer {
            entries: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            next_key: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapSerializer, WireError> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantMapSerializer, WireError> {
        Ok(VariantMapSerializer {
            variant,
            entries: Vec::with_capacity(len.min(4096)),
        })
    }
}

/// Builds arrays for sequences and tuples.
struct SeqSerializer {
    items: Vec<Value>,
}

impl ser::SerializeSeq for SeqSerializer {
    type Ok = Value;
    type Error = WireError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WireError> {
        self.items.push(value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, WireError> {
        Ok(Value::Array(self.items))
    }
}

impl ser::SerializeTuple for SeqSerializer {
    type Ok = Value;
    type Error = WireError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WireError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Value, WireError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqSerializer {
    type Ok = Value;
    type Error = WireError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WireError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Value, WireError> {
        ser::SerializeSeq::end(self)
    }
}

/// Builds `{variant: [..]}` for tuple variants.
struct VariantSeqSerializer {
    variant: &'static str,
    items: Vec<Value>,
}

impl ser::SerializeTupleVariant for VariantSeqSerializer {
    type Ok = Value;
    type Error = WireError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WireError> {
        self.items.push(value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, WireError> {
        Ok(Value::Map(vec![(
            Value::from(self.variant),
            Value::Array(self.items),
        )]))
    }
}

/// Builds maps for maps and structs.
struct MapSerializer {
    entries: Vec<(Value, Value)>,
    next_key: Option<Value>,
}

impl ser::SerializeMap for MapSerializer {
    type Ok = Value;
    type Error = WireError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), WireError> {
        self.next_key = Some(Value::from(key.serialize(KeySerializer)?));
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WireError> {
        let key = self
            .next_key
            .take()
            .ok_or_else(|| WireError::Serialize("map value without a key".into()))?;
        self.entries.push((key, value.serialize(ValueSerializer)?));
        Ok(())
    }
    fn end(self) -> Result<Value, WireError> {
        Ok(Value::Map(self.entries))
    }
}

impl ser::SerializeStruct for MapSerializer {
    type Ok = Value;
    type Error = WireError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), WireError> {
        self.entries
            .push((Value::from(key), value.serialize(ValueSerializer)?));
        Ok(())
    }
    fn end(self) -> Result<Value, WireError> {
        Ok(Value::Map(self.entries))
    }
}

/// Builds `{variant: {..}}` for struct variants.
struct VariantMapSerializer {
    variant: &'static str,
    entries: Vec<(Value, Value)>,
}

impl ser::SerializeStructVariant for VariantMapSerializer {
    type Ok = Value;
    type Error = WireError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), WireError> {
        self.entries
            .push((Value::from(key), value.serialize(ValueSerializer)?));
        Ok(())
    }
    fn end(self) -> Result<Value, WireError> {
        Ok(Value::Map(vec![(
            Value::from(self.variant),
            Value::Map(self.entries),
        )]))
    }
}

/// Map keys become strings, like JSON object keys (and JS property names).
struct KeySerializer;

fn key_error() -> WireError {
    WireError::Serialize("map keys must be strings, numbers, booleans or chars".into())
}

impl ser::Serializer for KeySerializer {
    type Ok = String;
    type Error = WireError;
    type SerializeSeq = Impossible<String, WireError>;
    type SerializeTuple = Impossible<String, WireError>;
    type SerializeTupleStruct = Impossible<String, WireError>;
    type SerializeTupleVariant = Impossible<String, WireError>;
    type SerializeMap = Impossible<String, WireError>;
    type SerializeStruct = Impossible<String, WireError>;
    type SerializeStructVariant = Impossible<String, WireError>;

    fn serialize_bool(self, v: bool) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_i8(self, v: i8) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_i128(self, v: i128) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_u128(self, v: u128) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_f32(self, v: f32) -> Result<String, WireError> {
        Ok(crate::js::number_to_string(f64::from(v)))
    }
    fn serialize_f64(self, v: f64) -> Result<String, WireError> {
        Ok(crate::js::number_to_string(v))
    }
    fn serialize_char(self, v: char) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_str(self, v: &str) -> Result<String, WireError> {
        Ok(v.to_string())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<String, WireError> {
        Err(key_error())
    }
    fn serialize_none(self) -> Result<String, WireError> {
        Err(key_error())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<String, WireError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<String, WireError> {
        Err(key_error())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, WireError> {
        Err(key_error())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, WireError> {
        Ok(variant.to_string())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, WireError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String, WireError> {
        Err(key_error())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, WireError> {
        Err(key_error())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, WireError> {
        Err(key_error())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, WireError> {
        Err(key_error())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, WireError> {
        Err(key_error())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, WireError> {
        Err(key_error())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, WireError> {
        Err(key_error())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, WireError> {
        Err(key_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header reads of the borrowing decoders: every form of an array
    /// and a map header, nothing consumed for another value, and strings
    /// borrowed only when they are UTF-8.
    #[test]
    fn headers_and_borrowed_strings() {
        let cases: [(&[u8], Option<usize>, Option<usize>); 6] = [
            (&[0x93], Some(3), None),
            (&[0xdc, 0x01, 0x00], Some(256), None),
            (&[0xdd, 0x00, 0x01, 0x00, 0x00], Some(65_536), None),
            (&[0x8f], None, Some(15)),
            (&[0xde, 0x00, 0x10], None, Some(16)),
            (&[0xdf, 0x00, 0x00, 0x00, 0x11], None, Some(17)),
        ];
        for (bytes, array, map) in cases {
            let mut rd = Reader::new(bytes);
            assert_eq!(rd.array_header().unwrap(), array, "{bytes:02x?}");
            if array.is_none() {
                assert_eq!(rd.remaining(), bytes.len(), "nothing consumed");
                assert_eq!(rd.map_header().unwrap(), map, "{bytes:02x?}");
            }
            assert_eq!(rd.remaining(), 0);
        }
        let mut rd = Reader::new(&[0xa2, b'h', b'i', 0xd9, 0x01, 0xff, 0x01]);
        assert_eq!(rd.borrowed_str().unwrap(), Some("hi"));
        assert_eq!(rd.borrowed_str().unwrap(), None, "not UTF-8");
        assert_eq!(rd.remaining(), 4, "nothing consumed");
        rd.value(MAX_DEPTH).unwrap();
        assert_eq!(rd.borrowed_str().unwrap(), None, "not a string");
        assert!(
            Reader::new(&[0xdc, 0x01]).array_header().is_err(),
            "truncated"
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn enc(v: Value) -> String {
        hex(&encode(&v))
    }

    #[test]
    fn integers_like_notepack() {
        // Expected bytes from notepack.io 3.0.1 (see golden test for the emitter-level check).
        let cases: &[(i64, &str)] = &[
            (0, "00"),
            (127, "7f"),
            (128, "cc80"),
            (255, "ccff"),
            (256, "cd0100"),
            (65535, "cdffff"),
            (65536, "ce00010000"),
            (4294967295, "ceffffffff"),
            (4294967296, "cf0000000100000000"),
            (9007199254740991, "cf001fffffffffffff"),
            (-1, "ff"),
            (-32, "e0"),
            (-33, "d0df"),
            (-128, "d080"),
            (-129, "d1ff7f"),
            (-32768, "d18000"),
            (-32769, "d2ffff7fff"),
            (-2147483648, "d280000000"),
            (-2147483649, "d3ffffffff7fffffff"),
            (-9007199254740991, "d3ffe0000000000001"),
            (i64::MIN, "d38000000000000000"),
        ];
        for (n, expected) in cases {
            assert_eq!(enc(Value::from(*n)), *expected, "integer {n}");
            // The same number as a JS-style float encodes identically.
            assert_eq!(enc(Value::F64(*n as f64)), *expected, "float {n}");
        }
        assert_eq!(enc(Value::from(u64::MAX)), "cfffffffffffffffff");
    }

    #[test]
    fn floats_like_notepack() {
        assert_eq!(enc(Value::F64(1.5)), "cb3ff8000000000000");
        assert_eq!(enc(Value::F64(-0.25)), "cbbfd0000000000000");
        assert_eq!(enc(Value::F64(2.0)), "02");
        assert_eq!(enc(Value::F64(-0.0)), "00");
        assert_eq!(enc(Value::F64(0.1)), "cb3fb999999999999a");
        assert_eq!(enc(Value::F64(f64::NAN)), "cb7ff8000000000000");
        assert_eq!(enc(Value::F64(f64::INFINITY)), "cb7ff0000000000000");
        assert_eq!(enc(Value::F64(f64::NEG_INFINITY)), "cbfff0000000000000");
        assert_eq!(enc(Value::F32(1.5)), "cb3ff8000000000000");
        assert_eq!(enc(Value::F32(3.0)), "03");
        // Deliberate difference: notepack wraps these modulo 2^64.
        assert_eq!(enc(Value::F64(1e300)), "cb7e37e43c8800759c");
        assert_eq!(enc(Value::F64(1e21)), "cb444b1ae4d6e2ef50");
        assert_eq!(enc(Value::F64(-1e19)), "cbc3e158e460913d00");
    }

    #[test]
    fn containers_and_strings() {
        assert_eq!(enc(Value::from("")), "a0");
        assert_eq!(enc(Value::from("a".repeat(31))).len(), 2 + 62);
        assert!(enc(Value::from("a".repeat(32))).starts_with("d920"));
        assert!(enc(Value::from("a".repeat(256))).starts_with("da0100"));
        assert!(enc(Value::from("a".repeat(65536))).starts_with("db00010000"));
        assert_eq!(enc(Value::Binary(vec![0, 1, 2, 255])), "c404000102ff");
        assert!(enc(Value::Binary(vec![7; 300])).starts_with("c5012c07"));
        assert!(enc(Value::Binary(vec![7; 70000])).starts_with("c60001117007"));
        assert_eq!(enc(Value::Array(vec![])), "90");
        assert!(enc(Value::Array(vec![Value::Nil; 16])).starts_with("dc0010c0"));
        assert!(enc(Value::Array(vec![Value::Nil; 65536])).starts_with("dd00010000c0"));
        assert_eq!(enc(Value::Map(vec![])), "80");
        let map16: Vec<_> = (0..16).map(|i| (Value::from(i), Value::Nil)).collect();
        assert!(enc(Value::Map(map16)).starts_with("de001000c0"));
        let map32: Vec<_> = (0..65536).map(|i| (Value::from(i), Value::Nil)).collect();
        assert!(enc(Value::Map(map32)).starts_with("df0001000000c0"));
        assert_eq!(
            enc(Value::Array(vec![
                Value::Nil,
                Value::from(true),
                Value::from(false)
            ])),
            "93c0c3c2"
        );
        assert_eq!(enc(Value::from("é")), "a2c3a9");
    }

    #[test]
    fn ext_forms() {
        // notepack timestamp 32 for new Date(1000)
        assert_eq!(enc(Value::Ext(-1, vec![0, 0, 0, 1])), "d6ff00000001");
        assert_eq!(enc(Value::Ext(5, vec![1])), "d40501");
        assert_eq!(enc(Value::Ext(5, vec![1, 2])), "d5050102");
        assert_eq!(enc(Value::Ext(5, vec![0; 8])).len(), 2 * 10);
        assert_eq!(enc(Value::Ext(5, vec![0; 16])).len(), 2 * 18);
        assert_eq!(
            enc(Value::Ext(-1, vec![0; 12])),
            format!("c70cff{}", "00".repeat(12))
        );
        assert!(enc(Value::Ext(1, vec![0; 3])).starts_with("c70301"));
        assert!(enc(Value::Ext(1, vec![0; 300])).starts_with("c8012c01"));
        assert!(enc(Value::Ext(1, vec![0; 70000])).starts_with("c90001117001"));
    }

    #[test]
    fn decode_roundtrip_and_errors() {
        let v = Value::Map(vec![
            (
                Value::from("a"),
                Value::Array(vec![Value::from(1), Value::F64(1.5)]),
            ),
            (Value::from("b"), Value::Binary(vec![1, 2])),
        ]);
        assert_eq!(decode(&encode(&v)).unwrap(), v);
        assert!(matches!(decode(&[]), Err(WireError::Empty)));
        assert!(matches!(decode(&[0x92, 0x01]), Err(WireError::Msgpack(_))));
        assert!(matches!(
            decode(&[0x01, 0x02]),
            Err(WireError::TrailingBytes(1))
        ));
        assert!(matches!(decode(&[0xc1]), Err(WireError::Msgpack(_))));
        // Huge declared lengths must not allocate or panic.
        assert!(decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode(&[0xdf, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00]).is_err());
        assert!(decode(&[0xdb, 0xff, 0xff, 0xff, 0xff, 0x00]).is_err());
        // Deep nesting is refused instead of overflowing the stack.
        let deep = vec![0x91u8; 100_000];
        assert!(decode(&deep).is_err());
        let mut ok_depth = vec![0x91u8; MAX_DEPTH - 1];
        ok_depth.push(0xc0);
        assert!(decode(&ok_depth).is_ok());
        // Every marker family decodes.
        let all = "c0c2c3cc01cd0001ce00000001cf0000000000000001d0ffd1fffed2fffffffdd3fffffffffffffffc\
                   ca3fc00000cb3ff8000000000000a161d90162da000163db0000000164c40101c5000102c600000001\
                   03d40101d5010102d601fffffffed7010000000000000000d801000000000000000000000000000000\
                   00c70101ffc8000101ffc900000001017f";
        let all: Vec<u8> = (0..all.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&all[i..i + 2], 16).unwrap())
            .collect();
        let mut arr = vec![0xdc, 0x00, 0x1c];
        arr.extend_from_slice(&all);
        let v = decode(&arr).unwrap();
        let Value::Array(items) = &v else { panic!() };
        assert_eq!(items.len(), 28);
        assert_eq!(items[7], Value::from(-1));
        assert_eq!(items[10], Value::from(-4));
        assert_eq!(items[11], Value::F32(1.5));
        assert_eq!(items[14], Value::from("b"));
        assert_eq!(items[19], Value::Binary(vec![3]));
        assert_eq!(items[24], Value::Ext(1, vec![0; 16]));
        assert_eq!(items[27], Value::Ext(1, vec![0x7f]));
        // Invalid UTF-8 strings are kept, not refused (notepack replaces them with U+FFFD).
        assert!(matches!(decode(&[0xa1, 0xff]).unwrap(), Value::String(s) if s.as_str().is_none()));
        // Every prefix of a valid message is an error, never a panic.
        let full = encode(&v);
        for i in 0..full.len() {
            assert!(decode(&full[..i]).is_err());
        }
        // Pseudo-random garbage never panics.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let len = (x % 40) as usize;
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf.push(x as u8);
            }
            let _ = decode(&buf);
        }
    }

    #[derive(Serialize)]
    struct Ticket<'a> {
        id: u32,
        title: &'a str,
        tags: Vec<&'a str>,
        assignee: Option<u64>,
        score: f64,
        ratio: f32,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        status: Status,
    }

    #[derive(Serialize)]
    enum Status {
        Open,
        Moved { to: u8 },
    }

    #[test]
    fn to_value_follows_json_model() {
        let t = Ticket {
            id: 7,
            title: "t",
            tags: vec!["a"],
            assignee: None,
            score: 2.0,
            ratio: 0.1,
            blob: vec![1, 2],
            status: Status::Open,
        };
        let v = to_value(&t).unwrap();
        let expected = Value::Map(vec![
            (Value::from("id"), Value::from(7)),
            (Value::from("title"), Value::from("t")),
            (Value::from("tags"), Value::Array(vec![Value::from("a")])),
            (Value::from("assignee"), Value::Nil),
            (Value::from("score"), Value::from(2)),
            (Value::from("ratio"), Value::F64(0.1)),
            (Value::from("blob"), Value::Binary(vec![1, 2])),
            (Value::from("status"), Value::from("Open")),
        ]);
        assert_eq!(v, expected);
        assert_eq!(
            to_value(&Status::Moved { to: 3 }).unwrap(),
            Value::Map(vec![(
                Value::from("Moved"),
                Value::Map(vec![(Value::from("to"), Value::from(3))])
            )])
        );
        assert_eq!(
            to_value(&(1, "a", ())).unwrap(),
            Value::Array(vec![Value::from(1), Value::from("a"), Value::Nil])
        );
        let mut m = std::collections::BTreeMap::new();
        m.insert(5u32, "x");
        assert_eq!(
            to_value(&m).unwrap(),
            Value::Map(vec![(Value::from("5"), Value::from("x"))])
        );
        let mut bad = std::collections::BTreeMap::new();
        bad.insert(vec![1u8], 1);
        assert!(matches!(to_value(&bad), Err(WireError::Serialize(_))));
        assert!(to_value(&u128::MAX).is_err());
        assert_eq!(to_value(&-5i128).unwrap(), Value::from(-5));
        assert_eq!(
            to_value(&bytes::Bytes::from_static(b"\x00\x01")).unwrap(),
            Value::Binary(vec![0, 1])
        );
    }

    #[test]
    fn args_spread_tuples_only() {
        assert_eq!(to_args(&()).unwrap(), Vec::<Value>::new());
        assert_eq!(
            to_args(&(1, "a")).unwrap(),
            vec![Value::from(1), Value::from("a")]
        );
        assert_eq!(to_args(&(7,)).unwrap(), vec![Value::from(7)]);
        assert_eq!(
            to_args(&vec![1, 2]).unwrap(),
            vec![Value::Array(vec![Value::from(1), Value::from(2)])]
        );
        assert_eq!(to_args(&"x").unwrap(), vec![Value::from("x")]);
        assert_eq!(to_args(&None::<u8>).unwrap(), vec![Value::Nil]);
        assert_eq!(to_args(&Some(2.5)).unwrap(), vec![Value::F64(2.5)]);
        let v = serde_json::json!({"id": 7});
        assert_eq!(
            to_args(&v).unwrap(),
            vec![Value::Map(vec![(Value::from("id"), Value::from(7))])]
        );
        assert_eq!(to_args(&Status::Open).unwrap(), vec![Value::from("Open")]);
        assert_eq!(
            to_args(&serde_bytes::Bytes::new(&[1, 2])).unwrap(),
            vec![Value::Binary(vec![1, 2])]
        );
        assert_eq!(
            to_args(&(serde_bytes::Bytes::new(&[1]), Status::Moved { to: 1 }))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn js_number_types() {
        assert_eq!(js_number(3.0), Value::from(3));
        assert_eq!(js_number(-3.0), Value::from(-3));
        assert_eq!(js_number(-0.0), Value::from(0));
        assert_eq!(js_number(0.5), Value::F64(0.5));
        assert!(matches!(js_number(f64::NAN), Value::F64(_)));
        assert_eq!(js_number(1e300), Value::F64(1e300));
    }
}
