//! The websocket transport: a direct websocket session, or the upgrade of a
//! polling session (`2probe` / `3probe`, noop to the pending GET, then `5`).
//!
//! One task per websocket connection reads and writes; the engine's
//! heartbeat task ([`super::heartbeats`]) pings it. An idle connection costs
//! one task, one small read buffer, its [`Connection`] and its place in the
//! heartbeat schedule.

use std::{collections::VecDeque, sync::Arc, task::Poll};

use engineioxide_core::{Packet, ProtocolVersion};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::{
    body::Incoming,
    upgrade::{OnUpgrade, Upgraded},
};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Error as WsError, Message,
        handshake::derive_accept_key,
        protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
    },
};

use crate::{conn_slot::SlottedStream, engine::Handshake};

use super::{
    Body, CloseReason, Connection, Engine, EngineError, EngineHandler, Frame, TransportKind,
    str_from_utf8_bytes,
    wire::{PongRead, Wire, WireStream, encode_frame},
};

type Ws = WebSocketStream<WireStream>;

/// The read buffer tungstenite allocates eagerly per connection. Small on
/// purpose: idle connections dominate, and larger messages still arrive,
/// just in more reads.
const READ_BUFFER_BYTES: usize = 512;

/// tungstenite writes what it sends itself (the probe reply, pongs, the
/// close frame) at once; the frames of the outbox bypass it (see
/// [`write_batch`]).
fn ws_config(max_payload: u64) -> WebSocketConfig {
    let max = usize::try_from(max_payload).unwrap_or(usize::MAX);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Checks the RFC 6455 upgrade headers and computes the accept key.
fn accept_key(method: &Method, headers: &HeaderMap) -> Result<String, EngineError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if method != Method::GET
        || !has_token(header::UPGRADE, "websocket")
        || !has_token(header::CONNECTION, "upgrade")
        || headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(EngineError::BadRequest);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(EngineError::BadRequest)?;
    Ok(derive_accept_key(key.as_bytes()))
}

fn switching_protocols(accept: String) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::default())
        .unwrap_or_default()
}

/// A websocket-only session: the open packet is the first frame.
/// `handshake` has been admitted; its place is given back if the upgrade
/// does not happen.
pub(super) fn open<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    req: Request<Incoming>,
    handshake: Handshake,
) -> Result<Response<Body>, EngineError> {
    let accept = match accept_key(req.method(), req.headers()) {
        Ok(accept) => accept,
        Err(err) => {
            engine.release(&handshake);
            return Err(err);
        }
    };
    let on_upgrade = hyper::upgrade::on(req);
    // Per connection: the session's websocket, ending with it; shutdown
    // closes every session and awaits them (`Engine::drained`).
    tokio::spawn(session(engine.clone(), on_upgrade, Box::new(handshake)));
    Ok(switching_protocols(accept))
}

/// The task of a websocket-only session: waits for the upgrade, opens the
/// session and runs it until it closes. `handshake` comes boxed: what a
/// task holds when it starts stays in it for its whole life, and the
/// handshake is needed only until the session opens.
async fn session<H: EngineHandler>(
    engine: Arc<Engine<H>>,
    on_upgrade: OnUpgrade,
    handshake: Box<Handshake>,
) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(err) => {
            tracing::debug!(%err, "websocket upgrade failed");
            engine.release(&handshake);
            return;
        }
    };
    // Boxed, as every step that ends before the session does (see `run`).
    let Some(ws) = Box::pin(into_websocket(upgraded, engine.settings.max_payload)).await else {
        engine.release(&handshake);
        return;
    };
    let conn = engine.open_session(*handshake, TransportKind::Websocket);
    run(&engine, &conn, Box::new(ws)).await;
}

