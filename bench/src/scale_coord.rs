//! The `scale` coordinator (`sb-load scale-coord`): starts the generators in
//! waves (at most `wave` connecting at once) and reports progress, measures
//! the gateways over the idle hold (CPU, RSS) and the kernel's socket memory,
//! publishes one broadcast to everyone and one to a role room of 10% of the
//! users, then restarts gateways one at a time (SIGTERM, wait for their
//! clients to be back on the other gateways, start a new process) while
//! probes go to a sample of users, and adds the generators' checks up.
//! Every wait is bounded; below `min_available_mib` of `MemAvailable` it
//! writes `abort` (the generators exit) and fails.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use rmpv::Value;
use switchboard_wire::{BroadcastMessage, BroadcastOptions, BusPacket, Channels, EMITTER_UID};

use crate::{
    client, procfs,
    report::Record,
    scale::{self, Done, Progress, Ready},
};

/// What the coordinator is told on its command line.
pub struct CoordConfig {
    pub server_pids: Vec<u32>,
    pub gateways: Vec<SocketAddr>,
    pub sync_dir: PathBuf,
    /// Sessions per generator (generator `g` has `per` sessions).
    pub per: usize,
    pub tag: String,
    pub hold_secs: f64,
    pub settle_secs: f64,
    pub ready_timeout_secs: f64,
    /// Generators connecting at once.
    pub wave: usize,
    pub redis_url: String,
    pub results: Option<PathBuf>,
    pub server: String,
    pub run: String,
    /// Gateways `0..restart` are restarted one at a time after the broadcasts.
    pub restart: usize,
    /// Shell command that starts a gateway again; `{port}` is replaced.
    pub respawn_cmd: Option<String>,
    /// Probes per second during the rolling restart.
    pub probe_rate: f64,
    /// Abort below this much `MemAvailable`.
    pub min_available_mib: u64,
    /// Seconds a restarted gateway's clients have to be back.
    pub storm_timeout_secs: f64,
}

fn log(msg: impl AsRef<str>) {
    let t = client::now_us() / 1_000_000;
    eprintln!(
        "[{:02}:{:02}:{:02}] scale-coord: {}",
        (t / 3600) % 24,
        (t / 60) % 60,
        t % 60,
        msg.as_ref()
    );
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn progresses(dir: &Path, gens: usize) -> Vec<Progress> {
    (0..gens)
        .map(|g| read_json(&scale::progress_path(dir, g)).unwrap_or_default())
        .collect()
}

/// An emitter-format `bench` event of kind `kind` (the stamp's `r`) to
/// `rooms` (none: everyone).
pub fn bench_broadcast(rooms: Vec<String>, kind: u32, seq: u64, t_us: u64) -> (String, Vec<u8>) {
    let args = Value::Map(vec![
        (Value::from("t"), Value::from(t_us)),
        (Value::from("s"), Value::from(seq)),
        (Value::from("r"), Value::from(kind)),
    ]);
    let msg = BroadcastMessage {
        uid: EMITTER_UID.into(),
        packet: BusPacket::event("/", Value::Array(vec![Value::from("bench"), args])),
        opts: BroadcastOptions {
            rooms,
            ..Default::default()
        },
    };
    (
        msg.channel(&Channels::default()),
        switchboard_wire::encode_broadcast(&msg),
    )
}

/// Kernel memory figures at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Kernel {
    slab_kib: u64,
    sunreclaim_kib: u64,
    tcp: procfs::TcpSockstat,
    available_kib: u64,
}

