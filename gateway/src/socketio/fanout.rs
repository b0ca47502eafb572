//! Fan-out: what the session layer does with messages from the bus.
//!
//! A broadcast is decoded once, its targets resolved once against the room
//! index, its Socket.IO packet encoded once, and the same frames (shared
//! bytes) queued to every target. Requests from the emitter or Node servers
//! (`socketsJoin`, `socketsLeave`, `disconnectSockets`, `allRooms`,
//! `fetchSockets`) act on local sockets and are answered where the adapter
//! waits for an answer.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use switchboard_wire::{
    BroadcastFlags, BroadcastMessage, BroadcastOptions, Request, RequestOpts, Response,
    decode_broadcast_ref, decode_request, encode_event, encode_response, json_to_msgpack,
};

use super::SocketIo;
use crate::{
    bus::BusHandler,
    engine::{Frame, Sent},
};

/// A broadcast that starts less than this after the previous one ended is
/// part of a burst (the fan-out is working through a backlog).
const BURST_GAP: std::time::Duration = std::time::Duration::from_micros(250);

/// Chooses how a broadcast reaches its targets.
///
/// At a steady rate each socket has at most one frame waiting when it is
/// reached, so the cheapest delivery is to write it at once from here (one
/// `writev`, no wake-up of the socket's task: the least a delivery costs,
/// as the raw-write floor does). In a burst, writing each delivery at once
/// would cost one syscall per delivery; queueing instead lets the frames of
/// a whole burst pile up and each socket's task write them in one batch
/// (`engine::websocket::write_batch`). A burst shows as broadcasts that
/// come back to back: when one starts less than [`BURST_GAP`] after the
/// previous one ended, it queues. A backlog that direct writes cause
/// themselves (deliveries slower than arrivals) shows the same way, so the
/// fan-out falls back to batches exactly when it cannot keep up.
#[derive(Debug)]
pub(crate) struct Pace {
    origin: tokio::time::Instant,
    /// When the last broadcast ended, in nanoseconds since `origin`.
    last_end: AtomicU64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            origin: tokio::time::Instant::now(),
            last_end: AtomicU64::new(0),
        }
    }
}

impl Pace {
    fn nanos(&self, at: tokio::time::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a broadcast starting at `start` may write directly.
    pub(crate) fn direct_at(&self, start: tokio::time::Instant) -> bool {
        let last = self.last_end.load(Ordering::Relaxed);
        self.nanos(start).saturating_sub(last) >= BURST_GAP.as_nanos() as u64
    }

    /// A broadcast ends now.
    pub(crate) fn ended(&self) {
        let now = self.nanos(tokio::time::Instant::now());
        self.last_end.store(now, Ordering::Relaxed);
    }
}

/// Asks the CPU to load, ahead of the direct writes that read them, the
/// per-socket state of the next targets, one level of pointers per step:
/// the socket (its connection pointer) three targets ahead, the connection
/// (closed flag, outbox) two ahead, its stream's lock and descriptor one
/// ahead. Each delivery spends microseconds in the kernel, so one step
/// ahead is time enough. Without this, every delivery waited on a cache
/// miss at two of these reads: a socket's state is touched once per room
/// message, and the kernel's send path evicts it in between.
fn prefetch_ahead(targets: &[std::sync::Arc<super::socket::Socket>], i: usize) {
    if let Some(socket) = targets.get(i + 3) {
        crate::engine::prefetch_line(std::ptr::from_ref(&socket.conn).cast());
    }
    if let Some(socket) = targets.get(i + 2) {
        crate::engine::Connection::prefetch(std::sync::Arc::as_ptr(&socket.conn));
    }
    if let Some(socket) = targets.get(i + 1) {
        socket.conn.prefetch_wire();
    }
}

/// Whom a broadcast goes to: its rooms and exceptions, owned or borrowed
/// from the bus payload it was decoded from (`decode_broadcast_ref`: no
/// allocation per room of a broadcast naming thousands), and its flags.
pub(super) struct Audience<'a, S> {
    rooms: &'a [S],
    except: &'a [S],
    flags: &'a BroadcastFlags,
}

impl<'a> From<&'a BroadcastOptions> for Audience<'a, String> {
    fn from(opts: &'a BroadcastOptions) -> Self {
        Audience {
            rooms: &opts.rooms,
            except: &opts.except,
            flags: &opts.flags,
        }
    }
}

