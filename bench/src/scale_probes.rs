//! The rolling restart's probe accounting: for every sampled connection and
//! every probe, when it arrived (publish → first receive, ms) and how many
//! extra copies came, so that a generator can tell a probe that came late
//! from one that never came.
//!
//! A probe that has not arrived when the coordinator says `finish` is not
//! yet lost: on a busy machine a generator reads seconds behind its timers.
//! The generator keeps reading until every probe has arrived on every
//! steady bystander (or a grace runs out), and [`ProbeLedger::tally`] then
//! splits the deliveries into on time (before `finish` was read), late
//! (after it), never arrived, and duplicated. Memory: 4 bytes per sampled
//! connection and probe (`MAX_PROBES`), plus 8 per probe.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
};

use crate::scale::{self, ProbeCheck};

/// A probe delivery later than this after its publish counts as slow (the
/// coordinator waited this long after the last probe before `finish`).
pub const SLOW_PROBE_MS: u64 = 3000;

/// Where a sampled connection stood during the rolling restart; decides
/// which of [`ProbeCheck`]'s groups its probes count in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeClass {
    /// On a gateway that was not restarted, open through the whole phase:
    /// every probe must reach it.
    Steady,
    /// On a gateway that was not restarted, but closed (and reconnected)
    /// during the phase: probes published while it was away are missed.
    Closed,
    /// Moved by a restart: misses the probes published while it reconnected.
    Moved,
    /// Not open when the broadcast to everyone went out: not counted.
    Other,
}

/// Per sampled connection and probe: publish → first arrival in ms, plus 1
/// (0: not arrived); per connection: extra copies; per probe: its publish
/// time (µs since the epoch, from its stamp).
pub struct ProbeLedger {
    probes: usize,
    arrivals: Box<[AtomicU32]>,
    duplicates: Box<[AtomicU32]>,
    published_us: Box<[AtomicU64]>,
}

fn atomics<T: Default>(n: usize) -> Box<[T]> {
    (0..n).map(|_| T::default()).collect()
}

impl ProbeLedger {
    /// A ledger for `conns` sampled connections and up to `probes` probes.
    pub fn new(conns: usize, probes: usize) -> Self {
        ProbeLedger {
            probes,
            arrivals: atomics(conns * probes),
            duplicates: atomics(conns),
            published_us: atomics(probes),
        }
    }

    /// Sampled connections.
    pub fn conns(&self) -> usize {
        self.duplicates.len()
    }

    /// Probe `seq`, published at `published_us`, reached sampled connection
    /// `conn` at `now_us`. Probes beyond the ledger's size are ignored.
    pub fn record(&self, conn: usize, seq: u64, published_us: u64, now_us: u64) {
        let Ok(seq) = usize::try_from(seq) else {
            return;
        };
        if seq >= self.probes || conn >= self.conns() {
            return;
        }
        self.published_us[seq].store(published_us, Relaxed);
        let ms = now_us.saturating_sub(published_us) / 1000;
        let stored = u32::try_from(ms.saturating_add(1)).unwrap_or(u32::MAX);
        if self.arrivals[conn * self.probes + seq]
            .compare_exchange(0, stored, Relaxed, Relaxed)
            .is_err()
        {
            self.duplicates[conn].fetch_add(1, Relaxed);
        }
    }

    /// Publish → first arrival of probe `seq` on `conn`, ms; `None` when it
    /// has not arrived.
    fn latency_ms(&self, conn: usize, seq: usize) -> Option<u64> {
        match self.arrivals[conn * self.probes + seq].load(Relaxed) {
            0 => None,
            n => Some(u64::from(n - 1)),
        }
    }

    fn published_count(&self, published: u64) -> usize {
        usize::try_from(published).map_or(self.probes, |p| p.min(self.probes))
    }

    /// Deliveries of the first `published` probes not yet arrived on the
    /// connections `class` calls [`ProbeClass::Steady`].
    pub fn missing_steady(&self, published: u64, class: impl Fn(usize) -> ProbeClass) -> u64 {
        let published = self.published_count(published);
        (0..self.conns())
            .filter(|&c| class(c) == ProbeClass::Steady)
            .map(|c| {
                (0..published)
                    .filter(|&s| self.latency_ms(c, s).is_none())
                    .count() as u64
            })
            .sum()
    }

    /// The account of the first `published` probes, `finish_us` being when
    /// the generator read `finish` (what arrived after it is late).
    pub fn tally(
        &self,
        published: u64,
        finish_us: u64,
        class: impl Fn(usize) -> ProbeClass,
    ) -> ProbeCheck {
        let published = self.published_count(published);
        let mut pc = ProbeCheck::default();
        let mut latency = BTreeMap::<u64, u64>::new();
        for c in 0..self.conns() {
            pc.duplicates += u64::from(self.duplicates[c].load(Relaxed));
            let arrived = (0..published)
                .filter(|&s| self.latency_ms(c, s).is_some())
                .count() as u64;
            let missing = published as u64 - arrived;
            match class(c) {
                ProbeClass::Steady => {}
                ProbeClass::Closed => {
                    pc.closed_conns += 1;
                    pc.closed_lost += missing;
                    continue;
                }
                ProbeClass::Moved => {
                    pc.moved_conns += 1;
                    pc.moved_lost += missing;
                    continue;
                }
                ProbeClass::Other => continue,
            }
            pc.steady_conns += 1;
            pc.steady_expected += published as u64;
            pc.steady_lost += missing;
            for s in 0..published {
                let Some(ms) = self.latency_ms(c, s) else {
                    continue;
                };
                *latency.entry(ms).or_default() += 1;
                if ms > SLOW_PROBE_MS {
                    pc.steady_slow += 1;
                }
                let at_us = self.published_us[s].load(Relaxed).saturating_add(ms * 1000);
                if at_us > finish_us {
                    pc.steady_late += 1;
                    pc.steady_late_max_ms = pc.steady_late_max_ms.max(ms);
                } else {
                    pc.steady_on_time += 1;
                }
            }
        }
        pc.steady_latency_ms = latency.into_iter().collect();
        pc
    }
}

