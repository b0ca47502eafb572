//! Fleet queries: ask every server of a namespace (Switchboard gateways and
//! Node Socket.IO servers with `@socket.io/redis-adapter`) something over the
//! adapter's request channel and gather the answers, as a Node server's
//! `fetchSockets()` / `allRooms()` does.
//!
//! A query subscribes to the response channels (`<key>-response#<nsp>#`, and
//! `<key>-response#<nsp>#<uid>#` for servers set to answer there), counts the
//! servers with `PUBSUB NUMSUB <key>-request#<nsp>#` (what Node compares its
//! answers with), publishes the request and waits for that many answers or
//! the timeout, whichever comes first. It never waits past the timeout, and
//! it reports how many servers did not answer instead of failing.
//!
//! `status` uses Switchboard's own request type ([`Request::ServerStatus`]),
//! which Node servers ignore; they are listed instead from their
//! per-server response channels (`PUBSUB CHANNELS <key>-response#<nsp>#*`).
//! Gateways that did not answer are named from the peer directory they keep
//! for sid forwarding (the hash `<key>-switchboard#peers`): a live entry
//! whose address no answer reported.

use std::time::Duration;

use rmpv::Value;
use switchboard_redis::{Publisher, Redis};
use switchboard_wire::{
    Channels, FetchedSocket, Request, RequestOpts, Response, decode_response, encode_request,
};

use crate::PublishError;

/// What the servers of a namespace answered to one request.
#[derive(Debug, Clone)]
pub struct Gathered {
    /// Servers subscribed to the request channel when the request was sent.
    pub servers: u64,
    /// Answers that arrived within the timeout, in arrival order.
    pub responses: Vec<Response>,
    /// Servers expected to answer this request type.
    pub expected: u64,
}

impl Gathered {
    /// Expected servers that did not answer within the timeout.
    pub fn missing(&self) -> u64 {
        self.expected.saturating_sub(self.responses.len() as u64)
    }
}

/// One server's `fetchSockets` answers merged: every socket of the fleet that
/// matches, with the number of servers that answered.
#[derive(Debug, Clone)]
pub struct FleetSockets {
    /// The matching sockets.
    pub sockets: Vec<FetchedSocket>,
    /// Who answered.
    pub gathered: Gathered,
}

/// The fleet's rooms (`allRooms`): the union of every server's rooms.
#[derive(Debug, Clone)]
pub struct FleetRooms {
    /// Room names, sorted, socket ids included (as Node's `allRooms()`).
    pub rooms: Vec<String>,
    /// Who answered.
    pub gathered: Gathered,
}

/// The fleet's servers: gateways with their status, Node servers by uid.
#[derive(Debug, Clone)]
pub struct FleetStatus {
    /// Each answering gateway's status map (see docs/protocol.md).
    pub gateways: Vec<serde_json::Value>,
    /// uids of the Node adapters of the namespace (from their response channels).
    pub node_servers: Vec<String>,
    /// Gateways registered for sid forwarding (tag, address) whose address
    /// no answer reported: alive recently enough to hold their key, silent now.
    pub unanswered: Vec<(String, String)>,
    /// Who answered.
    pub gathered: Gathered,
}

/// Sends fleet requests on one namespace.
pub struct Fleet {
    redis: Redis,
    publisher: Publisher,
    channels: Channels,
    nsp: String,
    timeout: Duration,
    uid: String,
}

impl Fleet {
    /// A fleet client for namespace `nsp` with channel prefix `key`; every
    /// request waits at most `timeout` for answers.
    pub fn new(
        redis: &Redis,
        key: &str,
        nsp: &str,
        timeout: Duration,
    ) -> Result<Self, PublishError> {
        let publisher = redis
            .publisher()
            .map_err(|e| PublishError::Config(e.to_string()))?;
        Ok(Fleet {
            redis: redis.clone(),
            publisher,
            channels: Channels::new(key),
            nsp: nsp.to_string(),
            timeout,
            uid: random_id(),
        })
    }

    /// `fetchSockets()` across the fleet: sockets in any of `rooms` (every
    /// socket when empty).
    pub async fn sockets(&self, rooms: Vec<String>) -> Result<FleetSockets, PublishError> {
        let request_id = random_id();
        let request = Request::RemoteFetch {
            uid: Some(self.uid.clone()),
            request_id: request_id.clone(),
            opts: RequestOpts {
                rooms,
                except: Vec::new(),
            },
        };
        let gathered = self.ask(&request, &request_id, None).await?;
        let sockets = gathered
            .responses
            .iter()
            .flat_map(|r| match r {
                Response::FetchSockets { sockets, .. } => sockets.clone(),
                _ => Vec::new(),
            })
            .collect();
        Ok(FleetSockets { sockets, gathered })
    }

    /// `allRooms()` across the fleet.
    pub async fn rooms(&self) -> Result<FleetRooms, PublishError> {
        let request_id = random_id();
        let request = Request::AllRooms {
            uid: Some(self.uid.clone()),
            request_id: request_id.clone(),
        };
        let gathered = self.ask(&request, &request_id, None).await?;
        let mut rooms: Vec<String> = gathered
            .responses
            .iter()
            .flat_map(|r| match r {
                Response::AllRooms { rooms, .. } => rooms.clone(),
                _ => Vec::new(),
            })
            .collect();
        rooms.sort();
        rooms.dedup();
        Ok(FleetRooms { rooms, gathered })
    }

