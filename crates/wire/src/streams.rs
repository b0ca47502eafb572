//! The wire format of `@socket.io/redis-streams-adapter` 0.3 (Redis Streams, plus pub/sub for
//! messages that need no history).
//!
//! * Durable messages ([`is_ephemeral`] false: broadcasts without acknowledgements,
//!   `socketsJoin`, `socketsLeave`, `disconnectSockets`) are `XADD`ed to the namespace's stream
//!   ([`StreamsOptions::stream_for`]) as the fields `uid`, `nsp`, `type` (decimal string) and
//!   `data`: `JSON.stringify(data)`, or base64 of `@msgpack/msgpack` when the data has binary
//!   and `onlyPlaintext` is off ([`encode_fields`], [`decode_entry`]). The entry id is the
//!   connection-state-recovery offset.
//! * Ephemeral messages (broadcast with acknowledgements, FETCH_SOCKETS, SERVER_SIDE_EMIT) are
//!   `PUBLISH`ed to `socket.io#<nsp>#`, and every response to `socket.io#<nsp>#<requesterUid>#`,
//!   as raw `@msgpack/msgpack` of the whole message ([`encode_pubsub`], [`decode_pubsub`]).
//!   With `useShardedPubSub` they use `SPUBLISH` instead.
//!
//! [`StreamsOptions::encode_message`] and [`StreamsOptions::encode_response`] make that choice
//! and return the command to run.

use std::num::NonZeroU32;

use base64::Engine as _;

use crate::WireError;
use crate::cluster::{ClusterBody, ClusterChannels, ClusterMessage, Undefined};
use crate::socketio::{js_json_string, json_str_to_msgpack};
use crate::{msgpack, recovery};

/// The adapter's default `streamName`.
pub const DEFAULT_STREAM_NAME: &str = "socket.io";
/// The adapter's default `maxLen` (`XADD ... MAXLEN ~ 10000`).
pub const DEFAULT_MAX_LEN: u64 = 10_000;
/// The adapter's default `readCount` (`XREAD COUNT 100`).
pub const DEFAULT_READ_COUNT: u64 = 100;
/// The adapter's default `blockTimeInMs` (`XREAD BLOCK 5000`).
pub const DEFAULT_BLOCK_TIME_MS: u64 = 5_000;

/// Java's `String.hashCode` as the adapter's `hashCode` computes it: `h = h * 31 + c` over the
/// UTF-16 code units of `s`, wrapping to a signed 32-bit integer at each step (`h |= 0`). The
/// JavaScript arithmetic is exact before the wrap (|h * 31 + c| < 2^53), so this is plain
/// wrapping i32 arithmetic.
pub fn hash_code(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The options of `createAdapter` that shape what goes over Redis, with the Node defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsOptions {
    /// `streamName`, `"socket.io"` by default.
    pub stream_name: String,
    /// `streamCount`, 1 by default: with more, namespaces are spread over
    /// `<streamName>-<i>` streams by [`hash_code`].
    pub stream_count: NonZeroU32,
    /// `channelPrefix` of the pub/sub channels, `"socket.io"` by default.
    pub channels: ClusterChannels,
    /// `useShardedPubSub`: `SPUBLISH`/`SSUBSCRIBE` instead of `PUBLISH`/`SUBSCRIBE`.
    pub use_sharded_pubsub: bool,
    /// `maxLen`: `XADD ... MAXLEN ~ <max_len>`.
    pub max_len: u64,
    /// `sessionKeyPrefix`, `"sio:session:"` by default.
    pub session_key_prefix: String,
    /// `onlyPlaintext`: write binary data as JSON (Buffers become `{"type":"Buffer",...}`)
    /// instead of base64 msgpack.
    pub only_plaintext: bool,
}

impl Default for StreamsOptions {
    fn default() -> Self {
        StreamsOptions {
            stream_name: DEFAULT_STREAM_NAME.into(),
            stream_count: NonZeroU32::MIN,
            channels: ClusterChannels::default(),
            use_sharded_pubsub: false,
            max_len: DEFAULT_MAX_LEN,
            session_key_prefix: recovery::DEFAULT_SESSION_KEY_PREFIX.into(),
            only_plaintext: false,
        }
    }
}

/// Something to send to Redis for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// Append to a stream.
    Xadd(XAdd),
    /// Publish on a channel (`SPUBLISH` when `sharded`).
    Publish {
        /// `socket.io#<nsp>#` for requests, `socket.io#<nsp>#<requesterUid>#` for responses.
        channel: String,
        /// [`encode_pubsub`] of the message.
        payload: Vec<u8>,
        /// `useShardedPubSub`.
        sharded: bool,
    },
}