/// The upgrade of an open polling session to websocket.
///
/// The session is marked `upgrading` here, before the websocket exists, so
/// that of two upgrade requests racing for one sid only the first reaches
/// the probe. A websocket for a session that is already upgraded or being
/// upgraded is accepted and then closed at once, as the reference server
/// does (`transport had already been upgraded`), not refused with HTTP 400.
pub(super) fn upgrade<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    conn: Arc<Connection<H::Data>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, EngineError> {
    let accept = accept_key(req.method(), req.headers())?;
    let refused = {
        let mut state = conn.state.lock();
        if conn.is_closed() {
            Some("session closed")
        } else if state.kind != TransportKind::Polling {
            Some("already upgraded")
        } else if state.upgrading {
            Some("upgrade already in progress")
        } else {
            state.upgrading = true;
            None
        }
    };
    let on_upgrade = hyper::upgrade::on(req);
    let engine = engine.clone();
    if let Some(why) = refused {
        tracing::debug!(sid = %conn.sid, why, "extra websocket for a session; accepting and closing it");
        engine
            .metrics
            .engine_errors
            .with_label_values(&["upgrade_refused"])
            .inc();
        // Per connection: a refused websocket's close handshake, bounded
        // to one second.
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await
                && let Some(mut ws) = into_websocket(upgraded, engine.settings.max_payload).await
            {
                // A complete close handshake: the client's reply is read, so
                // whatever it sent meanwhile cannot turn the close into a reset.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                    if ws.close(None).await.is_ok() {
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                })
                .await;
            }
        });
        return Ok(switching_protocols(accept));
    }
    // Per connection: the upgraded session's websocket, ending with the
    // session (awaited by shutdown through `Engine::drained`).
    tokio::spawn(async move {
        let ws = match on_upgrade.await {
            Ok(upgraded) => Box::pin(into_websocket(upgraded, engine.settings.max_payload)).await,
            Err(_) => None,
        };
        let Some(mut ws) = ws else {
            conn.state.lock().upgrading = false;
            return;
        };
        // Boxed: the probe's state would otherwise stay in the task for
        // the session's whole life (see `open`).
        let upgraded = Box::pin(tokio::time::timeout(
            engine.settings.upgrade_timeout,
            probe(&mut ws, &conn),
        ))
        .await;
        if !matches!(upgraded, Ok(Ok(()))) {
            {
                let mut state = conn.state.lock();
                state.upgrading = false;
                state.probed = false;
            }
            tracing::debug!(sid = %conn.sid, "websocket upgrade abandoned");
            let _ = ws.close(None).await;
            return;
        }
        {
            let mut state = conn.state.lock();
            state.kind = TransportKind::Websocket;
            state.upgrading = false;
            state.probed = false;
        }
        engine.metrics.upgrades.inc();
        engine
            .metrics
            .connections
            .with_label_values(&["polling"])
            .dec();
        engine
            .metrics
            .connections
            .with_label_values(&["websocket"])
            .inc();
        tracing::debug!(sid = %conn.sid, "session upgraded to websocket");
        engine.handler().on_upgrade(&conn);
        // The polling driver sees the new transport and hands over to us.
        conn.closed_signal.notify_waiters();
        run(&engine, &conn, Box::new(ws)).await;
    });
    Ok(switching_protocols(accept))
}

/// Takes the TCP stream back from hyper so that hyper's 8 KiB HTTP read
/// buffer is freed: kept inside `Upgraded`, it was most of an idle
/// connection's memory. Bytes hyper had read past the request go to
/// tungstenite first. The stream becomes a [`WireStream`], shared with the
/// outbox for direct writes once the session runs.
async fn into_websocket(upgraded: Upgraded, max_payload: u64) -> Option<Ws> {
    let parts = match upgraded.downcast::<TokioIo<SlottedStream>>() {
        Ok(parts) => parts,
        Err(_) => {
            tracing::error!("upgraded connection is not a TCP stream; dropping it");
            return None;
        }
    };
    let already_read = parts.read_buf.to_vec();
    drop(parts.read_buf);
    let (stream, slot) = parts.io.into_inner().into_parts();
    // The bytes hyper read ahead reach tungstenite through the stream, so
    // that the stream sees every byte tungstenite is given (see
    // `WireStream::poll_pong`).
    Some(
        WebSocketStream::from_raw_socket(
            WireStream::new(stream, slot).with_already_read(already_read),
            Role::Server,
            Some(ws_config(max_payload)),
        )
        .await,
    )
}

/// One read of a websocket session.
#[derive(Debug)]
enum Read {
    /// A client's Engine.IO pong, read directly: no message to build and
    /// no packet to parse.
    Pong,
    /// What tungstenite read (or the direct read's error, as tungstenite
    /// would have returned it).
    Ws(Option<Result<Message, WsError>>),
}

/// The session's next read: a pong read directly when tungstenite holds
/// nothing and the socket starts with one ([`WireStream::poll_pong`]),
/// anything else from tungstenite. One idle heartbeat's pong so costs one
/// `recv` and no pass through tungstenite.
fn poll_read(ws: &mut Ws, cx: &mut std::task::Context<'_>) -> Poll<Read> {
    match ws.get_mut().poll_pong(cx) {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(PongRead::Pong) => return Poll::Ready(Read::Pong),
        Poll::Ready(PongRead::Failed(err)) => {
            return Poll::Ready(Read::Ws(Some(Err(WsError::Io(err)))));
        }
        Poll::Ready(PongRead::Tungstenite) => {}
    }
    let read = ws.poll_next_unpin(cx);
    ws.get_mut().set_tungstenite_waiting(read.is_pending());
    read.map(Read::Ws)
}

