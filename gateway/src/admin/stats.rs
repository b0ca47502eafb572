//! `server_stats`, the heartbeat of a server in the Admin UI: who this
//! gateway is, how many clients it holds, and `aggregatedEvents`, per-second
//! counts of connections, disconnections by reason, packets and bytes.
//!
//! The counts are not hooked into the hot paths: once a second the sampler
//! reads the Prometheus counters the gateway keeps anyway and records their
//! increase in that second's bucket, so an enabled admin costs one small task
//! and a disabled one nothing.

use std::time::Instant;

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::{engine::CloseReason, metrics::Metrics};

/// Every close reason, to read each labelled series.
const CLOSE_REASONS: [CloseReason; 7] = CloseReason::ALL;

/// Counter values at the previous sample.
#[derive(Default, Clone, Copy)]
struct Counters {
    opened: u64,
    closed: [u64; CLOSE_REASONS.len()],
    packets_in: u64,
    bytes_in: u64,
    packets_out: u64,
    bytes_out: u64,
}

impl Counters {
    fn read(m: &Metrics) -> Counters {
        let mut closed = [0; CLOSE_REASONS.len()];
        for (slot, reason) in closed.iter_mut().zip(CLOSE_REASONS) {
            *slot = m.engine_closed.with_label_values(&[reason.as_str()]).get();
        }
        Counters {
            opened: m.engine_opened.get(),
            closed,
            packets_in: m.packets_in.get(),
            bytes_in: m.bytes_in.get(),
            packets_out: m.messages_out.get(),
            bytes_out: m.bytes_out.get(),
        }
    }
}

/// This gateway's identity and its event buckets since the last `server_stats`.
pub struct Stats {
    server_id: String,
    hostname: String,
    pid: u32,
    started: Instant,
    last: Mutex<Counters>,
    events: Mutex<Vec<Value>>,
}

impl Stats {
    pub fn new(metrics: &Metrics) -> Stats {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        let pid = std::process::id();
        Stats {
            // `hostname#pid`, as the package names cluster workers: two
            // gateways on one host stay two servers in the UI.
            server_id: format!("{hostname}#{pid}"),
            hostname,
            pid,
            started: Instant::now(),
            last: Mutex::new(Counters::read(metrics)),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Records what the counters did since the last sample, stamped with
    /// the current second (the UI's `EventBuffer` buckets by second).
    pub fn sample(&self, metrics: &Metrics, now_ms: u64) {
        let now = Counters::read(metrics);
        let before = std::mem::replace(&mut *self.last.lock(), now);
        let timestamp = now_ms - now_ms % 1000;
        let mut events = self.events.lock();
        let mut push = |kind: &str, sub: Option<&str>, count: u64| {
            if count > 0 {
                let mut e = json!({"timestamp": timestamp, "type": kind, "count": count});
                if let Some(sub) = sub {
                    e["subType"] = Value::from(sub);
                }
                events.push(e);
            }
        };
        push(
            "rawConnection",
            None,
            now.opened.saturating_sub(before.opened),
        );
        for (i, reason) in CLOSE_REASONS.iter().enumerate() {
            push(
                "rawDisconnection",
                Some(reason.spec().node_reason),
                now.closed[i].saturating_sub(before.closed[i]),
            );
        }
        for (kind, now, before) in [
            ("packetsIn", now.packets_in, before.packets_in),
            ("bytesIn", now.bytes_in, before.bytes_in),
            ("packetsOut", now.packets_out, before.packets_out),
            ("bytesOut", now.bytes_out, before.bytes_out),
        ] {
            push(kind, None, now.saturating_sub(before));
        }
    }

    /// The `server_stats` payload; takes the buckets collected so far.
    pub fn server_stats(
        &self,
        clients: usize,
        polling_clients: usize,
        namespaces: Vec<Value>,
    ) -> Value {
        let events = std::mem::take(&mut *self.events.lock());
        json!({
            "serverId": self.server_id,
            "hostname": self.hostname,
            "pid": self.pid,
            "uptime": self.started.elapsed().as_secs_f64(),
            "clientsCount": clients,
            "pollingClientsCount": polling_clients,
            "aggregatedEvents": events,
            "namespaces": namespaces,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_what_the_counters_did() {
        let m = Metrics::new();
        let stats = Stats::new(&m);
        m.engine_opened.inc_by(3);
        m.engine_closed
            .with_label_values(&[CloseReason::PingTimeout.as_str()])
            .inc();
        m.bytes_out.inc_by(120);
        stats.sample(&m, 1_700_000_000_456);
        stats.sample(&m, 1_700_000_001_000);
        let v = stats.server_stats(2, 1, vec![]);
        assert_eq!(v["clientsCount"], 2);
        assert_eq!(v["pollingClientsCount"], 1);
        let events = v["aggregatedEvents"].as_array().unwrap();
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(
            events[0],
            json!({"timestamp": 1_700_000_000_000u64, "type": "rawConnection", "count": 3})
        );
        assert_eq!(events[1]["subType"], "ping timeout");
        assert_eq!(events[2]["type"], "bytesOut");
        assert_eq!(
            stats.server_stats(0, 0, vec![])["aggregatedEvents"],
            json!([])
        );
    }
}
