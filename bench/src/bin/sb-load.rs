//! `sb-load`: the benchmark load generator and report writer.
//!
//! * `connect`: opens N authenticated sessions (connect rate, p50/p99 connect
//!   time, server CPU per connect, server RSS growth per connection).
//! * `fanout`: N clients in R role rooms; publishes `bench` events through
//!   Redis in the `@socket.io/redis-emitter` format at a fixed delivery rate
//!   (or as fast as the clients absorb them with `--ceiling`); measures
//!   server CPU per delivery, publish-to-receive latency, loss and duplicates.
//! * `scale`: one of the `scale` scenario's generators: connects and holds N
//!   sessions (answering pings), then checks each got the one broadcast
//!   exactly once (coordination files: [`switchboard_bench::scale`]).
//! * `scale-coord`: the `scale` coordinator: total gateway RSS and idle CPU
//!   over the hold, one broadcast to everyone, the generators' results added up.
//! * `report`: renders the recorded results into `docs/benchmarks.md`.
//!
//! Every measuring command appends one JSON line to `--results`.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use rmpv::Value;
use switchboard_bench::{
    client::{self, Conn, RecvStats, Slot, SourceAddrs, Tally, Target},
    hist::Histogram,
    procfs,
    proto::Stamp,
    report::{self, Record},
    scale,
};
use switchboard_wire::{BroadcastMessage, BroadcastOptions, BusPacket, Channels, EMITTER_UID};

#[derive(Parser)]
#[command(about = "Switchboard benchmark load generator")]
struct Cli {
    /// Tokio worker threads (default: the CPUs this process may run on).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Connect(ConnectArgs),
    Fanout(FanoutArgs),
    Scale(ScaleArgs),
    ScaleCoord(ScaleCoordArgs),
    Report(ReportArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Server address(es); clients are spread over them round robin.
    #[arg(long = "addr", required = true)]
    addrs: Vec<SocketAddr>,
    /// Server process id(s) whose RSS and CPU time are measured.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET")]
    secret: String,
    /// First source address (127.x.y.z) clients bind to.
    #[arg(long, default_value = "127.0.1.1")]
    src_base: Ipv4Addr,
    /// How many consecutive source addresses to spread clients over.
    #[arg(long, default_value_t = 64)]
    src_count: u32,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Where to append the result line (JSON lines).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Server label in the results: switchboard, node, floor-...
    #[arg(long, default_value = "switchboard")]
    server: String,
    /// Scenario label in the results.
    #[arg(long)]
    scenario: Option<String>,
    /// Run label stored with the result (date, commit).
    #[arg(long, env = "SB_RUN", default_value = "")]
    run: String,
    /// Number of distinct roles (`r0`..): client i gets role `r{i % rooms}`.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
}

#[derive(Args)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Sessions to open.
    #[arg(long)]
    count: usize,
    /// Seconds to wait after the last connect before reading RSS.
    #[arg(long, default_value_t = 3.0)]
    settle_secs: f64,
    /// Plain TCP connects (the raw-socket memory floor).
    #[arg(long)]
    raw_tcp: bool,
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Clients to connect.
    #[arg(long)]
    clients: usize,
    /// Target deliveries per second (fixed-rate mode).
    #[arg(long, default_value_t = 25_000)]
    rate: u64,
    /// Publishing time.
    #[arg(long, default_value_t = 20.0)]
    secs: f64,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Padding bytes in each event (the event is ~60 bytes plus this).
    #[arg(long, default_value_t = 40)]
    pad: usize,
    /// The server is `sb-floor` in fanout mode: start it with SIGUSR1
    /// instead of publishing (it writes the same frames itself).
    #[arg(long)]
    floor: bool,
    /// Publish as fast as the clients absorb: keep at most `--window`
    /// deliveries in flight (closed loop, so memory stays bounded).
    #[arg(long)]
    ceiling: bool,
    /// Deliveries in flight in `--ceiling` mode.
    #[arg(long, default_value_t = 50_000)]
    window: u64,
}

