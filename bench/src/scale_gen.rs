//! One `scale` generator (`sb-load scale`): opens its block of sessions when
//! the coordinator says `go-<g>`, holds them with the [`lean`](crate::lean)
//! client, reports progress every second, records every broadcast per
//! connection, and during the rolling restart reconnects the sessions a
//! stopped gateway closed to the gateways that are not restarted (delay
//! 0.5–1.5 s, then doubling up to 5 s: socket.io-client's defaults).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use crate::{
    client::{self, SourceAddrs},
    hist::Histogram,
    lean::{self, Ended, Session, Sink},
    proto::{self, EioPacket, SioKind},
    scale::{self, Check, Done, ProbeCheck, Progress, Ready},
    scale_probes::{self, ProbeLedger},
};

/// The most gateways one run restarts.
pub const MAX_RESTART: usize = 16;

/// What one generator is told on its command line.
pub struct GenConfig {
    /// Every gateway, by index; this generator's sessions start on `gateways[index]`.
    pub gateways: Vec<SocketAddr>,
    pub index: usize,
    pub count: usize,
    pub concurrency: usize,
    pub secret: String,
    pub tag: String,
    pub src_base: Ipv4Addr,
    pub src_count: u32,
    pub sync_dir: PathBuf,
    /// Gateways `0..restart` are the ones the coordinator restarts.
    pub restart: usize,
    /// Give up (write what we have, exit) this long after starting.
    pub wait_secs: f64,
    /// After `finish`, wait at most this long for probes still missing on
    /// steady bystanders (late, not lost, if they come).
    pub probe_grace_secs: f64,
}

/// Per-connection records, shared by every session task of the generator.
struct Gen {
    cfg: GenConfig,
    sources: SourceAddrs,
    up: Box<[AtomicBool]>,
    all_count: Box<[AtomicU32]>,
    all_lat: Box<[AtomicU64]>,
    role_count: Box<[AtomicU32]>,
    role_lat: Box<[AtomicU64]>,
    /// Up when the broadcast to everyone was published (its audience).
    all_expected: Box<[AtomicBool]>,
    /// Up when the role broadcast was published (its audience).
    role_expected: Box<[AtomicBool]>,
    /// Sampled connections (`i % PROBE_EVERY == 0`): when each probe arrived.
    probes: ProbeLedger,
    /// Closed by a restarted gateway at some point.
    moved: Box<[AtomicBool]>,
    /// On a gateway that was not restarted, closed during the restart phase.
    closed_in_restart: Box<[AtomicBool]>,
    restart_phase: AtomicBool,
    /// Index into [`scale::PHASES`] of the phase the run is in.
    phase: AtomicUsize,
    /// Per phase: the runtime's longest timer lateness, µs.
    lag_max_us: [AtomicU64; scale::PHASES.len()],
    disc_from: [AtomicU64; MAX_RESTART],
    reconn_from: [AtomicU64; MAX_RESTART],
    storm_end: [AtomicU64; MAX_RESTART],
    /// Per restarted gateway: the first and last close its clients saw (µs epoch).
    disc_first: [AtomicU64; MAX_RESTART],
    disc_last: [AtomicU64; MAX_RESTART],
    /// The moved clients' reconnects (see [`scale::Moves`]).
    moves: MoveCounters,
    hold_disc: AtomicU64,
    bystander_disc: AtomicU64,
    reconnect_fail: AtomicU64,
    pongs: AtomicU64,
    errors: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    give_up: Instant,
}

fn atomics<T: Default>(n: usize) -> Box<[T]> {
    (0..n).map(|_| T::default()).collect()
}