    /// Every gateway's status, and the Node servers of the namespace.
    pub async fn status(&self) -> Result<FleetStatus, PublishError> {
        let node_servers = self.node_servers().await?;
        let request_id = random_id();
        let request = Request::ServerStatus {
            uid: Some(self.uid.clone()),
            request_id: request_id.clone(),
        };
        let gathered = self
            .ask(&request, &request_id, Some(node_servers.len() as u64))
            .await?;
        let gateways: Vec<serde_json::Value> = gathered
            .responses
            .iter()
            .filter_map(|r| match r {
                Response::ServerStatus { server, .. } => {
                    Some(switchboard_wire::msgpack_to_json(server))
                }
                _ => None,
            })
            .collect();
        let unanswered = self
            .registered_gateways()
            .await?
            .into_iter()
            .filter(|(_, addr)| !gateways.iter().any(|g| g["address"] == addr.as_str()))
            .collect();
        Ok(FleetStatus {
            gateways,
            node_servers,
            unanswered,
            gathered,
        })
    }

    /// (tag, address) of every live gateway of the peer directory the
    /// gateways keep for sid forwarding: the hash `<key>-switchboard#peers`,
    /// field the tag, value `<host:port> <expiry in Unix ms>`.
    async fn registered_gateways(&self) -> Result<Vec<(String, String)>, PublishError> {
        let key = format!("{}-switchboard#peers", self.channels.key());
        let entries: Vec<(String, String)> = self
            .publisher
            .query(redis::cmd("HGETALL").arg(&key))
            .await?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut out: Vec<(String, String)> = entries
            .into_iter()
            .filter_map(|(tag, value)| {
                let (addr, expiry) = value.split_once(' ')?;
                // An expired entry is a gateway gone, not a silent one.
                let live = expiry.parse::<u128>().ok()? > now_ms;
                live.then(|| (tag, addr.to_string()))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// uids of the Node adapters of the namespace: each subscribes to its
    /// own `<key>-response#<nsp>#<uid>#`.
    async fn node_servers(&self) -> Result<Vec<String>, PublishError> {
        let generic = self.channels.response(&self.nsp);
        let pattern = format!("{}*", glob_escape(&generic));
        let channels: Vec<String> = self
            .publisher
            .query(redis::cmd("PUBSUB").arg("CHANNELS").arg(&pattern))
            .await?;
        let mut uids: Vec<String> = channels
            .iter()
            .filter_map(|c| c.strip_prefix(generic.as_str())?.strip_suffix('#'))
            .filter(|uid| !uid.is_empty() && *uid != self.uid)
            .map(str::to_string)
            .collect();
        uids.sort();
        Ok(uids)
    }

    /// Publishes `request` and gathers the answers carrying `request_id`:
    /// as many as there are servers on the request channel (minus `silent`
    /// servers known not to answer this type), or what came within the
    /// timeout.
    async fn ask(
        &self,
        request: &Request,
        request_id: &str,
        silent: Option<u64>,
    ) -> Result<Gathered, PublishError> {
        let (subscriber, mut messages) = self
            .redis
            .subscriber()
            .map_err(|e| PublishError::Config(e.to_string()))?;
        let response_channels = [
            self.channels.response(&self.nsp),
            self.channels.response_for(&self.nsp, &self.uid),
        ];
        tokio::time::timeout(self.timeout, subscriber.subscribe(&response_channels))
            .await
            .map_err(|_| self.timed_out())??;
        let request_channel = self.channels.request(&self.nsp);
        let counts: Vec<(String, u64)> = self
            .publisher
            .query(redis::cmd("PUBSUB").arg("NUMSUB").arg(&request_channel))
            .await?;
        let servers = counts.first().map_or(0, |(_, n)| *n);
        let expected = servers.saturating_sub(silent.unwrap_or(0));
        let mut responses = Vec::new();
        if expected > 0 {
            self.publisher
                .publish(&request_channel, &encode_request(request))
                .await?;
            let deadline = tokio::time::Instant::now() + self.timeout;
            while (responses.len() as u64) < expected {
                let Ok(Some(message)) = tokio::time::timeout_at(deadline, messages.recv()).await
                else {
                    break;
                };
                // Answers to other requests (Node servers asking each
                // other) share the channel: keep only ours.
                match decode_response(&message.payload) {
                    Ok(response) if response.request_id() == request_id => responses.push(response),
                    _ => {}
                }
            }
        }
        let _ = subscriber.unsubscribe(&response_channels).await;
        Ok(Gathered {
            servers,
            responses,
            expected,
        })
    }

    fn timed_out(&self) -> PublishError {
        PublishError::Timeout {
            url: self.redis.describe().to_string(),
            after: self.timeout,
            last_error: None,
        }
    }
}

/// A request or client id: 16 hex digits from the clock and the process id
/// (unique enough for one CLI invocation's requests).
fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// `s` with the glob characters of `PUBSUB CHANNELS` escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The JSON form of a fetched socket's field (handshake, data).
pub fn to_json(v: &Value) -> serde_json::Value {
    switchboard_wire::msgpack_to_json(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escape_escapes_pattern_characters() {
        assert_eq!(
            glob_escape("socket.io-response#/#"),
            "socket.io-response#/#"
        );
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_id(), random_id());
    }
}