impl BusHandler for SocketIo {
    fn channels(&self) -> Vec<String> {
        let mut channels: Vec<String> = self
            .namespaces
            .iter()
            .map(|nsp| self.channels.request(nsp))
            .collect();
        if self.admin.is_some() {
            // fetchSockets answers, for the Admin UI's `all_sockets`.
            channels.extend(
                self.namespaces
                    .iter()
                    .map(|nsp| self.channels.response(nsp)),
            );
        }
        if let Some(streams) = &self.streams {
            channels.extend(self.streams_channels(streams));
        }
        channels
    }

    fn patterns(&self) -> Vec<String> {
        // Streams mode: broadcasts come from the stream; the classic
        // `socket.io#<nsp>#*` pattern would also match the streams adapter's
        // pub/sub channels.
        let classic = if self.streams.is_some() {
            &[][..]
        } else {
            &self.namespaces[..]
        };
        let mut patterns: Vec<String> = classic
            .iter()
            .map(|nsp| self.channels.broadcast_pattern(nsp))
            .collect();
        if let Some(admin) = &self.admin {
            patterns.push(admin.bus_pattern());
        }
        patterns
    }

    fn shard_channels(&self) -> Vec<String> {
        self.shard_base_channels()
    }

    fn on_shard_message(&self, channel: &str, payload: Bytes) {
        SocketIo::on_shard_message(self, channel, payload)
    }

    fn has_local_room(&self, nsp: &str, room: &str) -> bool {
        self.hub.has_named_room(nsp, room)
    }

    fn on_stream_entry(&self, stream: &str, entry: &crate::bus::StreamEntry) {
        self.on_entry(stream, entry);
    }

    fn on_bus_message(&self, channel: &str, payload: Bytes) {
        if let Some(streams) = &self.streams
            && self.on_streams_pubsub(streams, channel, &payload)
        {
            return;
        }
        if let Some(admin) = &self.admin {
            if self.channels.room_of(admin.nsp(), channel).is_some() {
                return admin.on_bus_broadcast(&payload);
            }
            if let Some(nsp) = self
                .namespaces
                .iter()
                .find(|nsp| channel == self.channels.response(nsp))
            {
                return admin.on_bus_response(nsp, &payload);
            }
        }
        for nsp in &self.namespaces {
            if let Some(room) = self.channels.room_of(nsp, channel) {
                // A room channel for a room nobody here is in: skip decoding,
                // as the Node adapter does.
                if room.is_some_and(|room| !self.hub.has_room(nsp, room)) {
                    return;
                }
                return self.on_broadcast(&payload);
            }
            if channel == self.channels.request(nsp) {
                return self.on_request(nsp, &payload);
            }
        }
        tracing::debug!(
            channel,
            "bus message on a channel this gateway does not serve"
        );
    }
}

impl SocketIo {
    pub(super) fn bus_decode_error(&self, kind: &str, err: &dyn std::fmt::Display) {
        self.metrics
            .bus_decode_errors
            .with_label_values(&[kind])
            .inc();
        tracing::warn!(kind, %err, "undecodable bus message dropped");
    }

    fn on_broadcast(&self, payload: &[u8]) {
        let received = tokio::time::Instant::now();
        let msg = match decode_broadcast_ref(payload) {
            Ok(msg) => msg,
            Err(err) => return self.bus_decode_error("broadcast", &err),
        };
        if msg.uid == self.uid {
            return;
        }
        self.metrics.bus_in.with_label_values(&["broadcast"]).inc();
        let audience = Audience {
            rooms: &msg.rooms,
            except: &msg.except,
            flags: &msg.flags,
        };
        self.deliver_data(
            msg.packet.nsp.as_str(),
            &msg.packet.data,
            audience,
            received,
            None,
        );
    }

    /// Queues one broadcast to every local target.
    pub fn deliver(&self, msg: &BroadcastMessage) {
        self.deliver_received(msg, tokio::time::Instant::now());
    }

    /// Queues one broadcast, which the gateway received at `received`, to
    /// every local target (the delivery latency histogram counts from then).
    pub fn deliver_received(&self, msg: &BroadcastMessage, received: tokio::time::Instant) {
        self.deliver_data(
            msg.packet.nsp.as_str(),
            &msg.packet.data,
            (&msg.opts).into(),
            received,
            None,
        );
    }

