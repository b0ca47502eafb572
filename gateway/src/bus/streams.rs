//! The Redis Streams bus (`redis.bus = "streams"`), wire-compatible with
//! `@socket.io/redis-streams-adapter` 0.3 (format in `switchboard_wire::streams`).
//!
//! * Broadcasts, `socketsJoin`, `socketsLeave` and `disconnectSockets` are
//!   `XADD`ed to the namespace's stream with `MAXLEN ~ redis.stream_max_len`
//!   ([`StreamsBus::xadd`]); a failed `XADD` is retried until
//!   `redis.publish_timeout_ms` has passed.
//! * One reader task per stream runs `XREAD COUNT 100 BLOCK .. STREAMS <key>
//!   <last id>` on a connection of its own and hands every entry to
//!   [`BusHandler::on_stream_entry`]. It starts at the stream's newest entry
//!   (never `$`), keeps the id of the last entry it handed over, and after a
//!   Redis error or reconnect resumes from exactly that id: nothing is lost
//!   while the stream still holds the entries. Entries trimmed away before
//!   they were read (`max-deleted-entry-id` of `XINFO STREAM` beyond the last
//!   id) or a stream that vanished are logged and counted in
//!   `switchboard_stream_gaps_total`.
//! * Requests that need no history (fetchSockets, serverSideEmit, broadcasts
//!   with acks) and every response go over pub/sub as the adapter does; that
//!   part is the pub/sub [`RedisBus`] (plain `SUBSCRIBE`, so Node servers
//!   count this gateway in `serverCount()`).
//! * Connection state recovery reads the stream back with `XRANGE .. COUNT`
//!   ([`StreamsBus::xrange`]) and keeps sessions under `sio:session:<pid>`
//!   ([`StreamsBus::save_session`], [`StreamsBus::take_session`]).

use std::{sync::Arc, time::Duration};

use redis::Value;
use switchboard_redis::{Publisher, Redis};
use switchboard_wire::recovery::StreamId;
use switchboard_wire::streams::{StreamsOptions, XAdd};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{BusError, BusHandler, BusStatus, redis::RedisBus};
use crate::{config::RedisConfig, metrics::Metrics};

/// Entries read per `XREAD` (the adapter's `readCount`).
const READ_COUNT: usize = 100;

/// One stream entry: its id (the recovery offset) and its fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// `<ms>-<seq>`.
    pub id: String,
    /// `(field, value)` pairs as Redis returned them.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The streams bus: the pub/sub part for ephemeral messages, plus stream
/// readers and the commands publishing and recovery need.
pub struct StreamsBus {
    pubsub: RedisBus,
    redis: Redis,
    /// XADD, XRANGE, SET/GETDEL on their own pipelined connection.
    commands: Publisher,
    options: StreamsOptions,
    timeout: Duration,
    backoff: (Duration, Duration),
    metrics: Metrics,
}

impl StreamsBus {
    /// Builds the connections; they open on first use.
    pub(super) fn new(config: &RedisConfig, metrics: Metrics) -> Result<Self, BusError> {
        let pubsub = RedisBus::new(config, metrics.clone())?;
        let redis = Redis::new(&config.settings()).map_err(|e| BusError::Config(e.to_string()))?;
        let commands = redis
            .publisher()
            .map_err(|e| BusError::Config(e.to_string()))?;
        Ok(StreamsBus {
            pubsub,
            redis,
            commands,
            options: config.streams_options(),
            timeout: Duration::from_millis(config.publish_timeout_ms),
            backoff: (
                Duration::from_millis(config.reconnect_min_ms),
                Duration::from_millis(config.reconnect_max_ms),
            ),
            metrics,
        })
    }

    pub(super) fn pubsub(&self) -> &RedisBus {
        &self.pubsub
    }

    /// The bus state for `/readyz`: the pub/sub subscription's.
    pub(super) fn status(&self) -> BusStatus {
        BusStatus {
            mode: "streams",
            ..self.pubsub.status()
        }
    }

