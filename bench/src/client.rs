//! One benchmark client: a TCP connection from a chosen loopback source
//! address, the websocket handshake, the Engine.IO open packet and the
//! authenticated Socket.IO CONNECT; then a loop that answers pings and
//! counts `bench` events.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

use crate::{
    hist::Histogram,
    proto::{self, ConnectAnswer, EioPacket, SioKind},
};

pub type Ws = WebSocketStream<TcpStream>;

/// Microseconds since the Unix epoch (the publish stamp's clock).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Raises the soft open-files limit to the hard limit; returns the new limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// Round-robin source addresses in 127.0.0.0/8, so more than one source
/// port range (~28k) is available towards one server port: bind to
/// 127.a.b.c before connect, port chosen at connect time.
pub struct SourceAddrs {
    base: u32,
    count: u32,
    next: AtomicU32,
}

impl SourceAddrs {
    /// `count` addresses from `base` upwards (must stay in 127.0.0.0/8).
    pub fn new(base: Ipv4Addr, count: u32) -> anyhow::Result<Self> {
        let b = u32::from(base);
        let count = count.max(1);
        if base.octets()[0] != 127 || ((b + count - 1) >> 24) != 127 {
            bail!("source addresses must stay inside 127.0.0.0/8");
        }
        Ok(SourceAddrs {
            base: b,
            count,
            next: AtomicU32::new(0),
        })
    }

    pub fn next(&self) -> Ipv4Addr {
        let i = self.next.fetch_add(1, Relaxed) % self.count;
        Ipv4Addr::from(self.base + i)
    }
}

/// Connects from `src` (any port) to `dst`.
pub async fn tcp_connect(dst: SocketAddr, src: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(src) = src {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on an owned, open socket with a valid int.
        // IP_BIND_ADDRESS_NO_PORT defers the port choice to connect(), so the
        // 4-tuple, not the source address alone, must be unique.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(SocketAddr::V4(SocketAddrV4::new(src, 0)))?;
    }
    let stream = socket.connect(dst).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Claims of a benchmark token: user `sub`, one role, valid for a day.
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    role: &'a str,
    iat: u64,
    exp: u64,
}

/// An HS256 token for `sub` with `role`.
pub fn mint_token(secret: &[u8], sub: &str, role: &str) -> anyhow::Result<String> {
    let now = now_us() / 1_000_000;
    let claims = Claims {
        sub,
        role,
        iat: now,
        exp: now + 86_400,
    };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )?)
}

/// Where clients connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub url: String,
}

impl Target {
    /// `host:port` of a Socket.IO server with the default `/socket.io/` path.
    pub fn new(addr: SocketAddr) -> Self {
        Target {
            addr,
            url: format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
        }
    }
}

