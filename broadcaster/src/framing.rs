//! The bytes of a broadcast message around its `data`, so that the
//! namespace, rooms, exclusions and flags of a target are encoded once and
//! each emit only encodes its event and arguments: per operator, and across
//! operators through a small cache keyed by the target (a request handler's
//! `b.to_role("admin").emit(..)` builds a new operator every time).
//!
//! The layout is not restated here: the framing is cut out of what
//! `switchboard_wire::encode_broadcast` itself produces for the same
//! message with `nil` as data.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
};

use rmpv::Value;
use switchboard_wire::{
    BroadcastFlags, BroadcastMessage, BroadcastOptions, BusPacket, Channels, EMITTER_UID,
    encode_broadcast, msgpack,
};

use crate::Encoded;

/// Targets remembered by a [`FramingCache`]; beyond this it starts over
/// (cheaper than keeping an LRU order on every hit).
const CACHE_CAPACITY: usize = 4096;

/// What a framing depends on: the target of an operator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub nsp: &'a str,
    pub rooms: &'a [String],
    pub except: &'a [String],
    pub flags: &'a BroadcastFlags,
}

impl Target<'_> {
    fn key(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.nsp.hash(&mut h);
        self.rooms.hash(&mut h);
        self.except.hash(&mut h);
        self.flags.volatile.hash(&mut h);
        self.flags.compress.hash(&mut h);
        self.flags.local.hash(&mut h);
        self.flags.timeout.hash(&mut h);
        h.finish()
    }

    fn message(&self) -> BroadcastMessage {
        BroadcastMessage {
            uid: EMITTER_UID.into(),
            packet: BusPacket::event(self.nsp, Value::Nil),
            opts: BroadcastOptions {
                rooms: self.rooms.to_vec(),
                except: self.except.to_vec(),
                flags: self.flags.clone(),
            },
        }
    }
}

/// Framings of the targets used lately, shared by a broadcaster's operators.
#[derive(Default)]
pub(crate) struct FramingCache {
    map: Mutex<HashMap<u64, Arc<Framing>>>,
}

impl std::fmt::Debug for FramingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FramingCache")
    }
}

impl FramingCache {
    /// The framing of `target`, from the cache or made (and remembered).
    pub(crate) fn get(&self, target: Target<'_>, channels: &Channels) -> Arc<Framing> {
        if !target.flags.other.is_empty() {
            // Flags this crate never sets: not worth a key.
            return Arc::new(Framing::new(&target.message(), channels));
        }
        let key = target.key();
        let lock = || self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = lock().get(&key)
            && f.is_for(&target)
        {
            return f.clone();
        }
        let framing = Arc::new(Framing::new(&target.message(), channels));
        let mut map = lock();
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
        map.insert(key, framing.clone());
        framing
    }
}

/// `msgpack` of a nil value: one byte.
const NIL: u8 = 0xc0;

/// A broadcast message with a hole where the data goes.
#[derive(Debug)]
pub(crate) struct Framing {
    /// The message encoded with `nil` as data.
    template: Vec<u8>,
    /// Where the nil byte (the data) is.
    data_at: usize,
    /// The channel the message goes to.
    channel: String,
    /// The message it was made from (data nil), to tell targets apart.
    message: BroadcastMessage,
}

impl Framing {
    /// The framing of `message` (whose data is ignored).
    pub(crate) fn new(message: &BroadcastMessage, channels: &Channels) -> Self {
        let mut message = message.clone();
        message.packet.data = Value::Nil;
        let template = encode_broadcast(&message);
        let channel = message.channel(channels);
        let mut nils = template.iter().enumerate().filter(|(_, b)| **b == NIL);
        let data_at = match (nils.next(), nils.next()) {
            (Some((at, _)), None) => at,
            // Another 0xc0 elsewhere (a length byte, a nil flag): the data is
            // where the encoding of a different value differs.
            _ => {
                message.packet.data = Value::Boolean(true);
                let other = encode_broadcast(&message);
                message.packet.data = Value::Nil;
                template
                    .iter()
                    .zip(&other)
                    .position(|(a, b)| a != b)
                    .expect("the data is encoded in the message")
            }
        };
        Framing {
            data_at,
            channel,
            template,
            message,
        }
    }

    /// True when this framing was made for `target`.
    fn is_for(&self, target: &Target<'_>) -> bool {
        let m = &self.message;
        m.packet.nsp == target.nsp
            && m.opts.rooms == target.rooms
            && m.opts.except == target.except
            && m.opts.flags == *target.flags
    }

    /// The message with `data` in place.
    pub(crate) fn encode(&self, data: &Value) -> Encoded {
        let mut payload = Vec::with_capacity(self.template.len() + 64);
        payload.extend_from_slice(&self.template[..self.data_at]);
        msgpack::encode_into(&mut payload, data);
        payload.extend_from_slice(&self.template[self.data_at + 1..]);
        Encoded {
            channel: self.channel.clone(),
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_bytes_are_what_the_wire_crate_encodes() {
        let channels = Channels::new("socket.io");
        let long_nsp = format!("/{}", "n".repeat(191)); // str8 length byte 0xc0
        let mut flags = BroadcastFlags {
            volatile: true,
            compress: Some(false),
            ..Default::default()
        };
        flags.other.push(("custom".into(), Value::Nil)); // a nil besides the data
        let cases = [
            ("/", vec![], vec![], BroadcastFlags::default()),
            ("/", vec!["role:admin"], vec![], BroadcastFlags::default()),
            ("/chat", vec!["a", "b"], vec!["sid1"], flags.clone()),
            (long_nsp.as_str(), vec!["r"], vec![], flags),
        ];
        let data = Value::Array(vec![
            Value::from("ticket_updated"),
            Value::Map(vec![(Value::from("id"), Value::from(7))]),
            Value::Nil,
        ]);
        for (nsp, rooms, except, flags) in cases {
            let message = BroadcastMessage {
                uid: EMITTER_UID.into(),
                packet: BusPacket::event(nsp, data.clone()),
                opts: BroadcastOptions {
                    rooms: rooms.iter().map(|r| r.to_string()).collect(),
                    except: except.iter().map(|r| r.to_string()).collect(),
                    flags,
                },
            };
            let framed = Framing::new(&message, &channels).encode(&data);
            assert_eq!(
                framed.payload,
                encode_broadcast(&message),
                "{nsp} {rooms:?}"
            );
            assert_eq!(framed.channel, message.channel(&channels));
        }
    }

    #[test]
    fn the_cache_tells_targets_apart() {
        let channels = Channels::new("socket.io");
        let cache = FramingCache::default();
        let flags = BroadcastFlags::default();
        let volatile = BroadcastFlags {
            volatile: true,
            ..Default::default()
        };
        let admin = vec!["role:admin".to_string()];
        let user = vec!["user:1".to_string()];
        let target = |rooms: &'static [String], flags| Target {
            nsp: "/",
            rooms,
            except: &[],
            flags,
        };
        let admin: &'static [String] = admin.leak();
        let user: &'static [String] = user.leak();
        let a = cache.get(target(admin, &flags), &channels);
        assert!(Arc::ptr_eq(
            &a,
            &cache.get(target(admin, &flags), &channels)
        ));
        let v = cache.get(target(admin, &volatile), &channels);
        let u = cache.get(target(user, &flags), &channels);
        assert!(!Arc::ptr_eq(&a, &v) && !Arc::ptr_eq(&a, &u));
        assert_eq!(u.channel, "socket.io#/#user:1#");
        let data = Value::Array(vec![Value::from("e")]);
        assert_ne!(a.encode(&data).payload, v.encode(&data).payload);
    }
}