#[derive(Args)]
struct ScaleArgs {
    #[command(flatten)]
    common: Common,
    /// Sessions to open and hold.
    #[arg(long)]
    count: usize,
    /// This generator's index (its gateway's), names its sync files.
    #[arg(long)]
    index: usize,
    /// Directory shared with `scale-coord`.
    #[arg(long)]
    sync_dir: PathBuf,
    /// Give up waiting for the broadcast this long after starting.
    #[arg(long, default_value_t = 1500.0)]
    wait_secs: f64,
    /// After the publish, wait at most this long for every connection.
    #[arg(long, default_value_t = 60.0)]
    deliver_secs: f64,
    /// After the last connection got it, wait this long for duplicates.
    #[arg(long, default_value_t = 3.0)]
    grace_secs: f64,
}

#[derive(Args)]
struct ScaleCoordArgs {
    /// Gateway process ids, in generator-index order.
    #[arg(long = "server-pid", required = true)]
    server_pids: Vec<u32>,
    /// Directory shared with the generators.
    #[arg(long)]
    sync_dir: PathBuf,
    /// Connections asked for in total (the size label).
    #[arg(long)]
    conns: usize,
    /// Idle hold, measured from when every generator is connected.
    #[arg(long, default_value_t = 300.0)]
    hold_secs: f64,
    /// Pause between the last connect and the start of the hold.
    #[arg(long, default_value_t = 5.0)]
    settle_secs: f64,
    /// How long generators may take to connect.
    #[arg(long, default_value_t = 900.0)]
    ready_timeout_secs: f64,
    /// How long generators may take to report after the publish.
    #[arg(long, default_value_t = 90.0)]
    done_timeout_secs: f64,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Where to append the result lines (JSON lines).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Server label in the results.
    #[arg(long, default_value = "switchboard")]
    server: String,
    /// Run label stored with the result (date, commit).
    #[arg(long, env = "SB_RUN", default_value = "")]
    run: String,
}

#[derive(Args)]
struct ReportArgs {
    /// JSON-lines results written by the measuring commands.
    #[arg(long)]
    results: PathBuf,
    /// Markdown file whose results section is replaced.
    #[arg(long)]
    doc: PathBuf,
    /// Free text put above the tables (date, machine, commit...), one line each.
    #[arg(long = "line")]
    lines: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = cli.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt.build()?;
    match cli.command {
        Command::Connect(a) => rt.block_on(connect(a)),
        Command::Fanout(a) => rt.block_on(fanout(a)),
        Command::Scale(a) => rt.block_on(scale(a)),
        Command::ScaleCoord(a) => rt.block_on(scale_coord(a)),
        Command::Report(a) => write_report(a),
    }
}

fn tokens(secret: &str, n: usize, rooms: usize) -> anyhow::Result<Vec<String>> {
    let run = client::now_us() % 1_000_000;
    (0..n)
        .map(|i| {
            client::mint_token(
                secret.as_bytes(),
                &format!("u{run}-{i}"),
                &format!("r{}", i % rooms.max(1)),
            )
        })
        .collect()
}

