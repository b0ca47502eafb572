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
//!   the least CPU any server can spend per delivery on this kernel. Each
//!   message is stamped here, just before its first write: its latency is
//!   the write loop alone (no publisher, no Redis).
//! * `--mode relay`: like `fanout`, but driven exactly as the servers are.
//!   It `PSUBSCRIBE`s to the pattern the gateway subscribes to
//!   (`socket.io#/#*`) on `--redis-url`, reads each emitter-format
//!   broadcast that `sb-load fanout` publishes, takes the publisher's stamp
//!   from it, encodes the `bench` frame once and writes those bytes raw to
//!   every socket of the broadcast's room (`role:r<k>`: socket i is in room
//!   i % --rooms), in the task that read the Redis reply (no channel hop).
//!   Its publish -> receive latency is the least this machine allows through
//!   the same Redis: the publisher -> Redis -> server hop plus the write loop.

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
    Relay,
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
    /// Relay: the Redis the publisher publishes to.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
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
    let parked: Arc<Mutex<Vec<Ws>>> = Arc::default();
    if cli.mode == Mode::Relay {
        // Subscribed before listening: once the port answers, nothing the
        // publisher sends can be missed.
        let redis = relay::subscribe(&cli.redis_url).await?;
        let parked = parked.clone();
        let rooms = cli.rooms.max(1);
        tokio::spawn(async move {
            if let Err(e) = relay::run(redis, parked, rooms).await {
                eprintln!("sb-floor: relay ended: {e:#}");
            }
        });
    }
    let listener = TcpListener::bind(cli.listen).await?;
    println!("sb-floor listening on {}", cli.listen);
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
            Mode::Fanout | Mode::Relay => {
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

/// `--mode relay`: the floor driven through Redis like the servers.
mod relay {
    use std::sync::Arc;

    use anyhow::{Context, bail};
    use rmpv::Value;
    use switchboard_bench::proto::{self, Stamp};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
        sync::Mutex,
    };

    use super::Ws;

    /// The `host:port` of a `redis://host:port[/db]` URL (the bench's form;
    /// no password, no TLS).
    fn redis_addr(url: &str) -> anyhow::Result<&str> {
        let rest = url
            .strip_prefix("redis://")
            .with_context(|| format!("relay: not a redis:// URL: {url}"))?;
        let addr = rest.split('/').next().unwrap_or(rest);
        if addr.is_empty() || addr.contains('@') {
            bail!("relay: unsupported redis URL {url} (host:port only)");
        }
        Ok(addr)
    }

    /// One RESP command, an array of bulk strings.
    fn command(args: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        out
    }

    /// Position of the `\r\n` ending the line that starts at `at`.
    fn line_end(buf: &[u8], at: usize) -> Option<usize> {
        buf.get(at..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| at + p)
    }

    fn number(bytes: &[u8]) -> anyhow::Result<i64> {
        std::str::from_utf8(bytes)?
            .parse()
            .with_context(|| format!("relay: bad RESP length {bytes:?}"))
    }

    /// The items of one RESP push (borrowed from the read buffer) and the
    /// bytes it took.
    pub(super) type Push<'a> = (Vec<&'a [u8]>, usize);

    /// Parses one complete RESP2 push at the start of `buf`: an array of
    /// bulk strings and integers (all a pub/sub connection receives).
    /// `None` until the whole push is buffered; otherwise its items and the
    /// bytes it took.
    pub(super) fn parse_push(buf: &[u8]) -> anyhow::Result<Option<Push<'_>>> {
        let Some(&kind) = buf.first() else {
            return Ok(None);
        };
        let Some(end) = line_end(buf, 1) else {
            return Ok(None);
        };
        match kind {
            b'*' => {}
            b'-' => bail!(
                "relay: redis error {}",
                String::from_utf8_lossy(&buf[1..end])
            ),
            other => bail!("relay: unexpected RESP type {:?}", other as char),
        }
        let n = usize::try_from(number(&buf[1..end])?).context("relay: negative array")?;
        let mut at = end + 2;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(&kind) = buf.get(at) else {
                return Ok(None);
            };
            let Some(end) = line_end(buf, at + 1) else {
                return Ok(None);
            };
            match kind {
                b'$' => {
                    let len = usize::try_from(number(&buf[at + 1..end])?)
                        .context("relay: nil bulk string")?;
                    let start = end + 2;
                    if buf.len() < start + len + 2 {
                        return Ok(None);
                    }
                    items.push(&buf[start..start + len]);
                    at = start + len + 2;
                }
                b':' => {
                    items.push(&buf[at + 1..end]);
                    at = end + 2;
                }
                other => bail!("relay: unexpected RESP item {:?}", other as char),
            }
        }
        Ok(Some((items, at)))
    }

    /// Connects to Redis and `PSUBSCRIBE`s to the gateway's broadcast
    /// pattern; returns once Redis confirmed it.
    pub(super) async fn subscribe(url: &str) -> anyhow::Result<TcpStream> {
        let mut redis = TcpStream::connect(redis_addr(url)?)
            .await
            .with_context(|| format!("relay: connect to {url}"))?;
        redis.set_nodelay(true)?;
        let pattern = switchboard_wire::Channels::default().broadcast_pattern("/");
        redis.write_all(&command(&["PSUBSCRIBE", &pattern])).await?;
        let mut buf = Vec::with_capacity(256);
        loop {
            if redis.read_buf(&mut buf).await? == 0 {
                bail!("relay: redis closed before confirming the subscription");
            }
            if let Some((items, _)) = parse_push(&buf)? {
                if items.first() == Some(&&b"psubscribe"[..]) {
                    eprintln!("sb-floor: relay subscribed to {pattern}");
                    return Ok(redis);
                }
                bail!("relay: unexpected reply to PSUBSCRIBE");
            }
        }
    }

    /// The frame a server sends for one emitter broadcast of a `bench`
    /// event, and the room index it goes to: the publisher's stamp, read
    /// from the payload, re-encoded as the Socket.IO text the clients parse.
    pub(super) fn frame_of(payload: &[u8], rooms: usize) -> anyhow::Result<(usize, Vec<u8>)> {
        let msg = switchboard_wire::decode_broadcast_ref(payload)?;
        let room = msg
            .rooms
            .first()
            .and_then(|r| r.strip_prefix("role:r")?.parse::<usize>().ok())
            .filter(|&r| r < rooms)
            .context("relay: broadcast not to a role:r<k> room of this floor")?;
        let Value::Array(data) = &msg.packet.data else {
            bail!("relay: event data is not an array");
        };
        let Some(Value::Map(args)) = data.get(1) else {
            bail!("relay: bench event without its argument map");
        };
        let field = |key: &str| {
            args.iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v)
        };
        let int = |key: &str| {
            field(key)
                .and_then(Value::as_u64)
                .with_context(|| format!("relay: bench stamp without {key}"))
        };
        let stamp = Stamp {
            t_us: int("t")?,
            seq: int("s")?,
            room: u32::try_from(int("r")?)?,
        };
        let pad = field("p").and_then(Value::as_str).map_or(0, str::len);
        let text = format!("4{}", proto::bench_event_packet(stamp, pad));
        Ok((room, proto::ws_text_frame(text.as_bytes())))
    }

    /// Reads broadcasts from Redis and writes each one's frame to every
    /// socket of its room, in this task, until Redis closes.
    pub(super) async fn run(
        mut redis: TcpStream,
        parked: Arc<Mutex<Vec<Ws>>>,
        rooms: usize,
    ) -> anyhow::Result<()> {
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let (mut written, mut skipped) = (0u64, 0u64);
        loop {
            let mut used = 0;
            while let Some((items, len)) = parse_push(&buf[used..])? {
                used += len;
                // `pmessage pattern channel payload`.
                let payload = match items.as_slice() {
                    [kind, _, _, payload] if *kind == b"pmessage" => *payload,
                    _ => continue,
                };
                let (room, frame) = match frame_of(payload, rooms) {
                    Ok(f) => f,
                    Err(e) => {
                        skipped += 1;
                        eprintln!("sb-floor: relay skipped a message: {e:#}");
                        continue;
                    }
                };
                let mut sockets = parked.lock().await;
                for ws in sockets.iter_mut().skip(room).step_by(rooms) {
                    if ws.get_mut().write_all(&frame).await.is_ok() {
                        written += 1;
                    }
                }
            }
            buf.drain(..used);
            if redis.read_buf(&mut buf).await? == 0 {
                eprintln!("sb-floor: relay: {written} deliveries written, {skipped} skipped");
                bail!("redis closed the subscription");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_bench::proto::{self, Stamp};
    use switchboard_wire::{BroadcastMessage, BroadcastOptions, BusPacket};

    use super::relay::{frame_of, parse_push};

    #[test]
    fn pushes_parse_only_when_complete() {
        let push = b"*4\r\n$8\r\npmessage\r\n$3\r\np#*\r\n$2\r\nch\r\n$3\r\nabc\r\n";
        for cut in 0..push.len() {
            assert!(parse_push(&push[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let mut two = push.to_vec();
        two.extend_from_slice(b"*3\r\n$10\r\npsubscribe\r\n$1\r\np\r\n:1\r\n");
        let (items, used) = parse_push(&two).unwrap().unwrap();
        assert_eq!(items, vec![&b"pmessage"[..], b"p#*", b"ch", b"abc"]);
        assert_eq!(used, push.len());
        let (items, used2) = parse_push(&two[used..]).unwrap().unwrap();
        assert_eq!(items, vec![&b"psubscribe"[..], b"p", b"1"]);
        assert_eq!(used + used2, two.len());
        assert!(parse_push(b"-ERR nope\r\n").is_err());
    }

    #[test]
    fn relay_frames_carry_the_publishers_stamp() {
        let stamp = Stamp {
            t_us: 1_234_567,
            seq: 42,
            room: 3,
        };
        let args = rmpv::Value::Map(vec![
            ("t".into(), stamp.t_us.into()),
            ("s".into(), stamp.seq.into()),
            ("r".into(), stamp.room.into()),
            ("p".into(), "xxxx".into()),
        ]);
        let msg = BroadcastMessage {
            uid: "emitter".into(),
            packet: BusPacket::event("/", rmpv::Value::Array(vec!["bench".into(), args])),
            opts: BroadcastOptions {
                rooms: vec!["role:r3".into()],
                ..Default::default()
            },
        };
        let payload = switchboard_wire::encode_broadcast(&msg);
        let (room, frame) = frame_of(&payload, 10).unwrap();
        assert_eq!(room, 3);
        let text = format!("4{}", proto::bench_event_packet(stamp, 4));
        assert_eq!(frame, proto::ws_text_frame(text.as_bytes()));
        // What the clients read back from it.
        let proto::EioPacket::Message(p) = proto::parse_eio(&text).unwrap() else {
            panic!("not a message");
        };
        assert_eq!(
            proto::parse_stamp(proto::parse_sio(p).unwrap().data),
            Some(stamp)
        );
        // A room this floor does not have is refused, not written to room 0.
        assert!(frame_of(&payload, 3).is_err());
    }
}
