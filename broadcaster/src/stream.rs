//! Consuming the client events a gateway forwards onto a Redis stream
//! (`[[client.forward]] stream = "socket.io-upstream"`), with a consumer
//! group: every event is handled at least once by one of the group's
//! workers.
//!
//! Each gateway appends `XADD <stream> MAXLEN ~ <n> * event <name> data
//! <ClientEvent JSON>`. A [`StreamConsumer`] reads new entries with
//! `XREADGROUP`, acknowledges (`XACK`) the ones its handler finished, and
//! first claims (`XAUTOCLAIM`) entries another worker read but did not
//! acknowledge for `claim_idle` (a worker that died mid-event), so nothing
//! stays pending forever.
//!
//! ```no_run
//! use switchboard_broadcaster::{RedisSettings, stream::{StreamConsumer, StreamConsumerConfig}};
//!
//! # async fn run() -> Result<(), switchboard_broadcaster::PublishError> {
//! let consumer = StreamConsumer::new(
//!     &RedisSettings::from_url("redis://127.0.0.1:6379"),
//!     StreamConsumerConfig::new("socket.io-upstream", "tickets", "worker-1"),
//! )?;
//! consumer.create_group().await?;
//! consumer
//!     .run(std::future::pending::<()>(), |entry| async move {
//!         let event = entry.event.map_err(|e| e.to_string())?;
//!         println!("{} from user {:?}: {:?}", event.event, event.user, event.args);
//!         Ok::<(), String>(()) // Ok: acknowledged; Err: left pending, retried after claim_idle
//!     })
//!     .await
//! # }
//! ```

use std::{future::Future, time::Duration};

use redis::Value;
pub use switchboard_wire::client_event::ClientEvent;
use switchboard_wire::client_event::{STREAM_DATA_FIELD, STREAM_EVENT_FIELD};

use crate::{PublishError, RedisSettings};
use switchboard_redis::{Publisher, Redis};

/// Settings of a [`StreamConsumer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConsumerConfig {
    /// The stream key (`[[client.forward]] stream` of the gateways).
    pub stream: String,
    /// The consumer group: workers of one group share the events.
    pub group: String,
    /// This worker's name in the group (unique per worker).
    pub consumer: String,
    /// Most entries read or claimed at once.
    pub count: usize,
    /// How long one `XREADGROUP` waits for new entries.
    pub block: Duration,
    /// Entries pending (read, not acknowledged) longer than this are claimed
    /// from whichever worker holds them.
    pub claim_idle: Duration,
}

impl StreamConsumerConfig {
    /// Defaults: 16 entries at once, 2 s blocking reads, 30 s before a
    /// pending entry is claimed.
    pub fn new(
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        StreamConsumerConfig {
            stream: stream.into(),
            group: group.into(),
            consumer: consumer.into(),
            count: 16,
            block: Duration::from_secs(2),
            claim_idle: Duration::from_secs(30),
        }
    }
}

/// One stream entry.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    /// The entry id (`1700000000000-0`), what [`StreamConsumer::ack`] takes.
    pub id: String,
    /// The forwarded event, or why the entry is not one (it is still
    /// acknowledged by [`StreamConsumer::run`] if the handler says so).
    pub event: Result<ClientEvent, String>,
    /// True when the entry was claimed after another delivery was not
    /// acknowledged in time (a retry), false for a first read.
    pub claimed: bool,
}

/// A worker of a consumer group on the gateways' client-event stream.
#[derive(Debug)]
pub struct StreamConsumer {
    /// Its own connection: a blocking read holds it.
    publisher: Publisher,
    config: StreamConsumerConfig,
}

impl StreamConsumer {
    /// A consumer on its own Redis connection (opened on first use).
    pub fn new(redis: &RedisSettings, config: StreamConsumerConfig) -> Result<Self, PublishError> {
        if config.count == 0 || config.stream.is_empty() || config.group.is_empty() {
            return Err(PublishError::Config(
                "stream, group and a count > 0 are required".into(),
            ));
        }
        let mut settings = redis.clone();
        // A blocking read is a command that legitimately waits `block`.
        let block_ms = u64::try_from(config.block.as_millis()).unwrap_or(u64::MAX);
        settings.timeout_ms = settings.timeout_ms.max(1).saturating_add(block_ms);
        let redis = Redis::new(&settings).map_err(|e| PublishError::Config(e.to_string()))?;
        let publisher = redis
            .publisher()
            .map_err(|e| PublishError::Config(e.to_string()))?;
        Ok(StreamConsumer { publisher, config })
    }

    /// The settings.
    pub fn config(&self) -> &StreamConsumerConfig {
        &self.config
    }