/// One `XADD` of the adapter: `XADD <stream> MAXLEN ~ <max_len> * <fields...>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XAdd {
    /// Stream key.
    pub stream: String,
    /// Approximate trimming threshold.
    pub max_len: u64,
    /// The entry's fields.
    pub fields: StreamFields,
}

impl XAdd {
    /// The whole command as the adapter sends it (node-redis `xAdd` with
    /// `TRIM: {strategy: "MAXLEN", strategyModifier: "~", threshold}`):
    /// `["XADD", stream, "MAXLEN", "~", max_len, "*", "uid", .., "nsp", .., "type", .., "data", ..]`.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "XADD".to_string(),
            self.stream.clone(),
            "MAXLEN".into(),
            "~".into(),
            self.max_len.to_string(),
            "*".into(),
        ];
        for (k, v) in self.fields.pairs() {
            args.push(k.to_string());
            args.push(v.to_string());
        }
        args
    }
}

/// The fields of a stream entry, in the order the adapter writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFields {
    /// Sender uid.
    pub uid: String,
    /// Namespace.
    pub nsp: String,
    /// The message type as a decimal string (`"3"`).
    pub message_type: String,
    /// JSON text (starts with `{`) or base64 msgpack; absent for messages without data.
    pub data: Option<String>,
}

impl StreamFields {
    /// `(field, value)` pairs: `uid`, `nsp`, `type`, then `data` if present.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("uid", Some(self.uid.as_str())),
            ("nsp", Some(self.nsp.as_str())),
            ("type", Some(self.message_type.as_str())),
            ("data", self.data.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

/// Whether the adapter sends `msg` over pub/sub instead of the stream (`isEphemeral`):
/// a BROADCAST with a `requestId`, FETCH_SOCKETS and SERVER_SIDE_EMIT. Responses always go
/// over pub/sub too (they never reach `doPublish`).
pub fn is_ephemeral(msg: &ClusterMessage) -> bool {
    match &msg.body {
        ClusterBody::Broadcast(b) => b.request_id.is_some(),
        ClusterBody::FetchSockets(_) | ClusterBody::ServerSideEmit(_) => true,
        _ => msg.message_type().is_response(),
    }
}

/// The stream entry fields for `msg`, byte for byte as the adapter's `encode`: `data` is
/// `JSON.stringify(data)`, or, when the type may carry binary, the data has some and
/// `only_plaintext` is false, standard base64 (with padding) of `@msgpack/msgpack`'s encoding
/// of the data.
pub fn encode_fields(msg: &ClusterMessage, only_plaintext: bool) -> StreamFields {
    let data = if !only_plaintext && msg.has_binary() {
        msg.data_value(Undefined::Nil).map(|data| {
            base64::engine::general_purpose::STANDARD.encode(msgpack::encode_msgpack_js(&data))
        })
    } else {
        msg.data_value(Undefined::Omit)
            .map(|data| js_json_string(&data))
    };
    StreamFields {
        uid: msg.uid.clone(),
        nsp: msg.nsp.clone(),
        message_type: (msg.message_type() as u8).to_string(),
        data,
    }
}

/// Node's `Buffer.from(s, "base64")` accepts missing padding; so does this.
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes base64 as the adapter reads it (standard alphabet, padding optional).
pub(crate) fn decode_base64(text: &[u8]) -> Result<Vec<u8>, WireError> {
    LENIENT_BASE64
        .decode(text)
        .map_err(|e| WireError::Shape(format!("invalid base64: {e}")))
}

/// Decodes one stream entry from its `(field, value)` pairs as XRANGE / XREAD return them,
/// the way the adapter's reader does: later duplicates win, unknown fields are ignored, `type`
/// is read like `parseInt(type, 10)`, and `data` is JSON when it starts with `{`, else base64
/// msgpack.
///
/// Entries without an `nsp` are an error here; the Node reader skips them silently.
pub fn decode_entry<K, V>(
    fields: impl IntoIterator<Item = (K, V)>,
) -> Result<ClusterMessage, WireError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let (mut uid, mut nsp, mut ty, mut data) = (None, None, None, None);
    for (k, v) in fields {
        let v = v.as_ref();
        match k.as_ref() {
            b"uid" => uid = Some(lossy(v)),
            b"nsp" => nsp = Some(lossy(v)),
            b"type" => ty = Some(lossy(v)),
            b"data" => data = Some(v.to_vec()),
            _ => {}
        }
    }
    let nsp = nsp
        .filter(|n| !n.is_empty())
        .ok_or_else(|| WireError::Shape("stream entry has no nsp field".into()))?;
    let ty = ty.ok_or_else(|| WireError::Shape("stream entry has no type field".into()))?;
    let message_type = parse_int(&ty)
        .ok_or_else(|| WireError::Shape(format!("stream entry type {ty:?} is not a number")))?;
    // `if (rawMessage.data)`: an empty string means no data.
    let data = match data.filter(|d| !d.is_empty()) {
        None => None,
        Some(d) if d[0] == b'{' => Some(json_str_to_msgpack(&lossy(&d))?),
        Some(d) => Some(msgpack::decode(&decode_base64(&d)?)?),
    };
    ClusterMessage::from_parts(uid.unwrap_or_default(), nsp, message_type, data)
}

/// The redis client hands the adapter UTF-8 strings; invalid sequences become U+FFFD.
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `parseInt(s, 10)` for the integers that matter here: leading whitespace, an optional sign,
/// then the longest run of ASCII digits (anything after it is ignored).
fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    // Longer numbers are no message type anyway: saturate.
    let n = rest[..digits].parse::<i64>().unwrap_or(i64::MAX);
    Some(if negative { -n } else { n })
}

