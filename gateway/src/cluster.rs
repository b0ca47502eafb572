//! How gateways behind one load balancer find each other, so that no
//! sticky sessions are needed.
//!
//! Each gateway claims a short random tag in Redis
//! (`<key>-switchboard#instance#<tag>` -> its internal `host:port`, with a
//! TTL it keeps refreshing) and starts every Engine.IO sid with that tag. A
//! polling request or websocket upgrade that lands on the wrong gateway
//! names its owner in the sid; the gateway looks the owner up and forwards
//! the request there (see `transport::forward`). A sid whose owner is gone
//! gets the normal "Session ID unknown".

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use engineioxide_core::Sid;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusError};

/// Characters of a sid that name the owning gateway.
pub const TAG_LEN: usize = 4;
/// How long a registration lives without a refresh.
const TTL: Duration = Duration::from_secs(15);
/// How often a gateway refreshes its registration.
const REFRESH: Duration = Duration::from_secs(5);
/// How long a looked-up owner address is trusted without asking Redis.
const CACHE_FOR: Duration = Duration::from_secs(5);

/// This gateway's identity among its peers, and the peer directory.
pub struct Cluster {
    tag: String,
    advertise: SocketAddr,
    key_prefix: String,
    bus: Arc<Bus>,
    cache: Mutex<HashMap<String, (Option<SocketAddr>, Instant)>>,
}

fn random_tag() -> String {
    Sid::new().as_str()[..TAG_LEN].to_string()
}

impl Cluster {
    /// Claims a tag no live peer holds and registers this gateway's address.
    pub async fn join(
        bus: Arc<Bus>,
        key: &str,
        advertise: SocketAddr,
    ) -> Result<Cluster, BusError> {
        let key_prefix = format!("{key}-switchboard#instance#");
        let mut attempts = 0;
        loop {
            let tag = random_tag();
            let claimed: Option<String> = bus
                .command(
                    redis::cmd("SET")
                        .arg(format!("{key_prefix}{tag}"))
                        .arg(advertise.to_string())
                        .arg("NX")
                        .arg("EX")
                        .arg(TTL.as_secs())
                        .clone(),
                )
                .await?;
            if claimed.is_some() {
                tracing::info!(tag, %advertise, "registered with peers for sid forwarding");
                return Ok(Cluster {
                    tag,
                    advertise,
                    key_prefix,
                    bus,
                    cache: Mutex::new(HashMap::new()),
                });
            }
            attempts += 1;
            if attempts > 16 {
                return Err(BusError::Command("could not claim an instance tag".into()));
            }
        }
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

    /// The owner tag of a sid, if it is not this gateway.
    pub fn foreign_owner<'a>(&self, sid: &'a str) -> Option<&'a str> {
        let tag = sid.get(..TAG_LEN)?;
        (tag != self.tag).then_some(tag)
    }

    /// The internal address of the gateway with `tag`, if it is alive.
    pub async fn lookup(&self, tag: &str) -> Option<SocketAddr> {
        if let Some((addr, at)) = self.cache.lock().get(tag)
            && at.elapsed() < CACHE_FOR
        {
            return *addr;
        }
        let found: Option<String> = self
            .bus
            .command(
                redis::cmd("GET")
                    .arg(format!("{}{tag}", self.key_prefix))
                    .clone(),
            )
            .await
            .ok()
            .flatten();
        let addr = found.and_then(|a| a.parse().ok());
        self.cache
            .lock()
            .insert(tag.to_string(), (addr, Instant::now()));
        addr
    }

    /// Forgets a cached owner that did not answer.
    pub fn forget(&self, tag: &str) {
        self.cache.lock().remove(tag);
    }

    /// Refreshes the registration until `shutdown`, then removes it so that
    /// peers stop forwarding here at once.
    pub fn spawn_refresh(self: &Arc<Self>, shutdown: CancellationToken) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let key = format!("{}{}", cluster.key_prefix, cluster.tag);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(REFRESH) => {
                        let set = cluster
                            .bus
                            .command::<Option<String>>(
                                redis::cmd("SET")
                                    .arg(&key)
                                    .arg(cluster.advertise.to_string())
                                    .arg("EX")
                                    .arg(TTL.as_secs())
                                    .clone(),
                            )
                            .await;
                        if let Err(err) = set {
                            tracing::warn!(%err, "could not refresh the instance registration");
                        }
                    }
                }
            }
            let _ = cluster
                .bus
                .command::<i64>(redis::cmd("DEL").arg(&key).clone())
                .await;
        });
    }
}