    /// Queues `data` (`[event, ...args]`) to the targets of `opts` in `nsp`.
    /// `entry` is the stream entry it came from (streams mode): with
    /// recovery on, its id is appended as the offset of a non-volatile
    /// event, and sockets still replaying missed events get it held back.
    pub(super) fn deliver_data<S: AsRef<str>>(
        &self,
        nsp: &str,
        data: &rmpv::Value,
        to: Audience<'_, S>,
        received: tokio::time::Instant,
        entry: Option<switchboard_wire::recovery::StreamId>,
    ) {
        let targets = self.hub.targets(nsp, to.rooms, to.except);
        if targets.is_empty() {
            return;
        }
        let with_offset;
        let data = match entry {
            Some(id) if self.recovery.is_some() && !to.flags.volatile => {
                with_offset = super::streams::with_offset(data, &id.to_string());
                &with_offset
            }
            _ => data,
        };
        let packet = match encode_event(nsp, data, None) {
            Ok(packet) => packet,
            Err(err) => return self.bus_decode_error("broadcast", &err),
        };
        let mut frames = Vec::with_capacity(1 + packet.attachments.len());
        frames.push(Frame::message(&packet.text));
        frames.extend(packet.attachments.into_iter().map(Frame::Binary));
        let size: usize = frames.iter().map(Frame::len).sum();
        let direct = self.pace.direct_at(received);
        // Latencies of the direct writes, added to the shared histogram
        // once when the broadcast ends (on drop) rather than with several
        // atomic updates per delivery.
        let latency = direct.then(|| self.metrics.delivery_latency.local());
        let mut sent = 0u64;
        for (i, socket) in targets.iter().enumerate() {
            if direct {
                prefetch_ahead(&targets, i);
            }
            if to.flags.volatile && socket.conn.queued_bytes() > 0 {
                self.metrics.volatile_dropped.inc();
                continue;
            }
            if let Some(id) = entry
                && socket.is_replaying()
            {
                if let Some(frames) = socket.hold(id, frames.clone()) {
                    socket.conn.send_all(&frames);
                }
                sent += 1;
                continue;
            }
            // One clock read per direct write, for both the client's last
            // drain (the stall rule) and the delivery's latency (up to the
            // write, a few microseconds short of its end).
            let now = direct.then(tokio::time::Instant::now);
            match socket
                .conn
                .send_frames_at(&frames, Some(received), direct, now)
            {
                Sent::Written => {
                    // The socket's writer reports queued deliveries; this
                    // one never reaches it.
                    if let (Some(latency), Some(now)) = (&latency, now) {
                        latency.observe(now.saturating_duration_since(received).as_secs_f64());
                    }
                    sent += 1;
                }
                Sent::Queued => sent += 1,
                Sent::Refused => {}
            }
        }
        self.pace.ended();
        self.metrics.messages_out.inc_by(sent);
        self.metrics.bytes_out.inc_by(sent * size as u64);
        if let Some(admin) = &self.admin_events {
            let ids: Vec<_> = targets.iter().map(|s| s.id).collect();
            admin.events_sent(nsp, &ids, data);
        }
    }

    fn on_request(&self, nsp: &str, payload: &[u8]) {
        let request = match decode_request(payload) {
            Ok(request) => request,
            Err(err) => return self.bus_decode_error("request", &err),
        };
        self.metrics.bus_in.with_label_values(&["request"]).inc();
        self.handle_request(nsp, request);
    }