/// Encodes `msg` as the adapter publishes it over pub/sub: `@msgpack/msgpack` of the whole
/// message `{type, data, uid, nsp}` (an `undefined` ack argument becomes nil).
pub fn encode_pubsub(msg: &ClusterMessage) -> Vec<u8> {
    msgpack::encode_msgpack_js(&msg.to_value(Undefined::Nil))
}

/// Decodes a message received on the adapter's pub/sub channels (always msgpack).
pub fn decode_pubsub(payload: &[u8]) -> Result<ClusterMessage, WireError> {
    ClusterMessage::from_value(msgpack::decode(payload)?)
}

/// The streams-adapter message for a message encoded in the classic `@socket.io/redis-emitter`
/// format (`payload` published on `channel` under the channel prefix `key`): a broadcast on
/// `<key>#<nsp>#...` becomes a BROADCAST, a `socketsJoin` / `socketsLeave` /
/// `disconnectSockets` request on `<key>-request#<nsp>#` becomes SOCKETS_JOIN / SOCKETS_LEAVE /
/// DISCONNECT_SOCKETS, all under the emitter's uid. `None` for anything else (serverSideEmit,
/// responses, undecodable bytes): those have no stream form.
///
/// This is how one emitter API (encode, then publish) serves both kinds of fleets.
pub fn from_classic(key: &str, channel: &str, payload: &[u8]) -> Option<ClusterMessage> {
    use crate::cluster::{ClusterBroadcast, DisconnectSockets, RoomsChange};
    use crate::message::BroadcastOptions;
    use crate::request::{Request, RequestOpts};
    let request_nsp = channel
        .strip_prefix(key)
        .and_then(|c| c.strip_prefix("-request#"))
        .and_then(|c| c.strip_suffix('#'));
    let Some(nsp) = request_nsp else {
        let msg = crate::decode_broadcast(payload).ok()?;
        let body = ClusterBody::Broadcast(ClusterBroadcast::new(msg.packet.data, msg.opts));
        return Some(ClusterMessage::new(msg.uid, msg.packet.nsp, body));
    };
    let opts = |opts: Option<RequestOpts>, sid: Option<String>| {
        let opts = opts.unwrap_or_default();
        BroadcastOptions {
            rooms: sid.map_or(opts.rooms, |sid| vec![sid]),
            except: opts.except,
            ..Default::default()
        }
    };
    let body = match crate::decode_request(payload).ok()? {
        Request::RemoteJoin(r) => ClusterBody::SocketsJoin(RoomsChange {
            opts: opts(r.opts, r.sid),
            rooms: r.room.map_or(r.rooms, |room| vec![room]),
        }),
        Request::RemoteLeave(r) => ClusterBody::SocketsLeave(RoomsChange {
            opts: opts(r.opts, r.sid),
            rooms: r.room.map_or(r.rooms, |room| vec![room]),
        }),
        Request::RemoteDisconnect(r) => ClusterBody::DisconnectSockets(DisconnectSockets {
            opts: opts(r.opts, r.sid),
            close: r.close,
        }),
        _ => return None,
    };
    Some(ClusterMessage::new(crate::EMITTER_UID, nsp, body))
}