    /// Subscribes (pub/sub part) and starts one reader per stream Node
    /// servers read (`redis.stream_name`, or `<stream_name>-0..n-1`).
    pub(super) fn start(
        &self,
        handler: Arc<dyn BusHandler>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let pubsub = self.pubsub.start(handler.clone(), shutdown.clone());
        let mut readers = Vec::new();
        for stream in self.options.read_streams() {
            // A connection of its own: XREAD BLOCK would hold up every
            // command queued behind it on a shared one.
            let conn = match self.redis.publisher() {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::error!(%e, stream, "cannot build the stream reader's connection");
                    continue;
                }
            };
            let reader = Reader {
                stream,
                conn,
                handler: handler.clone(),
                // Below the connection's timeout, which bounds every call.
                block_ms: (self.timeout.as_millis() as u64 / 2).clamp(1, 5_000),
                backoff: self.backoff,
                metrics: self.metrics.clone(),
            };
            let shutdown = shutdown.clone();
            readers.push(tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = reader.run() => {}
                }
            }));
        }
        tokio::spawn(async move {
            let _ = pubsub.await;
            for r in readers {
                let _ = r.await;
            }
        })
    }

    /// `XADD <stream> MAXLEN ~ <n> * uid .. nsp .. type .. data ..`; the new
    /// entry's id. A failure that may be temporary (connection lost, Redis
    /// restarting) is retried with a short backoff until
    /// `redis.publish_timeout_ms` has passed; only then is it an error. A
    /// retry after a connection that broke mid-call may append the entry
    /// twice (at-least-once; the reply was lost, not the command).
    pub async fn xadd(&self, xadd: &XAdd) -> Result<String, BusError> {
        self.pubsub.record_publish(
            self.commands
                .xadd(&xadd.args()[1..])
                .await
                .map_err(|e| self.error(e)),
        )
    }

    /// XADDs a classic broadcast (the HTTP API's) in the adapter's format,
    /// under its own uid (so every gateway, this one included, and every
    /// Node server delivers it from the stream); the entry id.
    pub async fn publish_broadcast(
        &self,
        msg: &switchboard_wire::BroadcastMessage,
    ) -> Result<String, BusError> {
        let cluster = switchboard_wire::ClusterMessage::new(
            msg.uid.clone(),
            msg.packet.nsp.clone(),
            switchboard_wire::ClusterBody::Broadcast(
                switchboard_wire::cluster::ClusterBroadcast::new(
                    msg.packet.data.clone(),
                    msg.opts.clone(),
                ),
            ),
        );
        match self.options.encode_message(&cluster) {
            switchboard_wire::streams::Outgoing::Xadd(xadd) => self.xadd(&xadd).await,
            switchboard_wire::streams::Outgoing::Publish { .. } => Err(BusError::Config(
                "a broadcast without acks always goes to the stream".into(),
            )),
        }
    }

    /// `XRANGE <stream> <start> + COUNT <count>`: one page of entries.
    pub async fn xrange(
        &self,
        stream: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BusError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(stream).arg(start).arg("+").arg("COUNT").arg(count);
        let value: Value = self.commands.query(&cmd).await.map_err(|e| self.error(e))?;
        entries(value).ok_or_else(|| BusError::Command("unexpected reply to XRANGE".into()))
    }

    /// Whether `id` is still in `stream` (`XRANGE <id> <id>`).
    pub async fn has_entry(&self, stream: &str, id: &str) -> Result<bool, BusError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(stream).arg(id).arg(id);
        let value: Value = self.commands.query(&cmd).await.map_err(|e| self.error(e))?;
        Ok(entries(value).is_some_and(|e| !e.is_empty()))
    }

    /// `SET <key> <record> PX <ttl_ms>`.
    pub async fn save_session(&self, key: &str, record: &str, ttl_ms: u64) -> Result<(), BusError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(record).arg("PX").arg(ttl_ms);
        let _: Value = self.commands.query(&cmd).await.map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Reads and deletes a session in one step (`GETDEL`, what the
    /// adapter's `MULTI GET DEL` does): a session is restored at most once.
    pub async fn take_session(&self, key: &str) -> Result<Option<Vec<u8>>, BusError> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(key);
        let value: Value = self.commands.query(&cmd).await.map_err(|e| self.error(e))?;
        Ok(match value {
            Value::BulkString(b) => Some(b),
            Value::SimpleString(s) => Some(s.into_bytes()),
            _ => None,
        })
    }

    /// Deletes a session (the socket left for good).
    pub async fn delete_session(&self, key: &str) -> Result<(), BusError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        let _: Value = self.commands.query(&cmd).await.map_err(|e| self.error(e))?;
        Ok(())
    }

    fn error(&self, e: switchboard_redis::Error) -> BusError {
        match e {
            switchboard_redis::Error::Timeout { .. } => {
                BusError::Timeout(self.timeout.as_millis() as u64)
            }
            switchboard_redis::Error::Server { .. } => BusError::Command(e.to_string()),
            other => BusError::Unreachable(other.to_string()),
        }
    }
}