impl Gen {
    fn new(cfg: GenConfig) -> anyhow::Result<Self> {
        let n = cfg.count;
        let wait = Duration::from_secs_f64(cfg.wait_secs);
        Ok(Gen {
            sources: SourceAddrs::new(cfg.src_base, cfg.src_count)?,
            up: atomics(n),
            all_count: atomics(n),
            all_lat: atomics(n),
            role_count: atomics(n),
            role_lat: atomics(n),
            all_expected: atomics(n),
            role_expected: atomics(n),
            probes: scale_probes::ledger_for(n),
            moved: atomics(n),
            closed_in_restart: atomics(n),
            restart_phase: AtomicBool::new(false),
            phase: AtomicUsize::new(0),
            lag_max_us: Default::default(),
            disc_from: Default::default(),
            reconn_from: Default::default(),
            storm_end: Default::default(),
            disc_first: std::array::from_fn(|_| AtomicU64::new(u64::MAX)),
            disc_last: Default::default(),
            moves: MoveCounters::default(),
            hold_disc: AtomicU64::new(0),
            bystander_disc: AtomicU64::new(0),
            reconnect_fail: AtomicU64::new(0),
            pongs: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            give_up: Instant::now() + wait,
            cfg,
        })
    }

    fn token(&self, i: usize) -> anyhow::Result<String> {
        client::mint_token(
            self.cfg.secret.as_bytes(),
            &scale::user_name(&self.cfg.tag, self.cfg.index, i),
            &scale::role_of(i),
        )
    }

    fn restarted(&self) -> usize {
        self.cfg.restart.min(MAX_RESTART)
    }

    fn progress(&self) -> Progress {
        let n = self.cfg.count;
        let r = self.restarted();
        let up = |i: usize| self.up[i].load(Relaxed);
        Progress {
            connected: self.connected.load(Relaxed),
            failed: self.failed.load(Relaxed),
            up: (0..n).filter(|&i| up(i)).count() as u64,
            all_got: (0..n)
                .filter(|&i| self.all_count[i].load(Relaxed) > 0)
                .count() as u64,
            role_members_up: (0..n).filter(|&i| i % 10 == 0 && up(i)).count() as u64,
            role_got: (0..n)
                .filter(|&i| i % 10 == 0 && self.role_count[i].load(Relaxed) > 0)
                .count() as u64,
            disconnected_from: self.disc_from[..r]
                .iter()
                .map(|a| a.load(Relaxed))
                .collect(),
            reconnected_from: self.reconn_from[..r]
                .iter()
                .map(|a| a.load(Relaxed))
                .collect(),
            storm_end_us: self.storm_end[..r]
                .iter()
                .map(|a| a.load(Relaxed))
                .collect(),
            hold_disconnects: self.hold_disc.load(Relaxed),
            bystander_disconnects: self.bystander_disc.load(Relaxed),
            lag_max_ms: self
                .lag_max_us
                .iter()
                .map(|a| a.load(Relaxed) as f64 / 1000.0)
                .collect(),
            disc_first_us: self.disc_first[..r]
                .iter()
                .map(|a| match a.load(Relaxed) {
                    u64::MAX => 0,
                    t => t,
                })
                .collect(),
            disc_last_us: self.disc_last[..r]
                .iter()
                .map(|a| a.load(Relaxed))
                .collect(),
            moves: self.moves.snapshot(),
        }
    }

    /// Measures how late this generator's runtime runs: a 10 ms sleep in a
    /// loop, its overshoot kept as the phase's maximum. On a single-thread
    /// runtime every session's task shares this lateness, including the
    /// one that reads a ping and writes its pong.
    async fn measure_lag(self: Arc<Self>) {
        const TICK: Duration = Duration::from_millis(10);
        loop {
            let t = Instant::now();
            tokio::time::sleep(TICK).await;
            let late = t.elapsed().saturating_sub(TICK);
            let phase = self.phase.load(Relaxed).min(scale::PHASES.len() - 1);
            self.lag_max_us[phase].fetch_max(late.as_micros() as u64, Relaxed);
        }
    }

