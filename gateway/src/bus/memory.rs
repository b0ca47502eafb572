//! The embedded bus: with no Redis configured, a publish is delivered
//! straight to this gateway's own subscriptions.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::{BusHandler, BusStatus, pattern_matches};

/// In-process pub/sub for a gateway that runs alone.
#[derive(Default)]
pub(super) struct MemoryBus {
    handler: OnceLock<Subscriber>,
}

struct Subscriber {
    handler: Arc<dyn BusHandler>,
    channels: Vec<String>,
    patterns: Vec<String>,
}

impl MemoryBus {
    pub fn set_handler(&self, handler: Arc<dyn BusHandler>) {
        let _ = self.handler.set(Subscriber {
            channels: handler.channels(),
            patterns: handler.patterns(),
            handler,
        });
    }

    /// Delivers synchronously; returns 1 if the gateway subscribes to the
    /// channel (as Redis would count it), 0 otherwise.
    pub fn publish(&self, channel: &str, payload: Bytes) -> usize {
        let Some(sub) = self.handler.get() else {
            return 0;
        };
        let wanted = sub.channels.iter().any(|c| c == channel)
            || sub.patterns.iter().any(|p| pattern_matches(p, channel));
        if !wanted {
            return 0;
        }
        sub.handler.on_bus_message(channel, payload);
        1
    }

    pub fn status(&self) -> BusStatus {
        let subscriptions = self
            .handler
            .get()
            .map(|s| s.channels.len() + s.patterns.len())
            .unwrap_or(0);
        BusStatus {
            mode: "embedded",
            subscribed: true,
            subscriptions,
            reconnects: 0,
            last_error: None,
            publishing: true,
            publish_error: None,
        }
    }
}