fn client_ws_config() -> WebSocketConfig {
    // The generator holds tens of thousands of sockets: small buffers.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(c))) => bail!("closed by server: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}

/// Opens one authenticated session; the websocket is ready for events.
/// Pure TCP when `raw` (the floor for memory), else the full exchange.
pub async fn open_session(
    target: &Target,
    src: Option<Ipv4Addr>,
    token: &str,
) -> anyhow::Result<Ws> {
    let tcp = tcp_connect(target.addr, src)
        .await
        .with_context(|| format!("tcp connect to {} from {src:?}", target.addr))?;
    let (mut ws, _) = client_async_with_config(target.url.as_str(), tcp, Some(client_ws_config()))
        .await
        .context("websocket handshake")?;
    let open = next_text(&mut ws).await?;
    match proto::parse_eio(&open)? {
        EioPacket::Open(json) => {
            proto::parse_open(json)?;
        }
        other => bail!("expected the open packet, got {other:?}"),
    }
    ws.send(Message::text(proto::connect_frame(token))).await?;
    loop {
        let frame = next_text(&mut ws).await?;
        if let EioPacket::Ping(_) = proto::parse_eio(&frame)? {
            ws.send(Message::text("3")).await?;
            continue;
        }
        match proto::parse_connect_answer(&frame)? {
            Some(ConnectAnswer::Accepted { .. }) => return Ok(ws),
            Some(ConnectAnswer::Refused { message }) => bail!("CONNECT refused: {message}"),
            None => continue,
        }
    }
}

/// What all client loops of one run add up.
#[derive(Default)]
pub struct RecvStats {
    /// `bench` events received.
    pub deliveries: AtomicU64,
    /// Events whose sequence was not above the last one this client saw.
    pub duplicates: AtomicU64,
    /// Publish-to-receive latency, µs.
    pub latency: Histogram,
    /// Sessions that ended before the run did.
    pub disconnects: AtomicU64,
    /// Pings answered.
    pub pongs: AtomicU64,
    /// Protocol surprises (unparsable frames, other events).
    pub errors: AtomicU64,
    /// When the last event arrived, µs since the epoch.
    pub last_event_us: AtomicU64,
}

/// Per-connection receive counts, for runs that check every connection got
/// each event exactly once (the `scale` broadcast).
pub struct Tally {
    counts: Box<[AtomicU32]>,
    /// Publish-to-receive time of the first arrival, µs.
    first_latency_us: Box<[AtomicU64]>,
}

impl Tally {
    pub fn new(n: usize) -> Self {
        Tally {
            counts: (0..n).map(|_| AtomicU32::new(0)).collect(),
            first_latency_us: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// One `bench` event arrived on connection `i`, `latency_us` after publishing.
    pub fn record(&self, i: usize, latency_us: u64) {
        if let Some(c) = self.counts.get(i)
            && c.fetch_add(1, Relaxed) == 0
        {
            self.first_latency_us[i].store(latency_us, Relaxed);
        }
    }

    /// Events connection `i` received.
    pub fn count(&self, i: usize) -> u32 {
        self.counts.get(i).map_or(0, |c| c.load(Relaxed))
    }

    /// Publish-to-receive time of connection `i`'s first event, µs.
    pub fn latency_us(&self, i: usize) -> u64 {
        self.first_latency_us.get(i).map_or(0, |l| l.load(Relaxed))
    }
}

/// Where one connection records into a [`Tally`].
pub struct Slot {
    pub tally: Arc<Tally>,
    pub index: usize,
}

/// Answers pings and counts `bench` events until `stop` turns true or the
/// server closes. Sockets end here, without a close handshake when stopped.
/// With a `slot`, every event is also counted for this connection alone.
pub async fn drive(
    mut ws: Ws,
    stats: Arc<RecvStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    slot: Option<Slot>,
) {
    let mut last_seq: Option<u64> = None;
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => return,
            msg = ws.next() => msg,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(_))) => {
                stats.errors.fetch_add(1, Relaxed);
                continue;
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                if !*stop.borrow() {
                    stats.disconnects.fetch_add(1, Relaxed);
                }
                return;
            }
        };
        match proto::parse_eio(text.as_str()) {
            Ok(EioPacket::Ping(_)) => {
                if ws.send(Message::text("3")).await.is_err() {
                    stats.disconnects.fetch_add(1, Relaxed);
                    return;
                }
                stats.pongs.fetch_add(1, Relaxed);
            }
            Ok(EioPacket::Message(payload)) => {
                let stamp = proto::parse_sio(payload)
                    .ok()
                    .filter(|p| p.kind == SioKind::Event)
                    .and_then(|p| proto::parse_stamp(p.data));
                let Some(stamp) = stamp else {
                    stats.errors.fetch_add(1, Relaxed);
                    continue;
                };
                let now = now_us();
                let latency = now.saturating_sub(stamp.t_us);
                stats.deliveries.fetch_add(1, Relaxed);
                stats.latency.record(latency);
                if let Some(slot) = &slot {
                    slot.tally.record(slot.index, latency);
                }
                stats.last_event_us.store(now, Relaxed);
                if last_seq.is_some_and(|l| stamp.seq <= l) {
                    stats.duplicates.fetch_add(1, Relaxed);
                } else {
                    last_seq = Some(stamp.seq);
                }
            }
            Ok(EioPacket::Close) => {
                stats.disconnects.fetch_add(1, Relaxed);
                return;
            }
            Ok(_) => {}
            Err(_) => {
                stats.errors.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Opens `tokens.len()` sessions with at most `concurrency` in flight, over
/// `targets` round robin. Returns the sockets (index = client index), the
/// connect-time histogram (µs) and how long the whole batch took.
pub async fn open_many(
    targets: &[Target],
    sources: &Arc<SourceAddrs>,
    tokens: Vec<String>,
    concurrency: usize,
    raw_tcp: bool,
) -> anyhow::Result<(Vec<Conn>, Arc<Histogram>, Duration)> {
    if targets.is_empty() {
        bail!("no target");
    }
    let hist = Arc::new(Histogram::new());
    let n = tokens.len();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, token) in tokens.into_iter().enumerate() {
        let permit = sem.clone().acquire_owned().await?;
        let target = targets[i % targets.len()].clone();
        let src = sources.next();
        let hist = hist.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let conn = if raw_tcp {
                tcp_connect(target.addr, Some(src))
                    .await
                    .map(Conn::Tcp)
                    .map_err(anyhow::Error::from)
            } else {
                tokio::time::timeout(
                    Duration::from_secs(30),
                    open_session(&target, Some(src), &token),
                )
                .await
                .map_err(|_| anyhow!("connect timed out after 30 s"))
                .and_then(|r| r.map(|ws| Conn::Ws(Box::new(ws))))
            };
            hist.record(t0.elapsed().as_micros() as u64);
            drop(permit);
            conn
        }));
    }
    let mut conns = Vec::with_capacity(n);
    let mut first_err = None;
    let mut failed = 0;
    for t in tasks {
        match t.await? {
            Ok(c) => conns.push(c),
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = first_err {
        return Err(e.context(format!("{failed} of {n} connects failed")));
    }
    Ok((conns, hist, elapsed))
}

/// An open client socket (boxed websocket: the enum lives in big vectors).
pub enum Conn {
    Ws(Box<Ws>),
    Tcp(TcpStream),
}