/// One stream's reader.
struct Reader {
    stream: String,
    conn: Publisher,
    handler: Arc<dyn BusHandler>,
    block_ms: u64,
    backoff: (Duration, Duration),
    metrics: Metrics,
}

/// What the reader knows about the stream, to tell a gap from a quiet time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct StreamInfo {
    /// `max-deleted-entry-id`: every entry up to it was trimmed or deleted.
    max_deleted: StreamId,
    /// `entries-added`: how many entries the stream ever had.
    entries_added: u64,
}

/// How the reader lost entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gap {
    /// Trimmed (MAXLEN) after the last entry read, before it was read.
    Trimmed,
    /// The stream is gone or was recreated (Redis restarted without
    /// persistence, `DEL`).
    Reset,
}

impl Gap {
    fn label(self) -> &'static str {
        match self {
            Gap::Trimmed => "trimmed",
            Gap::Reset => "reset",
        }
    }
}

/// Whether entries after `last` were lost, from what `XINFO STREAM` says
/// now (`None`: the stream does not exist) and said before.
fn gap(last: StreamId, before: Option<StreamInfo>, now: Option<StreamInfo>) -> Option<Gap> {
    match (before, now) {
        (Some(_), None) => Some(Gap::Reset),
        (Some(b), Some(n)) if n.entries_added < b.entries_added => Some(Gap::Reset),
        (_, Some(n)) if n.max_deleted > last => Some(Gap::Trimmed),
        _ => None,
    }
}

impl Reader {
    async fn run(self) {
        let mut delay = self.backoff.0;
        // Where to start: the newest entry now (what `$` means), but as an
        // id, so that the first read after an error does not skip anything.
        let mut last = loop {
            match self.newest().await {
                Ok(id) => break id,
                Err(e) => {
                    tracing::warn!(%e, stream = self.stream, "cannot read the stream yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.backoff.1);
                }
            }
        };
        let mut info = self.info().await.ok().flatten();
        let mut check = false;
        tracing::info!(stream = self.stream, from = %last, "reading the stream");
        loop {
            if check {
                match self.info().await {
                    Ok(now) => {
                        if let Some(gap) = gap(last, info, now) {
                            self.metrics
                                .stream_lost
                                .with_label_values(&[gap.label()])
                                .inc();
                            tracing::warn!(stream = self.stream, after = %last, reason = gap.label(), "stream entries were lost before this gateway read them");
                            if gap == Gap::Reset {
                                last = StreamId::default();
                            }
                        }
                        info = now;
                        check = false;
                    }
                    Err(e) => {
                        tracing::debug!(%e, stream = self.stream, "XINFO failed");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(self.backoff.1);
                        continue;
                    }
                }
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(self.block_ms)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(last.to_string());
            match self.conn.query::<Value>(&cmd).await {
                Ok(value) => {
                    delay = self.backoff.0;
                    let Some(batch) = read_reply(value) else {
                        tracing::warn!(stream = self.stream, "unexpected XREAD reply; ignored");
                        continue;
                    };
                    // A full batch: the reader is behind; make sure nothing
                    // was trimmed under it before reading on.
                    check = batch.len() >= READ_COUNT;
                    for entry in batch {
                        if let Ok(id) = entry.id.parse::<StreamId>() {
                            last = last.max(id);
                        }
                        self.handler.on_stream_entry(&self.stream, &entry);
                    }
                }
                Err(e) => {
                    tracing::warn!(%e, stream = self.stream, resume_from = %last, "XREAD failed; resuming from the last entry read");
                    check = true;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.backoff.1);
                }
            }
        }
    }

    /// The id of the newest entry (`0-0` for an empty or missing stream).
    async fn newest(&self) -> Result<StreamId, switchboard_redis::Error> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(&self.stream).arg("+").arg("-").arg("COUNT").arg(1);
        let value: Value = self.conn.query(&cmd).await?;
        Ok(entries(value)
            .and_then(|e| e.into_iter().next())
            .and_then(|e| e.id.parse().ok())
            .unwrap_or_default())
    }

