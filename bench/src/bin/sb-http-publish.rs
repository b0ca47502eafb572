//! `sb-http-publish`: the `http-publish` scenario of `bench/run.sh` (issue
//! #18): the gateway's HTTP publish API under closed-loop load.
//!
//! `--concurrency` keep-alive HTTP/1.1 connections, each sending one
//! `POST /api/v1/emit` (a small event to `role:admin`) and waiting for its
//! answer before the next, like wrk. A one-thread Tokio runtime with
//! hand-written requests and a minimal response reader, so the generator
//! costs little next to the gateway. After `--warmup-secs` it measures for
//! `--secs`: requests/s, p50/p99 of one request, the gateway's CPU (from
//! `/proc/<pid>`), and Redis' commands (and PINGs) per request from
//! `INFO commandstats`. Every answer must be 200 or the run fails. Appends
//! one JSON line to `--results`.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use switchboard_bench::{
    hist::Histogram,
    procfs,
    redisinfo::{calls_between, command_calls},
    report::Record,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[derive(Parser)]
#[command(about = "HTTP publish API benchmark: keep-alive closed-loop POST /api/v1/emit")]
struct Args {
    /// The gateway, `host:port`.
    #[arg(long, default_value = "127.0.0.1:4100")]
    addr: SocketAddr,
    /// The gateway's pid, for its CPU time.
    #[arg(long)]
    pid: u32,
    /// `Authorization: Bearer` key.
    #[arg(long, env = "SB_API_KEY")]
    api_key: String,
    /// Which gateway build this is (`switchboard` or `baseline`).
    #[arg(long, default_value = "switchboard")]
    server: String,
    /// Redis the gateway publishes to, for `INFO commandstats`.
    #[arg(long, default_value = "redis://127.0.0.1:6390")]
    redis_url: String,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Where to append the result line (JSON lines).
    #[arg(long)]
    results: Option<PathBuf>,
}

/// What a ticket API sends admins.
const BODY: &str = r#"{"event":"ticket_updated","roles":["admin"],"data":{"id":7,"status":"open","title":"Printer on fire","assignee":42}}"#;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.secs <= 0.0 {
        bail!("--concurrency and --secs must be positive");
    }
    let request = Arc::new(
        format!(
            "POST /api/v1/emit HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
            args.addr,
            args.api_key,
            BODY.len()
        )
        .into_bytes(),
    );
    let redis = redis::Client::open(args.redis_url.as_str())?;
    let mut stats = redis
        .get_connection_with_timeout(Duration::from_secs(5))
        .context("connect to Redis for INFO commandstats")?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Histogram::new());
    let (seconds, cpu, calls) = rt.block_on(async {
        let mut tasks = Vec::with_capacity(args.concurrency);
        for _ in 0..args.concurrency {
            let stream = TcpStream::connect(args.addr)
                .await
                .with_context(|| format!("connect to {}", args.addr))?;
            stream.set_nodelay(true)?;
            let (request, measuring, stop, done, hist) = (
                request.clone(),
                measuring.clone(),
                stop.clone(),
                done.clone(),
                hist.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::new(stream);
                while !stop.load(Relaxed) {
                    let started = Instant::now();
                    conn.stream.write_all(&request).await?;
                    let status = conn.read_response().await?;
                    if status != 200 {
                        bail!("the gateway answered {status}");
                    }
                    if measuring.load(Relaxed) {
                        hist.record(started.elapsed().as_micros() as u64);
                        done.fetch_add(1, Relaxed);
                    }
                }
                anyhow::Ok(())
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(args.warmup_secs)).await;
        let before = command_calls(&mut stats)?;
        let cpu_before = procfs::cpu_time(args.pid)?;
        let started = Instant::now();
        measuring.store(true, Relaxed);
        tokio::time::sleep(Duration::from_secs_f64(args.secs)).await;
        measuring.store(false, Relaxed);
        let seconds = started.elapsed().as_secs_f64();
        let cpu = procfs::cpu_time(args.pid)? - cpu_before;
        let after = command_calls(&mut stats)?;
        stop.store(true, Relaxed);
        for t in tasks {
            t.await??;
        }
        anyhow::Ok((seconds, cpu, (before, after)))
    })?;

    let requests = done.load(Relaxed) as f64;
    let (before, after) = calls;
    let delta = |name: &str| calls_between(&before, &after, name) as f64;
    // The measured window sees requests that started in the warm-up and
    // finish in it, and the other way round: per-request ratios are close,
    // not exact.
    let figures = [
        ("requests_per_s", requests / seconds),
        ("request_p50_us", hist.quantile(0.5) as f64),
        ("request_p99_us", hist.quantile(0.99) as f64),
        ("server_cpu_util", cpu.as_secs_f64() / seconds),
        (
            "server_cpu_us_per_request",
            cpu.as_secs_f64() * 1e6 / requests.max(1.0),
        ),
        (
            "publishes_per_request",
            delta("publish") / requests.max(1.0),
        ),
        ("pings_per_request", delta("ping") / requests.max(1.0)),
    ];
    Record::of_run(
        "http-publish",
        &args.server,
        format!("concurrency {}", args.concurrency),
        &figures,
    )
    .report(args.results.as_deref())?;
    Ok(())
}

/// One keep-alive connection and the bytes read past the last response.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Reads one response (headers, then `Content-Length` bytes of body);
    /// its status code.
    async fn read_response(&mut self) -> anyhow::Result<u16> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).context("non-UTF-8 head")?;
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .context("no status line")?;
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .context("no Content-Length")?;
                let total = end + 4 + length;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                self.buf.drain(..total);
                return Ok(status);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the gateway closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
