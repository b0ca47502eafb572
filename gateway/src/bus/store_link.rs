//! The Redis connection that the gateway's stores (presence, the streams of
//! client actions) share with the bus.
//!
//! The bus itself runs no raw command: it publishes, subscribes and offers a
//! few typed operations. A store that owns a Redis data structure (and so
//! knows its commands) gets a [`StoreLink`] instead: the bus' pipelined
//! connection, bounded by `redis.publish_timeout_ms`, with the bus' errors.

use switchboard_redis::Publisher;

use super::BusError;

/// A store's handle on the bus' Redis connection; see the module docs.
#[derive(Clone)]
pub struct StoreLink {
    publisher: Publisher,
    timeout_ms: u64,
}

impl StoreLink {
    pub(super) fn new(publisher: Publisher, timeout_ms: u64) -> StoreLink {
        StoreLink {
            publisher,
            timeout_ms,
        }
    }

    /// Runs one of the store's own commands (routed by its key in a
    /// cluster), within the publish timeout.
    pub async fn query<T: ::redis::FromRedisValue>(
        &self,
        cmd: &::redis::Cmd,
    ) -> Result<T, BusError> {
        self.publisher
            .query(cmd)
            .await
            .map_err(|e| to_bus_error(e, self.timeout_ms))
    }
}

/// The bus' view of a Redis error: timeouts and refusals apart from an
/// unreachable server.
pub(super) fn to_bus_error(e: switchboard_redis::Error, timeout_ms: u64) -> BusError {
    match e {
        switchboard_redis::Error::Timeout { .. } => BusError::Timeout(timeout_ms),
        switchboard_redis::Error::Server { .. } => BusError::Command(e.to_string()),
        other => BusError::Unreachable(other.to_string()),
    }
}