    /// `XINFO STREAM`; `None` when the stream does not exist.
    async fn info(&self) -> Result<Option<StreamInfo>, switchboard_redis::Error> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("STREAM").arg(&self.stream);
        match self.conn.query::<Value>(&cmd).await {
            Ok(value) => Ok(Some(parse_info(&value))),
            Err(e) if e.to_string().contains("no such key") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `XINFO STREAM` fields, from a RESP3 map or a RESP2 flat array.
fn parse_info(value: &Value) -> StreamInfo {
    let pairs: Vec<(&Value, &Value)> = match value {
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|c| Some((c.first()?, c.get(1)?)))
            .collect(),
        _ => Vec::new(),
    };
    let mut info = StreamInfo::default();
    for (k, v) in pairs {
        match text(k).as_deref() {
            Some("max-deleted-entry-id") => {
                info.max_deleted = text(v).and_then(|t| t.parse().ok()).unwrap_or_default();
            }
            Some("entries-added") => {
                info.entries_added = match v {
                    Value::Int(n) => (*n).max(0) as u64,
                    other => text(other).and_then(|t| t.parse().ok()).unwrap_or(0),
                };
            }
            _ => {}
        }
    }
    info
}

/// One entry `[id, [field, value, ...]]`.
fn entry(value: Value) -> Option<StreamEntry> {
    let Value::Array(mut parts) = value else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let raw = parts.pop()?;
    let id = text(&parts.pop()?)?;
    let bytes = |v: Value| match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    };
    let flat: Vec<Value> = match raw {
        Value::Array(a) => a,
        Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Nil => Vec::new(),
        _ => return None,
    };
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        fields.push((bytes(k)?, bytes(v)?));
    }
    Some(StreamEntry { id, fields })
}

/// The entries of an `XRANGE` / `XREVRANGE` reply.
fn entries(value: Value) -> Option<Vec<StreamEntry>> {
    match value {
        Value::Array(items) => items.into_iter().map(entry).collect(),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// The entries of an `XREAD` reply for one stream (nil: none arrived in
/// time); RESP3 `{key: entries}` or RESP2 `[[key, entries]]`.
fn read_reply(value: Value) -> Option<Vec<StreamEntry>> {
    match value {
        Value::Nil => Some(Vec::new()),
        Value::Map(streams) => {
            let mut out = Vec::new();
            for (_, v) in streams {
                out.extend(entries(v)?);
            }
            Some(out)
        }
        Value::Array(streams) => {
            let mut out = Vec::new();
            for s in streams {
                let Value::Array(mut kv) = s else {
                    return None;
                };
                let v = kv.pop()?;
                out.extend(entries(v)?);
            }
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn id(s: &str) -> StreamId {
        s.parse().unwrap()
    }

    #[test]
    fn replies_in_resp2_and_resp3() {
        let one = || {
            Value::Array(vec![
                bulk("5-1"),
                Value::Array(vec![bulk("uid"), bulk("a"), bulk("nsp"), bulk("/")]),
            ])
        };
        let want = StreamEntry {
            id: "5-1".into(),
            fields: vec![
                (b"uid".to_vec(), b"a".to_vec()),
                (b"nsp".to_vec(), b"/".to_vec()),
            ],
        };
        let resp3 = Value::Map(vec![(bulk("socket.io"), Value::Array(vec![one()]))]);
        assert_eq!(read_reply(resp3).unwrap(), vec![want.clone()]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("socket.io"),
            Value::Array(vec![one()]),
        ])]);
        assert_eq!(read_reply(resp2).unwrap(), vec![want.clone()]);
        assert_eq!(read_reply(Value::Nil).unwrap(), vec![]);
        assert_eq!(entries(Value::Array(vec![one()])).unwrap(), vec![want]);
        assert!(read_reply(Value::Int(1)).is_none());
    }

    #[test]
    fn info_and_gaps() {
        let info = parse_info(&Value::Map(vec![
            (bulk("length"), Value::Int(3)),
            (bulk("max-deleted-entry-id"), bulk("7-0")),
            (bulk("entries-added"), Value::Int(10)),
        ]));
        assert_eq!(
            info,
            StreamInfo {
                max_deleted: id("7-0"),
                entries_added: 10
            }
        );
        // Caught up past the trimmed entries: no gap.
        assert_eq!(gap(id("8-0"), Some(info), Some(info)), None);
        // Trimmed after the last entry read.
        assert_eq!(gap(id("6-5"), Some(info), Some(info)), Some(Gap::Trimmed));
        // Stream gone, or recreated with fewer entries ever added.
        assert_eq!(gap(id("8-0"), Some(info), None), Some(Gap::Reset));
        let recreated = StreamInfo {
            entries_added: 2,
            ..Default::default()
        };
        assert_eq!(
            gap(id("8-0"), Some(info), Some(recreated)),
            Some(Gap::Reset)
        );
        // Nothing known before and nothing now: a stream not written yet.
        assert_eq!(gap(StreamId::default(), None, None), None);
    }
}