/// p50, p99 and max of a latency histogram (`(ms, count)` pairs, any
/// order, keys may repeat: several generators' histograms concatenated),
/// by nearest rank.
pub fn histogram_summary_ms(hist: &[(u64, u64)]) -> Option<(u64, u64, u64)> {
    let mut merged = BTreeMap::<u64, u64>::new();
    for &(ms, n) in hist {
        *merged.entry(ms).or_default() += n;
    }
    let total: u64 = merged.values().sum();
    if total == 0 {
        return None;
    }
    let at = |q: f64| {
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&ms, &n) in &merged {
            seen += n;
            if seen >= rank {
                return ms;
            }
        }
        0
    };
    Some((at(0.5), at(0.99), *merged.keys().next_back()?))
}

/// The class of sampled connection `i` from what the generator saw of it.
pub fn class_of(moved: bool, in_audience: bool, closed: bool) -> ProbeClass {
    match (moved, in_audience, closed) {
        (true, _, _) => ProbeClass::Moved,
        (false, false, _) => ProbeClass::Other,
        (false, true, true) => ProbeClass::Closed,
        (false, true, false) => ProbeClass::Steady,
    }
}

/// Ledger size for a generator of `count` sessions.
pub fn ledger_for(count: usize) -> ProbeLedger {
    ProbeLedger::new(
        count.div_ceil(scale::PROBE_EVERY),
        scale::MAX_PROBES as usize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000_000;

    fn ms(n: u64) -> u64 {
        n * 1000
    }

    #[test]
    fn tells_on_time_late_lost_and_duplicated_apart() {
        let l = ProbeLedger::new(4, 8);
        // Probe s published at T0 + s seconds; finish read at T0 + 10 s.
        let publish = |s: u64| T0 + ms(1000 * s);
        let finish = publish(10);
        for s in 0..4 {
            // conn 0: every probe, 50 ms after its publish.
            l.record(0, s, publish(s), publish(s) + ms(50));
        }
        // conn 1: probe 0 on time; probe 1 after `finish` (12 s late);
        // probe 2 twice; probe 3 never.
        l.record(1, 0, publish(0), publish(0) + ms(10));
        l.record(1, 1, publish(1), publish(1) + ms(12_000));
        l.record(1, 2, publish(2), publish(2) + ms(3_500));
        l.record(1, 2, publish(2), publish(2) + ms(3_600));
        // conn 2 moved, missed two; conn 3 closed, missed all four.
        l.record(2, 0, publish(0), publish(0) + ms(5));
        l.record(2, 3, publish(3), publish(3) + ms(5));
        let class = |c| match c {
            2 => ProbeClass::Moved,
            3 => ProbeClass::Closed,
            _ => ProbeClass::Steady,
        };
        assert_eq!(l.missing_steady(4, class), 1);
        let pc = l.tally(4, finish, class);
        assert_eq!(pc.steady_conns, 2);
        assert_eq!(pc.steady_expected, 8);
        assert_eq!(pc.steady_on_time, 6);
        assert_eq!(pc.steady_late, 1);
        assert_eq!(pc.steady_late_max_ms, 12_000);
        assert_eq!(pc.steady_lost, 1);
        assert_eq!(pc.steady_slow, 2, "3.5 s and 12 s are over 3 s");
        assert_eq!(pc.duplicates, 1);
        assert_eq!((pc.moved_conns, pc.moved_lost), (1, 2));
        assert_eq!((pc.closed_conns, pc.closed_lost), (1, 4));
        assert_eq!(
            pc.steady_latency_ms,
            vec![(10, 1), (50, 4), (3_500, 1), (12_000, 1)]
        );
        // Only probes published count: a run that published 2 has nothing missing.
        assert_eq!(l.missing_steady(2, class), 0);
        assert_eq!(l.tally(2, finish, class).steady_expected, 4);
    }

    #[test]
    fn ignores_what_it_cannot_hold() {
        let l = ProbeLedger::new(1, 2);
        l.record(0, 2, T0, T0);
        l.record(5, 0, T0, T0);
        // A clock step backwards counts as 0 ms, not as absent.
        l.record(0, 0, T0, T0 - 5);
        let pc = l.tally(u64::MAX, T0 + 1, |_| ProbeClass::Steady);
        assert_eq!(
            (pc.steady_expected, pc.steady_on_time, pc.steady_lost),
            (2, 1, 1)
        );
        assert_eq!(pc.duplicates, 0);
    }

    #[test]
    fn summarises_merged_histograms() {
        assert_eq!(histogram_summary_ms(&[]), None);
        let mut h: Vec<(u64, u64)> = (1..=98).map(|ms| (ms, 1)).collect();
        h.push((5, 1));
        h.push((9_000, 1));
        // 100 values: 1..=98, 5 again, 9,000.
        assert_eq!(histogram_summary_ms(&h), Some((49, 98, 9_000)));
    }

    #[test]
    fn classes() {
        assert_eq!(class_of(true, true, true), ProbeClass::Moved);
        assert_eq!(class_of(false, false, false), ProbeClass::Other);
        assert_eq!(class_of(false, true, true), ProbeClass::Closed);
        assert_eq!(class_of(false, true, false), ProbeClass::Steady);
    }
}