    /// Acts on a request (classic, or a sharded one turned into the classic
    /// request of the same meaning).
    pub(super) fn handle_request(&self, nsp: &str, request: Request) {
        match request {
            Request::RemoteJoin(req) => {
                for socket in self.request_targets(nsp, req.sid.as_deref(), req.opts.as_ref()) {
                    let created = self.hub.join(socket.id, &req.rooms);
                    self.metrics.rooms.add(created as i64);
                    if let Some(admin) = &self.admin_events {
                        admin.rooms_joined(&socket, &req.rooms);
                    }
                    self.save_session(&socket);
                }
            }
            Request::RemoteLeave(req) => {
                for socket in self.request_targets(nsp, req.sid.as_deref(), req.opts.as_ref()) {
                    let emptied = self.hub.leave(socket.id, &req.rooms);
                    self.metrics.rooms.sub(emptied as i64);
                    // A room with presence left by the API or the emitter
                    // is left in presence too.
                    for room in &req.rooms {
                        self.presence.left(&socket, room);
                    }
                    if let Some(admin) = &self.admin_events {
                        admin.rooms_left(&socket, &req.rooms);
                    }
                    self.save_session(&socket);
                }
            }
            Request::RemoteDisconnect(req) => {
                for socket in self.request_targets(nsp, req.sid.as_deref(), req.opts.as_ref()) {
                    self.disconnect_socket(&socket, req.close);
                }
            }
            Request::AllRooms { uid, request_id } if uid.as_deref() != Some(self.uid.as_str()) => {
                let rooms = self.hub.all_rooms(nsp);
                self.respond(nsp, Response::AllRooms { request_id, rooms });
            }
            Request::RemoteFetch {
                uid,
                request_id,
                opts,
            } if uid.as_deref() != Some(self.uid.as_str()) => {
                let sockets = self
                    .targets_of(nsp, &opts)
                    .iter()
                    .map(|s| self.fetched(s))
                    .collect();
                self.respond(
                    nsp,
                    Response::FetchSockets {
                        request_id,
                        sockets,
                    },
                );
            }
            Request::Sockets {
                uid,
                request_id,
                rooms,
            } if uid.as_deref() != Some(self.uid.as_str()) => {
                let sockets = self
                    .hub
                    .targets::<String>(nsp, &rooms, &[])
                    .iter()
                    .map(|s| s.id.to_string())
                    .collect();
                self.respond(
                    nsp,
                    Response::Sockets {
                        request_id,
                        sockets,
                    },
                );
            }
            Request::ServerSideEmit {
                uid,
                request_id: Some(request_id),
                ..
            } if uid.as_deref() != Some(self.uid.as_str()) => {
                // The gateway runs no server-side handlers; it answers so a
                // Node `serverSideEmitWithAck` caller does not wait for it.
                self.respond(
                    nsp,
                    Response::ServerSideEmit {
                        request_id,
                        data: rmpv::Value::Nil,
                    },
                );
            }
            Request::ServerStatus { uid, request_id }
                if uid.as_deref() != Some(self.uid.as_str()) =>
            {
                let server = json_to_msgpack(&self.status());
                self.respond(nsp, Response::ServerStatus { request_id, server });
            }
            Request::Broadcast {
                uid,
                request_id,
                packet,
                opts,
            } if uid.as_deref() != Some(self.uid.as_str()) => {
                self.broadcast_with_ack(nsp, request_id, &packet.data, &opts);
            }
            other => {
                tracing::debug!(request = ?other.request_type(), "bus request not handled by the gateway");
            }
        }
    }

    /// What this gateway says about itself to `switchboard status` (the
    /// fields are documented in docs/protocol.md).
    fn status(&self) -> serde_json::Value {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_default();
        let connections = |transport: &str| {
            self.metrics
                .connections
                .with_label_values(&[transport])
                .get()
        };
        serde_json::json!({
            "uid": self.uid,
            "kind": "switchboard",
            "version": env!("CARGO_PKG_VERSION"),
            "hostname": hostname,
            "address": self.advertise,
            "pid": std::process::id(),
            "uptimeSecs": self.metrics.uptime_secs(),
            "connections": {
                "polling": connections("polling"),
                "websocket": connections("websocket"),
            },
            "sockets": self.metrics.sockets.get(),
            "rooms": self.hub.room_count(),
            "busUp": self.metrics.bus_up.get() == 1,
        })
    }

    /// A Node server's `io.timeout(..).emit(..., ack)`: send with one ack id,
    /// report how many clients got it, then relay each client's ack.
    pub(super) fn broadcast_with_ack(
        &self,
        nsp: &str,
        request_id: String,
        data: &rmpv::Value,
        opts: &switchboard_wire::BroadcastOptions,
    ) {
        let targets = self.hub.targets(nsp, &opts.rooms, &opts.except);
        let ack_id = self.hub.acks.next_id();
        let mut sent = 0u64;
        if !targets.is_empty() {
            let packet = match encode_event(nsp, data, u64::try_from(ack_id).ok()) {
                Ok(packet) => packet,
                Err(err) => return self.bus_decode_error("request", &err),
            };
            let mut frames = Vec::with_capacity(1 + packet.attachments.len());
            frames.push(Frame::message(&packet.text));
            frames.extend(packet.attachments.into_iter().map(Frame::Binary));
            let deadline = std::time::Instant::now()
                + std::time::Duration::from_millis(opts.flags.timeout.unwrap_or(30_000));
            let mut pending = self.hub.acks.lock();
            for socket in &targets {
                if socket.send_all(&frames) {
                    pending.insert(socket.id, ack_id, request_id.clone(), deadline);
                    sent += 1;
                }
            }
        }
        self.metrics.messages_out.inc_by(sent);
        self.respond(
            nsp,
            Response::BroadcastClientCount {
                request_id,
                client_count: sent,
            },
        );
    }

