//! Presence queries: who is in a room, whether a user is online, read from
//! what the gateways write in Redis (`[presence]` in the gateway config;
//! layout in `switchboard_wire::presence`). Only live entries count: a
//! gateway that died stops counting once its entries' TTL has passed, even
//! before a gateway has reaped them.

use std::time::{SystemTime, UNIX_EPOCH};

pub use switchboard_wire::presence::Member;
use switchboard_wire::presence::{self as layout, merge_members, room_scope, user_scope};

use crate::{Broadcaster, PublishError};

/// Most entries one query reads.
const MAX_MEMBERS: usize = 10_000;

impl Broadcaster {
    /// The members of `room` (namespace `/`) across every gateway: user id,
    /// sockets, when they joined, the public claims. Rooms whose client rule
    /// has no `presence = true` have no members here.
    pub async fn presence(&self, room: &str) -> Result<Vec<Member>, PublishError> {
        self.presence_in("/", room).await
    }

    /// [`Broadcaster::presence`] in namespace `nsp`.
    pub async fn presence_in(&self, nsp: &str, room: &str) -> Result<Vec<Member>, PublishError> {
        self.scope_members(&room_scope(nsp, room)).await
    }

    /// The user's presence when online on any gateway (sockets summed),
    /// `None` when offline. Needs `presence.online_rooms` or
    /// `presence.track_online` on the gateways.
    pub async fn online(&self, user: &str) -> Result<Option<Member>, PublishError> {
        let members = self.scope_members(&user_scope(user)).await?;
        Ok(members.into_iter().find(|m| m.user == user))
    }

    /// Whether the user has a socket on any gateway.
    pub async fn is_online(&self, user: &str) -> Result<bool, PublishError> {
        Ok(self.online(user).await?.is_some())
    }

    async fn scope_members(&self, scope: &str) -> Result<Vec<Member>, PublishError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let keys = layout::scope_keys(&self.inner.config.key, scope);
        // EVAL rather than EVALSHA: queries are rare, and this never meets
        // a Redis that has forgotten the script.
        let flat: Vec<Vec<u8>> = self
            .inner
            .publisher
            .query(
                redis::cmd("EVAL")
                    .arg(layout::MEMBERS)
                    .arg(keys.len())
                    .arg(&keys)
                    .arg(now.to_string())
                    .arg(MAX_MEMBERS),
            )
            .await?;
        Ok(merge_members(&flat))
    }
}