impl StreamsOptions {
    /// The stream a namespace's messages go to (`computeStreamName`): `streamName` when
    /// `streamCount` is 1, else `<streamName>-<hashCode(nsp) % streamCount>`.
    ///
    /// Node quirk, reproduced on purpose: JavaScript's `%` keeps the sign of the dividend, so a
    /// namespace with a negative hash gets a negative index, e.g. `"/notifications"` with 4
    /// streams goes to `socket.io--3`. Node servers only read `socket.io-0` ..
    /// `socket.io-<n-1>` ([`Self::read_streams`]), so such a namespace's messages are written
    /// but never delivered to other servers (see [`Self::is_read`]).
    pub fn stream_for(&self, nsp: &str) -> String {
        match self.shard_index(nsp) {
            None => self.stream_name.clone(),
            Some(i) => format!("{}-{}", self.stream_name, i),
        }
    }

    /// The shard index `hashCode(nsp) % streamCount` (negative for negative hashes), `None`
    /// with a single stream.
    pub fn shard_index(&self, nsp: &str) -> Option<i64> {
        let count = self.stream_count.get();
        (count != 1).then(|| i64::from(hash_code(nsp)) % i64::from(count))
    }

    /// The streams every Node server reads (`createReadOnlyClients`): `streamName`, or
    /// `<streamName>-0` .. `<streamName>-<streamCount - 1>`.
    pub fn read_streams(&self) -> Vec<String> {
        match self.stream_count.get() {
            1 => vec![self.stream_name.clone()],
            n => (0..n)
                .map(|i| format!("{}-{}", self.stream_name, i))
                .collect(),
        }
    }

    /// Whether Node servers read the stream `nsp` is written to: false exactly when the
    /// negative-index quirk of [`Self::stream_for`] applies.
    pub fn is_read(&self, nsp: &str) -> bool {
        self.shard_index(nsp).is_none_or(|i| i >= 0)
    }

    /// The connection-state-recovery session key for `pid`: `sio:session:<pid>`.
    pub fn session_key(&self, pid: &str) -> String {
        format!("{}{}", self.session_key_prefix, pid)
    }

    /// What the adapter sends for a message it publishes (`doPublish`): an XADD, or for
    /// [`ephemeral`](is_ephemeral) messages a publish on the namespace channel.
    ///
    /// Responses belong to [`Self::encode_response`]; passed here they are published on the
    /// namespace channel, where no Node server expects them.
    pub fn encode_message(&self, msg: &ClusterMessage) -> Outgoing {
        if is_ephemeral(msg) {
            Outgoing::Publish {
                channel: self.channels.namespace(&msg.nsp),
                payload: encode_pubsub(msg),
                sharded: self.use_sharded_pubsub,
            }
        } else {
            Outgoing::Xadd(XAdd {
                stream: self.stream_for(&msg.nsp),
                max_len: self.max_len,
                fields: encode_fields(msg, self.only_plaintext),
            })
        }
    }