/// Why an upgrade did not complete.
#[derive(Debug)]
struct UpgradeFailed;

/// `2probe` -> `3probe`, noop to the pending GET, then wait for `5`.
async fn probe<D>(ws: &mut Ws, conn: &Connection<D>) -> Result<(), UpgradeFailed> {
    let mut probed = false;
    while let Some(msg) = ws.next().await {
        let Ok(Message::Text(text)) = msg else {
            return Err(UpgradeFailed);
        };
        match Packet::parse(ProtocolVersion::V4, str_from_utf8_bytes(text)) {
            Ok(Packet::PingUpgrade) if !probed => {
                ws.send(Message::text("3probe"))
                    .await
                    .map_err(|_| UpgradeFailed)?;
                probed = true;
                {
                    let mut state = conn.state.lock();
                    if state.kind != TransportKind::Polling || conn.is_closed() {
                        return Err(UpgradeFailed);
                    }
                    state.probed = true;
                }
                // Completes the pending GET, if any, with a noop so the client
                // can pause polling (see `polling::poll`).
                conn.wake.notify_one();
            }
            Ok(Packet::Upgrade) if probed => return Ok(()),
            _ => return Err(UpgradeFailed),
        }
    }
    Err(UpgradeFailed)
}

/// Bytes encoded per `write` when a drain is large: big enough that a burst
/// costs a few syscalls per socket, small enough that the transient buffer
/// of a socket with a deep queue stays modest.
const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// Why a batch was not written completely.
#[derive(Debug)]
struct WriteFailed;

/// Writes one drain of the outbox: every frame is framed here into one
/// buffer and written with one `write` per [`WRITE_CHUNK_BYTES`], instead
/// of one `sendto` (and one tungstenite copy) per frame. Under a burst the
/// queue fills while the previous write is in flight, so a socket costs one
/// wake and a few syscalls per batch rather than per delivery.
///
/// Frames go to the TCP stream directly, behind tungstenite's back: the end
/// of a frame a direct write began comes first (it is always first in the
/// queue), then tungstenite's own buffer (a pong or close reply from the
/// read side) is flushed, then the rest. `torn` is set while a write may
/// have been cut short, after which nothing more may be written on this
/// stream (the close path checks it).
async fn write_batch(
    ws: &mut Ws,
    frames: &VecDeque<Frame>,
    torn: &mut bool,
) -> Result<(), WriteFailed> {
    let mut frames = frames.iter().peekable();
    if let Some(Frame::WireTail(tail)) = frames.peek() {
        *torn = true;
        // Boxed: rare, and kept out of the task's state (memory per idle
        // connection).
        Box::pin(ws.get_ref().wire().finish_tail(tail))
            .await
            .map_err(|_| WriteFailed)?;
        *torn = false;
        frames.next();
    }
    ws.flush().await.map_err(|_| WriteFailed)?;
    let total: usize = frames.clone().map(|f| f.len() + 10).sum();
    let mut buf = Vec::with_capacity(total.min(WRITE_CHUNK_BYTES + 10));
    while frames.peek().is_some() {
        while let Some(frame) = frames.next_if(|_| buf.len() < WRITE_CHUNK_BYTES) {
            encode_frame(&mut buf, frame);
        }
        *torn = true;
        ws.get_mut()
            .write_all(&buf)
            .await
            .map_err(|_| WriteFailed)?;
        *torn = false;
        buf.clear();
    }
    Ok(())
}