fn self_cpu() -> Duration {
    procfs::cpu_time(std::process::id()).unwrap_or_default()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn emit(common: &Common, default_scenario: &str, size: String, figures: BTreeMap<String, f64>) {
    let record = Record {
        scenario: common
            .scenario
            .clone()
            .unwrap_or_else(|| default_scenario.into()),
        server: common.server.clone(),
        size,
        figures,
        run: common.run.clone(),
    };
    output(&record, common.results.as_deref());
}

fn output(record: &Record, results: Option<&std::path::Path>) {
    println!("{}", serde_json::to_string(record).unwrap_or_default());
    if let Some(path) = results
        && let Err(e) = record.append_to(path)
    {
        eprintln!("sb-load: cannot record result: {e:#}");
    }
}

fn targets(common: &Common) -> Vec<Target> {
    common.addrs.iter().map(|&a| Target::new(a)).collect()
}

fn spawn_drivers(
    conns: Vec<Conn>,
    stats: &Arc<RecvStats>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::net::TcpStream> {
    let mut raw = Vec::new();
    for c in conns {
        match c {
            Conn::Ws(ws) => {
                tokio::spawn(client::drive(*ws, stats.clone(), stop.clone(), None));
            }
            Conn::Tcp(t) => raw.push(t),
        }
    }
    raw
}

async fn connect(a: ConnectArgs) -> anyhow::Result<()> {
    let c = &a.common;
    client::raise_nofile_limit();
    let sources = Arc::new(SourceAddrs::new(c.src_base, c.src_count)?);
    let toks = if a.raw_tcp {
        vec![String::new(); a.count]
    } else {
        tokens(&c.secret, a.count, c.rooms)?
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = procfs::rss_sum_kib(&c.server_pids).ok();
    let cpu0 = procfs::cpu_time_sum(&c.server_pids).ok();
    let self0 = self_cpu();
    let (conns, hist, elapsed) =
        client::open_many(&targets(c), &sources, toks, c.concurrency, a.raw_tcp).await?;
    let cpu1 = procfs::cpu_time_sum(&c.server_pids).ok();
    let self1 = self_cpu();
    let stats = Arc::new(RecvStats::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let raw = spawn_drivers(conns, &stats, &stop_rx);
    tokio::time::sleep(Duration::from_secs_f64(a.settle_secs)).await;
    let rss1 = procfs::rss_sum_kib(&c.server_pids).ok();

    let n = a.count as f64;
    let secs = elapsed.as_secs_f64();
    let mut f = BTreeMap::new();
    f.insert("connections".into(), n);
    f.insert("connects_per_s".into(), n / secs);
    f.insert("connect_p50_ms".into(), hist.quantile(0.5) as f64 / 1000.0);
    f.insert("connect_p99_ms".into(), hist.quantile(0.99) as f64 / 1000.0);
    f.insert(
        "loadgen_cpu_util".into(),
        (self1 - self0).as_secs_f64() / secs,
    );
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        f.insert(
            "server_cpu_us_per_connect".into(),
            (c1 - c0).as_secs_f64() * 1e6 / n,
        );
        f.insert("server_cpu_util".into(), (c1 - c0).as_secs_f64() / secs);
    }
    if let (Some(r0), Some(r1)) = (rss0, rss1) {
        f.insert("rss_before_mib".into(), mib(r0));
        f.insert("rss_after_mib".into(), mib(r1));
        f.insert("rss_per_conn_kib".into(), (r1 as f64 - r0 as f64) / n);
    }
    f.insert("disconnects".into(), stats.disconnects.load(Relaxed) as f64);
    emit(c, "connect", format!("{} conns", a.count), f);
    let _ = stop_tx.send(true);
    drop(raw);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// The emitter bytes and channel of one `bench` event to `role:r{room}`.
fn bench_message(channels: &Channels, stamp: Stamp, pad: usize) -> (String, Vec<u8>) {
    let args = Value::Map(vec![
        (Value::from("t"), Value::from(stamp.t_us)),
        (Value::from("s"), Value::from(stamp.seq)),
        (Value::from("r"), Value::from(stamp.room)),
        (Value::from("p"), Value::from("x".repeat(pad))),
    ]);
    let msg = BroadcastMessage {
        uid: EMITTER_UID.into(),
        packet: BusPacket::event("/", Value::Array(vec![Value::from("bench"), args])),
        opts: BroadcastOptions {
            rooms: vec![format!("role:r{}", stamp.room)],
            ..Default::default()
        },
    };
    (
        msg.channel(channels),
        switchboard_wire::encode_broadcast(&msg),
    )
}

async fn fanout(a: FanoutArgs) -> anyhow::Result<()> {
    let c = &a.common;
    client::raise_nofile_limit();
    let rooms = c.rooms.max(1);
    if a.clients < rooms {
        bail!("need at least one client per room");
    }
    let sources = Arc::new(SourceAddrs::new(c.src_base, c.src_count)?);
    let toks = tokens(&c.secret, a.clients, rooms)?;
    let (conns, _, connect_time) =
        client::open_many(&targets(c), &sources, toks, c.concurrency, false).await?;
    eprintln!(
        "sb-load: {} clients connected in {:.1} s",
        a.clients,
        connect_time.as_secs_f64()
    );
    let stats = Arc::new(RecvStats::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    spawn_drivers(conns, &stats, &stop_rx);
    let room_size: Vec<u64> = (0..rooms)
        .map(|k| (0..a.clients).filter(|i| i % rooms == k).count() as u64)
        .collect();
    let mut redis = if a.floor {
        None
    } else {
        let client = redis::Client::open(a.redis_url.as_str())?;
        // Redis shares its core with the generator's clients: under a burst a
        // PUBLISH can wait far longer than redis-rs's default timeout.
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        Some(
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .context("connect to redis")?,
        )
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Peak server RSS while publishing.
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let pids = c.server_pids.clone();
        let max_rss = max_rss.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(r) = procfs::rss_sum_kib(&pids) {
                    max_rss.fetch_max(r, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let channels = Channels::default();
    let cpu0 = procfs::cpu_time_sum(&c.server_pids).ok();
    let self0 = self_cpu();
    let started = Instant::now();
    let run_for = Duration::from_secs_f64(a.secs);
    let mut seqs = vec![0u64; rooms];
    let mut expected = 0u64;
    let avg_room = a.clients as f64 / rooms as f64;

    if a.floor {
        let Some(&pid) = c.server_pids.first() else {
            bail!("--floor needs --server-pid");
        };
        // SAFETY: kill(2) with a pid we were given and a valid signal.
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) } != 0 {
            bail!("cannot signal the floor server {pid}");
        }
        tokio::time::sleep(run_for).await;
    } else if let Some(con) = redis.as_mut() {
        if a.ceiling {
            let mut k = 0u64;
            while started.elapsed() < run_for {
                let delivered = stats.deliveries.load(Relaxed);
                if expected.saturating_sub(delivered) > a.window {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                let mut pipe = redis::pipe();
                for _ in 0..16 {
                    let room = (k % rooms as u64) as usize;
                    let stamp = Stamp {
                        t_us: client::now_us(),
                        seq: seqs[room],
                        room: room as u32,
                    };
                    seqs[room] += 1;
                    k += 1;
                    expected += room_size[room];
                    let (channel, bytes) = bench_message(&channels, stamp, a.pad);
                    pipe.cmd("PUBLISH").arg(channel).arg(bytes).ignore();
                }
                pipe.query_async::<()>(con).await?;
            }
        } else {
            let msgs_per_s = a.rate as f64 / avg_room;
            let period = Duration::from_secs_f64(1.0 / msgs_per_s);
            let start = tokio::time::Instant::now();
            let mut k = 0u64;
            loop {
                let at = start + period.mul_f64(k as f64);
                if at.duration_since(start) >= run_for {
                    break;
                }
                tokio::time::sleep_until(at).await;
                let room = (k % rooms as u64) as usize;
                let stamp = Stamp {
                    t_us: client::now_us(),
                    seq: seqs[room],
                    room: room as u32,
                };
                seqs[room] += 1;
                k += 1;
                expected += room_size[room];
                let (channel, bytes) = bench_message(&channels, stamp, a.pad);
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(bytes)
                    .query_async::<i64>(con)
                    .await?;
            }
        }
    }
    let publish_time = started.elapsed();

    // Drain: until everything expected arrived, or nothing moved for 2 s.
    let mut last = stats.deliveries.load(Relaxed);
    let mut still = Instant::now();
    loop {
        let now = stats.deliveries.load(Relaxed);
        if (!a.floor && now >= expected) || still.elapsed() > Duration::from_secs(2) {
            break;
        }
        if now != last {
            last = now;
            still = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // When the last delivery arrived (to the 20 ms poll): an open-loop
    // burst is over when the backlog is drained, not when publishing stops.
    let to_last = still.duration_since(started).max(publish_time);
    let cpu1 = procfs::cpu_time_sum(&c.server_pids).ok();
    let self1 = self_cpu();
    let wall = started.elapsed();
    sampler.abort();

    let delivered = stats.deliveries.load(Relaxed);
    let dups = stats.duplicates.load(Relaxed);
    let span = started.elapsed().as_secs_f64();
    let mut f = BTreeMap::new();
    f.insert("connections".into(), a.clients as f64);
    f.insert("deliveries".into(), delivered as f64);
    f.insert(
        "deliveries_per_s".into(),
        delivered as f64 / publish_time.as_secs_f64(),
    );
    f.insert(
        "deliveries_per_s_drained".into(),
        delivered as f64 / to_last.as_secs_f64(),
    );
    if !a.floor {
        f.insert("expected".into(), expected as f64);
        f.insert(
            "lost".into(),
            expected.saturating_sub(delivered.saturating_sub(dups)) as f64,
        );
    }
    f.insert("duplicates".into(), dups as f64);
    f.insert("disconnects".into(), stats.disconnects.load(Relaxed) as f64);
    f.insert(
        "latency_p50_ms".into(),
        stats.latency.quantile(0.5) as f64 / 1000.0,
    );
    f.insert(
        "latency_p99_ms".into(),
        stats.latency.quantile(0.99) as f64 / 1000.0,
    );
    f.insert("latency_max_ms".into(), stats.latency.max() as f64 / 1000.0);
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        let cpu = (c1 - c0).as_secs_f64();
        if delivered > 0 {
            f.insert("cpu_us_per_delivery".into(), cpu * 1e6 / delivered as f64);
        }
        f.insert("server_cpu_util".into(), cpu / wall.as_secs_f64());
    }
    f.insert(
        "loadgen_cpu_util".into(),
        (self1 - self0).as_secs_f64() / span,
    );
    let peak = max_rss.load(Relaxed);
    if peak > 0 {
        f.insert("max_rss_mib".into(), mib(peak));
    }
    // The machine is shared: the load average says whether other processes
    // competed for the cores during this result.
    if let Some(load) = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
    {
        f.insert("load_avg_1m".into(), load);
    }
    let default = if a.ceiling { "ceiling" } else { "fanout" };
    let size = if a.ceiling {
        format!("{} clients, {} rooms, closed loop", a.clients, rooms)
    } else {
        format!(
            "{} clients, {} rooms, {} deliveries/s",
            a.clients, rooms, a.rate
        )
    };
    emit(c, default, size, f);
    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// The emitter bytes and channel of one `bench` event to every socket of
/// the main namespace (no rooms: channel `socket.io#/#`).
fn broadcast_all_message(channels: &Channels, t_us: u64) -> (String, Vec<u8>) {
    let stamp = Stamp {
        t_us,
        seq: 0,
        room: 0,
    };
    let args = Value::Map(vec![
        (Value::from("t"), Value::from(stamp.t_us)),
        (Value::from("s"), Value::from(stamp.seq)),
        (Value::from("r"), Value::from(stamp.room)),
        (Value::from("p"), Value::from("all")),
    ]);
    let msg = BroadcastMessage {
        uid: EMITTER_UID.into(),
        packet: BusPacket::event("/", Value::Array(vec![Value::from("bench"), args])),
        opts: BroadcastOptions::default(),
    };
    (
        msg.channel(channels),
        switchboard_wire::encode_broadcast(&msg),
    )
}

/// One `scale` generator: connect and hold `count` sessions (each answers
/// pings from the moment it is open), report readiness, wait for the
/// coordinator's broadcast, check each session got it exactly once.
async fn scale(a: ScaleArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let started = Instant::now();
    let give_up = started + Duration::from_secs_f64(a.wait_secs);
    client::raise_nofile_limit();
    let sources = Arc::new(SourceAddrs::new(c.src_base, c.src_count)?);
    let toks = tokens(&c.secret, a.count, c.rooms)?;
    let tgts = targets(c);
    let tally = Arc::new(Tally::new(a.count));
    let stats = Arc::new(RecvStats::default());
    let hist = Arc::new(Histogram::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sem = Arc::new(tokio::sync::Semaphore::new(c.concurrency.max(1)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<usize, String>>();
    let t_connect = Instant::now();
    for (i, token) in toks.into_iter().enumerate() {
        let permit = sem.clone().acquire_owned().await?;
        let target = tgts[i % tgts.len()].clone();
        let src = sources.next();
        let (hist, tx, stats, stop, tally) = (
            hist.clone(),
            tx.clone(),
            stats.clone(),
            stop_rx.clone(),
            tally.clone(),
        );
        tokio::spawn(async move {
            let t0 = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                client::open_session(&target, Some(src), &token),
            )
            .await;
            hist.record(t0.elapsed().as_micros() as u64);
            drop(permit);
            match r {
                Ok(Ok(ws)) => {
                    let _ = tx.send(Ok(i));
                    drop(tx);
                    client::drive(ws, stats, stop, Some(Slot { tally, index: i })).await;
                }
                Ok(Err(e)) => {
                    let _ = tx.send(Err(format!("{e:#}")));
                }
                Err(_) => {
                    let _ = tx.send(Err("connect timed out after 30 s".into()));
                }
            }
        });
    }
    drop(tx);
    let mut connected = vec![false; a.count];
    let mut ready = scale::Ready::default();
    while ready.connected + ready.failed < a.count as u64 {
        match rx.recv().await {
            Some(Ok(i)) => {
                connected[i] = true;
                ready.connected += 1;
            }
            Some(Err(e)) => {
                ready.failed += 1;
                ready.first_error.get_or_insert(e);
            }
            None => break,
        }
    }
    ready.connect_secs = t_connect.elapsed().as_secs_f64();
    ready.connect_p50_ms = hist.quantile(0.5) as f64 / 1000.0;
    ready.connect_p99_ms = hist.quantile(0.99) as f64 / 1000.0;
    eprintln!(
        "sb-load scale[{}]: {} connected, {} failed in {:.1} s{}",
        a.index,
        ready.connected,
        ready.failed,
        ready.connect_secs,
        ready
            .first_error
            .as_deref()
            .map(|e| format!(" (first error: {e})"))
            .unwrap_or_default()
    );
    scale::write_atomic(
        &scale::ready_path(&a.sync_dir, a.index),
        &serde_json::to_string(&ready)?,
    )?;

    // Hold (the coordinator measures), until the broadcast is published.
    let publish_seen = scale::wait_for_file(&scale::published_path(&a.sync_dir), give_up)
        .await
        .is_some();
    if publish_seen {
        let deadline = Instant::now() + Duration::from_secs_f64(a.deliver_secs);
        let all_have_it = || (0..a.count).all(|i| !connected[i] || tally.count(i) > 0);
        while !all_have_it() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Duplicates would arrive right behind the first copy.
        tokio::time::sleep(Duration::from_secs_f64(a.grace_secs)).await;
    } else {
        eprintln!("sb-load scale[{}]: no broadcast was published", a.index);
    }

    let mut done = scale::Done {
        ready,
        publish_seen,
        disconnects: stats.disconnects.load(Relaxed),
        pongs: stats.pongs.load(Relaxed),
        errors: stats.errors.load(Relaxed),
        ..Default::default()
    };
    for (i, &up) in connected.iter().enumerate() {
        let n = tally.count(i);
        match n {
            0 if up => done.missed += 1,
            0 => {}
            1 => done.once += 1,
            _ => {
                done.dup_conns += 1;
                done.extra += u64::from(n - 1);
            }
        }
        if n > 0 {
            done.latencies_us.push(tally.latency_us(i));
        }
    }
    eprintln!(
        "sb-load scale[{}]: broadcast once on {}, missed {}, duplicated on {}, {} disconnects, {} pongs",
        a.index, done.once, done.missed, done.dup_conns, done.disconnects, done.pongs
    );
    scale::write_atomic(
        &scale::done_path(&a.sync_dir, a.index),
        &serde_json::to_string(&done)?,
    )?;
    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// What one gateway process did over the hold.
struct GatewaySample {
    rss_before_kib: u64,
    rss_end_kib: u64,
    cpu: Duration,
}

/// The `scale` coordinator: baseline RSS, wait for every generator, hold
/// while measuring each gateway's CPU time and RSS, publish one broadcast to
/// everyone, collect the generators' checks; one record per gateway and one
/// for the total.
async fn scale_coord(a: ScaleCoordArgs) -> anyhow::Result<()> {
    let pids = &a.server_pids;
    let gws = pids.len();
    let dir = &a.sync_dir;
    let rss_before: Vec<u64> = pids
        .iter()
        .map(|&p| procfs::rss_kib(p).unwrap_or(0))
        .collect();
    scale::write_atomic(&scale::started_path(dir), "")?;

    let ready_deadline = Instant::now() + Duration::from_secs_f64(a.ready_timeout_secs);
    let mut readies = Vec::with_capacity(gws);
    for g in 0..gws {
        let r = scale::wait_for_file(&scale::ready_path(dir, g), ready_deadline).await;
        let r: scale::Ready = match r {
            Some(text) => serde_json::from_str(&text)?,
            None => {
                eprintln!("sb-load scale-coord: generator {g} never finished connecting");
                scale::Ready::default()
            }
        };
        readies.push(r);
    }
    let connected: u64 = readies.iter().map(|r| r.connected).sum();
    let connect_secs = readies.iter().map(|r| r.connect_secs).fold(0.0, f64::max);
    eprintln!(
        "sb-load scale-coord: {connected} sessions connected ({:.0}/s); holding {:.0} s",
        connected as f64 / connect_secs.max(1e-9),
        a.hold_secs
    );

    tokio::time::sleep(Duration::from_secs_f64(a.settle_secs)).await;
    let cpu0: Vec<Option<Duration>> = pids.iter().map(|&p| procfs::cpu_time(p).ok()).collect();
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
    tokio::time::sleep(Duration::from_secs_f64(a.hold_secs)).await;
    let hold = hold_start.elapsed();
    let cpu1: Vec<Option<Duration>> = pids.iter().map(|&p| procfs::cpu_time(p).ok()).collect();
    sampler.abort();
    let samples: Vec<GatewaySample> = (0..gws)
        .map(|g| GatewaySample {
            rss_before_kib: rss_before[g],
            rss_end_kib: procfs::rss_kib(pids[g]).unwrap_or(0),
            cpu: match (cpu0[g], cpu1[g]) {
                (Some(a), Some(b)) => b.saturating_sub(a),
                _ => Duration::ZERO,
            },
        })
        .collect();

    // One broadcast to everyone.
    let redis = redis::Client::open(a.redis_url.as_str())?;
    let mut con = redis
        .get_multiplexed_async_connection()
        .await
        .context("connect to redis")?;
    let t_pub = client::now_us();
    let (channel, bytes) = broadcast_all_message(&Channels::default(), t_pub);
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(bytes)
        .query_async(&mut con)
        .await?;
    scale::write_atomic(&scale::published_path(dir), &t_pub.to_string())?;
    eprintln!("sb-load scale-coord: published on {channel} to {receivers} subscribers");

    let done_deadline = Instant::now() + Duration::from_secs_f64(a.done_timeout_secs);
    let mut dones = Vec::with_capacity(gws);
    for (g, ready) in readies.iter().enumerate() {
        let d = scale::wait_for_file(&scale::done_path(dir, g), done_deadline).await;
        dones.push(match d {
            Some(text) => serde_json::from_str::<scale::Done>(&text)?,
            None => {
                eprintln!("sb-load scale-coord: generator {g} did not report");
                scale::Done {
                    ready: ready.clone(),
                    missed: ready.connected,
                    ..Default::default()
                }
            }
        });
    }

    let size = format!(
        "{} conns, {gws} gateways, {:.0} s hold",
        a.conns, a.hold_secs
    );
    let hold_s = hold.as_secs_f64();
    let record = |figures: BTreeMap<String, f64>| Record {
        scenario: "scale".into(),
        server: a.server.clone(),
        size: size.clone(),
        figures,
        run: a.run.clone(),
    };
    let mut all_lat = Vec::new();
    for (g, (s, d)) in samples.iter().zip(&dones).enumerate() {
        let mut f = BTreeMap::new();
        f.insert("gateway".into(), g as f64);
        f.insert("connections".into(), d.ready.connected as f64);
        f.insert("rss_before_mib".into(), mib(s.rss_before_kib));
        f.insert("rss_after_mib".into(), mib(s.rss_end_kib));
        f.insert("idle_cpu_pct".into(), s.cpu.as_secs_f64() / hold_s * 100.0);
        f.insert("received_once".into(), d.once as f64);
        f.insert("lost".into(), d.missed as f64);
        f.insert("duplicates".into(), d.extra as f64);
        f.insert("disconnects".into(), d.disconnects as f64);
        let mut lat = d.latencies_us.clone();
        if let Some((p50, p99, max)) = scale::latency_summary_ms(&mut lat) {
            f.insert("bcast_p50_ms".into(), p50);
            f.insert("bcast_p99_ms".into(), p99);
            f.insert("bcast_last_ms".into(), max);
        }
        all_lat.extend_from_slice(&d.latencies_us);
        output(&record(f), a.results.as_deref());
    }

    let sum = |f: &dyn Fn(&scale::Done) -> u64| dones.iter().map(f).sum::<u64>() as f64;
    let total_before: u64 = samples.iter().map(|s| s.rss_before_kib).sum();
    let total_end: u64 = samples.iter().map(|s| s.rss_end_kib).sum();
    let total_cpu: f64 = samples.iter().map(|s| s.cpu.as_secs_f64()).sum();
    let mut f = BTreeMap::new();
    f.insert("connections".into(), connected as f64);
    f.insert("connect_failures".into(), sum(&|d| d.ready.failed));
    f.insert(
        "connects_per_s".into(),
        connected as f64 / connect_secs.max(1e-9),
    );
    f.insert(
        "connect_p99_ms".into(),
        dones
            .iter()
            .map(|d| d.ready.connect_p99_ms)
            .fold(0.0, f64::max),
    );
    f.insert("hold_s".into(), hold_s);
    f.insert("rss_before_mib".into(), mib(total_before));
    f.insert("total_rss_mib".into(), mib(total_end));
    f.insert(
        "max_rss_mib".into(),
        mib(peak_total.load(Relaxed).max(total_end)),
    );
    f.insert(
        "gw_rss_max_mib".into(),
        mib(samples.iter().map(|s| s.rss_end_kib).max().unwrap_or(0)),
    );
    if connected > 0 {
        f.insert(
            "rss_per_conn_kib".into(),
            (total_end as f64 - total_before as f64) / connected as f64,
        );
    }
    f.insert("idle_cpu_pct".into(), total_cpu / hold_s * 100.0);
    f.insert(
        "gw_idle_cpu_max_pct".into(),
        samples
            .iter()
            .map(|s| s.cpu.as_secs_f64() / hold_s * 100.0)
            .fold(0.0, f64::max),
    );
    f.insert("pongs".into(), sum(&|d| d.pongs));
    f.insert("redis_receivers".into(), receivers as f64);
    f.insert("received_once".into(), sum(&|d| d.once));
    f.insert("lost".into(), sum(&|d| d.missed));
    f.insert("duplicates".into(), sum(&|d| d.extra));
    f.insert("disconnects".into(), sum(&|d| d.disconnects));
    if let Some((p50, p99, max)) = scale::latency_summary_ms(&mut all_lat) {
        f.insert("bcast_p50_ms".into(), p50);
        f.insert("bcast_p99_ms".into(), p99);
        f.insert("bcast_last_ms".into(), max);
    }
    output(&record(f), a.results.as_deref());
    Ok(())
}

fn write_report(a: ReportArgs) -> anyhow::Result<()> {
    let records = report::read_records(&a.results)?;
    let mut body = String::new();
    for l in &a.lines {
        body.push_str(l);
        body.push_str("  \n");
    }
    body.push('\n');
    body.push_str(&report::render_tables(&records));
    let doc = std::fs::read_to_string(&a.doc).unwrap_or_default();
    std::fs::write(&a.doc, report::splice(&doc, &body))
        .with_context(|| format!("write {}", a.doc.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_bench::proto;

    #[test]
    fn bench_messages_decode_as_emitter_broadcasts() {
        let stamp = Stamp {
            t_us: 5,
            seq: 6,
            room: 3,
        };
        let (channel, bytes) = bench_message(&Channels::default(), stamp, 2);
        assert_eq!(channel, "socket.io#/#role:r3#");
        let msg = switchboard_wire::decode_broadcast(&bytes).unwrap();
        assert_eq!(msg.uid, "emitter");
        assert_eq!(msg.opts.rooms, vec!["role:r3".to_string()]);
        let packet = switchboard_wire::encode_event("/", &msg.packet.data, None).unwrap();
        assert_eq!(packet.text, proto::bench_event_packet(stamp, 2));
    }

    #[test]
    fn scale_broadcast_goes_to_the_whole_namespace() {
        let (channel, bytes) = broadcast_all_message(&Channels::default(), 77);
        assert_eq!(channel, "socket.io#/#");
        let msg = switchboard_wire::decode_broadcast(&bytes).unwrap();
        assert_eq!(msg.uid, "emitter");
        assert!(msg.opts.rooms.is_empty());
        assert!(msg.opts.except.is_empty());
        let packet = switchboard_wire::encode_event("/", &msg.packet.data, None).unwrap();
        let stamp = proto::parse_stamp(&packet.text[1..]).unwrap();
        assert_eq!((stamp.t_us, stamp.seq), (77, 0));
    }
}
