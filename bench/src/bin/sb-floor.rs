//! `sb-floor`: the floors the benchmark figures are compared with, measured
//! the same way as the real servers (RSS and CPU time from `/proc`).
//!
//! * `--mode tcp`: accepts TCP connections and keeps each in a task waiting
//!   for readability — what a raw tokio socket costs.
//! * `--mode ws`: accepts websockets with tokio-tungstenite (512-byte read
//!   buffer, as the gateway) and answers the Engine.IO open and the
//!   Socket.IO CONNECT like a server that accepts every token; one task per
//!   socket — what the smallest tokio-tungstenite Socket.IO server costs.
//! * `--mode fanout`: like `ws`, but sockets are parked (no task); on
//!   SIGUSR1 it writes pre-encoded `bench` event frames at `--rate`
//!   deliveries/s for `--secs` to room `i % --rooms` (i = accept order) —
//!   the least CPU any server can spend per delivery on this kernel.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use switchboard_bench::{
    client::now_us,
    proto::{self, EioPacket, Stamp},
};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::Mutex,
};
use tokio_tungstenite::{
    WebSocketStream, accept_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Tcp,
    Ws,
    Fanout,
}

#[derive(Parser)]
#[command(about = "Floor servers for the Switchboard benchmarks")]
struct Cli {
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long, default_value = "127.0.0.1:3990")]
    listen: SocketAddr,
    /// Fanout: rooms (socket i joins room i % rooms).
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Fanout: deliveries per second.
    #[arg(long, default_value_t = 25_000)]
    rate: u64,
    /// Fanout: seconds of writing after SIGUSR1.
    #[arg(long, default_value_t = 20.0)]
    secs: f64,
    /// Fanout: padding bytes in each event (as `sb-load fanout --pad`).
    #[arg(long, default_value_t = 40)]
    pad: usize,
    /// Tokio worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
}

type Ws = WebSocketStream<TcpStream>;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    switchboard_bench::client::raise_nofile_limit();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = cli.threads {
        rt.worker_threads(t.max(1));
    }
    rt.build()?.block_on(run(cli))
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
}

/// Websocket accept, open packet, CONNECT answer.
async fn handshake(stream: TcpStream, sid: u64) -> anyhow::Result<Ws> {
    stream.set_nodelay(true)?;
    let mut ws = accept_async_with_config(stream, Some(ws_config())).await?;
    let open = format!(
        "0{{\"sid\":\"floor{sid}\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}"
    );
    ws.send(Message::text(open)).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg?
            && let Ok(EioPacket::Message(p)) = proto::parse_eio(t.as_str())
            && p.starts_with('0')
        {
            ws.send(Message::text(format!("40{{\"sid\":\"s{sid}\"}}")))
                .await?;
            return Ok(ws);
        }
    }
    anyhow::bail!("closed before CONNECT")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let listener = TcpListener::bind(cli.listen).await?;
    println!("sb-floor listening on {}", cli.listen);
    let parked: Arc<Mutex<Vec<Ws>>> = Arc::default();
    if cli.mode == Mode::Fanout {
        let parked = parked.clone();
        let (rooms, rate, secs, pad) = (cli.rooms.max(1), cli.rate, cli.secs, cli.pad);
        tokio::spawn(async move {
            let mut sig =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                    .expect("SIGUSR1 handler");
            while sig.recv().await.is_some() {
                let mut sockets = parked.lock().await;
                let written = write_fanout(&mut sockets, rooms, rate, secs, pad).await;
                eprintln!("sb-floor: {written} deliveries written");
            }
        });
    }
    let next_sid = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sb-floor: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let sid = next_sid.fetch_add(1, Relaxed);
        match cli.mode {
            Mode::Tcp => {
                tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    loop {
                        if stream.readable().await.is_err() {
                            return;
                        }
                        match stream.try_read(&mut buf) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => return,
                        }
                    }
                });
            }
            Mode::Ws => {
                tokio::spawn(async move {
                    let Ok(mut ws) = handshake(stream, sid).await else {
                        return;
                    };
                    while let Some(Ok(_)) = ws.next().await {}
                });
            }
            Mode::Fanout => {
                let parked = parked.clone();
                tokio::spawn(async move {
                    if let Ok(ws) = handshake(stream, sid).await {
                        parked.lock().await.push(ws);
                    }
                });
            }
        }
    }
}

/// Writes `bench` frames at `rate` deliveries/s for `secs`, one encoding per
/// message, the same bytes to every socket of its room.
async fn write_fanout(sockets: &mut [Ws], rooms: usize, rate: u64, secs: f64, pad: usize) -> u64 {
    if sockets.is_empty() {
        return 0;
    }
    let avg_room = sockets.len() as f64 / rooms as f64;
    let period = Duration::from_secs_f64(avg_room / rate.max(1) as f64);
    let run_for = Duration::from_secs_f64(secs);
    let start = tokio::time::Instant::now();
    let mut seqs = vec![0u64; rooms];
    let mut written = 0;
    let mut k = 0u64;
    loop {
        let at = start + period.mul_f64(k as f64);
        if at.duration_since(start) >= run_for {
            return written;
        }
        tokio::time::sleep_until(at).await;
        let room = (k % rooms as u64) as usize;
        k += 1;
        let stamp = Stamp {
            t_us: now_us(),
            seq: seqs[room],
            room: room as u32,
        };
        seqs[room] += 1;
        let text = format!("4{}", proto::bench_event_packet(stamp, pad));
        let frame = proto::ws_text_frame(text.as_bytes());
        for ws in sockets.iter_mut().skip(room).step_by(rooms) {
            if ws.get_mut().write_all(&frame).await.is_ok() {
                written += 1;
            }
        }
    }
}