    /// Records one text frame of connection `i`.
    fn text(&self, i: usize, text: &str) {
        let stamp = match proto::parse_eio(text) {
            Ok(EioPacket::Message(payload)) => proto::parse_sio(payload)
                .ok()
                .filter(|p| p.kind == SioKind::Event)
                .and_then(|p| proto::parse_stamp(p.data)),
            Ok(_) => return,
            Err(_) => None,
        };
        let Some(stamp) = stamp else {
            self.errors.fetch_add(1, Relaxed);
            return;
        };
        let now = client::now_us();
        let lat = now.saturating_sub(stamp.t_us);
        match stamp.room {
            scale::KIND_ALL => {
                if self.all_count[i].fetch_add(1, Relaxed) == 0 {
                    self.all_lat[i].store(lat, Relaxed);
                }
            }
            scale::KIND_ROLE => {
                if self.role_count[i].fetch_add(1, Relaxed) == 0 {
                    self.role_lat[i].store(lat, Relaxed);
                }
            }
            scale::KIND_PROBE if i.is_multiple_of(scale::PROBE_EVERY) => {
                self.probes
                    .record(i / scale::PROBE_EVERY, stamp.seq, stamp.t_us, now);
            }
            _ => {
                self.errors.fetch_add(1, Relaxed);
            }
        }
    }

    fn check(
        &self,
        counts: &[AtomicU32],
        lats: &[AtomicU64],
        audience: impl Fn(usize) -> bool,
        member: impl Fn(usize) -> bool,
    ) -> Check {
        let mut c = Check::default();
        for i in 0..self.cfg.count {
            let n = counts[i].load(Relaxed);
            if !member(i) {
                if n > 0 {
                    c.wrong += 1;
                }
                continue;
            }
            if audience(i) {
                c.expected += 1;
                match n {
                    0 => c.missed += 1,
                    1 => c.once += 1,
                    _ => {
                        c.dup_conns += 1;
                        c.extra += u64::from(n - 1);
                    }
                }
            }
            if n > 0 {
                c.latencies_us.push(lats[i].load(Relaxed));
            }
        }
        c
    }

    /// The probe class of sampled connection `p` (connection `p * PROBE_EVERY`).
    fn probe_class(&self, p: usize) -> scale_probes::ProbeClass {
        let i = p * scale::PROBE_EVERY;
        scale_probes::class_of(
            self.moved[i].load(Relaxed),
            self.all_expected[i].load(Relaxed),
            self.closed_in_restart[i].load(Relaxed),
        )
    }

    /// After `finish` (read at `finish_us`): waits until every one of the
    /// `published` probes has arrived on every steady bystander, or the
    /// grace runs out, then accounts for them.
    async fn probe_check(&self, published: u64, finish_us: u64) -> ProbeCheck {
        let t = Instant::now();
        let grace = Duration::from_secs_f64(self.cfg.probe_grace_secs.max(0.0));
        while self
            .probes
            .missing_steady(published, |p| self.probe_class(p))
            > 0
            && t.elapsed() < grace
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut pc = self
            .probes
            .tally(published, finish_us, |p| self.probe_class(p));
        pc.waited_s = t.elapsed().as_secs_f64();
        pc
    }
}

struct ConnSink<'a> {
    st: &'a Gen,
    i: usize,
}

impl Sink for ConnSink<'_> {
    fn text(&self, text: &str) {
        self.st.text(self.i, text);
    }
    fn pong(&self) {
        self.st.pongs.fetch_add(1, Relaxed);
    }
}

/// The atomics behind [`scale::Moves`], updated by the moved clients' tasks.
#[derive(Default)]
struct MoveCounters {
    attempts: AtomicU64,
    failed: [AtomicU64; scale::MOVE_FAILURES.len()],
    failed_ms: AtomicU64,
    waited_ms: AtomicU64,
    ok_ms: AtomicU64,
    ok_ms_max: AtomicU64,
    back_hist: [AtomicU64; scale::BACK_BUCKETS_S.len() + 1],
    back_ms_max: AtomicU64,
}

impl MoveCounters {
    fn snapshot(&self) -> scale::Moves {
        let all = |a: &[AtomicU64]| a.iter().map(|x| x.load(Relaxed)).collect();
        scale::Moves {
            attempts: self.attempts.load(Relaxed),
            failed: all(&self.failed),
            failed_ms: self.failed_ms.load(Relaxed),
            waited_ms: self.waited_ms.load(Relaxed),
            ok_ms: self.ok_ms.load(Relaxed),
            ok_ms_max: self.ok_ms_max.load(Relaxed),
            back_hist: all(&self.back_hist),
            back_ms_max: self.back_ms_max.load(Relaxed),
        }
    }