    /// What the adapter sends for a response to the server `requester_uid`
    /// (`doPublishResponse`): a publish on `socket.io#<nsp>#<requesterUid>#`.
    pub fn encode_response(&self, requester_uid: &str, msg: &ClusterMessage) -> Outgoing {
        Outgoing::Publish {
            channel: self.channels.server(&msg.nsp, requester_uid),
            payload: encode_pubsub(msg),
            sharded: self.use_sharded_pubsub,
        }
    }
}

#[cfg(test)]
mod tests {
    use rmpv::Value;

    use super::*;
    use crate::BroadcastOptions;
    use crate::cluster::{AckResponse, ClusterBroadcast, FetchSockets, RoomsChange};

    fn options(count: u32) -> StreamsOptions {
        StreamsOptions {
            stream_count: NonZeroU32::new(count).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn hash_code_matches_node() {
        // Values printed by the adapter's own `hashCode` (dist/util.js) under Node 20.
        for (s, h) in [
            ("/", 47),
            ("/notifications", -1_014_064_871),
            ("/admin", 1_438_238_848),
            ("/chat", 46_457_863),
            ("", 0),
            ("é", 233),
            ("😀/x", 1_703_757_516),
        ] {
            assert_eq!(hash_code(s), h, "{s}");
        }
    }

    #[test]
    fn stream_names_with_the_negative_index_quirk() {
        let one = options(1);
        assert_eq!(one.stream_for("/notifications"), "socket.io");
        assert_eq!(one.read_streams(), vec!["socket.io"]);
        assert!(one.is_read("/notifications"));
        let four = options(4);
        assert_eq!(four.stream_for("/"), "socket.io-3");
        assert_eq!(four.stream_for("/admin"), "socket.io-0");
        assert_eq!(four.stream_for("/notifications"), "socket.io--3");
        assert!(!four.is_read("/notifications"));
        assert!(four.is_read("/"));
        assert_eq!(
            four.read_streams(),
            vec!["socket.io-0", "socket.io-1", "socket.io-2", "socket.io-3"]
        );
        assert_eq!(four.session_key("abc"), "sio:session:abc");
    }

    #[test]
    fn fields_and_routing() {
        let opts = StreamsOptions::default();
        let join = ClusterMessage::new(
            "0123456789abcdef",
            "/",
            ClusterBody::SocketsJoin(RoomsChange {
                opts: BroadcastOptions::default(),
                rooms: vec!["room9".into()],
            }),
        );
        let Outgoing::Xadd(xadd) = opts.encode_message(&join) else {
            panic!("join goes to the stream");
        };
        assert_eq!(
            xadd.args(),
            [
                "XADD",
                "socket.io",
                "MAXLEN",
                "~",
                "10000",
                "*",
                "uid",
                "0123456789abcdef",
                "nsp",
                "/",
                "type",
                "4",
                "data",
                r#"{"opts":{"rooms":[],"except":[],"flags":{}},"rooms":["room9"]}"#
            ]
        );
        let fields: Vec<(&str, &str)> = xadd.fields.pairs().collect();
        assert_eq!(decode_entry(fields).unwrap(), join);

        let bin = ClusterMessage::new(
            "u",
            "/",
            ClusterBody::Broadcast(ClusterBroadcast::new(
                Value::Array(vec!["bin".into(), Value::Binary(vec![1, 2, 3])]),
                BroadcastOptions::default(),
            )),
        );
        let fields = encode_fields(&bin, false);
        // Captured from the adapter: `io.emit("bin", Buffer.from([1, 2, 3]))`.
        assert_eq!(
            fields.data.as_deref(),
            Some(
                "gqZwYWNrZXSCpHR5cGUCpGRhdGGSo2JpbsQDAQIDpG9wdHODpXJvb21zkKZleGNlcHSQpWZsYWdzgA=="
            )
        );
        assert_eq!(decode_entry(fields.pairs()).unwrap(), bin);
        let plain = encode_fields(&bin, true);
        assert_eq!(
            plain.data.as_deref(),
            Some(
                r#"{"packet":{"type":2,"data":["bin",{"type":"Buffer","data":[1,2,3]}]},"opts":{"rooms":[],"except":[],"flags":{}}}"#
            )
        );

        let fetch = ClusterMessage::new(
            "u",
            "/a",
            ClusterBody::FetchSockets(FetchSockets {
                opts: BroadcastOptions::default(),
                request_id: "r".into(),
            }),
        );
        assert!(is_ephemeral(&fetch));
        match opts.encode_message(&fetch) {
            Outgoing::Publish {
                channel,
                payload,
                sharded,
            } => {
                assert_eq!(channel, "socket.io#/a#");
                assert!(!sharded);
                assert_eq!(decode_pubsub(&payload).unwrap(), fetch);
            }
            other => panic!("{other:?}"),
        }
        let ack = ClusterMessage::new(
            "u",
            "/a",
            ClusterBody::BroadcastAck(AckResponse {
                request_id: "r".into(),
                packet: None,
            }),
        );
        assert!(is_ephemeral(&ack));
        let Outgoing::Publish {
            channel, payload, ..
        } = opts.encode_response("req", &ack)
        else {
            panic!("responses are published");
        };
        assert_eq!(channel, "socket.io#/a#req#");
        // `{requestId, packet: undefined}`: @msgpack/msgpack writes the key with nil.
        assert!(payload.windows(7).any(|w| w == b"packet\xc0"));
    }

    #[test]
    fn classic_messages_in_stream_form() {
        use crate::{BroadcastMessage, BusPacket, encode_broadcast};
        let msg = BroadcastMessage {
            uid: "emitter".into(),
            packet: BusPacket::event("/chat", Value::Array(vec!["ev".into(), 1.into()])),
            opts: BroadcastOptions {
                rooms: vec!["r".into()],
                ..Default::default()
            },
        };
        let cluster =
            from_classic("socket.io", "socket.io#/chat#r#", &encode_broadcast(&msg)).unwrap();
        assert_eq!(cluster.nsp, "/chat");
        let ClusterBody::Broadcast(b) = &cluster.body else {
            panic!("{cluster:?}");
        };
        assert_eq!(b.opts.rooms, ["r"]);
        assert_eq!(b.packet.data, msg.packet.data);
        let join = crate::encode_request(&crate::Request::RemoteJoin(crate::RoomsRequest {
            opts: Some(crate::RequestOpts {
                rooms: vec!["a".into()],
                except: vec![],
            }),
            rooms: vec!["b".into()],
            ..Default::default()
        }));
        let cluster = from_classic("socket.io", "socket.io-request#/#", &join).unwrap();
        assert_eq!(
            cluster.body,
            ClusterBody::SocketsJoin(RoomsChange {
                opts: BroadcastOptions {
                    rooms: vec!["a".into()],
                    ..Default::default()
                },
                rooms: vec!["b".into()],
            })
        );
        assert!(from_classic("socket.io", "socket.io#/#", b"junk").is_none());
    }

    #[test]
    fn entry_decoding_like_node() {
        // parseInt semantics, later duplicates win, unknown fields ignored.
        let msg = decode_entry([
            ("uid", "a"),
            ("nsp", "/"),
            ("type", " 2xyz"),
            ("uid", "b"),
            ("extra", "1"),
        ])
        .unwrap();
        assert_eq!(msg.uid, "b");
        assert_eq!(msg.body, ClusterBody::Heartbeat);
        for bad in [
            vec![("uid", "a"), ("type", "2")],
            vec![("nsp", ""), ("type", "2")],
            vec![("nsp", "/"), ("type", "x")],
            vec![("nsp", "/")],
            vec![("nsp", "/"), ("type", "3"), ("data", "{")],
            vec![("nsp", "/"), ("type", "3"), ("data", "!!!")],
            vec![("nsp", "/"), ("type", "3")],
            vec![("nsp", "/"), ("type", "42")],
        ] {
            assert!(decode_entry(bad.clone()).is_err(), "{bad:?}");
        }
        assert_eq!(parse_int("-3"), Some(-3));
        assert_eq!(parse_int("99999999999999999999999"), Some(i64::MAX));
    }
}
