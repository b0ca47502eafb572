//! `sb-publish`: the `publish` scenario of `bench/run.sh` (issue #18).
//!
//! Publishes `--count` small events to `role:admin` against one Redis and
//! reports publishes/s and the p50/p99 time of one publish, either
//!
//! * `--publisher switchboard`: the `switchboard-broadcaster` crate from a
//!   Tokio program (current-thread runtime: one core), `--concurrency` tasks
//!   each awaiting one `emit` at a time; or
//! * `--publisher node`: `@socket.io/redis-emitter` 5.x on node-redis 4
//!   (`bench/node-reference/publish.js`, a child process that inherits this
//!   process's CPU affinity), `--concurrency` fire-and-forget emits per
//!   window, then one PING.
//!
//! Around each run it reads Redis's `INFO commandstats` and `INFO cpu` to
//! count the commands the publisher sent, and the CPU Redis spent, per
//! publish (warm-up included). The Rust publisher also counts its heap
//! allocations per publish. Appends one JSON line to `--results`.

use std::{
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use switchboard_bench::{
    hist::Histogram,
    redisinfo::{calls_between, command_calls, redis_cpu_us},
    report::Record,
};
use switchboard_broadcaster::Broadcaster;

#[derive(Parser)]
#[command(about = "Publish benchmark: the broadcaster crate vs @socket.io/redis-emitter")]
struct Args {
    /// Which publisher to measure.
    #[arg(long, value_enum)]
    publisher: Publisher,
    /// Redis to publish to (run.sh's private one).
    #[arg(long, default_value = "redis://127.0.0.1:6390")]
    redis_url: String,
    /// Measured publishes.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Publishes before measuring (connections, JIT, allocator).
    #[arg(long, default_value_t = 10_000)]
    warmup: u64,
    /// Publishes in flight: tasks awaiting one emit each (switchboard), or
    /// emits per PING window (node).
    #[arg(long, default_value_t = 1)]
    concurrency: u64,
    /// The Node script.
    #[arg(long, default_value = "bench/node-reference/publish.js")]
    node_script: PathBuf,
    /// Where to append the result line (JSON lines).
    #[arg(long)]
    results: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Publisher {
    Switchboard,
    Node,
}

/// Counts heap allocations, for "allocations per publish" (one relaxed
/// increment per allocation: no measurable cost).
struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// What one run measured (the Node script prints the same fields).
#[derive(Debug, Deserialize)]
struct Measured {
    publishes: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU time of the publisher over the measured publishes.
    cpu_us: f64,
    /// Heap allocations (and reallocations) over the measured publishes;
    /// only known for the Rust publisher.
    #[serde(default)]
    allocations: Option<u64>,
}

/// The event: what a ticket API sends admins.
#[derive(Serialize)]
struct Ticket {
    id: u64,
    status: &'static str,
    title: &'static str,
    assignee: u64,
}

const TICKET: Ticket = Ticket {
    id: 7,
    status: "open",
    title: "Printer on fire",
    assignee: 42,
};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.count == 0 {
        bail!("--concurrency and --count must be at least 1");
    }
    let redis = redis::Client::open(args.redis_url.as_str())?;
    let mut stats = redis
        .get_connection_with_timeout(Duration::from_secs(5))
        .context("connect to Redis for INFO commandstats")?;
    let before = command_calls(&mut stats)?;
    let redis_cpu_before = redis_cpu_us(&mut stats)?;
    let (server, measured) = match args.publisher {
        Publisher::Switchboard => ("switchboard", run_broadcaster(&args)?),
        Publisher::Node => ("node", run_node(&args)?),
    };
    let after = command_calls(&mut stats)?;
    let redis_cpu = redis_cpu_us(&mut stats)? - redis_cpu_before;
    let sent = (args.count + args.warmup) as f64;
    let delta = |name: &str| calls_between(&before, &after, name) as f64;
    // Everything but our own INFO.
    let commands: f64 = after
        .iter()
        .filter(|(n, _)| n != "info")
        .map(|(n, _)| delta(n))
        .sum();
    let mut figures = vec![
        (
            "publishes_per_s",
            measured.publishes as f64 / measured.seconds,
        ),
        ("publish_p50_us", measured.p50_us),
        ("publish_p99_us", measured.p99_us),
        (
            "cpu_us_per_publish",
            measured.cpu_us / measured.publishes as f64,
        ),
        (
            "publisher_cpu_util",
            measured.cpu_us / 1e6 / measured.seconds,
        ),
        ("redis_cmds_per_publish", commands / sent),
        ("pings_per_publish", delta("ping") / sent),
        ("redis_cpu_us_per_publish", redis_cpu / sent),
    ];
    if let Some(n) = measured.allocations {
        figures.push(("allocs_per_publish", n as f64 / measured.publishes as f64));
    }
    Record::of_run(
        "publish",
        server,
        format!("concurrency {}", args.concurrency),
        &figures,
    )
    .report(args.results.as_deref())?;
    Ok(())
}

fn run_broadcaster(args: &Args) -> anyhow::Result<Measured> {
    // One thread: the program runs on one core, like the Node process.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let b = Broadcaster::connect(args.redis_url.clone())?;
        publish_all(&b, args.warmup, args.concurrency, None).await?;
        let hist = Arc::new(Histogram::new());
        let cpu = cpu_us();
        let allocations = ALLOCATIONS.load(Relaxed);
        let started = Instant::now();
        publish_all(&b, args.count, args.concurrency, Some(hist.clone())).await?;
        let seconds = started.elapsed().as_secs_f64();
        let allocations = ALLOCATIONS.load(Relaxed) - allocations;
        Ok(Measured {
            publishes: args.count,
            seconds,
            p50_us: hist.quantile(0.5) as f64,
            p99_us: hist.quantile(0.99) as f64,
            cpu_us: cpu_us() - cpu,
            allocations: Some(allocations),
        })
    })
}

/// `count` emits from `concurrency` tasks, each awaiting one at a time.
async fn publish_all(
    b: &Broadcaster,
    count: u64,
    concurrency: u64,
    hist: Option<Arc<Histogram>>,
) -> anyhow::Result<()> {
    let left = Arc::new(AtomicU64::new(count));
    let tasks: Vec<_> = (0..concurrency.min(count))
        .map(|_| {
            let (b, left, hist) = (b.clone(), left.clone(), hist.clone());
            tokio::spawn(async move {
                while left
                    .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    // What a request handler does: target, encode, publish.
                    let started = Instant::now();
                    b.to_role("admin").emit("ticket_updated", &TICKET).await?;
                    if let Some(h) = &hist {
                        h.record(started.elapsed().as_micros() as u64);
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// This process's user + system CPU time, in µs.
fn cpu_us() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

fn run_node(args: &Args) -> anyhow::Result<Measured> {
    let out = Command::new("node")
        .arg(&args.node_script)
        .env("REDIS_URL", &args.redis_url)
        .env("COUNT", args.count.to_string())
        .env("WARMUP", args.warmup.to_string())
        .env("WINDOW", args.concurrency.to_string())
        .output()
        .with_context(|| format!("run node {}", args.node_script.display()))?;
    if !out.status.success() {
        bail!(
            "node {} failed ({}): {}",
            args.node_script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the node script printed no result")?;
    serde_json::from_str(line).with_context(|| format!("bad result line {line}"))
}
