//! The live gateways of one deployment, by sid tag, kept in memory.
//!
//! Every gateway writes its own entry into one Redis hash,
//! `<key>-switchboard#peers` (field: its tag, value: `<host:port>
//! <expiry in Unix ms>`), and reads the whole hash back, every
//! [`PeerDirectory::REFRESH`]. Forwarding then answers "who owns this sid?"
//! from memory: a request never causes a Redis command, whatever its sid, so
//! a flood of made-up sids cannot be turned into Redis traffic, and the map
//! holds only what the hash holds (at most [`PeerDirectory::MAX_PEERS`]), so
//! it cannot be grown from outside either.
//!
//! One hash rather than one key per gateway: a single-key command per
//! refresh (`HSET`, `HGETALL`, `HDEL`) works unchanged on Redis Cluster (no
//! `SCAN` across nodes, no multi-key command), and the directory is one
//! round trip. Entries expire by their own timestamp (Redis 7.0 has no
//! per-field TTL), so the gateways' clocks must agree to within a few
//! seconds (NTP); an entry past its expiry is ignored at once and removed
//! from the hash by whichever gateway sees it after a grace period.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use parking_lot::RwLock;
use prometheus::IntGauge;

use crate::bus::{Bus, BusError};

/// A periodically refreshed, bounded map from a peer's sid tag to the
/// address it is reached at; see the module documentation.
pub struct PeerDirectory {
    /// The Redis hash every gateway registers in.
    key: String,
    /// Live peers (this gateway included) as of the last refresh.
    peers: RwLock<HashMap<String, SocketAddr>>,
    /// `switchboard_peer_directory_entries`.
    size: IntGauge,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The hash value of an entry: `<addr> <expiry ms>`.
fn entry(addr: SocketAddr, ttl: Duration) -> String {
    format!("{addr} {}", now_ms().saturating_add(ttl.as_millis() as u64))
}

/// Parses an entry; `None` for one that is malformed (written by something
/// else), which the refresh then removes.
fn parse_entry(value: &str) -> Option<(SocketAddr, u64)> {
    let (addr, expiry) = value.split_once(' ')?;
    Some((addr.parse().ok()?, expiry.parse().ok()?))
}

impl PeerDirectory {
    /// How often each gateway rewrites its entry and re-reads the hash. A
    /// new gateway's sids are forwarded by its peers within this long.
    pub const REFRESH: Duration = Duration::from_secs(1);
    /// How long an entry counts as live without a refresh: a gateway that
    /// died without de-registering is forgotten after this.
    pub const TTL: Duration = Duration::from_secs(10);
    /// Entries expired for longer than this are deleted from the hash.
    const PRUNE_AFTER: Duration = Duration::from_secs(60);
    /// The most peers kept; a hash with more (a misconfiguration, or a
    /// shared Redis written by something else) is cut here, with a warning.
    pub const MAX_PEERS: usize = 1024;

    /// An empty directory over the hash of deployment `key`.
    pub fn new(key: &str, size: IntGauge) -> PeerDirectory {
        size.set(0);
        PeerDirectory {
            key: format!("{key}-switchboard#peers"),
            peers: RwLock::new(HashMap::new()),
            size,
        }
    }

    /// Claims `tag` for `addr` if no entry holds it (`HSETNX`); false if
    /// one does, live or not, and the caller picks another tag.
    pub async fn claim(&self, bus: &Bus, tag: &str, addr: SocketAddr) -> Result<bool, BusError> {
        bus.registry_claim(&self.key, tag, &entry(addr, Self::TTL))
            .await
    }

    /// Rewrites this gateway's entry, then reloads the directory from the
    /// hash and prunes long-dead entries. A failed refresh keeps the last
    /// known directory (peers keep being reached during a Redis blip).
    pub async fn refresh(&self, bus: &Bus, tag: &str, addr: SocketAddr) -> Result<(), BusError> {
        bus.registry_write(&self.key, tag, &entry(addr, Self::TTL))
            .await?;
        let all = bus.registry_entries(&self.key).await?;
        let now = now_ms();
        let prune_before = now.saturating_sub(Self::PRUNE_AFTER.as_millis() as u64);
        let mut live = HashMap::new();
        let mut dead = Vec::new();
        let mut left_out = 0usize;
        for (peer_tag, value) in all {
            match parse_entry(&value) {
                Some((peer_addr, expiry)) if expiry > now => {
                    if live.len() < Self::MAX_PEERS || peer_tag == tag {
                        live.insert(peer_tag, peer_addr);
                    } else {
                        left_out += 1;
                    }
                }
                Some((_, expiry)) if expiry > prune_before => {}
                _ => dead.push(peer_tag),
            }
        }
        if left_out > 0 {
            tracing::warn!(
                key = %self.key,
                max = Self::MAX_PEERS,
                left_out,
                "peer directory full; the peers left out are not forwarded to"
            );
        }
        bus.registry_remove(&self.key, &dead).await?;
        self.size.set(live.len() as i64);
        *self.peers.write() = live;
        Ok(())
    }

    /// Removes this gateway's entry, so peers stop forwarding here at their
    /// next refresh rather than after the TTL.
    pub async fn deregister(&self, bus: &Bus, tag: &str) -> Result<(), BusError> {
        bus.registry_remove(&self.key, &[tag.to_string()]).await
    }

    /// The address of the live peer with `tag`, from memory.
    pub fn lookup(&self, tag: &str) -> Option<SocketAddr> {
        self.peers.read().get(tag).copied()
    }

    /// Live peers known, this gateway included.
    pub fn len(&self) -> usize {
        self.peers.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_junk_is_rejected() {
        let addr: SocketAddr = "10.0.0.5:3002".parse().unwrap();
        let (parsed, expiry) = parse_entry(&entry(addr, PeerDirectory::TTL)).unwrap();
        assert_eq!(parsed, addr);
        assert!(expiry > now_ms());
        for junk in ["", "10.0.0.5:3002", "nope 123", "10.0.0.5:3002 soon"] {
            assert!(parse_entry(junk).is_none(), "{junk:?} parsed");
        }
    }
}