fn kernel() -> Kernel {
    Kernel {
        slab_kib: procfs::meminfo_kib("Slab:").unwrap_or(0),
        sunreclaim_kib: procfs::meminfo_kib("SUnreclaim:").unwrap_or(0),
        tcp: procfs::tcp_sockstat().unwrap_or_default(),
        available_kib: procfs::meminfo_kib("MemAvailable:").unwrap_or(0),
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we were given and a valid signal.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

async fn publish(
    con: &mut redis::aio::MultiplexedConnection,
    (channel, bytes): (String, Vec<u8>),
) -> anyhow::Result<i64> {
    Ok(redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(bytes)
        .query_async(con)
        .await?)
}

/// The generators' longest timer lateness in `phase` (an index into
/// [`scale::PHASES`]), ms: how late the clients could have answered a ping.
fn gen_lag_ms(p: &[Progress], phase: usize) -> f64 {
    p.iter()
        .filter_map(|p| p.lag_max_ms.get(phase).copied())
        .fold(0.0, f64::max)
}

/// Polls the generators' progress until `done` says so or `timeout` passes;
/// true when `done` held.
async fn wait_progress(
    dir: &Path,
    gens: usize,
    timeout: Duration,
    done: impl Fn(&[Progress]) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done(&progresses(dir, gens)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the whole scenario; writes one record per gateway and one total.
pub async fn run(c: CoordConfig) -> anyhow::Result<()> {
    let dir = c.sync_dir.clone();
    let gws = c.server_pids.len();
    let mut pids = c.server_pids.clone();
    let k0 = kernel();
    let rss_before: Vec<u64> = pids
        .iter()
        .map(|&p| procfs::rss_kib(p).unwrap_or(0))
        .collect();
    let overflows0 = procfs::tcpext("ListenOverflows").unwrap_or(0);
    scale::write_atomic(&scale::started_path(&dir), "")?;

    // Memory guard for the whole run.
    let aborted = Arc::new(AtomicBool::new(false));
    let min_avail_seen = Arc::new(AtomicU64::new(u64::MAX));
    {
        let (dir, aborted, min_seen) = (dir.clone(), aborted.clone(), min_avail_seen.clone());
        let min_kib = c.min_available_mib * 1024;
        tokio::spawn(async move {
            loop {
                if let Some(avail) = procfs::meminfo_kib("MemAvailable:") {
                    min_seen.fetch_min(avail, Relaxed);
                    if avail < min_kib {
                        aborted.store(true, Relaxed);
                        let _ = scale::write_atomic(&scale::file(&dir, "abort"), "");
                        log(format!(
                            "ABORT: MemAvailable {} MiB < {} MiB",
                            avail / 1024,
                            min_kib / 1024
                        ));
                        std::process::exit(3);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    // Connect phase: at most `wave` generators connecting at once.
    let t_connect = Instant::now();
    let ready_deadline = t_connect + Duration::from_secs_f64(c.ready_timeout_secs);
    let mut started = 0usize;
    let mut readies: Vec<Option<Ready>> = vec![None; gws];
    let mut last_report = Instant::now();
    loop {
        for (g, r) in readies.iter_mut().enumerate().take(started) {
            if r.is_none() {
                *r = read_json(&scale::ready_path(&dir, g));
            }
        }
        let finished = readies.iter().filter(|r| r.is_some()).count();
        while started < gws && started - finished.min(started) < c.wave.max(1) {
            scale::write_atomic(&scale::go_path(&dir, started), "")?;
            started += 1;
        }
        if finished == gws {
            break;
        }
        if Instant::now() >= ready_deadline {
            log(format!(
                "{} of {gws} generators never finished connecting",
                gws - finished
            ));
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let p = progresses(&dir, gws);
            let connected: u64 = p.iter().map(|p| p.connected).sum();
            let failed: u64 = p.iter().map(|p| p.failed).sum();
            let secs = t_connect.elapsed().as_secs_f64();
            log(format!(
                "connecting: {connected} open, {failed} failed, {finished}/{gws} generators done, {:.0}/s, gateways {:.0} MiB, MemAvailable {} MiB",
                connected as f64 / secs,
                mib(procfs::rss_sum_kib(&pids).unwrap_or(0)),
                procfs::meminfo_kib("MemAvailable:").unwrap_or(0) / 1024
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let readies: Vec<Ready> = readies.into_iter().map(Option::unwrap_or_default).collect();
    let gen_pids: Vec<u32> = readies.iter().map(|r| r.pid).filter(|&p| p != 0).collect();
    let connected: u64 = readies.iter().map(|r| r.connected).sum();
    let failed: u64 = readies.iter().map(|r| r.failed).sum();
    let connect_secs = t_connect.elapsed().as_secs_f64();
    log(format!(
        "{connected} sessions connected, {failed} failed, in {connect_secs:.1} s ({:.0}/s); holding {:.0} s",
        connected as f64 / connect_secs.max(1e-9),
        c.hold_secs
    ));
    if let Some(e) = readies.iter().find_map(|r| r.first_error.clone()) {
        log(format!("first connect error: {e}"));
    }

    // Idle hold.
    tokio::time::sleep(Duration::from_secs_f64(c.settle_secs)).await;
    let cpu0: Vec<Option<Duration>> = pids.iter().map(|&p| procfs::cpu_time(p).ok()).collect();
    let gen_cpu0 = procfs::cpu_time_sum(&gen_pids).unwrap_or_default();
    let hold_start = Instant::now();
    let peak_total = Arc::new(AtomicU64::new(0));
    let sampler = {
        let pids = pids.clone();
        let peak_total = peak_total.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(r) = procfs::rss_sum_kib(&pids) {
                    peak_total.fetch_max(r, Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let hold = Duration::from_secs_f64(c.hold_secs);
    while hold_start.elapsed() < hold {
        let left = hold.saturating_sub(hold_start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(30))).await;
        let p = progresses(&dir, gws);
        log(format!(
            "holding: {:.0}/{:.0} s, {} open, {} disconnects, gateways {:.0} MiB, MemAvailable {} MiB",
            hold_start.elapsed().as_secs_f64(),
            c.hold_secs,
            p.iter().map(|p| p.up).sum::<u64>(),
            p.iter().map(|p| p.hold_disconnects).sum::<u64>(),
            mib(procfs::rss_sum_kib(&pids).unwrap_or(0)),
            procfs::meminfo_kib("MemAvailable:").unwrap_or(0) / 1024
        ));
    }
    let hold = hold_start.elapsed();
    let cpu1: Vec<Option<Duration>> = pids.iter().map(|&p| procfs::cpu_time(p).ok()).collect();
    let gen_cpu1 = procfs::cpu_time_sum(&gen_pids).unwrap_or_default();
    sampler.abort();
    let rss_end: Vec<u64> = pids
        .iter()
        .map(|&p| procfs::rss_kib(p).unwrap_or(0))
        .collect();
    let pss_end: u64 = pids.iter().map(|&p| procfs::pss_kib(p).unwrap_or(0)).sum();
    let anon_end: u64 = pids
        .iter()
        .map(|&p| procfs::rss_anon_kib(p).unwrap_or(0))
        .sum();
    let gen_rss: u64 = procfs::rss_sum_kib(&gen_pids).unwrap_or(0);
    let k1 = kernel();
    scale::write_atomic(&scale::file(&dir, "hold-end"), "")?;
    let cpu_of = |g: usize| match (cpu0[g], cpu1[g]) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };

    // Broadcast to everyone, then to role:r0.
    let redis = redis::Client::open(c.redis_url.as_str())?;
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    let mut con = redis
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("connect to redis")?;
    let mut bcast = BTreeMap::<String, f64>::new();
    for (name, rooms, kind) in [
        ("all", vec![], scale::KIND_ALL),
        ("role", vec![scale::ROLE_ROOM.to_string()], scale::KIND_ROLE),
    ] {
        let marker = scale::file(&dir, &format!("published-{name}"));
        // The generators snapshot who is open, the audience, on the marker:
        // written first, so nobody counts as missing a message published
        // before their snapshot.
        let target: u64 = {
            scale::write_atomic(&marker, "")?;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let p = progresses(&dir, gws);
            if kind == scale::KIND_ALL {
                p.iter().map(|p| p.up).sum()
            } else {
                p.iter().map(|p| p.role_members_up).sum()
            }
        };
        let gw_cpu_a = procfs::cpu_time_sum(&pids).unwrap_or_default();
        let gen_cpu_a = procfs::cpu_time_sum(&gen_pids).unwrap_or_default();
        let t = Instant::now();
        let receivers =
            publish(&mut con, bench_broadcast(rooms, kind, 0, client::now_us())).await?;
        let all_in = wait_progress(&dir, gws, Duration::from_secs(120), |p| {
            let got: u64 = p
                .iter()
                .map(|p| {
                    if kind == scale::KIND_ALL {
                        p.all_got
                    } else {
                        p.role_got
                    }
                })
                .sum();
            got >= target
        })
        .await;
        let secs = t.elapsed().as_secs_f64();
        // Saturating: a sum that cannot be read now (a process gone, /proc
        // unreadable under overload) is 0, and the figure says 0 rather
        // than the coordinator panicking and losing the rest of the run.
        let gw_cpu = procfs::cpu_time_sum(&pids)
            .unwrap_or_default()
            .saturating_sub(gw_cpu_a);
        let gen_cpu = procfs::cpu_time_sum(&gen_pids)
            .unwrap_or_default()
            .saturating_sub(gen_cpu_a);
        log(format!(
            "broadcast `{name}` to {target} sessions via {receivers} subscribers: {} in {secs:.1} s (gateways {:.1} CPU-s, generators {:.1} CPU-s; generators' timer lag so far up to {:.0} ms)",
            if all_in {
                "all received"
            } else {
                "NOT all received"
            },
            gw_cpu.as_secs_f64(),
            gen_cpu.as_secs_f64(),
            gen_lag_ms(&progresses(&dir, gws), 1)
        ));
        bcast.insert(format!("{name}_redis_receivers"), receivers as f64);
        bcast.insert(format!("{name}_gw_cpu_s"), gw_cpu.as_secs_f64());
        bcast.insert(format!("{name}_gen_cpu_s"), gen_cpu.as_secs_f64());
        // Duplicates would arrive right behind the first copy.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    // Rolling restart of gateways 0..restart, probes to a sample of users.
    let mut storms: Vec<Option<f64>> = vec![None; gws];
    let mut probes_sent = 0u64;
    let mut storm_incomplete = 0u64;
    let mut respawned = Vec::new();
    // The moved clients' reconnects up to the previous restart.
    let mut moves_before = scale::Moves::default();
    let restart = c.restart.min(gws).min(crate::scale_gen::MAX_RESTART);
    if restart > 0 {
        scale::write_atomic(&scale::file(&dir, "restart-phase"), "")?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let rooms: Vec<String> = (0..gws)
            .flat_map(|g| {
                let tag = c.tag.clone();
                (0..c.per)
                    .step_by(scale::PROBE_EVERY)
                    .map(move |i| format!("user:{}", scale::user_name(&tag, g, i)))
            })
            .collect();
        let stop_probes = Arc::new(AtomicBool::new(false));
        let probe_task = {
            let stop = stop_probes.clone();
            let mut con = con.clone();
            let period = Duration::from_secs_f64(1.0 / c.probe_rate.max(0.1));
            tokio::spawn(async move {
                let mut seq = 0u64;
                let mut tick = tokio::time::interval(period);
                while !stop.load(Relaxed) && seq < scale::MAX_PROBES {
                    tick.tick().await;
                    let msg =
                        bench_broadcast(rooms.clone(), scale::KIND_PROBE, seq, client::now_us());
                    if let Err(e) = publish(&mut con, msg).await {
                        log(format!("probe {seq} not published: {e:#}"));
                        break;
                    }
                    seq += 1;
                }
                seq
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        for k in 0..restart {
            let expect = readies[k].connected;
            let t_term = client::now_us();
            let t0 = Instant::now();
            signal(pids[k], libc::SIGTERM);
            let back = wait_progress(
                &dir,
                gws,
                Duration::from_secs_f64(c.storm_timeout_secs),
                |p| {
                    let d: u64 = p
                        .iter()
                        .map(|p| p.disconnected_from.get(k).copied().unwrap_or(0))
                        .sum();
                    let r: u64 = p
                        .iter()
                        .map(|p| p.reconnected_from.get(k).copied().unwrap_or(0))
                        .sum();
                    d >= expect && r >= d
                },
            )
            .await;
            let p = progresses(&dir, gws);
            let end = p
                .iter()
                .filter_map(|p| p.storm_end_us.get(k).copied())
                .max()
                .unwrap_or(0);
            let back_n: u64 = p
                .iter()
                .map(|p| p.reconnected_from.get(k).copied().unwrap_or(0))
                .sum();
            let storm = end.saturating_sub(t_term) as f64 / 1e6;
            storms[k] = Some(storm);
            if !back {
                storm_incomplete += 1;
            }
            let bystanders: u64 = p.iter().map(|p| p.bystander_disconnects).sum();
            log(format!(
                "restart {}/{restart}: gateway {k} (pid {}) SIGTERM; {back_n} of {expect} clients back on other gateways {} {storm:.1} s after; bystanders closed so far {bystanders}; generators' timer lag so far up to {:.0} ms",
                k + 1,
                pids[k],
                if back { "all" } else { "NOT all" },
                gen_lag_ms(&p, 2)
            ));
            // Where that time went: how long the stopping gateway took to
            // close its clients (as they saw it), and their reconnects.
            let since_term = |t: u64| t.saturating_sub(t_term) as f64 / 1e6;
            let firsts = p
                .iter()
                .filter_map(|p| p.disc_first_us.get(k).copied())
                .filter(|t| *t > 0);
            let closed_from = firsts.min().map_or(f64::NAN, since_term);
            let closed_to = p
                .iter()
                .filter_map(|p| p.disc_last_us.get(k).copied())
                .max()
                .map_or(f64::NAN, since_term);
            let mut moves = scale::Moves::default();
            for g in &p {
                moves.add(&g.moves);
            }
            log(format!(
                "restart {}/{restart}: its clients saw their close from {closed_from:.1} to {closed_to:.1} s after SIGTERM; reconnects: {}",
                k + 1,
                moves.since(&moves_before).describe()
            ));
            moves_before = moves;
            // The old process must be gone before its port is reused.
            while !procfs::exited(pids[k]) && t0.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !procfs::exited(pids[k]) {
                log(format!(
                    "gateway {k} still running 30 s after SIGTERM; SIGKILL"
                ));
                signal(pids[k], libc::SIGKILL);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if let Some(cmd) = &c.respawn_cmd {
                let port = c.gateways[k].port();
                let cmd = cmd.replace("{port}", &port.to_string());
                match std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("exec {cmd}"))
                    .spawn()
                {
                    Ok(child) => {
                        pids[k] = child.id();
                        respawned.push(child);
                        let _ = std::fs::write(
                            scale::file(&dir, "respawned-pids"),
                            respawned
                                .iter()
                                .map(|c| format!("{}\n", c.id()))
                                .collect::<String>(),
                        );
                    }
                    Err(e) => log(format!("cannot start gateway {k} again: {e}")),
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop_probes.store(true, Relaxed);
        probes_sent = probe_task.await.unwrap_or(0);
        log(format!(
            "{probes_sent} probes published during the restarts"
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    scale::write_atomic(&scale::file(&dir, "finish"), &probes_sent.to_string())?;
    let done_deadline = Instant::now() + Duration::from_secs(120);
    let mut dones = Vec::with_capacity(gws);
    for (g, ready) in readies.iter().enumerate() {
        let d = scale::wait_for_file(&scale::done_path(&dir, g), done_deadline).await;
        dones.push(match d {
            Some(text) => serde_json::from_str::<Done>(&text)?,
            None => {
                log(format!("generator {g} did not report"));
                let mut d = Done {
                    ready: ready.clone(),
                    ..Default::default()
                };
                d.all.expected = ready.connected;
                d.all.missed = ready.connected;
                d
            }
        });
    }
    for mut child in respawned {
        let _ = child.kill();
        let _ = child.wait();
    }

    // Records.
    let size = format!(
        "{} conns, {gws} gateways, {:.0} s hold",
        c.per * gws,
        c.hold_secs
    );
    let hold_s = hold.as_secs_f64();
    let record = |figures: BTreeMap<String, f64>| Record {
        scenario: "scale".into(),
        server: c.server.clone(),
        size: size.clone(),
        figures,
        run: c.run.clone(),
    };
    let mut all_lat = Vec::new();
    let mut role_lat = Vec::new();
    for (g, d) in dones.iter().enumerate() {
        let mut f = BTreeMap::new();
        f.insert("gateway".into(), g as f64);
        f.insert("connections".into(), d.ready.connected as f64);
        f.insert("rss_before_mib".into(), mib(rss_before[g]));
        f.insert("rss_after_mib".into(), mib(rss_end[g]));
        f.insert(
            "idle_cpu_pct".into(),
            cpu_of(g).as_secs_f64() / hold_s * 100.0,
        );
        f.insert("received_once".into(), d.all.once as f64);
        f.insert("lost".into(), d.all.missed as f64);
        f.insert("duplicates".into(), d.all.extra as f64);
        f.insert("disconnects".into(), d.progress.hold_disconnects as f64);
        let mut lat = d.all.latencies_us.clone();
        if let Some((p50, p99, max)) = scale::latency_summary_ms(&mut lat) {
            f.insert("bcast_p50_ms".into(), p50);
            f.insert("bcast_p99_ms".into(), p99);
            f.insert("bcast_last_ms".into(), max);
        }
        if let Some(s) = storms[g] {
            f.insert("storm_s".into(), s);
        }
        if restart > 0 {
            f.insert("probe_steady_late".into(), d.probes.steady_late as f64);
            f.insert("probe_steady_lost".into(), d.probes.steady_lost as f64);
        }
        all_lat.extend_from_slice(&d.all.latencies_us);
        role_lat.extend_from_slice(&d.role.latencies_us);
        if let Err(e) = record(f).report(c.results.as_deref()) {
            log(format!("cannot record a result: {e:#}"));
        }
    }

    let sum = |f: &dyn Fn(&Done) -> u64| dones.iter().map(f).sum::<u64>() as f64;
    let total_before: u64 = rss_before.iter().sum();
    let total_end: u64 = rss_end.iter().sum();
    let total_cpu: f64 = (0..gws).map(|g| cpu_of(g).as_secs_f64()).sum();
    let mut f = BTreeMap::new();
    f.insert("connections".into(), connected as f64);
    f.insert("connect_failures".into(), failed as f64);
    f.insert("connect_secs".into(), connect_secs);
    f.insert(
        "connects_per_s".into(),
        connected as f64 / connect_secs.max(1e-9),
    );
    f.insert(
        "connect_p99_ms".into(),
        readies.iter().map(|r| r.connect_p99_ms).fold(0.0, f64::max),
    );
    f.insert("hold_s".into(), hold_s);
    f.insert("rss_before_mib".into(), mib(total_before));
    f.insert("total_rss_mib".into(), mib(total_end));
    f.insert(
        "max_rss_mib".into(),
        mib(peak_total.load(Relaxed).max(total_end)),
    );
    f.insert("total_pss_mib".into(), mib(pss_end));
    f.insert("total_anon_mib".into(), mib(anon_end));
    f.insert(
        "gw_rss_max_mib".into(),
        mib(rss_end.iter().copied().max().unwrap_or(0)),
    );
    if connected > 0 {
        let n = connected as f64;
        f.insert(
            "rss_per_conn_kib".into(),
            (total_end as f64 - total_before as f64) / n,
        );
        f.insert("total_rss_per_conn_kib".into(), total_end as f64 / n);
        f.insert("total_pss_per_conn_kib".into(), pss_end as f64 / n);
        f.insert(
            "slab_per_conn_kib".into(),
            (k1.slab_kib as f64 - k0.slab_kib as f64) / n,
        );
        f.insert("gen_rss_per_conn_kib".into(), gen_rss as f64 / n);
        f.insert(
            "idle_cpu_pct_per_100k".into(),
            total_cpu / hold_s * 100.0 / (n / 100_000.0),
        );
    }
    f.insert(
        "slab_growth_mib".into(),
        mib(k1.slab_kib.saturating_sub(k0.slab_kib)),
    );
    f.insert(
        "sunreclaim_growth_mib".into(),
        mib(k1.sunreclaim_kib.saturating_sub(k0.sunreclaim_kib)),
    );
    f.insert("tcp_inuse".into(), k1.tcp.inuse as f64);
    f.insert(
        "tcp_buffers_mib".into(),
        (k1.tcp.mem_pages * 4) as f64 / 1024.0,
    );
    f.insert("gen_rss_mib".into(), mib(gen_rss));
    f.insert(
        "mem_available_min_mib".into(),
        mib(min_avail_seen.load(Relaxed)),
    );
    f.insert(
        "mem_available_end_of_hold_mib".into(),
        mib(k1.available_kib),
    );
    f.insert("idle_cpu_pct".into(), total_cpu / hold_s * 100.0);
    f.insert(
        "gw_idle_cpu_max_pct".into(),
        (0..gws)
            .map(|g| cpu_of(g).as_secs_f64() / hold_s * 100.0)
            .fold(0.0, f64::max),
    );
    f.insert(
        "gen_idle_cpu_pct".into(),
        (gen_cpu1.saturating_sub(gen_cpu0)).as_secs_f64() / hold_s * 100.0,
    );
    f.insert("pongs".into(), sum(&|d| d.pongs));
    f.insert("received_once".into(), sum(&|d| d.all.once));
    f.insert("bcast_expected".into(), sum(&|d| d.all.expected));
    f.insert("lost".into(), sum(&|d| d.all.missed));
    f.insert("duplicates".into(), sum(&|d| d.all.extra));
    f.insert("disconnects".into(), sum(&|d| d.progress.hold_disconnects));
    if let Some((p50, p99, max)) = scale::latency_summary_ms(&mut all_lat) {
        f.insert("bcast_p50_ms".into(), p50);
        f.insert("bcast_p99_ms".into(), p99);
        f.insert("bcast_last_ms".into(), max);
    }
    f.insert("role_expected".into(), sum(&|d| d.role.expected));
    f.insert("role_received_once".into(), sum(&|d| d.role.once));
    f.insert("role_lost".into(), sum(&|d| d.role.missed));
    f.insert("role_duplicates".into(), sum(&|d| d.role.extra));
    f.insert("role_wrong".into(), sum(&|d| d.role.wrong));
    if let Some((p50, p99, max)) = scale::latency_summary_ms(&mut role_lat) {
        f.insert("role_p50_ms".into(), p50);
        f.insert("role_p99_ms".into(), p99);
        f.insert("role_last_ms".into(), max);
    }
    f.extend(bcast);
    f.insert(
        "listen_overflows".into(),
        procfs::tcpext("ListenOverflows")
            .unwrap_or(0)
            .saturating_sub(overflows0) as f64,
    );
    if restart > 0 {
        f.insert("restarted".into(), restart as f64);
        let s: Vec<f64> = storms.iter().flatten().copied().collect();
        f.insert("storm_max_s".into(), s.iter().copied().fold(0.0, f64::max));
        f.insert("storm_incomplete".into(), storm_incomplete as f64);
        f.insert(
            "moved".into(),
            sum(&|d| d.progress.disconnected_from.iter().sum()),
        );
        f.insert(
            "moved_back".into(),
            sum(&|d| d.progress.reconnected_from.iter().sum()),
        );
        f.insert("reconnect_failures".into(), sum(&|d| d.reconnect_failures));
        f.insert(
            "bystander_disconnects".into(),
            sum(&|d| d.progress.bystander_disconnects),
        );
        f.insert("probes".into(), probes_sent as f64);
        /// A figure summed over the generators' probe checks.
        type Figure = (&'static str, fn(&Done) -> u64);
        let probe_figures: [Figure; 10] = [
            ("probe_steady_conns", |d| d.probes.steady_conns),
            ("probe_steady_expected", |d| d.probes.steady_expected),
            ("probe_steady_on_time", |d| d.probes.steady_on_time),
            ("probe_steady_late", |d| d.probes.steady_late),
            ("probe_steady_lost", |d| d.probes.steady_lost),
            ("probe_steady_slow", |d| d.probes.steady_slow),
            ("probe_closed_conns", |d| d.probes.closed_conns),
            ("probe_closed_lost", |d| d.probes.closed_lost),
            ("probe_moved_conns", |d| d.probes.moved_conns),
            ("probe_moved_lost", |d| d.probes.moved_lost),
        ];
        for (key, of) in probe_figures {
            f.insert(key.into(), sum(&of));
        }
        f.insert("probe_duplicates".into(), sum(&|d| d.probes.duplicates));
        let late_max = dones
            .iter()
            .map(|d| d.probes.steady_late_max_ms)
            .max()
            .unwrap_or(0);
        f.insert("probe_steady_late_max_ms".into(), late_max as f64);
        let hist: Vec<(u64, u64)> = dones
            .iter()
            .flat_map(|d| d.probes.steady_latency_ms.iter().copied())
            .collect();
        let summary = crate::scale_probes::histogram_summary_ms(&hist);
        if let Some((p50, p99, max)) = summary {
            f.insert("probe_steady_p50_ms".into(), p50 as f64);
            f.insert("probe_steady_p99_ms".into(), p99 as f64);
            f.insert("probe_steady_max_ms".into(), max as f64);
        }
        let waited = dones.iter().map(|d| d.probes.waited_s).fold(0.0, f64::max);
        f.insert("probe_waited_max_s".into(), waited);
        let (p50, p99, max) = summary.unwrap_or_default();
        log(format!(
            "probes to {} steady bystanders: {} of {} deliveries on time, {} late (latest {late_max} ms; generators waited up to {waited:.1} s), {} never arrived, {} duplicated; publish -> arrival p50 {p50} ms, p99 {p99} ms, max {max} ms, {} over {} ms; {} bystanders closed in the phase missed {}",
            sum(&|d| d.probes.steady_conns),
            sum(&|d| d.probes.steady_on_time),
            sum(&|d| d.probes.steady_expected),
            sum(&|d| d.probes.steady_late),
            sum(&|d| d.probes.steady_lost),
            sum(&|d| d.probes.duplicates),
            sum(&|d| d.probes.steady_slow),
            crate::scale_probes::SLOW_PROBE_MS,
            sum(&|d| d.probes.closed_conns),
            sum(&|d| d.probes.closed_lost),
        ));
    }
    let finals: Vec<Progress> = dones.iter().map(|d| d.progress.clone()).collect();
    for (phase, name) in scale::PHASES.iter().enumerate() {
        f.insert(format!("gen_lag_max_ms_{name}"), gen_lag_ms(&finals, phase));
    }
    f.insert("errors".into(), sum(&|d| d.errors));
    let _ = aborted;
    if let Err(e) = record(f).report(c.results.as_deref()) {
        log(format!("cannot record a result: {e:#}"));
    }
    Ok(())
}
