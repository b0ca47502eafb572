//! The `scale` scenario's coordination between processes: one generator per
//! gateway (`sb-load scale`) and one coordinator (`sb-load scale-coord`)
//! that measures the gateways, publishes the broadcast and adds the results
//! up. They talk through small JSON files in a shared directory:
//!
//! * `started` — the coordinator took the gateways' baseline RSS;
//! * `go-<g>` — generator `g` may connect (the coordinator's waves);
//! * `progress-<g>.json` — generator `g`'s counters, rewritten every second ([`Progress`]);
//! * `ready-<g>.json` — generator `g` finished connecting ([`Ready`]);
//! * `hold-end` — the idle hold is over (generators read their own RSS);
//! * `published-all`, `published-role` — a broadcast is about to be
//!   published: generators note which sessions are open (its audience);
//! * `restart-phase` — gateways are being restarted: sessions closed by
//!   the restarted ones reconnect to the others;
//! * `finish` — the number of probes published; generators check and report;
//! * `done-<g>.json` — generator `g`'s checks ([`Done`]);
//! * `abort` — memory ran low: every generator exits.

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
    /// The generator's process id (its CPU time and RSS are measured too).
    #[serde(default)]
    pub pid: u32,
}

/// Rewritten by every generator about once a second while it runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    pub connected: u64,
    pub failed: u64,
    /// Sessions open right now.
    pub up: u64,
    /// Sessions that got the broadcast to everyone at least once.
    pub all_got: u64,
    /// Members of the role room (`role:r0`) open right now.
    pub role_members_up: u64,
    /// Members that got the role broadcast at least once.
    pub role_got: u64,
    /// Per restarted gateway: sessions it closed during the restart phase.
    pub disconnected_from: Vec<u64>,
    /// Per restarted gateway: of those, sessions open again elsewhere.
    pub reconnected_from: Vec<u64>,
    /// Per restarted gateway: when the last of them was open again (µs epoch).
    pub storm_end_us: Vec<u64>,
    /// Sessions that ended outside the restart phase.
    pub hold_disconnects: u64,
    /// Sessions of gateways that were not restarted that ended during it.
    pub bystander_disconnects: u64,
    /// The generator's own lateness, per phase ([`PHASES`]): the longest a
    /// 10 ms timer of its runtime fired late, in ms. A generator that is
    /// this late reads its pings this late, so a gateway's `ping_timeout`
    /// closes can be told apart from a client that could not answer.
    #[serde(default)]
    pub lag_max_ms: Vec<f64>,
}

/// The phases [`Progress::lag_max_ms`] is kept for: connect and hold, the
/// two broadcasts, the rolling restart.
pub const PHASES: [&str; 3] = ["hold", "broadcasts", "restart"];

/// One broadcast checked on every connection that should get it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Check {
    /// Connections that should get it (open when it was published).
    pub expected: u64,
    /// Of those, connections that got it exactly once.
    pub once: u64,
    /// Never got it.
    pub missed: u64,
    /// Got it more than once.
    pub dup_conns: u64,
    /// Deliveries beyond the first, over all connections.
    pub extra: u64,
    /// Connections outside the audience that got it.
    pub wrong: u64,
    /// Publish-to-first-receive time of every connection that got it, µs.
    pub latencies_us: Vec<u64>,
}