/// Reads and writes a websocket session until it closes, then finishes it.
///
/// This task lives as long as the session, so whatever its future holds is
/// paid by every idle connection (issue #17): the steps that end before the
/// session does (opening, the probe, each write of queued frames, the
/// close) are boxed and take a pointer here, not their whole state. `ws`
/// comes boxed: an `async fn` keeps its arguments apart from the
/// locals its body moves them into, so a websocket passed by value would
/// take its ~300 bytes twice in every session's task.
async fn run<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    conn: &Arc<Connection<H::Data>>,
    mut ws: Box<Ws>,
) {
    // The engine's heartbeat task pings this session and closes it when a
    // pong is missing; this task only reads the pongs (no timer here).
    engine.heartbeats.register(conn);
    // A write of frames was cut short (timeout or close): the stream may
    // end inside a frame, so nothing more is written to it.
    let mut torn = false;
    // Sends write to the socket themselves while nothing is queued or in
    // flight here; taken back by `take_for_write` for each batch, given
    // back after it, and stopped for good when this task ends.
    let wire = ws.get_ref().wire().clone();
    let direct = DirectWrites(conn);
    conn.allow_direct(&wire);
    // Armed before the outbox is first looked at, and again only after it
    // fired: a read (a pong, every heartbeat) leaves it waiting where it
    // is, so the task neither re-registers with the `Notify` (a lock, and
    // one more cache line of an idle session) nor looks at the outbox for
    // frames nobody announced.
    let woken = conn.wake.notified();
    tokio::pin!(woken);
    'session: loop {
        let (frames, received) = conn.take_for_write();
        if !frames.is_empty() {
            // A client that stops reading blocks this write; the write
            // timeout ends it, and so does a close from elsewhere (queue
            // overflow, shutdown), so the task never hangs on a dead peer.
            // Boxed: inline, the state of a write in flight (its timer,
            // the close signal, the framing buffer) would be part of every
            // session's task, written or idle, for its whole life.
            let write = write_queued(engine, conn, &mut ws, frames, received, &wire, &mut torn);
            Box::pin(write).await;
        }
        if conn.is_closed() {
            break;
        }
        loop {
            // Biased: the wake-up first, so frames sent before a read are
            // written before the reply to it, and no random draw per poll.
            tokio::select! {
                biased;
                _ = woken.as_mut() => {
                    woken.set(conn.wake.notified());
                    continue 'session;
                }
                read = std::future::poll_fn(|cx| poll_read(&mut ws, cx)) => {
                    // A message that sends or closes notifies `woken`.
                    let open = match read {
                        Read::Pong => engine.on_packet(conn, Packet::Pong),
                        Read::Ws(msg) => on_message(engine, conn, msg),
                    };
                    if !open {
                        break 'session;
                    }
                }
            }
        }
    }
    drop(direct);
    let reason = conn.close_reason();
    // A direct write cut short whose end was dropped with a slow consumer's
    // backlog left the stream inside a frame too.
    let torn = torn || wire.is_torn_by_direct();
    // Say why in the close frame (browsers show it as CloseEvent.reason),
    // as the disconnect table says; none when the peer is already gone, nor
    // on a stream a cut-short write left inside a frame.
    if let Some((code, text)) = reason
        .unwrap_or(CloseReason::ServerClosed)
        .spec()
        .ws_close
        .filter(|_| !torn)
    {
        let mut torn = torn;
        // A slow consumer's backlog is dropped; anything else still queued
        // (a final DISCONNECT or CONNECT_ERROR) goes out first.
        // Boxed for the same reason as the writes in the loop: once per
        // session, and only at its end.
        let _ = Box::pin(tokio::time::timeout(
            std::time::Duration::from_secs(1),
            async {
                if reason != Some(CloseReason::SlowConsumer) {
                    let frames = conn.take_frames();
                    if write_batch(&mut ws, &frames, &mut torn).await.is_err() {
                        return Ok(());
                    }
                }
                Ws::close(
                    &mut ws,
                    Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: text.into(),
                    }),
                )
                .await
            },
        ))
        .await;
    }
    drop(wire);
    engine.finish(conn);
}

/// Writes one batch of queued frames, bounded by `write_timeout` and cut
/// short by a close from elsewhere (queue overflow, shutdown): a client
/// that stops reading blocks the write, and the task must not hang on a
/// dead peer. A failed or timed-out write closes the session.
async fn write_queued<H: EngineHandler>(
    engine: &Engine<H>,
    conn: &Connection<H::Data>,
    ws: &mut Ws,
    frames: VecDeque<Frame>,
    received: Option<tokio::time::Instant>,
    wire: &Arc<Wire>,
    torn: &mut bool,
) {
    let closed = conn.closed_signal.notified();
    let write = write_batch(ws, &frames, torn);
    tokio::select! {
        result = tokio::time::timeout(engine.settings.write_timeout, write) => match result {
            Ok(Ok(())) => {
                engine.metrics.observe_delivery(received);
                conn.allow_direct(wire);
            }
            Ok(Err(_)) => conn.close(CloseReason::TransportError),
            Err(_) => conn.close(CloseReason::SlowConsumer),
        },
        _ = closed => {}
    }
}

/// Handles one read from the websocket; false when the session ends.
fn on_message<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    conn: &Arc<Connection<H::Data>>,
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> bool {
    match msg {
        Some(Ok(Message::Text(text))) => {
            match Packet::parse(ProtocolVersion::V4, str_from_utf8_bytes(text)) {
                Ok(packet) => engine.on_packet(conn, packet),
                Err(err) => {
                    tracing::info!(sid = %conn.sid, %err, "malformed engine.io packet; closing");
                    conn.close(CloseReason::ProtocolError);
                    false
                }
            }
        }
        Some(Ok(Message::Binary(data))) => engine.on_packet(conn, Packet::Binary(data)),
        Some(Ok(Message::Close(_))) | None => {
            conn.close(CloseReason::ClientClosed);
            false
        }
        Some(Ok(_)) => true,
        Some(Err(err)) => {
            tracing::debug!(sid = %conn.sid, %err, "websocket error");
            let reason = match err {
                WsError::Capacity(_) => CloseReason::ProtocolError,
                _ => CloseReason::TransportError,
            };
            conn.close(reason);
            false
        }
    }
}

