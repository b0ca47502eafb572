//! `sb-actions`: what client actions (issue #11) cost on one gateway.
//!
//! Starts the gateway binary it is given (embedded bus) with `[client]`
//! rules, an in-process HTTP server standing in for the API, and raw
//! websocket clients (no client library in the measurement), then measures,
//! each phase bounded to a few seconds:
//!
//! 1. **join/leave**: `--join-clients` sockets each alternate `join_chat` /
//!    `leave_chat` with an ack, one in flight per socket, for `--seconds`;
//!    operations per second and per CPU-second of the gateway;
//! 2. **relay burst**: `--relay-receivers` sockets in `chat_1`, one member
//!    sends `--relays` `new_message` relays as fast as it can (no ack): the
//!    burst method of the broadcast bench, deliveries per second from the
//!    first send to the last arrival, and gateway CPU per delivery;
//! 3. **forward round trip**: one socket emits `create_ticket` with an ack
//!    `--forwards` times in a row (signed POST to the local API, 200
//!    `{"ok":true}`); p50 / p99 / max of the ack round trip.
//!
//! `sb-actions --gateway target/release/switchboard-gateway [--gateway-cpu 0 --client-cpu 1]`

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use switchboard_bench::{
    client::{Target, Ws, mint_token, open_session},
    hist::Histogram,
    procfs,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "sb-actions-secret-0123456789abcdef0123";

#[derive(Parser)]
struct Args {
    /// The gateway binary (a release build).
    #[arg(long)]
    gateway: PathBuf,
    /// Pin the gateway to this CPU (`taskset -c`).
    #[arg(long)]
    gateway_cpu: Option<usize>,
    /// Sockets alternating join / leave.
    #[arg(long, default_value_t = 100)]
    join_clients: usize,
    /// Length of the join/leave phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Members of the relay room (the sender included).
    #[arg(long, default_value_t = 200)]
    relay_receivers: usize,
    /// Relays the sender emits.
    #[arg(long, default_value_t = 5000)]
    relays: usize,
    /// Forwards with an ack, one after the other.
    #[arg(long, default_value_t = 2000)]
    forwards: usize,
}

/// The API stand-in: answers every request 200 `{"ok":true}` (HTTP/1.1
/// keep-alive, `Content-Length` bodies only: the gateway's requests).
async fn api_server() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(8192);
                let mut chunk = [0u8; 8192];
                loop {
                    // One request: head, then Content-Length bytes.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    let body = br#"{"ok":true}"#;
                    // Head and body in one write (no Nagle / delayed-ACK stall).
                    let mut resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    resp.extend_from_slice(body);
                    if stream.write_all(&resp).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Reads until an Engine.IO message satisfying `want` arrives, answering pings.
async fn read_until(ws: &mut Ws, mut want: impl FnMut(&str) -> bool) -> anyhow::Result<()> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if t.as_str() == "2" {
                    ws.send(Message::text("3")).await?;
                } else if want(t.as_str()) {
                    return Ok(());
                }
            }
            Some(Ok(Message::Close(c))) => bail!("closed: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}

/// Emits with ack id `id` and waits for the ack.
async fn emit_ack(ws: &mut Ws, id: u64, event: &str, arg: &str) -> anyhow::Result<()> {
    ws.send(Message::text(format!(r#"42{id}["{event}","{arg}"]"#)))
        .await?;
    let prefix = format!("43{id}[");
    read_until(ws, |t| t.starts_with(&prefix)).await
}

async fn sessions(target: &Target, n: usize, tag: &str) -> anyhow::Result<Vec<Ws>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let token = mint_token(SECRET.as_bytes(), &format!("{tag}{i}"), "user")?;
        out.push(open_session(target, None, &token).await?);
    }
    Ok(out)
}

fn pct(h: &Histogram, q: f64) -> f64 {
    h.quantile(q) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api = api_server().await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir().join(format!("sb-actions-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"[limits]
client_events_per_sec = 0
max_connections_per_ip = 100000
max_connections_per_user = 1000
max_queue_frames = 1000000
max_queue_bytes = 1000000000

[[client.rooms]]
join_event = "join_chat"
leave_event = "leave_chat"
room = "chat_{{arg}}"
allow = "authenticated"
relay_event = "new_message"

[[client.forward]]
events = ["create_ticket"]
url = "http://{api}/realtime/events"

[client.hooks]
secret = "{SECRET}"
max_in_flight = 4096
"#
        ),
    )?;
    let mut cmd = match args.gateway_cpu {
        Some(cpu) => {
            let mut c = tokio::process::Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(&args.gateway);
            c
        }
        None => tokio::process::Command::new(&args.gateway),
    };
    let mut gateway = cmd
        .env("SWITCHBOARD_JWT_SECRET", SECRET)
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_CONFIG", &config)
        .env("SWITCHBOARD_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("start the gateway")?;
    let pid = gateway.id().context("gateway pid")?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("the gateway did not listen");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let target = Target::new(addr);

    // 1. join / leave.
    let clients = sessions(&target, args.join_clients, "j").await?;
    let ops = Arc::new(AtomicU64::new(0));
    let cpu0 = procfs::cpu_time(pid)?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for (i, mut ws) in clients.into_iter().enumerate() {
        let ops = ops.clone();
        tasks.push(tokio::spawn(async move {
            let room = i.to_string();
            let mut id = 0;
            while Instant::now() < until {
                emit_ack(&mut ws, id, "join_chat", &room).await?;
                emit_ack(&mut ws, id + 1, "leave_chat", &room).await?;
                id += 2;
                ops.fetch_add(2, Relaxed);
            }
            anyhow::Ok(ws)
        }));
    }
    for t in tasks {
        drop(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (procfs::cpu_time(pid)? - cpu0).as_secs_f64();
    let n = ops.load(Relaxed) as f64;
    println!(
        "join/leave: {} sockets, {:.0} ops in {elapsed:.1} s = {:.0} ops/s; gateway CPU {cpu:.2} s = {:.0} ops per CPU-second",
        args.join_clients,
        n,
        n / elapsed,
        n / cpu.max(1e-9)
    );

    // 2. relay burst.
    let mut members = sessions(&target, args.relay_receivers, "r").await?;
    for ws in members.iter_mut() {
        emit_ack(ws, 0, "join_chat", "1").await?;
    }
    let mut sender = members.remove(0);
    let delivered = Arc::new(AtomicU64::new(0));
    let last_us = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let expected = (args.relays * members.len()) as u64;
    let mut receivers = Vec::new();
    for mut ws in members {
        let delivered = delivered.clone();
        let last_us = last_us.clone();
        let relays = args.relays as u64;
        receivers.push(tokio::spawn(async move {
            let mut mine = 0u64;
            while mine < relays {
                match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => {
                        if t.as_str() == "2" {
                            ws.send(Message::text("3")).await?;
                        } else if t.as_str().starts_with(r#"42["new_message""#) {
                            mine += 1;
                            delivered.fetch_add(1, Relaxed);
                            last_us.fetch_max(t0.elapsed().as_micros() as u64, Relaxed);
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            anyhow::Ok(())
        }));
    }
    let cpu0 = procfs::cpu_time(pid)?;
    let send_started = Instant::now();
    for i in 0..args.relays {
        sender
            .feed(Message::text(format!(
                r#"42["new_message","1",{{"n":{i}}}]"#
            )))
            .await?;
        if i % 64 == 63 {
            sender.flush().await?;
        }
    }
    sender.flush().await?;
    let offered = send_started.elapsed().as_secs_f64();
    // Keep reading the sender (pings) while the receivers finish.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = sender.next().await {} });
    for r in receivers {
        r.await??;
    }
    drain.abort();
    let cpu = (procfs::cpu_time(pid)? - cpu0).as_secs_f64();
    let got = delivered.load(Relaxed);
    let span = last_us.load(Relaxed) as f64 / 1e6;
    println!(
        "relay burst: {} relays to {} other members offered in {offered:.2} s; {got} / {expected} deliveries in {span:.2} s = {:.0} deliveries/s; gateway CPU {cpu:.2} s = {:.2} µs per delivery",
        args.relays,
        args.relay_receivers - 1,
        got as f64 / span.max(1e-9),
        cpu * 1e6 / (got.max(1) as f64)
    );

    // 3. forward round trip.
    let mut ws = sessions(&target, 1, "f").await?.remove(0);
    let hist = Histogram::new();
    for id in 0..args.forwards as u64 {
        let t = Instant::now();
        ws.send(Message::text(format!(
            r#"42{id}["create_ticket",{{"title":"t{id}"}}]"#
        )))
        .await?;
        let prefix = format!("43{id}[");
        read_until(&mut ws, |t| t.starts_with(&prefix)).await?;
        hist.record(t.elapsed().as_micros() as u64);
    }
    println!(
        "forward: {} acks; round trip p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        hist.count(),
        pct(&hist, 0.5),
        pct(&hist, 0.99),
        hist.max() as f64 / 1000.0
    );
    let _ = gateway.start_kill();
    let _ = gateway.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
