//! `sb-load`: the benchmark load generator and report writer.
//!
//! * `connect`: opens N authenticated sessions (connect rate, p50/p99 connect
//!   time, server CPU per connect, server RSS growth per connection).
//! * `fanout`: N clients in R role rooms; publishes `bench` events through
//!   Redis in the `@socket.io/redis-emitter` format at a fixed delivery rate
//!   (or as fast as the clients absorb them with `--ceiling`); measures
//!   server CPU per delivery, publish-to-receive latency, loss and duplicates.
//!   With `--bus streams` the same events are `XADD`ed by the broadcaster
//!   crate in the `@socket.io/redis-streams-adapter` 0.3 format instead.
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
    client::{self, Conn, RecvStats, SourceAddrs, Target},
    procfs,
    proto::Stamp,
    report::{self, Record},
    scale_coord, scale_gen,
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
    /// How events reach the server: `pubsub` (PUBLISH in the emitter
    /// format) or `streams` (XADD to the `socket.io` stream by the
    /// broadcaster crate, for servers on a streams bus).
    #[arg(long, value_enum, default_value_t = Bus::Pubsub)]
    bus: Bus,
}

/// The bus format the publisher writes (`fanout --bus`).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Bus {
    Pubsub,
    Streams,
}

/// Where `fanout` publishes: a plain redis-rs connection for pub/sub (the
/// emitter's PUBLISH), the broadcaster crate for streams (its XADD, so
/// every server on a streams bus gets the bytes a real publisher writes).
enum Sink {
    Pubsub(redis::aio::MultiplexedConnection),
    Streams(switchboard_broadcaster::Broadcaster),
}

