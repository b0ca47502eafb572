//! The `scale` scenario's coordination between processes: one generator per
//! gateway (`sb-load scale`) and one coordinator (`sb-load scale-coord`)
//! that measures the gateways, publishes the broadcast and adds the results
//! up. They talk through small JSON files in a shared directory:
//!
//! * `started` — the coordinator took the gateways' baseline RSS;
//! * `ready-<g>.json` — generator `g` finished connecting ([`Ready`]);
//! * `published` — the coordinator published the broadcast (its µs stamp);
//! * `done-<g>.json` — generator `g` finished waiting for it ([`Done`]).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Written by a generator once all its connects are over.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Ready {
    pub connected: u64,
    pub failed: u64,
    pub connect_secs: f64,
    pub connect_p50_ms: f64,
    pub connect_p99_ms: f64,
    #[serde(default)]
    pub first_error: Option<String>,
}

/// Written by a generator after the broadcast (or after giving up on it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Done {
    pub ready: Ready,
    /// The `published` file appeared.
    pub publish_seen: bool,
    /// Connections that got the broadcast exactly once.
    pub once: u64,
    /// Connected, but never got it (including ones the server dropped).
    pub missed: u64,
    /// Connections that got it more than once.
    pub dup_conns: u64,
    /// Deliveries beyond the first, over all connections.
    pub extra: u64,
    /// Sessions that ended before the run did.
    pub disconnects: u64,
    /// Pings answered over the whole run.
    pub pongs: u64,
    /// Unparsable frames or unexpected events.
    pub errors: u64,
    /// Publish-to-first-receive time of every connection that got it, µs.
    pub latencies_us: Vec<u64>,
}

pub fn ready_path(dir: &Path, g: usize) -> PathBuf {
    dir.join(format!("ready-{g}.json"))
}

pub fn done_path(dir: &Path, g: usize) -> PathBuf {
    dir.join(format!("done-{g}.json"))
}

pub fn published_path(dir: &Path) -> PathBuf {
    dir.join("published")
}

pub fn started_path(dir: &Path) -> PathBuf {
    dir.join("started")
}

/// Writes `text` to `path` so readers never see half a file.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// Polls for `path` until `deadline`; its contents when it appeared.
pub async fn wait_for_file(path: &Path, deadline: Instant) -> Option<String> {
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Some(text);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value at quantile `q` of sorted `v` (nearest rank); `None` when empty.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
    Some(sorted[rank - 1])
}

/// p50, p99 and max of the latencies, in ms (sorts `v`).
pub fn latency_summary_ms(v: &mut [u64]) -> Option<(f64, f64, f64)> {
    v.sort_unstable();
    let ms = |x: u64| x as f64 / 1000.0;
    Some((
        ms(quantile(v, 0.5)?),
        ms(quantile(v, 0.99)?),
        ms(*v.last()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&v, 0.0), Some(1));
        assert_eq!(quantile(&[], 0.5), None);
        let mut w = vec![3000, 1000, 2000];
        assert_eq!(latency_summary_ms(&mut w), Some((2.0, 3.0, 3.0)));
    }

    #[test]
    fn done_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("sb-scale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = Done {
            ready: Ready {
                connected: 3,
                failed: 1,
                first_error: Some("x".into()),
                ..Default::default()
            },
            publish_seen: true,
            once: 2,
            missed: 1,
            latencies_us: vec![5, 7],
            ..Default::default()
        };
        let p = done_path(&dir, 4);
        write_atomic(&p, &serde_json::to_string(&d).unwrap()).unwrap();
        let back: Done = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back, d);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
