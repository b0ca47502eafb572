//! HTTP long-polling: the GET that waits for frames, the POST that carries
//! packets in, and the task that keeps a polling session's heartbeat.

use std::sync::Arc;

use bytes::Bytes;
use engineioxide_core::{Packet, PacketParseError, ProtocolVersion, payload};
use futures_util::StreamExt;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{
    Body, CloseReason, Connection, Engine, EngineError, EngineHandler, Frame, TransportKind,
    connection::Heartbeat,
};

/// Engine.IO v4 separates packets in a polling payload with a record separator.
const SEPARATOR: char = '\u{1e}';

/// Joins queued frames into one polling payload; binary frames travel as
/// `b<base64>` (engineioxide-core's encoding of a binary packet).
pub(super) fn payload_response(frames: impl IntoIterator<Item = Frame>) -> Response<Body> {
    let mut body = String::new();
    for frame in frames {
        if !body.is_empty() {
            body.push(SEPARATOR);
        }
        match frame {
            Frame::Text(text) => body.push_str(&text),
            Frame::Binary(data) => body.push_str(&String::from(Packet::Binary(data))),
            // Only a websocket's direct writes leave one, and a session never
            // goes back from websocket to polling.
            Frame::WireTail(_) => debug_assert!(false, "a websocket frame tail in a polling queue"),
        }
    }
    text_response(body.into(), "text/plain; charset=UTF-8")
}

fn text_response(body: Bytes, content_type: &'static str) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .unwrap_or_default()
}

/// Clears a per-session "request in flight" flag when the request ends,
/// however it ends (answered, failed, or dropped by hyper).
struct InFlight<'a, D> {
    conn: &'a Connection<D>,
    get: bool,
}

impl<D> Drop for InFlight<'_, D> {
    fn drop(&mut self) {
        let mut state = self.conn.state.lock();
        if self.get {
            state.get_active = false;
        } else {
            state.post_active = false;
        }
    }
}

/// Marks a GET or POST as in flight; a second concurrent one of the same
/// kind breaks the protocol and closes the session, as the Node server does.
///
/// A request for a session that has closed finds it gone (400 `Session ID
/// unknown`, as once its driver has unregistered it) unless the server
/// closed it and its close packet is still to be collected: then a GET
/// gets what is still queued, else the close packet, and a POST is read
/// and dropped.
fn begin<D>(conn: &Connection<D>, get: bool) -> Result<InFlight<'_, D>, EngineError> {
    if conn.is_closed() && !conn.awaits_last_poll() {
        return Err(EngineError::SessionIdUnknown);
    }
    let mut state = conn.state.lock();
    if state.kind != TransportKind::Polling {
        return Err(EngineError::BadRequest);
    }
    let active = if get {
        &mut state.get_active
    } else {
        &mut state.post_active
    };
    if *active {
        drop(state);
        conn.close(CloseReason::ProtocolError);
        return Err(EngineError::BadRequest);
    }
    *active = true;
    Ok(InFlight { conn, get })
}

/// A long-polling GET: answers with every queued frame as soon as there is
/// one. Once the session has ended and nothing is queued, it answers `6`
/// (noop) when the client itself closed (its `1` arrived in a POST; the
/// reference server does the same), and `1` (close) when the server closed
/// it. The close packet never shares a response with frames: Socket.IO
/// clients handle a decoded packet on the next tick but the close at once,
/// so a `41` DISCONNECT sent with it would be reported as `transport close`.
pub(super) async fn poll<D>(
    conn: Arc<Connection<D>>,
    metrics: &crate::metrics::Metrics,
) -> Result<Response<Body>, EngineError> {
    let _in_flight = begin(&conn, true)?;
    loop {
        let woken = conn.wake.notified();
        // Read before the frames are taken: everything sent before the
        // close is queued by then, so none is left behind the close packet.
        let closed = conn.is_closed();
        let (frames, received) = conn.take_frames_received();
        if !frames.is_empty() {
            metrics.observe_delivery(received);
            return Ok(payload_response(frames));
        }
        if closed {
            let last = conn
                .close_reason()
                .unwrap_or(CloseReason::ServerClosed)
                .spec()
                .last_poll;
            conn.last_poll_done();
            return Ok(payload_response([Frame::text(last)]));
        }
        if conn.state.lock().probed {
            // An upgrade is between `3probe` and `5`: the reference server
            // answers the pending GET with a noop (only then, so no stray
            // noop reaches the websocket when no GET was waiting).
            return Ok(payload_response([Frame::text("6")]));
        }
        woken.await;
    }
}