    /// Creates the group (and the stream) if missing, reading from the
    /// stream's beginning: entries written before the first worker started
    /// are not lost.
    pub async fn create_group(&self) -> Result<(), PublishError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg("0")
            .arg("MKSTREAM");
        match self.publisher.query::<Value>(&cmd).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Entries other workers (or this one) left pending longer than
    /// `claim_idle`, now owned by this worker (`XAUTOCLAIM`).
    pub async fn claim_stale(&self) -> Result<Vec<StreamEntry>, PublishError> {
        let idle_ms = u64::try_from(self.config.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(&self.config.consumer)
            .arg(idle_ms)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.config.count);
        let reply: Value = self.publisher.query(&cmd).await?;
        // [next cursor, [entries], [deleted ids]]
        let entries = match &reply {
            Value::Array(parts) => parts.get(1).map(entries).unwrap_or_default(),
            _ => Vec::new(),
        };
        Ok(entries
            .into_iter()
            .map(|mut e| {
                e.claimed = true;
                e
            })
            .collect())
    }

    /// New entries for this group (`XREADGROUP ... >`), waiting up to `block`.
    pub async fn read_new(&self) -> Result<Vec<StreamEntry>, PublishError> {
        let block_ms = u64::try_from(self.config.block.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.config.group)
            .arg(&self.config.consumer)
            .arg("COUNT")
            .arg(self.config.count)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.config.stream)
            .arg(">");
        let reply: Value = self.publisher.query(&cmd).await?;
        // RESP3: {stream: entries}; RESP2: [[stream, entries]]; nil on timeout.
        Ok(match reply {
            Value::Map(streams) => streams.iter().flat_map(|(_, list)| entries(list)).collect(),
            Value::Array(streams) => streams
                .iter()
                .filter_map(|s| match s {
                    Value::Array(pair) => pair.get(1).map(entries),
                    _ => None,
                })
                .flatten()
                .collect(),
            _ => Vec::new(),
        })
    }

    /// The next entries to handle: stale ones first, else new ones.
    pub async fn next_batch(&self) -> Result<Vec<StreamEntry>, PublishError> {
        let stale = self.claim_stale().await?;
        if !stale.is_empty() {
            return Ok(stale);
        }
        self.read_new().await
    }

    /// Acknowledges entries (`XACK`): they will not be delivered again.
    pub async fn ack(&self, ids: &[&str]) -> Result<u64, PublishError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.config.stream).arg(&self.config.group);
        for id in ids {
            cmd.arg(*id);
        }
        Ok(self.publisher.query(&cmd).await?)
    }

    /// Handles entries until `stop` completes: each entry's handler runs to
    /// completion, then the entry is acknowledged if it returned `Ok`. An
    /// `Err` leaves the entry pending, so it is delivered again after
    /// `claim_idle`. Redis errors are returned.
    pub async fn run<S, F, Fut, E>(&self, stop: S, mut handler: F) -> Result<(), PublishError>
    where
        S: Future<Output = ()>,
        F: FnMut(StreamEntry) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        tokio::pin!(stop);
        loop {
            let batch = tokio::select! {
                _ = &mut stop => return Ok(()),
                batch = self.next_batch() => batch?,
            };
            for entry in batch {
                let id = entry.id.clone();
                if handler(entry).await.is_ok() {
                    self.ack(&[&id]).await?;
                }
            }
        }
    }
}

/// Entries of a reply: `[[id, [field, value, ...]], ...]`.
fn entries(list: &Value) -> Vec<StreamEntry> {
    let Value::Array(items) = list else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id = text(pair.first()?)?;
            let fields = match pair.get(1) {
                Some(Value::Array(f)) => f.as_slice(),
                // An entry deleted (trimmed) while pending has nil fields.
                _ => &[],
            };
            Some(StreamEntry {
                id,
                event: parse_fields(fields),
                claimed: false,
            })
        })
        .collect()
}

fn parse_fields(fields: &[Value]) -> Result<ClientEvent, String> {
    let mut data = None;
    let mut name = None;
    for kv in fields.chunks(2) {
        if let [k, v] = kv {
            match text(k).as_deref() {
                Some(STREAM_DATA_FIELD) => data = text(v),
                Some(STREAM_EVENT_FIELD) => name = text(v),
                _ => {}
            }
        }
    }
    let data = data.ok_or_else(|| format!("no `{STREAM_DATA_FIELD}` field (event {name:?})"))?;
    serde_json::from_str(&data)
        .map_err(|e| format!("`{STREAM_DATA_FIELD}` is not a client event: {e}"))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_entries() {
        let data = r#"{"event":"e","args":[1],"user":"u","claims":{},"socket":"s","nsp":"/","rooms":[],"gateway":"g"}"#;
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("event"), bulk("e"), bulk("data"), bulk(data)]),
            ]),
            Value::Array(vec![bulk("2-0"), Value::Nil]),
            Value::Array(vec![
                bulk("3-0"),
                Value::Array(vec![bulk("data"), bulk("nope")]),
            ]),
        ]);
        let got = entries(&reply);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].id, "1-0");
        let event = got[0].event.as_ref().unwrap();
        assert_eq!(
            (event.event.as_str(), event.user.as_deref()),
            ("e", Some("u"))
        );
        assert!(got[1].event.is_err());
        assert!(
            got[2]
                .event
                .as_ref()
                .unwrap_err()
                .contains("not a client event")
        );
    }
}
