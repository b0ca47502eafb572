//! How gateways behind one load balancer find each other, so that no
//! sticky sessions are needed.
//!
//! Each gateway claims a short random tag in the [`PeerDirectory`] (a Redis
//! hash of tag -> internal `host:port`, each entry kept alive by its owner)
//! and starts every Engine.IO sid with that tag. A polling request or
//! websocket upgrade that lands on the wrong gateway names its owner in the
//! sid; the gateway finds the owner in its in-memory copy of the directory
//! and forwards the request there (see `engine::forward`). A sid that
//! does not parse, or whose owner is not in the directory, gets the normal
//! "Session ID unknown" without any Redis traffic.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use engineioxide_core::Sid;
use tokio_util::sync::CancellationToken;

use crate::{
    bus::{Bus, BusError},
    metrics::Metrics,
    peer_directory::PeerDirectory,
};

/// Characters of a sid that name the owning gateway.
pub const TAG_LEN: usize = 4;

/// This gateway's identity among its peers, and the peer directory.
pub struct Cluster {
    tag: String,
    advertise: SocketAddr,
    bus: Arc<Bus>,
    directory: PeerDirectory,
    /// When peers will all know this gateway's tag (see [`Cluster::announced`]).
    announced_at: Instant,
}

/// Slack on top of one directory refresh for a peer's refresh in flight.
const ANNOUNCE_MARGIN: Duration = Duration::from_millis(250);

fn random_tag() -> String {
    Sid::new().as_str()[..TAG_LEN].to_string()
}

/// Who owns a sid, as far as this gateway can tell without asking anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// This gateway (the session may still be gone).
    Local,
    /// A live peer, reachable at this address.
    Peer(SocketAddr),
    /// No live gateway holds the sid's tag.
    Unknown,
}

impl Cluster {
    /// Claims a tag no peer holds, registers this gateway's address and
    /// loads the directory.
    pub async fn join(
        bus: Arc<Bus>,
        key: &str,
        advertise: SocketAddr,
        metrics: &Metrics,
    ) -> Result<Cluster, BusError> {
        let directory = PeerDirectory::new(key, metrics.peer_directory_entries.clone());
        for _ in 0..16 {
            let tag = random_tag();
            if directory.claim(&bus, &tag, advertise).await? {
                directory.refresh(&bus, &tag, advertise).await?;
                tracing::info!(tag, %advertise, peers = directory.len(), "registered with peers for sid forwarding");
                // Peers read the directory every REFRESH: until each has read
                // it once, a request for one of our sids that lands on a peer
                // would get "Session ID unknown". Alone, nobody has to learn.
                let wait = if directory.len() > 1 {
                    PeerDirectory::REFRESH + ANNOUNCE_MARGIN
                } else {
                    Duration::ZERO
                };
                return Ok(Cluster {
                    tag,
                    advertise,
                    bus,
                    directory,
                    announced_at: Instant::now() + wait,
                });
            }
        }
        Err(BusError::Command("could not claim an instance tag".into()))
    }

    /// Whether every live peer has read this gateway's registration, so a
    /// request for one of its sids can land on any gateway. Readiness waits
    /// for it: a load balancer that routes by `/readyz` never hands this
    /// gateway a client whose next request a peer could not forward.
    pub fn announced(&self) -> bool {
        Instant::now() >= self.announced_at
    }

    /// The tag every sid of this gateway starts with.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// A new sid owned by this gateway.
    pub fn new_sid(&self) -> Sid {
        let random = Sid::new();
        let text = format!("{}{}", self.tag, &random.as_str()[TAG_LEN..]);
        // The tag comes from a Sid, so the result is valid base64url.
        text.parse().unwrap_or(random)
    }

    /// The owner of a parsed sid, answered from memory.
    pub fn owner(&self, sid: &Sid) -> Owner {
        let tag = &sid.as_str()[..TAG_LEN];
        if tag == self.tag {
            return Owner::Local;
        }
        match self.directory.lookup(tag) {
            Some(addr) => Owner::Peer(addr),
            None => Owner::Unknown,
        }
    }

    /// Keeps the registration and the directory fresh until `shutdown`,
    /// then removes the registration so that peers stop forwarding here at
    /// their next refresh. The caller awaits this (bounded) on shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // A Redis outage fails every refresh; say so once, and when it ends.
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(PeerDirectory::REFRESH) => {
                    match self.directory.refresh(&self.bus, &self.tag, self.advertise).await {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!(peers = self.directory.len(), "peer directory refreshed again");
                        }
                        Ok(()) => {}
                        Err(err) if !failing => {
                            failing = true;
                            tracing::warn!(%err, "could not refresh the peer directory; keeping the last one");
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        match self.directory.deregister(&self.bus, &self.tag).await {
            Ok(()) => tracing::info!(tag = %self.tag, "de-registered from peers"),
            Err(err) => {
                tracing::warn!(%err, "could not de-register from peers; they forget this gateway after the TTL")
            }
        }
    }
}