/// Stops direct writes when the websocket task leaves [`run`], however it
/// leaves, so that the outbox does not keep the stream (and its file
/// descriptor) alive after the websocket, nor write behind the close frame.
struct DirectWrites<'a, D>(&'a Connection<D>);

impl<D> Drop for DirectWrites<'_, D> {
    fn drop(&mut self) {
        self.0.stop_direct();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        engine::{EngineSettings, connection::test_conn, wire::test_pair},
        metrics::Metrics,
    };

    /// A handler that does nothing: what a session's task holds does not
    /// depend on the layer above.
    struct Nop;

    impl EngineHandler for Nop {
        type Data = ();
        fn new_data(&self, _handshake: &Handshake) {}
        fn on_open(&self, _conn: &Arc<Connection<()>>) {}
        fn on_message(&self, _conn: &Arc<Connection<()>>, _text: engineioxide_core::Str) {}
        fn on_binary(&self, _conn: &Arc<Connection<()>>, _data: bytes::Bytes) {}
        fn on_close(&self, _conn: &Arc<Connection<()>>, _reason: CloseReason) {}
    }

    /// The futures of a websocket session's task, which every idle
    /// connection keeps for its whole life, stay small: 1.4 KiB (a 1.5 KiB
    /// task) before the write, probe and close paths and the websocket were
    /// boxed, ~200 bytes after (issue #17: memory per idle connection).
    #[tokio::test]
    async fn an_idle_websocket_session_task_stays_small() {
        let engine = Engine::new(
            EngineSettings::from(&Config::default()),
            None,
            Arc::new(Nop),
            Metrics::new(),
        );
        let conn = Arc::new(test_conn());
        let (server, _client) = test_pair().await;
        let ws =
            WebSocketStream::from_raw_socket(server, Role::Server, Some(ws_config(1 << 20))).await;
        let running = run(&engine, &conn, Box::new(ws));
        let size = std::mem::size_of_val(&running);
        assert!(size <= 256, "the running session's future is {size} bytes");
        drop(running);
        let handshake = crate::auth::test_support::handshake("", &[]);
        let opening = session(
            engine.clone(),
            hyper::upgrade::on(http::Request::new(())),
            Box::new(handshake),
        );
        let size = std::mem::size_of_val(&opening);
        assert!(size <= 320, "the session task's future is {size} bytes");
        // The stream in the boxed websocket: 24 bytes before the direct
        // pong read, 64 with its state (hand-over buffer, frame cursor,
        // flags) outside the tests.
        let size = std::mem::size_of::<WireStream>();
        assert!(size <= 72, "the websocket's stream is {size} bytes");
    }

    use std::{task::Context, time::Duration};
    use tokio::{io::AsyncWriteExt, net::TcpStream};
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame as WsFrame,
        coding::{Data, OpCode},
    };

    /// A server websocket over loopback, as a session's task holds it, and
    /// the raw client socket.
    async fn server_ws() -> (Ws, TcpStream) {
        let (server, client) = test_pair().await;
        let ws =
            WebSocketStream::from_raw_socket(server, Role::Server, Some(ws_config(1 << 20))).await;
        (ws, client)
    }

    /// A read as tungstenite alone would return it: a pong read directly
    /// as the text message `3`.
    fn as_message(read: Read) -> Option<Result<Message, WsError>> {
        match read {
            Read::Pong => Some(Ok(Message::text("3"))),
            Read::Ws(msg) => msg,
        }
    }

    /// The session's next read, as `run` makes it, bounded in time.
    async fn read(ws: &mut Ws) -> Option<Result<Message, WsError>> {
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| poll_read(ws, cx)),
        )
        .await
        .expect("a read in time");
        as_message(read)
    }

    /// One poll of the session's read, as `run` polls it whenever it looks
    /// (after every message, and on every wake-up).
    fn poll_once(ws: &mut Ws) -> Poll<Option<Result<Message, WsError>>> {
        poll_read(ws, &mut Context::from_waker(std::task::Waker::noop())).map(as_message)
    }

    /// Lets what the client wrote reach the server's socket.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fn text_of(msg: Option<Result<Message, WsError>>) -> String {
        match msg {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    fn pongs_read_directly(ws: &Ws) -> u32 {
        ws.get_ref().pongs_read_directly
    }

    /// A client frame as a client puts it on the wire: masked with `mask`,
    /// or not masked at all.
    fn client_frame(mut frame: WsFrame, mask: Option<[u8; 4]>) -> Vec<u8> {
        frame.header_mut().mask = mask;
        let mut out = Vec::new();
        frame.format(&mut out).expect("format");
        out
    }

    fn client_text(text: &str, fin: bool, mask: [u8; 4]) -> Vec<u8> {
        client_frame(
            WsFrame::message(text.as_bytes().to_vec(), OpCode::Data(Data::Text), fin),
            Some(mask),
        )
    }

    fn client_pong(mask: [u8; 4]) -> Vec<u8> {
        client_text("3", true, mask)
    }

    /// A real client (tungstenite's own client side, random masks): its
    /// pongs are read directly once tungstenite waits, its messages and
    /// pings by tungstenite, and a pong right after a message (tungstenite
    /// not yet waiting) by tungstenite.
    #[tokio::test]
    async fn a_real_clients_pong_is_read_directly_and_the_rest_by_tungstenite() {
        let (mut ws, client) = server_ws().await;
        let mut client = WebSocketStream::from_raw_socket(
            client,
            Role::Client,
            Some(WebSocketConfig::default()),
        )
        .await;
        assert!(poll_once(&mut ws).is_pending());
        for round in 1..=3u32 {
            client.send(Message::text("3")).await.expect("send");
            assert_eq!(text_of(read(&mut ws).await), "3");
            assert_eq!(pongs_read_directly(&ws), round);
            assert!(poll_once(&mut ws).is_pending());
        }
        client
            .send(Message::text("42[\"ev\",1]"))
            .await
            .expect("send");
        assert_eq!(text_of(read(&mut ws).await), "42[\"ev\",1]");
        assert_eq!(pongs_read_directly(&ws), 3);
        // A ping: tungstenite returns it and answers it.
        client
            .send(Message::Ping(bytes::Bytes::from_static(b"hb")))
            .await
            .expect("ping");
        assert!(matches!(read(&mut ws).await, Some(Ok(Message::Ping(_)))));
        assert!(poll_once(&mut ws).is_pending());
        client.send(Message::text("3")).await.expect("send");
        assert_eq!(text_of(read(&mut ws).await), "3");
        assert_eq!(pongs_read_directly(&ws), 4);
        // The client got tungstenite's reply to its ping.
        let reply = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("reply in time");
        assert!(
            matches!(&reply, Some(Ok(Message::Pong(p))) if &p[..] == b"hb"),
            "{reply:?}"
        );
    }

    /// A pong and a message arriving byte by byte: every byte the direct
    /// read takes goes to tungstenite, which assembles both whole.
    #[tokio::test]
    async fn frames_arriving_byte_by_byte_reach_tungstenite_whole() {
        let (mut ws, mut client) = server_ws().await;
        assert!(poll_once(&mut ws).is_pending());
        let mut bytes = client_pong([0x11, 0x22, 0x33, 0x44]);
        bytes.extend(client_text("42[\"split\"]", true, [9, 8, 7, 6]));
        bytes.extend(client_pong([0xaa, 0xbb, 0xcc, 0xdd]));
        let mut got = Vec::new();
        for byte in bytes {
            client.write_all(&[byte]).await.expect("write");
            settle().await;
            while let Poll::Ready(msg) = poll_once(&mut ws) {
                got.push(text_of(msg));
            }
        }
        assert_eq!(got, ["3", "42[\"split\"]", "3"]);
        assert_eq!(pongs_read_directly(&ws), 0);
        // Whole again: read directly.
        client
            .write_all(&client_pong([1, 2, 3, 4]))
            .await
            .expect("write");
        assert_eq!(text_of(read(&mut ws).await), "3");
        assert_eq!(pongs_read_directly(&ws), 1);
    }

    /// A pong with more behind it in the same segment: the pong is read
    /// directly and what follows reaches tungstenite whole and in order
    /// (a message, another pong, the first part of a frame).
    #[tokio::test]
    async fn a_pong_and_what_follows_it_in_one_segment() {
        let (mut ws, mut client) = server_ws().await;
        assert!(poll_once(&mut ws).is_pending());
        let mut segment = client_pong([5, 6, 7, 8]);
        segment.extend(client_text("42[\"after\"]", true, [1, 1, 1, 1]));
        segment.extend(client_pong([0, 0, 0, 0]));
        let last = client_text("42[\"last\"]", true, [3, 1, 4, 1]);
        segment.extend(&last[..5]);
        client.write_all(&segment).await.expect("write");
        assert_eq!(text_of(read(&mut ws).await), "3");
        assert_eq!(text_of(read(&mut ws).await), "42[\"after\"]");
        assert_eq!(text_of(read(&mut ws).await), "3");
        assert!(poll_once(&mut ws).is_pending());
        client.write_all(&last[5..]).await.expect("write");
        assert_eq!(text_of(read(&mut ws).await), "42[\"last\"]");
        assert_eq!(pongs_read_directly(&ws), 1);
        // A message, then a pong, in one segment: both from tungstenite.
        assert!(poll_once(&mut ws).is_pending());
        let mut segment = client_text("42[\"first\"]", true, [2, 7, 1, 8]);
        segment.extend(client_pong([9, 9, 9, 9]));
        client.write_all(&segment).await.expect("write");
        assert_eq!(text_of(read(&mut ws).await), "42[\"first\"]");
        assert_eq!(text_of(read(&mut ws).await), "3");
        assert_eq!(pongs_read_directly(&ws), 1);
    }

    /// A frame whose payload holds a pong's bytes, its header read first:
    /// the payload is tungstenite's, never a pong read directly.
    #[tokio::test]
    async fn a_payload_that_looks_like_a_pong_stays_in_its_frame() {
        let (mut ws, mut client) = server_ws().await;
        assert!(poll_once(&mut ws).is_pending());
        let payload = client_pong([0x21, 0x43, 0x65, 0x07]);
        // A zero mask leaves the payload on the wire as it is.
        let frame = client_frame(
            WsFrame::message(payload.clone(), OpCode::Data(Data::Binary), true),
            Some([0; 4]),
        );
        let (head, body) = frame.split_at(frame.len() - payload.len());
        client.write_all(head).await.expect("write");
        settle().await;
        assert!(poll_once(&mut ws).is_pending());
        client.write_all(body).await.expect("write");
        let got = read(&mut ws).await;
        assert!(
            matches!(&got, Some(Ok(Message::Binary(b))) if b[..] == payload[..]),
            "{got:?}"
        );
        assert_eq!(pongs_read_directly(&ws), 0);
    }

    /// An unmasked pong is a protocol error, exactly as tungstenite reports
    /// it (RFC 6455: a server closes on an unmasked client frame).
    #[tokio::test]
    async fn an_unmasked_pong_is_refused_as_tungstenite_refuses_it() {
        let (mut ws, mut client) = server_ws().await;
        assert!(poll_once(&mut ws).is_pending());
        let unmasked = client_frame(
            WsFrame::message(b"3".to_vec(), OpCode::Data(Data::Text), true),
            None,
        );
        assert_eq!(unmasked, [0x81, 0x01, b'3']);
        client.write_all(&unmasked).await.expect("write");
        let got = read(&mut ws).await;
        assert!(
            matches!(
                got,
                Some(Err(WsError::Protocol(
                    tokio_tungstenite::tungstenite::error::ProtocolError::UnmaskedFrameFromClient
                )))
            ),
            "{got:?}"
        );
        assert_eq!(pongs_read_directly(&ws), 0);
    }

    /// Frames that look like a pong but are not one reach tungstenite: a
    /// close frame, a `3` that is not final, a `3` with an RSV bit, a
    /// `3` inside a fragmented message (a protocol error there), a longer
    /// text starting with `3`.
    #[tokio::test]
    async fn a_close_and_frames_like_a_pong_go_to_tungstenite() {
        use tokio_tungstenite::tungstenite::error::ProtocolError;
        let mask = [0x10, 0x20, 0x30, 0x40];
        let (mut ws, mut client) = server_ws().await;
        // Not final: a fragment of "34", then its continuation.
        assert!(poll_once(&mut ws).is_pending());
        client
            .write_all(&client_text("3", false, mask))
            .await
            .expect("write");
        settle().await;
        assert!(poll_once(&mut ws).is_pending());
        let cont = client_frame(
            WsFrame::message(b"4".to_vec(), OpCode::Data(Data::Continue), true),
            Some(mask),
        );
        client.write_all(&cont).await.expect("write");
        assert_eq!(text_of(read(&mut ws).await), "34");
        // Longer than one byte.
        assert!(poll_once(&mut ws).is_pending());
        client
            .write_all(&client_text("3probe", true, mask))
            .await
            .expect("write");
        assert_eq!(text_of(read(&mut ws).await), "3probe");
        assert_eq!(pongs_read_directly(&ws), 0);
        // A close frame.
        assert!(poll_once(&mut ws).is_pending());
        let close = client_frame(
            WsFrame::close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            })),
            Some(mask),
        );
        client.write_all(&close).await.expect("write");
        let got = read(&mut ws).await;
        assert!(
            matches!(&got, Some(Ok(Message::Close(Some(f)))) if f.code == CloseCode::Normal && f.reason == "bye"),
            "{got:?}"
        );

        // A final `3` while a fragmented message is open: tungstenite's
        // protocol error, not a pong.
        let (mut ws, mut client) = server_ws().await;
        assert!(poll_once(&mut ws).is_pending());
        client
            .write_all(&client_text("42[", false, mask))
            .await
            .expect("write");
        settle().await;
        assert!(poll_once(&mut ws).is_pending());
        client.write_all(&client_pong(mask)).await.expect("write");
        let got = read(&mut ws).await;
        assert!(
            matches!(
                got,
                Some(Err(WsError::Protocol(ProtocolError::ExpectedFragment(
                    Data::Text
                ))))
            ),
            "{got:?}"
        );
        assert_eq!(pongs_read_directly(&ws), 0);

        // An RSV bit set: tungstenite's protocol error.
        let (mut ws, mut client) = server_ws().await;
        assert!(poll_once(&mut ws).is_pending());
        let mut rsv = client_pong(mask);
        rsv[0] |= 0x40;
        client.write_all(&rsv).await.expect("write");
        let got = read(&mut ws).await;
        assert!(
            matches!(
                got,
                Some(Err(WsError::Protocol(ProtocolError::NonZeroReservedBits)))
            ),
            "{got:?}"
        );
        assert_eq!(pongs_read_directly(&ws), 0);
    }

    /// The client's stream of frames, every kind mixed (pongs, messages of
    /// every length encoding, pings, fragmented messages with a ping
    /// between fragments), cut into random segments: what the session reads
    /// is exactly what tungstenite alone reads from the same bytes.
    #[tokio::test]
    async fn any_segmentation_reads_as_tungstenite_alone_reads() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut direct_total = 0;
        for seed in 0..12u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut bytes = Vec::new();
            let mut expected = Vec::new();
            for i in 0..60 {
                let mask: [u8; 4] = rng.random();
                match rng.random_range(0..7) {
                    6 => {
                        // A payload made of pongs (a zero mask keeps it so
                        // on the wire).
                        let payload = [client_pong(mask), client_pong(mask)].concat();
                        let frame =
                            WsFrame::message(payload.clone(), OpCode::Data(Data::Binary), true);
                        bytes.extend(client_frame(frame, Some([0; 4])));
                        expected.push(Message::Binary(payload.into()));
                    }
                    0..=2 => {
                        bytes.extend(client_pong(mask));
                        expected.push(Message::text("3"));
                    }
                    3 => {
                        let len = [0, 1, 5, 125, 126, 600, 70_000][rng.random_range(0..7)];
                        let text = format!("4{}", "x".repeat(len));
                        bytes.extend(client_text(&text, true, mask));
                        expected.push(Message::text(text));
                    }
                    4 => {
                        let ping = WsFrame::ping(vec![i as u8; 3]);
                        bytes.extend(client_frame(ping, Some(mask)));
                        expected.push(Message::Ping(vec![i as u8; 3].into()));
                    }
                    _ => {
                        bytes.extend(client_text("4a", false, mask));
                        let ping = WsFrame::ping(vec![7u8]);
                        bytes.extend(client_frame(ping, Some(mask)));
                        expected.push(Message::Ping(vec![7u8].into()));
                        let cont =
                            WsFrame::message(b"3".to_vec(), OpCode::Data(Data::Continue), false);
                        bytes.extend(client_frame(cont, Some(mask)));
                        let last =
                            WsFrame::message(b"b".to_vec(), OpCode::Data(Data::Continue), true);
                        bytes.extend(client_frame(last, Some(mask)));
                        expected.push(Message::text("4a3b"));
                    }
                }
            }
            let mut cuts = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let len = match rng.random_range(0..4) {
                    0 => 1,
                    1 => rng.random_range(1..16),
                    2 => 7,
                    _ => rng.random_range(1..3000),
                };
                let end = (at + len).min(bytes.len());
                cuts.push(bytes[at..end].to_vec());
                at = end;
            }
            let (mut ws, mut client) = server_ws().await;
            let writer = tokio::spawn(async move {
                for cut in cuts {
                    client.write_all(&cut).await.expect("write");
                    tokio::task::yield_now().await;
                }
                // Kept open until the reader is done.
                client
            });
            let mut got = Vec::new();
            while got.len() < expected.len() {
                match read(&mut ws).await {
                    Some(Ok(msg)) => got.push(msg),
                    other => panic!("seed {seed}: {other:?} after {} messages", got.len()),
                }
            }
            assert!(got == expected, "seed {seed}: messages differ");
            // Answers to the pings go out while reading; draining them
            // is not this test's business.
            drop(writer);
            direct_total += pongs_read_directly(&ws);
        }
        assert!(direct_total > 0, "the direct read never ran");
    }
}
