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
    /// Per restarted gateway: when the first and the last of its clients
    /// saw their session end (µs epoch; 0 when none yet): how long the
    /// stopping gateway itself took to close them all.
    #[serde(default)]
    pub disc_first_us: Vec<u64>,
    #[serde(default)]
    pub disc_last_us: Vec<u64>,
    /// How the moved clients' reconnects went, over the whole restart phase.
    #[serde(default)]
    pub moves: Moves,
}

/// Why a reconnect attempt failed, as [`Moves::failed`] counts it.
pub const MOVE_FAILURES: [&str; 5] = ["timeout", "tcp", "http_refused", "sio_refused", "other"];

/// Upper bounds (s) of the buckets of [`Moves::back_hist`], the time from
/// a moved client's close to its session open again elsewhere; the last
/// bucket takes the rest.
pub const BACK_BUCKETS_S: [u64; 6] = [2, 5, 10, 20, 40, 60];

/// The reconnects of the clients of restarted gateways: where the time
/// from their close to their new session goes (the wait before each
/// attempt, failed attempts and why, the attempt that worked).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Moves {
    /// Attempts made (failed and successful).
    pub attempts: u64,
    /// Failed attempts, by [`MOVE_FAILURES`].
    pub failed: Vec<u64>,
    /// Time spent in failed attempts, ms, summed.
    pub failed_ms: u64,
    /// Time spent waiting before attempts (the backoff), ms, summed.
    pub waited_ms: u64,
    /// The successful attempts' durations, ms: summed, and the longest.
    pub ok_ms: u64,
    pub ok_ms_max: u64,
    /// Clients back, by [`BACK_BUCKETS_S`] (one more bucket for the rest).
    pub back_hist: Vec<u64>,
    /// The longest close-to-back time, ms.
    pub back_ms_max: u64,
}

impl Moves {
    /// Adds `other` (another generator's) to these.
    pub fn add(&mut self, other: &Moves) {
        let add_vec = |a: &mut Vec<u64>, b: &[u64]| {
            if a.len() < b.len() {
                a.resize(b.len(), 0);
            }
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        };
        self.attempts += other.attempts;
        add_vec(&mut self.failed, &other.failed);
        self.failed_ms += other.failed_ms;
        self.waited_ms += other.waited_ms;
        self.ok_ms += other.ok_ms;
        self.ok_ms_max = self.ok_ms_max.max(other.ok_ms_max);
        add_vec(&mut self.back_hist, &other.back_hist);
        self.back_ms_max = self.back_ms_max.max(other.back_ms_max);
    }

    /// What happened since `before` (counters only; the maxima are the
    /// run's so far).
    pub fn since(&self, before: &Moves) -> Moves {
        let sub = |a: &[u64], b: &[u64]| -> Vec<u64> {
            a.iter()
                .enumerate()
                .map(|(i, x)| x.saturating_sub(b.get(i).copied().unwrap_or(0)))
                .collect()
        };
        Moves {
            attempts: self.attempts.saturating_sub(before.attempts),
            failed: sub(&self.failed, &before.failed),
            failed_ms: self.failed_ms.saturating_sub(before.failed_ms),
            waited_ms: self.waited_ms.saturating_sub(before.waited_ms),
            ok_ms: self.ok_ms.saturating_sub(before.ok_ms),
            ok_ms_max: self.ok_ms_max,
            back_hist: sub(&self.back_hist, &before.back_hist),
            back_ms_max: self.back_ms_max,
        }
    }

    /// One line for the coordinator's log.
    pub fn describe(&self) -> String {
        let back: u64 = self.back_hist.iter().sum();
        let per = |ms: u64, n: u64| ms as f64 / 1000.0 / n.max(1) as f64;
        let failed: u64 = self.failed.iter().sum();
        let reasons: Vec<String> = MOVE_FAILURES
            .iter()
            .zip(&self.failed)
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let mut hist = Vec::new();
        let mut lo = 0;
        for (i, n) in self.back_hist.iter().enumerate() {
            let label = match BACK_BUCKETS_S.get(i) {
                Some(hi) => format!("{lo}-{hi} s"),
                None => format!("over {lo} s"),
            };
            if *n > 0 {
                hist.push(format!("{label} {n}"));
            }
            lo = BACK_BUCKETS_S.get(i).copied().unwrap_or(lo);
        }
        format!(
            "{back} back after {} attempts ({failed} failed: {}); per client back: {:.2} s waiting before attempts, {:.2} s in failed ones, {:.2} s in the one that worked (longest {:.1} s); close to back: {} (longest {:.1} s)",
            self.attempts,
            if reasons.is_empty() {
                "none".to_string()
            } else {
                reasons.join(", ")
            },
            per(self.waited_ms, back),
            per(self.failed_ms, back),
            per(self.ok_ms, back),
            self.ok_ms_max as f64 / 1000.0,
            hist.join(", "),
            self.back_ms_max as f64 / 1000.0,
        )
    }
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

    /// Generators' reconnect figures add up, a restart's share is what
    /// changed since the previous one, and the log line names what failed
    /// and where the clients' time went.
    #[test]
    fn moves_add_up_and_a_restart_is_told_apart() {
        let one = Moves {
            attempts: 3,
            failed: vec![1, 0, 0, 0, 0],
            failed_ms: 30_000,
            waited_ms: 2_000,
            ok_ms: 400,
            ok_ms_max: 300,
            back_hist: vec![0, 1, 0, 0, 1, 0, 0],
            back_ms_max: 35_000,
        };
        let mut all = Moves::default();
        all.add(&one);
        all.add(&one);
        assert_eq!(all.attempts, 6);
        assert_eq!(all.failed, vec![2, 0, 0, 0, 0]);
        assert_eq!(all.back_hist, vec![0, 2, 0, 0, 2, 0, 0]);
        assert_eq!(all.ok_ms_max, 300);
        let second = all.since(&one);
        assert_eq!(second.attempts, 3);
        assert_eq!(second.back_hist, one.back_hist);
        let line = second.describe();
        assert!(
            line.starts_with("2 back after 3 attempts (1 failed: timeout 1)"),
            "{line}"
        );
        assert!(line.contains("15.00 s in failed ones"), "{line}");
        assert!(line.contains("2-5 s 1, 20-40 s 1"), "{line}");
        assert!(line.contains("longest 35.0 s"), "{line}");
    }
}
