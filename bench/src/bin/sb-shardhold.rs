//! `sb-shardhold`: one holder of the `shardtraffic` measurement (issue #14
//! item 6, docs/scaling.md). Opens `--count` authenticated websocket
//! sessions to one gateway, user `<user-prefix><i>` on session `i` (so each
//! sits in its own room `user:<user-prefix><i>`), holds them with the
//! [`lean`](switchboard_bench::lean) client (a few KiB per session, so one
//! process holds ~18,000 within the 20,000 open-files limit), answers the
//! heartbeats, and counts the events each session receives.
//!
//! Driven over stdin/stdout by the ignored test
//! `tests/tests/shard_traffic.rs` (one holder per gateway):
//! * prints `READY connected=<n> failed=<n> secs=<s> first_error=<text>` once
//!   every connect was tried;
//! * on a line `report <k>` prints `REPORT events=<sum> exact=<sessions with k>
//!   fewer=<n> more=<n> down=<n> other=<frames that were not the event>`;
//! * exits on `quit`, at the end of stdin, or `--max-secs` after starting
//!   (so a run that lost its driver stops by itself).
//!
//! A target of its own (found by Cargo's binary auto-discovery in
//! `src/bin/`), not a subcommand of `sb-load`, so the scale scenario's
//! generator is left as it is.

use std::{
    io::BufRead,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use switchboard_bench::{
    client::{self, SourceAddrs},
    lean::{self, Sink},
};

#[derive(Parser)]
#[command(about = "Holds N websocket sessions on one gateway and counts their events")]
struct Args {
    /// The gateway (`host:port`, default `/socket.io/` path).
    #[arg(long)]
    addr: SocketAddr,
    /// Sessions to open and hold.
    #[arg(long)]
    count: usize,
    /// Session `i` authenticates as user `<user-prefix><i>`.
    #[arg(long)]
    user_prefix: String,
    /// HS256 secret the gateway verifies tokens with.
    #[arg(long, env = "SB_SECRET")]
    secret: String,
    /// First loopback source address; sessions rotate over `src-count` of them.
    #[arg(long, default_value = "127.0.0.1")]
    src_base: Ipv4Addr,
    #[arg(long, default_value_t = 1)]
    src_count: u32,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Exit this long after starting, whatever the driver does.
    #[arg(long, default_value_t = 1800)]
    max_secs: u64,
    /// The event name counted (others count as `other`).
    #[arg(long, default_value = "tick")]
    event: String,
    /// Tokio worker threads (the command loop blocks the main thread, not these).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Per-session records shared by the session tasks and the command loop.
struct Held {
    /// Frames that start with `42["<event>"`: the counted events.
    prefix: String,
    events: Box<[AtomicU32]>,
    up: Box<[AtomicBool]>,
    other: AtomicU64,
}

/// The [`Sink`] of session `i`.
struct SessionSink<'a> {
    held: &'a Held,
    i: usize,
}

impl Sink for SessionSink<'_> {
    fn text(&self, text: &str) {
        if text.starts_with(&self.held.prefix) {
            self.held.events[self.i].fetch_add(1, Relaxed);
        } else {
            self.held.other.fetch_add(1, Relaxed);
        }
    }
}

impl Held {
    /// The `REPORT` line for `k` events expected per session.
    fn report(&self, k: u32) -> String {
        let (mut sum, mut exact, mut fewer, mut more, mut down) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for (n, up) in self.events.iter().zip(self.up.iter()) {
            let n = n.load(Relaxed);
            sum += u64::from(n);
            match n.cmp(&k) {
                std::cmp::Ordering::Equal => exact += 1,
                std::cmp::Ordering::Less => fewer += 1,
                std::cmp::Ordering::Greater => more += 1,
            }
            if !up.load(Relaxed) {
                down += 1;
            }
        }
        format!(
            "REPORT events={sum} exact={exact} fewer={fewer} more={more} down={down} other={}",
            self.other.load(Relaxed)
        )
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    client::raise_nofile_limit();
    let max = Duration::from_secs(args.max_secs);
    std::thread::spawn(move || {
        std::thread::sleep(max);
        eprintln!("sb-shardhold: --max-secs reached, exiting");
        std::process::exit(4);
    });
    let n = args.count;
    let held = Arc::new(Held {
        prefix: format!("42[\"{}\"", args.event),
        events: (0..n).map(|_| AtomicU32::new(0)).collect(),
        up: (0..n).map(|_| AtomicBool::new(false)).collect(),
        other: AtomicU64::new(0),
    });
    let sources = Arc::new(SourceAddrs::new(args.src_base, args.src_count)?);
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let started = Instant::now();
    let mut attempts = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let token = client::mint_token(
            args.secret.as_bytes(),
            &format!("{}{i}", args.user_prefix),
            "member",
        )?;
        let (held, sources, connected, failed, first_error) = (
            held.clone(),
            sources.clone(),
            connected.clone(),
            failed.clone(),
            first_error.clone(),
        );
        let addr = args.addr;
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel::<()>();
        attempts.push(opened_rx);
        tokio::spawn(async move {
            let opened = tokio::time::timeout(
                lean::CONNECT_TIMEOUT,
                Box::pin(lean::open(addr, Some(sources.next()), &token)),
            )
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("connect timed out")));
            drop(permit);
            let session = match opened {
                Ok(s) => s,
                Err(e) => {
                    failed.fetch_add(1, Relaxed);
                    if let Ok(mut first) = first_error.lock() {
                        first.get_or_insert_with(|| format!("{e:#}"));
                    }
                    let _ = opened_tx.send(());
                    return;
                }
            };
            held.up[i].store(true, Relaxed);
            connected.fetch_add(1, Relaxed);
            let _ = opened_tx.send(());
            // Held until the gateway ends it; a session is never reopened
            // (the measurement wants each user on its first gateway).
            lean::hold(session, &SessionSink { held: &held, i }).await;
            held.up[i].store(false, Relaxed);
        });
    }
    for rx in attempts {
        let _ = rx.await;
    }
    let first = first_error
        .lock()
        .ok()
        .and_then(|f| f.clone())
        .unwrap_or_default();
    println!(
        "READY connected={} failed={} secs={:.1} first_error={}",
        connected.load(Relaxed),
        failed.load(Relaxed),
        started.elapsed().as_secs_f64(),
        first.replace('\n', " ")
    );
    // Commands are rare and tiny: a blocking read on this thread is fine
    // (the sessions run on the runtime's worker threads).
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next().map(str::parse::<u32>)) {
            (Some("report"), Some(Ok(k))) => println!("{}", held.report(k)),
            (Some("quit"), _) => break,
            _ => println!("ERROR unknown command: {line}"),
        }
    }
    // Exit without closing each session politely: the driver is done with them.
    std::process::exit(0);
}