    /// A client acknowledged a broadcast-with-ack: relay its first argument
    /// to the Node server waiting for it.
    pub(super) fn on_client_ack(
        &self,
        socket: &super::Socket,
        id: i64,
        value: socketioxide_core::Value,
    ) {
        let Some(request_id) = self.hub.acks.take(socket.id, id) else {
            tracing::debug!(socket = %socket.id, id, "ack for no pending event; ignored");
            return;
        };
        let first = match &value {
            socketioxide_core::Value::Str(text, _) => {
                serde_json::from_str::<Vec<serde_json::Value>>(text)
                    .ok()
                    .and_then(|args| args.into_iter().next())
                    .unwrap_or(serde_json::Value::Null)
            }
            socketioxide_core::Value::Bytes(_) => serde_json::Value::Null,
        };
        self.respond(
            &socket.nsp,
            Response::BroadcastAck {
                request_id,
                packet: json_to_msgpack(&first),
            },
        );
    }

    /// Forgets acks whose broadcast timed out (the Node caller has given up).
    pub(super) fn expire_acks(&self) {
        let now = std::time::Instant::now();
        self.hub.acks.expire(now);
        self.sharded_requesters.expire(now);
        self.streams_requesters.expire(now);
    }

    fn targets_of(&self, nsp: &str, opts: &RequestOpts) -> Vec<std::sync::Arc<super::Socket>> {
        self.hub.targets(nsp, &opts.rooms, &opts.except)
    }

    /// The sockets a join/leave/disconnect request acts on: one socket by
    /// id (the adapter's per-socket form), or those its options select.
    fn request_targets(
        &self,
        nsp: &str,
        sid: Option<&str>,
        opts: Option<&RequestOpts>,
    ) -> Vec<std::sync::Arc<super::Socket>> {
        match (sid, opts) {
            (Some(sid), _) => self.hub.targets(nsp, &[sid], &[]),
            (None, Some(opts)) => self.targets_of(nsp, opts),
            (None, None) => self.hub.targets::<&str>(nsp, &[], &[]),
        }
    }

    /// Publishes a response where Node servers wait for it.
    pub(super) fn respond(&self, nsp: &str, response: Response) {
        if self.respond_sharded(nsp, &response) || self.respond_streams_request(nsp, &response) {
            return;
        }
        self.publish_in_background(
            self.channels.response(nsp),
            encode_response(&response),
            "response",
        );
    }

    /// Publishes on the bus without waiting; a failure is logged and
    /// counted in `switchboard_bus_publish_errors_total{origin}`.
    pub(crate) fn publish_in_background(
        &self,
        channel: String,
        payload: Vec<u8>,
        origin: &'static str,
    ) {
        self.spawn_publish(false, channel, payload, origin);
    }

    /// [`Self::publish_in_background`], with `SPUBLISH` when `sharded`.
    pub(super) fn spawn_publish(
        &self,
        sharded: bool,
        channel: String,
        payload: Vec<u8>,
        origin: &'static str,
    ) {
        let bus = self.bus.clone();
        let metrics = self.metrics.clone();
        // Tracked: shutdown lets a publish in flight finish (within
        // `redis.publish_timeout_ms`) before the bus stops.
        self.tasks().spawn(async move {
            let published = if sharded {
                bus.spublish(&channel, payload).await
            } else {
                bus.publish(&channel, payload).await
            };
            if let Err(err) = published {
                metrics
                    .bus_publish_errors
                    .with_label_values(&[origin])
                    .inc();
                tracing::warn!(%err, channel, origin, "bus publish failed");
            }
        });
    }
}