impl Sink {
    /// Publishes the emitter-format messages in order (one pipeline for
    /// pub/sub, one entry after the other for a stream).
    async fn send(&mut self, messages: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        match self {
            Sink::Pubsub(con) => {
                let mut pipe = redis::pipe();
                for (channel, bytes) in messages {
                    pipe.cmd("PUBLISH").arg(channel).arg(bytes).ignore();
                }
                pipe.query_async::<()>(con).await?;
            }
            Sink::Streams(b) => {
                let encoded = messages.into_iter().map(|(channel, payload)| {
                    switchboard_broadcaster::Encoded { channel, payload }
                });
                for d in b.emit_many(encoded).await? {
                    if d.stream_id.is_none() {
                        bail!(
                            "the broadcaster published on {} instead of a stream",
                            d.channel
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Args)]
struct ScaleArgs {
    #[command(flatten)]
    common: Common,
    /// Sessions to open and hold.
    #[arg(long)]
    count: usize,
    /// This generator's index: its sessions start on the `--addr` of that
    /// index; names its sync files.
    #[arg(long)]
    index: usize,
    /// Directory shared with `scale-coord`.
    #[arg(long)]
    sync_dir: PathBuf,
    /// Run tag in user names (`u<tag>-<generator>-<i>`), shared with the coordinator.
    #[arg(long)]
    tag: String,
    /// Gateways `0..restart` (by `--addr` index) are restarted by the
    /// coordinator; moved sessions reconnect to the others.
    #[arg(long, default_value_t = 0)]
    restart: usize,
    /// Give up (report, exit) this long after starting.
    #[arg(long, default_value_t = 1500.0)]
    wait_secs: f64,
    /// After `finish`, wait at most this long for probes still missing on
    /// steady bystanders (counted late if they come, lost if not).
    #[arg(long, default_value_t = 30.0)]
    probe_grace_secs: f64,
}

#[derive(Args)]
struct ScaleCoordArgs {
    /// Gateway process ids, in generator-index order.
    #[arg(long = "server-pid", required = true)]
    server_pids: Vec<u32>,
    /// Gateway addresses, same order (their ports are reused on restart).
    #[arg(long = "addr", required = true)]
    addrs: Vec<SocketAddr>,
    /// Directory shared with the generators.
    #[arg(long)]
    sync_dir: PathBuf,
    /// Sessions per generator.
    #[arg(long)]
    per: usize,
    /// Run tag in user names, as given to the generators.
    #[arg(long)]
    tag: String,
    /// Idle hold, measured from when every generator is connected.
    #[arg(long, default_value_t = 300.0)]
    hold_secs: f64,
    /// Pause between the last connect and the start of the hold.
    #[arg(long, default_value_t = 5.0)]
    settle_secs: f64,
    /// How long generators may take to connect.
    #[arg(long, default_value_t = 900.0)]
    ready_timeout_secs: f64,
    /// Generators connecting at once.
    #[arg(long, default_value_t = 8)]
    wave: usize,
    /// Gateways (from index 0) restarted one at a time after the broadcasts.
    #[arg(long, default_value_t = 0)]
    restart: usize,
    /// Shell command starting a gateway again (`{port}` is replaced).
    #[arg(long)]
    respawn_cmd: Option<String>,
    /// Probes per second to 1% of users during the restarts.
    #[arg(long, default_value_t = 2.0)]
    probe_rate: f64,
    /// Seconds a restarted gateway's clients have to be back elsewhere.
    #[arg(long, default_value_t = 90.0)]
    storm_timeout_secs: f64,
    /// Abort the run (generators exit) below this much MemAvailable.
    #[arg(long, default_value_t = 2048)]
    min_available_mib: u64,
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
    // Redis shares its core with the generator's clients: under a burst a
    // publish can wait far longer than the clients' default timeouts.
    let publish_timeout = Duration::from_secs(30);
    let mut sink = match (a.floor, a.bus) {
        (true, _) => None,
        (false, Bus::Pubsub) => {
            let client = redis::Client::open(a.redis_url.as_str())?;
            let config =
                redis::AsyncConnectionConfig::new().set_response_timeout(Some(publish_timeout));
            Some(Sink::Pubsub(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .context("connect to redis")?,
            ))
        }
        (false, Bus::Streams) => {
            let b = switchboard_broadcaster::Broadcaster::from_config(
                switchboard_broadcaster::BroadcasterConfig {
                    redis_url: a.redis_url.clone(),
                    publish_timeout,
                    streams: Some(switchboard_broadcaster::StreamsOptions::default()),
                    ..Default::default()
                },
            )?;
            b.ping().await.context("connect to redis")?;
            Some(Sink::Streams(b))
        }
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
    // How busy the generator's own cores are (its clients, and whatever
    // shares them, Redis in bench/run.sh): near 1.0 the generator, not the
    // server, may be what bounds the rate.
    let own_cpus = procfs::own_cpus();
    let jiffies0 = procfs::cpu_jiffies(&own_cpus);
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
    } else if let Some(sink) = sink.as_mut() {
        if a.ceiling {
            let mut k = 0u64;
            while started.elapsed() < run_for {
                let delivered = stats.deliveries.load(Relaxed);
                if expected.saturating_sub(delivered) > a.window {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                let mut batch = Vec::with_capacity(16);
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
                    batch.push(bench_message(&channels, stamp, a.pad));
                }
                sink.send(batch).await?;
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
                sink.send(vec![bench_message(&channels, stamp, a.pad)])
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
    let jiffies1 = procfs::cpu_jiffies(&own_cpus);
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
    if let (Some((b0, t0)), Some((b1, t1))) = (jiffies0, jiffies1)
        && t1 > t0
    {
        f.insert(
            "loadgen_cores_busy".into(),
            b1.saturating_sub(b0) as f64 / (t1 - t0) as f64,
        );
    }
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

/// One `scale` generator (see [`switchboard_bench::scale_gen`]).
async fn scale(a: ScaleArgs) -> anyhow::Result<()> {
    let c = a.common;
    scale_gen::run(scale_gen::GenConfig {
        gateways: c.addrs,
        index: a.index,
        count: a.count,
        concurrency: c.concurrency,
        secret: c.secret,
        tag: a.tag,
        src_base: c.src_base,
        src_count: c.src_count,
        sync_dir: a.sync_dir,
        restart: a.restart,
        wait_secs: a.wait_secs,
        probe_grace_secs: a.probe_grace_secs,
    })
    .await
}

/// The `scale` coordinator (see [`switchboard_bench::scale_coord`]).
async fn scale_coord(a: ScaleCoordArgs) -> anyhow::Result<()> {
    scale_coord::run(scale_coord::CoordConfig {
        server_pids: a.server_pids,
        gateways: a.addrs,
        sync_dir: a.sync_dir,
        per: a.per,
        tag: a.tag,
        hold_secs: a.hold_secs,
        settle_secs: a.settle_secs,
        ready_timeout_secs: a.ready_timeout_secs,
        wave: a.wave,
        redis_url: a.redis_url,
        results: a.results,
        server: a.server,
        run: a.run,
        restart: a.restart,
        respawn_cmd: a.respawn_cmd,
        probe_rate: a.probe_rate,
        min_available_mib: a.min_available_mib,
        storm_timeout_secs: a.storm_timeout_secs,
    })
    .await
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
    fn bench_messages_become_stream_entries_for_a_streams_bus() {
        // What `Sink::Streams` relies on: the broadcaster turns the emitter
        // message into one XADD to `socket.io`, rooms kept.
        let stamp = Stamp {
            t_us: 5,
            seq: 6,
            room: 3,
        };
        let (channel, bytes) = bench_message(&Channels::default(), stamp, 2);
        let msg = switchboard_wire::streams::from_classic("socket.io", &channel, &bytes).unwrap();
        match &msg.body {
            switchboard_wire::ClusterBody::Broadcast(b) => {
                assert_eq!(b.opts.rooms, vec!["role:r3".to_string()]);
                assert!(b.request_id.is_none());
            }
            other => panic!("not a broadcast: {other:?}"),
        }
        match switchboard_broadcaster::StreamsOptions::default().encode_message(&msg) {
            switchboard_wire::streams::Outgoing::Xadd(x) => assert_eq!(x.stream, "socket.io"),
            other => panic!("not a stream entry: {other:?}"),
        }
    }

    #[test]
    fn scale_broadcasts_decode_as_emitter_broadcasts() {
        let (channel, bytes) =
            scale_coord::bench_broadcast(vec![], switchboard_bench::scale::KIND_ALL, 0, 77);
        assert_eq!(channel, "socket.io#/#");
        let msg = switchboard_wire::decode_broadcast(&bytes).unwrap();
        assert_eq!(msg.uid, "emitter");
        assert!(msg.opts.rooms.is_empty());
        let packet = switchboard_wire::encode_event("/", &msg.packet.data, None).unwrap();
        let stamp = proto::parse_stamp(&packet.text[1..]).unwrap();
        assert_eq!(
            (stamp.t_us, stamp.seq, stamp.room),
            (77, 0, switchboard_bench::scale::KIND_ALL)
        );
        let rooms = vec!["user:a".to_string(), "user:b".to_string()];
        let (channel, bytes) =
            scale_coord::bench_broadcast(rooms.clone(), switchboard_bench::scale::KIND_PROBE, 3, 1);
        assert_eq!(channel, "socket.io#/#");
        assert_eq!(
            switchboard_wire::decode_broadcast(&bytes)
                .unwrap()
                .opts
                .rooms,
            rooms
        );
        let (channel, _) = scale_coord::bench_broadcast(
            vec!["role:r0".into()],
            switchboard_bench::scale::KIND_ROLE,
            0,
            1,
        );
        assert_eq!(channel, "socket.io#/#role:r0#");
    }
}