/// A polling POST: decodes the payload with engineioxide-core's decoder
/// (which enforces `max_payload`) and hands each packet to the engine.
pub(super) async fn post<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    conn: Arc<Connection<H::Data>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, EngineError> {
    let _in_flight = begin(&conn, false)?;
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    let packets = payload::decoder(
        req.into_body(),
        content_type.as_ref(),
        ProtocolVersion::V4,
        engine.settings.max_payload,
    );
    // The body arrives while this loop runs: a client trickling it is cut
    // after `server.body_read_timeout_ms` instead of holding the request.
    let read = tokio::time::timeout(engine.settings.body_read_timeout, async {
        futures_util::pin_mut!(packets);
        while let Some(packet) = packets.next().await {
            match packet {
                // The server closed the session and waits for its last
                // poll: what the client sends now has nobody to go to, and
                // a client that closes too will not poll again.
                Ok(packet) if conn.is_closed() => {
                    if matches!(packet, Packet::Close) {
                        conn.last_poll_done();
                    }
                }
                Ok(packet) => {
                    if !engine.on_packet(&conn, packet) {
                        break;
                    }
                }
                Err(PacketParseError::PayloadTooLarge { max }) => {
                    tracing::info!(sid = %conn.sid, max, "polling payload too large; closing session");
                    conn.close(CloseReason::ProtocolError);
                    return Err(EngineError::PayloadTooLarge);
                }
                Err(err) => {
                    tracing::info!(sid = %conn.sid, %err, "malformed polling payload; closing session");
                    conn.close(CloseReason::ProtocolError);
                    return Err(EngineError::BadRequest);
                }
            }
        }
        Ok(())
    })
    .await;
    match read {
        Ok(result) => result?,
        Err(_) => {
            tracing::debug!(sid = %conn.sid, "polling body not received in time; closing session");
            conn.close(CloseReason::ProtocolError);
            return Err(EngineError::BodyTimeout);
        }
    }
    Ok(text_response(Bytes::from_static(b"ok"), "text/html"))
}

/// Keeps the heartbeat of a polling session and finishes it when it closes.
/// Hands over to the websocket task, and returns, once the session upgrades.
pub(super) async fn drive<H: EngineHandler>(
    engine: Arc<Engine<H>>,
    conn: Arc<Connection<H::Data>>,
) {
    let settings = &engine.settings;
    let mut heartbeat = Heartbeat::new(settings.ping_interval, settings.ping_timeout);
    loop {
        let closed = conn.closed_signal.notified();
        futures_util::pin_mut!(closed);
        closed.as_mut().enable();
        if conn.is_closed() {
            break;
        }
        if conn.transport() == TransportKind::Websocket {
            return;
        }
        tokio::select! {
            _ = closed => {}
            _ = tokio::time::sleep_until(heartbeat.deadline()) => {
                if conn.transport() == TransportKind::Websocket {
                    return;
                }
                match heartbeat.tick(&conn, settings.ping_interval, settings.ping_timeout) {
                    Ok(step) => super::heartbeats::count_late(&engine.metrics.heartbeat_late, step),
                    Err(_) => conn.close(CloseReason::PingTimeout),
                }
            }
        }
    }
    // Accounted for now; registered until the close packet is collected.
    engine.end_session(&conn);
    await_last_poll(&conn, settings.ping_timeout).await;
    engine.unregister(&conn);
}

/// Keeps a session the server closed registered until GETs have collected
/// its last frames and then the close packet, for at most `bound` (the time a
/// client gets to answer a ping: a live polling client is back within
/// it). Returns at once for any other close.
async fn await_last_poll<D>(conn: &Connection<D>, bound: std::time::Duration) {
    let collected = async {
        loop {
            let done = conn.closed_signal.notified();
            futures_util::pin_mut!(done);
            done.as_mut().enable();
            if !conn.awaits_last_poll() {
                return;
            }
            done.await;
        }
    };
    if tokio::time::timeout(bound, collected).await.is_err() {
        tracing::debug!(sid = %conn.sid, "closed polling session's last poll not collected in time");
        conn.last_poll_done();
    }
}