/// The probes published during the rolling restart, per group of sampled
/// connections (see [`crate::scale_probes`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProbeCheck {
    /// Sampled connections of gateways that were not restarted, open
    /// through the whole restart phase.
    pub steady_conns: u64,
    /// Probe deliveries those should get (connections × probes).
    #[serde(default)]
    pub steady_expected: u64,
    /// Of those, arrived before the generator read `finish`.
    #[serde(default)]
    pub steady_on_time: u64,
    /// Arrived after `finish`, within the grace the generator waited.
    #[serde(default)]
    pub steady_late: u64,
    /// The latest of those, publish → arrival, ms.
    #[serde(default)]
    pub steady_late_max_ms: u64,
    /// Never arrived, not even within the grace (must be 0).
    pub steady_lost: u64,
    /// Arrived more than [`crate::scale_probes::SLOW_PROBE_MS`] after publish.
    #[serde(default)]
    pub steady_slow: u64,
    /// Publish → first arrival of every delivery that arrived, as
    /// `(ms, deliveries)` pairs in ms order.
    #[serde(default)]
    pub steady_latency_ms: Vec<(u64, u64)>,
    /// Sampled connections of gateways that were not restarted that were
    /// closed (and reconnected) during the phase.
    #[serde(default)]
    pub closed_conns: u64,
    /// Probes those did not get (published while they reconnected).
    #[serde(default)]
    pub closed_lost: u64,
    /// Sampled connections that were moved by a restart.
    pub moved_conns: u64,
    /// Probes those did not get (published while they reconnected).
    pub moved_lost: u64,
    /// Probes delivered more than once, all sampled connections.
    pub duplicates: u64,
    /// How long the generator waited after `finish` for missing probes, s.
    #[serde(default)]
    pub waited_s: f64,
}

/// Written by a generator at the end of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Done {
    pub ready: Ready,
    pub progress: Progress,
    /// The broadcast to everyone.
    pub all: Check,
    /// The broadcast to `role:r0`.
    pub role: Check,
    pub probes: ProbeCheck,
    /// Reconnects that never succeeded.
    pub reconnect_failures: u64,
    /// Pings answered over the whole run.
    pub pongs: u64,
    /// Unparsable frames or unexpected events.
    pub errors: u64,
    /// RSS of the generator at the end of the hold, KiB.
    #[serde(default)]
    pub rss_kib: u64,
}

/// What the coordinator publishes, told apart by the stamp's `r` field.
pub const KIND_ALL: u32 = 1_000_001;
/// The role-room broadcast.
pub const KIND_ROLE: u32 = 1_000_002;
/// A rolling-restart probe (its `s` is the probe's sequence number).
pub const KIND_PROBE: u32 = 1_000_003;
/// The role whose room gets the role broadcast (10% of users: `i % 10 == 0`).
pub const ROLE_ROOM: &str = "role:r0";
/// Every `PROBE_EVERY`-th connection of each generator is sampled by the probes.
pub const PROBE_EVERY: usize = 100;
/// At most this many probes are tracked per sampled connection (and
/// published): at 2/s, 1,024 s, so that probes run through every restart
/// of a 1M run (at 512, they stopped after 256 s, in its third restart).
pub const MAX_PROBES: u64 = 2048;

/// The user name of connection `i` of generator `g` in run `tag`.
pub fn user_name(tag: &str, g: usize, i: usize) -> String {
    format!("u{tag}-{g}-{i}")
}

/// The role of connection `i` (10 roles: `r0` is 10% of users).
pub fn role_of(i: usize) -> String {
    format!("r{}", i % 10)
}

/// Per restarted gateway `k`: how many gateways a generator can send its
/// moved sessions to, and which one session `i` tries on attempt `a`.
pub fn reconnect_target(gateways: usize, restart: usize, i: usize, attempt: usize) -> usize {
    if gateways > restart {
        restart + (i + attempt) % (gateways - restart)
    } else {
        i % gateways.max(1)
    }
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

/// A marker or small file named `name` in the sync directory.
pub fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

pub fn progress_path(dir: &Path, g: usize) -> PathBuf {
    dir.join(format!("progress-{g}.json"))
}

pub fn go_path(dir: &Path, g: usize) -> PathBuf {
    dir.join(format!("go-{g}"))
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
    fn moved_sessions_avoid_the_restarted_gateways() {
        for i in 0..50 {
            for a in 0..3 {
                let t = reconnect_target(10, 3, i, a);
                assert!((3..10).contains(&t));
            }
        }
        assert_eq!(reconnect_target(2, 5, 3, 0), 1);
        assert_eq!(role_of(20), "r0");
        assert_eq!(user_name("7", 2, 5), "u7-2-5");
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
            all: Check {
                expected: 3,
                once: 2,
                missed: 1,
                latencies_us: vec![5, 7],
                ..Default::default()
            },
            ..Default::default()
        };
        let p = done_path(&dir, 4);
        write_atomic(&p, &serde_json::to_string(&d).unwrap()).unwrap();
        let back: Done = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back, d);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