    /// A moved client is back `back` after its close.
    fn back(&self, back: Duration) {
        let s = back.as_secs();
        let bucket = scale::BACK_BUCKETS_S
            .iter()
            .position(|hi| s < *hi)
            .unwrap_or(scale::BACK_BUCKETS_S.len());
        self.back_hist[bucket].fetch_add(1, Relaxed);
        self.back_ms_max.fetch_max(back.as_millis() as u64, Relaxed);
    }
}

/// Which of [`scale::MOVE_FAILURES`] a failed reconnect attempt is: `None`
/// for the per-attempt timeout, else the error of [`lean::open`].
fn failure_kind(err: Option<&anyhow::Error>) -> usize {
    let Some(err) = err else { return 0 };
    let text = format!("{err:#}");
    if text.starts_with("tcp connect") {
        1
    } else if text.contains("handshake refused") {
        2
    } else if text.contains("CONNECT refused") {
        3
    } else {
        4
    }
}

/// A cheap per-connection jitter in `0..1000` ms (no RNG state to keep).
fn jitter_ms(i: usize, salt: u64) -> u64 {
    let mut x = (i as u64) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x % 1000
}

/// Holds connection `i` (first on gateway `gw`) for the rest of the run,
/// reconnecting when a gateway closes it.
async fn run_conn(st: Arc<Gen>, i: usize, first: Session, mut gw: usize) {
    let mut session = first;
    loop {
        let end = lean::hold(session, &ConnSink { st: &st, i }).await;
        st.up[i].store(false, Relaxed);
        let from_restarted = st.restart_phase.load(Relaxed) && gw < st.restarted();
        if from_restarted {
            st.disc_from[gw].fetch_add(1, Relaxed);
            st.moved[i].store(true, Relaxed);
        } else if st.restart_phase.load(Relaxed) {
            st.bystander_disc.fetch_add(1, Relaxed);
            st.closed_in_restart[i].store(true, Relaxed);
        } else {
            st.hold_disc.fetch_add(1, Relaxed);
        }
        if !matches!(end, Ended::Closed) && !from_restarted {
            st.errors.fetch_add(1, Relaxed);
        }
        let old = gw;
        let closed_at = Instant::now();
        if from_restarted {
            let now = client::now_us();
            st.disc_first[gw].fetch_min(now, Relaxed);
            st.disc_last[gw].fetch_max(now, Relaxed);
        }
        let mut delay = Duration::from_millis(500 + jitter_ms(i, client::now_us()));
        let mut attempt = 0usize;
        session = loop {
            let wait = Instant::now();
            tokio::time::sleep(delay).await;
            let tried = Instant::now();
            if tried > st.give_up {
                st.reconnect_fail.fetch_add(1, Relaxed);
                return;
            }
            if from_restarted {
                let moves = &st.moves;
                moves.attempts.fetch_add(1, Relaxed);
                moves
                    .waited_ms
                    .fetch_add((tried - wait).as_millis() as u64, Relaxed);
            }
            // Only a restarted gateway's clients move; any other session that
            // was closed comes back where it was (moving those too piled the
            // hold's closed sessions onto gateways 5.. past their fd limit).
            let target = if from_restarted {
                scale::reconnect_target(st.cfg.gateways.len(), st.restarted(), i, attempt)
            } else {
                old
            };
            let opened = match st.token(i) {
                Ok(token) => tokio::time::timeout(
                    lean::CONNECT_TIMEOUT,
                    Box::pin(lean::open(
                        st.cfg.gateways[target],
                        Some(st.sources.next()),
                        &token,
                    )),
                )
                .await
                .map_err(|_| None)
                .and_then(|r| r.map_err(Some)),
                Err(err) => Err(Some(err)),
            };
            let took = tried.elapsed().as_millis() as u64;
            match opened {
                Ok(s) => {
                    if from_restarted {
                        let moves = &st.moves;
                        moves.ok_ms.fetch_add(took, Relaxed);
                        moves.ok_ms_max.fetch_max(took, Relaxed);
                        moves.back(closed_at.elapsed());
                    }
                    gw = target;
                    break s;
                }
                Err(err) if from_restarted => {
                    let moves = &st.moves;
                    moves.failed[failure_kind(err.as_ref())].fetch_add(1, Relaxed);
                    moves.failed_ms.fetch_add(took, Relaxed);
                }
                Err(_) => {}
            }
            attempt += 1;
            delay = (delay * 2).min(Duration::from_secs(5));
        };
        st.up[i].store(true, Relaxed);
        if from_restarted {
            st.reconn_from[old].fetch_add(1, Relaxed);
            st.storm_end[old].fetch_max(client::now_us(), Relaxed);
        }
    }
}

fn exists(dir: &std::path::Path, name: &str) -> bool {
    scale::file(dir, name).exists()
}

/// Runs one generator to the end of the scenario.
pub async fn run(cfg: GenConfig) -> anyhow::Result<()> {
    client::raise_nofile_limit();
    let dir = cfg.sync_dir.clone();
    let g = cfg.index;
    let st = Arc::new(Gen::new(cfg)?);
    let n = st.cfg.count;
    let home = st.cfg.gateways[g % st.cfg.gateways.len()];

    // Progress, phase and abort watcher.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (st, dir, stop) = (st.clone(), dir.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                if exists(&dir, "abort") {
                    eprintln!("sb-load scale[{g}]: abort file found, exiting");
                    std::process::exit(3);
                }
                if exists(&dir, "hold-end") {
                    st.phase.fetch_max(1, Relaxed);
                }
                if exists(&dir, "restart-phase") {
                    st.restart_phase.store(true, Relaxed);
                    st.phase.fetch_max(2, Relaxed);
                }
                if let Ok(text) = serde_json::to_string(&st.progress()) {
                    let _ = scale::write_atomic(&scale::progress_path(&dir, g), &text);
                }
                if stop.load(Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    tokio::spawn(st.clone().measure_lag());

    // Wait for our wave.
    if scale::wait_for_file(&scale::go_path(&dir, g), st.give_up)
        .await
        .is_none()
    {
        anyhow::bail!("generator {g}: never told to start");
    }
    let hist = Arc::new(Histogram::new());
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let sem = Arc::new(tokio::sync::Semaphore::new(st.cfg.concurrency.max(1)));
    let finished = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let t_connect = Instant::now();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let (st, hist, first_error, finished, all_done) = (
            st.clone(),
            hist.clone(),
            first_error.clone(),
            finished.clone(),
            all_done.clone(),
        );
        tokio::spawn(async move {
            let t0 = Instant::now();
            let r = match st.token(i) {
                Ok(token) => tokio::time::timeout(
                    lean::CONNECT_TIMEOUT,
                    Box::pin(lean::open(home, Some(st.sources.next()), &token)),
                )
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("connect timed out after 30 s"))),
                Err(e) => Err(e),
            };
            hist.record(t0.elapsed().as_micros() as u64);
            drop(permit);
            let session = match r {
                Ok(s) => {
                    st.up[i].store(true, Relaxed);
                    st.connected.fetch_add(1, Relaxed);
                    Some(s)
                }
                Err(e) => {
                    st.failed.fetch_add(1, Relaxed);
                    first_error
                        .lock()
                        .map(|mut f| {
                            f.get_or_insert(format!("{e:#}"));
                        })
                        .ok();
                    None
                }
            };
            if finished.fetch_add(1, Relaxed) + 1 == n {
                all_done.notify_one();
            }
            if let Some(s) = session {
                run_conn(st, i, s, g).await;
            }
        });
    }
    if n > 0 {
        all_done.notified().await;
    }
    let ready = Ready {
        connected: st.connected.load(Relaxed),
        failed: st.failed.load(Relaxed),
        connect_secs: t_connect.elapsed().as_secs_f64(),
        connect_p50_ms: hist.quantile(0.5) as f64 / 1000.0,
        connect_p99_ms: hist.quantile(0.99) as f64 / 1000.0,
        first_error: first_error.lock().ok().and_then(|f| f.clone()),
        pid: std::process::id(),
    };
    eprintln!(
        "sb-load scale[{g}]: {} connected, {} failed in {:.1} s{}",
        ready.connected,
        ready.failed,
        ready.connect_secs,
        ready
            .first_error
            .as_deref()
            .map(|e| format!(" (first error: {e})"))
            .unwrap_or_default()
    );
    scale::write_atomic(&scale::ready_path(&dir, g), &serde_json::to_string(&ready)?)?;

    // Each broadcast's audience: the sessions open when it is published.
    for (name, role) in [("published-all", false), ("published-role", true)] {
        let st = st.clone();
        let dir = dir.clone();
        tokio::spawn(async move {
            if scale::wait_for_file(&scale::file(&dir, name), st.give_up)
                .await
                .is_some()
            {
                let expected = if role {
                    &st.role_expected
                } else {
                    &st.all_expected
                };
                for i in 0..st.cfg.count {
                    expected[i].store(st.up[i].load(Relaxed), Relaxed);
                }
            }
        });
    }

    let rss_kib = {
        // The coordinator writes `finish` (with the probe count) at the end.
        let hold_end = scale::wait_for_file(&scale::file(&dir, "hold-end"), st.give_up).await;
        let rss = crate::procfs::rss_kib(std::process::id()).unwrap_or(0);
        if hold_end.is_none() {
            eprintln!("sb-load scale[{g}]: the hold never ended");
        }
        rss
    };
    let probes: u64 = scale::wait_for_file(&scale::file(&dir, "finish"), st.give_up)
        .await
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    // What arrives from here on is late; the sessions keep being read
    // (and the abort file watched) while the generator waits for it.
    let probe_check = st.probe_check(probes, client::now_us()).await;
    stop.store(true, Relaxed);
    let progress = st.progress();
    let all = st.check(
        &st.all_count,
        &st.all_lat,
        |i| st.all_expected[i].load(Relaxed),
        |_| true,
    );
    let role = st.check(
        &st.role_count,
        &st.role_lat,
        |i| st.role_expected[i].load(Relaxed),
        |i| i % 10 == 0,
    );
    let done = Done {
        ready,
        progress,
        all,
        role,
        probes: probe_check,
        reconnect_failures: st.reconnect_fail.load(Relaxed),
        pongs: st.pongs.load(Relaxed),
        errors: st.errors.load(Relaxed),
        rss_kib,
    };
    eprintln!(
        "sb-load scale[{g}]: all: once {} missed {} dup {}; role: once {} missed {} wrong {}; probes to steady bystanders: {} of {} on time, {} late (max {} ms, waited {:.1} s), {} lost; closed bystanders missed {}, moved {}; {} duplicated; {} hold disconnects",
        done.all.once,
        done.all.missed,
        done.all.dup_conns,
        done.role.once,
        done.role.missed,
        done.role.wrong,
        done.probes.steady_on_time,
        done.probes.steady_expected,
        done.probes.steady_late,
        done.probes.steady_late_max_ms,
        done.probes.waited_s,
        done.probes.steady_lost,
        done.probes.closed_lost,
        done.probes.moved_lost,
        done.probes.duplicates,
        done.progress.hold_disconnects
    );
    scale::write_atomic(&scale::done_path(&dir, g), &serde_json::to_string(&done)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each way [`lean::open`] fails lands in its own reason.
    #[test]
    fn reconnect_failures_are_told_apart() {
        let tcp = anyhow::anyhow!("Connection refused").context("tcp connect to 127.0.0.1:1");
        let http = anyhow::anyhow!("websocket handshake refused: HTTP/1.1 503");
        let sio = anyhow::anyhow!("CONNECT refused: bad token");
        let eof = anyhow::anyhow!("connection closed").context("websocket handshake");
        let kinds: Vec<&str> = [None, Some(&tcp), Some(&http), Some(&sio), Some(&eof)]
            .into_iter()
            .map(|e| scale::MOVE_FAILURES[failure_kind(e)])
            .collect();
        assert_eq!(
            kinds,
            ["timeout", "tcp", "http_refused", "sio_refused", "other"]
        );
    }
}
