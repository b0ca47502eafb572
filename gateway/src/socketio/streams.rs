//! Streams mode (`redis.bus = "streams"`) and connection state recovery in
//! the session layer.
//!
//! * Stream entries (`@socket.io/redis-streams-adapter` 0.3 format) become
//!   deliveries (broadcasts, with the entry id as the offset when recovery
//!   is on), room changes and disconnects ([`SocketIo::on_entry`]).
//! * The adapter's pub/sub requests are answered on the requester's channel:
//!   `fetchSockets`, `serverSideEmit` with an ack, and a broadcast with acks
//!   (`io.timeout(..).emit(.., cb)` on a Node server): delivered with an ack
//!   id, answered with the number of clients it reached, then each client's
//!   ack relayed, as the adapter's `BROADCAST_CLIENT_COUNT` and
//!   `BROADCAST_ACK` (the classic path's `broadcast_with_ack`).
//! * Recovery: a CONNECT whose auth carries `pid` and `offset` restores the
//!   session `sio:session:<pid>` (same socket id, rooms, verified claims; a
//!   token that expired meanwhile is refused), replays the missed entries
//!   page by page (`XRANGE .. COUNT`) in order, holds live entries back
//!   during the replay so that each event arrives exactly once, then answers
//!   CONNECT with the same `sid` and `pid`. Sessions are saved at CONNECT,
//!   whenever the socket's rooms change, when its connection ends and
//!   periodically, so a SIGKILLed gateway's clients recover elsewhere.

use std::sync::Arc;

use rmpv::Value;
use switchboard_wire::{
    FetchedSocket, Response,
    cluster::{AckResponse, ClusterBody, ClusterMessage, FetchSocketsResponse},
    json_to_msgpack, msgpack_to_json,
    recovery::{self, Session, StreamId},
    streams::{self, Outgoing, StreamsOptions},
};

use super::{Conn, Socket, SocketIo, packets};
use crate::{auth::Refusal, bus::StreamEntry, disconnect::SocketLeft};

/// Entries per `XRANGE` page of a replay.
const REPLAY_PAGE: usize = 100;
/// Pages at most per replay (100 000 entries): a client further behind
/// gets a fresh session instead of an unbounded read.
const REPLAY_MAX_PAGES: usize = 1_000;

/// `data` (`[event, ...args]`) with `offset` pushed as the last argument,
/// as socket.io does before encoding.
pub(super) fn with_offset(data: &Value, offset: &str) -> Value {
    let mut data = data.clone();
    if let Value::Array(items) = &mut data {
        items.push(Value::from(offset));
    }
    data
}

/// `{pid, offset}` of a CONNECT auth payload, when the client asks for
/// recovery (both strings, as socket.io requires).
fn recovery_request(auth: Option<&serde_json::Value>) -> Option<(String, String)> {
    let auth = auth?;
    match (auth.get("pid"), auth.get("offset")) {
        (Some(serde_json::Value::String(pid)), Some(serde_json::Value::String(offset))) => {
            Some((pid.clone(), offset.clone()))
        }
        _ => None,
    }
}

/// A write of a recovery session.
pub(super) enum SessionOp {
    /// `SET <key> <record> PX <ttl_ms>`.
    Save {
        /// The adapter's record (`Session::encode`).
        record: String,
        /// `recovery.max_disconnection_ms`.
        ttl_ms: u64,
    },
    /// `DEL <key>`.
    Delete,
}

/// Writes sessions in the order they were queued for each key (a stale
/// room list never overwrites a newer one, a delete never lands before the
/// save it follows): takes what is queued, keeps the last operation per
/// key, runs those concurrently (distinct keys), then takes the next batch.
/// A failure is logged and counted
/// (`switchboard_bus_publish_errors_total{origin="session"}`).
async fn write_sessions(
    bus: Arc<crate::bus::Bus>,
    metrics: crate::metrics::Metrics,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<(String, SessionOp)>,
) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, 4096).await > 0 {
        let Some(streams) = bus.streams() else {
            return;
        };
        let mut latest: std::collections::HashMap<String, SessionOp> =
            std::collections::HashMap::with_capacity(batch.len());
        for (key, op) in batch.drain(..) {
            latest.insert(key, op);
        }
        let writes = latest.into_iter().map(|(key, op)| async move {
            match op {
                SessionOp::Save { record, ttl_ms } => {
                    streams.save_session(&key, &record, ttl_ms).await
                }
                SessionOp::Delete => streams.delete_session(&key).await,
            }
        });
        for result in futures_util::future::join_all(writes).await {
            if let Err(err) = result {
                metrics
                    .bus_publish_errors
                    .with_label_values(&["session"])
                    .inc();
                tracing::warn!(%err, "recovery session not written");
            }
        }
    }
}

/// Why a recovery did not happen.
enum NotRecovered {
    /// A fresh session is created; the label of `switchboard_recoveries_total`.
    Fresh(&'static str, String),
    /// The CONNECT is refused (the restored token has expired).
    Refused(Refusal),
}

impl SocketIo {
    /// The streams adapter's pub/sub channels of this gateway: every
    /// namespace's request channel and its own response channel.
    pub(super) fn streams_channels(&self, o: &StreamsOptions) -> Vec<String> {
        self.namespaces
            .iter()
            .flat_map(|nsp| [o.channels.namespace(nsp), o.channels.server(nsp, &self.uid)])
            .collect()
    }

    /// A message on one of [`Self::streams_channels`]; false when `channel`
    /// is not one of them.
    pub(super) fn on_streams_pubsub(
        &self,
        o: &StreamsOptions,
        channel: &str,
        payload: &[u8],
    ) -> bool {
        let Some(nsp) = self
            .namespaces
            .iter()
            .find(|nsp| {
                channel == o.channels.namespace(nsp) || channel == o.channels.server(nsp, &self.uid)
            })
            .cloned()
        else {
            return false;
        };
        let msg = match streams::decode_pubsub(payload) {
            Ok(msg) => msg,
            Err(err) => {
                self.bus_decode_error("request", &err);
                return true;
            }
        };
        if msg.uid == self.uid {
            return true;
        }
        self.metrics.bus_in.with_label_values(&["request"]).inc();
        let requester = msg.uid.clone();
        match msg.body {
            ClusterBody::FetchSockets(f) => {
                let sockets = self
                    .hub
                    .targets(&nsp, &f.opts.rooms, &f.opts.except)
                    .iter()
                    .map(|s| self.fetched(s))
                    .collect();
                self.respond_streams(
                    o,
                    &requester,
                    &nsp,
                    ClusterBody::FetchSocketsResponse(FetchSocketsResponse {
                        request_id: f.request_id,
                        sockets,
                    }),
                );
            }
            ClusterBody::ServerSideEmit(e) => {
                // No server-side handlers here; answer so that a Node
                // `serverSideEmitWithAck` does not wait for this gateway.
                if let Some(request_id) = e.request_id {
                    self.respond_streams(
                        o,
                        &requester,
                        &nsp,
                        ClusterBody::ServerSideEmitResponse(AckResponse {
                            request_id,
                            packet: Some(Value::Nil),
                        }),
                    );
                }
            }
            ClusterBody::Broadcast(b) => match b.request_id {
                // A broadcast with acks: its answers (client count, then
                // each client's ack) go to the requester's channel, found
                // by request id when the acks come back (`respond`).
                Some(request_id) => {
                    let ttl = super::sharded::ack_requester_ttl(b.opts.flags.timeout);
                    self.streams_requesters.insert(&request_id, &requester, ttl);
                    self.broadcast_with_ack(&nsp, request_id, &b.packet.data, &b.opts);
                }
                // Not sent by the 0.3 adapter (plain broadcasts go into the
                // stream), delivered anyway.
                None => self.deliver_data(
                    &nsp,
                    &b.packet.data,
                    (&b.opts).into(),
                    tokio::time::Instant::now(),
                    None,
                ),
            },
            other => {
                tracing::debug!(kind = ?ClusterMessage::new("", "", other).message_type(), "streams pub/sub message not handled by the gateway");
            }
        }
        true
    }

    /// Answers a request that came over the streams adapter's pub/sub (a
    /// broadcast with acks) on its requester's channel; false when
    /// `response` answers no such request.
    pub(super) fn respond_streams_request(&self, nsp: &str, response: &Response) -> bool {
        let (Some(o), Some(requester)) = (
            &self.streams,
            self.streams_requesters.get(response.request_id()),
        ) else {
            return false;
        };
        if let Some(body) = super::sharded::cluster_response(response.clone()) {
            self.respond_streams(o, &requester, nsp, body);
        }
        true
    }

    /// Publishes a response on `socket.io#<nsp>#<requester>#`.
    fn respond_streams(&self, o: &StreamsOptions, requester: &str, nsp: &str, body: ClusterBody) {
        let msg = ClusterMessage::new(self.uid.clone(), nsp, body);
        if let Outgoing::Publish {
            channel, payload, ..
        } = o.encode_response(requester, &msg)
        {
            self.publish_in_background(channel, payload, "response");
        }
    }

    /// One stream entry, in stream order.
    pub(super) fn on_entry(&self, stream: &str, entry: &StreamEntry) {
        let received = tokio::time::Instant::now();
        let msg = match streams::decode_entry(entry.fields.iter().map(|(k, v)| (k, v))) {
            Ok(msg) => msg,
            Err(err) => return self.bus_decode_error("broadcast", &err),
        };
        if msg.uid == self.uid {
            return;
        }
        let Some(nsp) = self.namespace(&msg.nsp).cloned() else {
            return;
        };
        let id = entry.id.parse::<StreamId>().ok();
        let join = msg.message_type() == switchboard_wire::MessageType::SocketsJoin;
        match msg.body {
            ClusterBody::Broadcast(b) => {
                self.metrics.bus_in.with_label_values(&["broadcast"]).inc();
                // The id is the offset (non-volatile events, recovery on),
                // and orders the entry against a replay in progress.
                self.deliver_data(&nsp, &b.packet.data, (&b.opts).into(), received, id);
            }
            ClusterBody::SocketsJoin(c) | ClusterBody::SocketsLeave(c) => {
                self.metrics.bus_in.with_label_values(&["request"]).inc();
                for socket in self.hub.targets(&nsp, &c.opts.rooms, &c.opts.except) {
                    if join {
                        let created = self.hub.join(socket.id, &c.rooms);
                        self.metrics.rooms.add(created as i64);
                    } else {
                        let emptied = self.hub.leave(socket.id, &c.rooms);
                        self.metrics.rooms.sub(emptied as i64);
                    }
                    self.save_session(&socket);
                }
            }
            ClusterBody::DisconnectSockets(d) => {
                self.metrics.bus_in.with_label_values(&["request"]).inc();
                for socket in self.hub.targets(&nsp, &d.opts.rooms, &d.opts.except) {
                    self.disconnect_socket(&socket, d.close);
                }
            }
            other => {
                tracing::debug!(stream, kind = ?ClusterMessage::new("", "", other).message_type(), "stream entry not handled by the gateway");
            }
        }
    }

    /// What `fetchSockets()` reports about a local socket.
    pub(super) fn fetched(&self, s: &Arc<Socket>) -> FetchedSocket {
        match &self.admin {
            // What an instrumented Node server answers, so that Admin UIs
            // anywhere in the fleet show this socket.
            Some(admin) => admin.fetched(s),
            None => FetchedSocket {
                id: s.id.to_string(),
                handshake: json_to_msgpack(&serde_json::json!({
                    "address": s.conn.handshake.client_address(),
                    "issued": s.conn.handshake.issued_ms,
                    "query": {},
                    "auth": {},
                })),
                rooms: std::iter::once(s.id.to_string())
                    .chain(self.hub.rooms_of(s.id))
                    .collect(),
                data: json_to_msgpack(&serde_json::Value::Object(s.claims.clone())),
            },
        }
    }

    /// Saves `socket`'s recovery session (`SET sio:session:<pid> .. PX
    /// max_disconnection_ms`) in the background; a failure is logged and
    /// counted (`switchboard_bus_publish_errors_total{origin="session"}`).
    pub(super) fn save_session(&self, socket: &Socket) {
        let (Some(recovery), Some(opts), Some(pid)) = (&self.recovery, &self.streams, &socket.pid)
        else {
            return;
        };
        let session = Session {
            sid: socket.id.to_string(),
            pid: pid.to_string(),
            rooms: std::iter::once(socket.id.to_string())
                .chain(self.hub.rooms_of(socket.id))
                .collect(),
            data: json_to_msgpack(&serde_json::Value::Object(socket.claims.clone())),
        };
        let key = opts.session_key(pid);
        let op = SessionOp::Save {
            record: session.encode(),
            ttl_ms: recovery.max_disconnection_ms,
        };
        self.session_command(key, op);
    }

    /// Deletes `socket`'s session: it left for good (its own or the
    /// server's namespace disconnect, an expired token).
    fn delete_session(&self, socket: &Socket) {
        let (Some(opts), Some(pid)) = (&self.streams, &socket.pid) else {
            return;
        };
        self.session_command(opts.session_key(pid), SessionOp::Delete);
    }

    /// Queues a session write to the writer task (started on first use).
    fn session_command(&self, key: String, op: SessionOp) {
        let writer = self.session_writer.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            // Untracked: it lives as long as this server (it ends when the
            // queue's sender, held here, is dropped); shutdown does not wait
            // for it, since every session was already saved at CONNECT.
            tokio::spawn(write_sessions(self.bus.clone(), self.metrics.clone(), rx));
            tx
        });
        let _ = writer.send((key, op));
    }

    /// A socket left: keep its session for a reconnect when its connection
    /// ended (the TTL starts now), drop it when it left for good.
    pub(super) fn keep_or_drop_session(&self, socket: &Socket, why: SocketLeft) {
        match why {
            SocketLeft::Closed(_) => self.save_session(socket),
            _ => self.delete_session(socket),
        }
    }

    /// Saves every socket's session again, so that sessions of sockets
    /// connected for longer than `max_disconnection_ms` stay recoverable if
    /// their gateway dies without a goodbye.
    pub(super) fn refresh_sessions(&self) {
        for nsp in &self.namespaces {
            for socket in self.hub.targets::<&str>(nsp, &[], &[]) {
                self.save_session(&socket);
            }
        }
    }

    /// A CONNECT: restores the session when the client asks for it (in a
    /// task: Redis is asked), otherwise connects a new socket.
    pub(super) fn connect_or_restore(
        &self,
        conn: &Conn,
        nsp: Arc<str>,
        auth: Option<serde_json::Value>,
    ) {
        if self.recovery.is_some()
            && let Some((pid, offset)) = recovery_request(auth.as_ref())
            && let Some(io) = self.me.upgrade()
        {
            let conn = conn.clone();
            // Per connection, untracked: one restore (a few Redis commands,
            // each bounded by redis.publish_timeout_ms), then it ends.
            tokio::spawn(async move {
                match io.restore(&conn, &nsp, &pid, &offset).await {
                    Ok(()) => {
                        io.metrics
                            .recoveries
                            .with_label_values(&["recovered"])
                            .inc();
                    }
                    Err(NotRecovered::Fresh(outcome, detail)) => {
                        io.metrics.recoveries.with_label_values(&[outcome]).inc();
                        tracing::info!(sid = %conn.sid, outcome, detail, "session not recovered; connecting a fresh one");
                        io.connect_new(&conn, nsp, auth);
                    }
                    Err(NotRecovered::Refused(refusal)) => {
                        let outcome = match refusal {
                            Refusal::Expired => "expired",
                            _ => "invalid",
                        };
                        io.metrics.recoveries.with_label_values(&[outcome]).inc();
                        io.refuse_connect(&conn, &nsp, refusal.reason(), &refusal.message(), true);
                    }
                }
            });
            return;
        }
        self.connect_new(conn, nsp, auth);
    }

    async fn restore(
        &self,
        conn: &Conn,
        nsp: &Arc<str>,
        pid: &str,
        offset: &str,
    ) -> Result<(), NotRecovered> {
        let fresh = |outcome: &'static str, detail: String| NotRecovered::Fresh(outcome, detail);
        let (Some(opts), Some(bus)) = (&self.streams, self.bus.streams()) else {
            return Err(fresh("error", "not in streams mode".into()));
        };
        let since: StreamId = offset
            .parse()
            .map_err(|e| fresh("invalid", format!("{e}")))?;
        let key = opts.session_key(pid);
        let stream = opts.stream_for(nsp);
        let (record, present) =
            tokio::join!(bus.take_session(&key), bus.has_entry(&stream, offset));
        let record = record
            .map_err(|e| fresh("error", e.to_string()))?
            .ok_or_else(|| {
                fresh(
                    "expired",
                    "no session (never saved, or older than recovery.max_disconnection_ms)".into(),
                )
            })?;
        if !present.map_err(|e| fresh("error", e.to_string()))? {
            return Err(fresh(
                "trimmed",
                format!("offset {offset} is no longer in {stream}"),
            ));
        }
        let session = Session::decode(&record).map_err(|e| fresh("invalid", e.to_string()))?;
        let sid: engineioxide_core::Sid = session.sid.parse().map_err(|_| {
            fresh(
                "invalid",
                format!("socket id {:?} is not a gateway socket id", session.sid),
            )
        })?;
        let claims = match msgpack_to_json(&session.data) {
            serde_json::Value::Object(claims) => claims,
            _ => serde_json::Map::new(),
        };
        let identity = self.auth.restore(claims).map_err(NotRecovered::Refused)?;
        // The old socket may still be here (the client came back before
        // its connection was seen to be gone): it is replaced.
        if let Some(old) = self.hub.get(sid) {
            old.conn.data.remove_id(old.id);
            self.remove_socket(&old, SocketLeft::ClientNamespace);
        }
        let (socket, _) = self.socket_for(conn, nsp, identity);
        let socket = Arc::new(socket.with_session(sid, session.pid.clone().into_boxed_str(), true));
        conn.data.add(nsp.clone(), sid);
        if let Err(why) = self.admit(&socket) {
            conn.data.remove_id(sid);
            return Err(NotRecovered::Fresh("error", why.into()));
        }
        let rooms: Vec<&String> = session
            .rooms
            .iter()
            .filter(|r| **r != session.sid)
            .collect();
        let created = self.hub.join(sid, &rooms);
        self.metrics.rooms.add(created as i64);
        // Replay what was missed, page by page, then what arrived meanwhile.
        let mut last: Option<StreamId> = None;
        let mut from = since.next();
        let mut replayed = 0usize;
        for _ in 0..REPLAY_MAX_PAGES {
            let Some(start) = from else { break };
            let page = match bus.xrange(&stream, &start.to_string(), REPLAY_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    socket.end_replay(last.or(Some(since)));
                    self.unadmit(&socket);
                    return Err(fresh("error", e.to_string()));
                }
            };
            for entry in &page {
                let Ok(id) = entry.id.parse::<StreamId>() else {
                    continue;
                };
                last = Some(id);
                let Ok(msg) = streams::decode_entry(entry.fields.iter().map(|(k, v)| (k, v)))
                else {
                    continue;
                };
                if let ClusterBody::Broadcast(b) = &msg.body
                    && recovery::should_add_offset(&b.packet, &b.opts)
                    && let Some(data) = recovery::replayed_event(&msg, &entry.id, nsp, &session)
                {
                    match switchboard_wire::encode_event(nsp, &data, None) {
                        Ok(packet) => {
                            let mut frames = vec![crate::engine::Frame::message(&packet.text)];
                            frames.extend(
                                packet
                                    .attachments
                                    .into_iter()
                                    .map(crate::engine::Frame::Binary),
                            );
                            conn.send_all(&frames);
                            replayed += 1;
                        }
                        Err(err) => self.bus_decode_error("broadcast", &err),
                    }
                }
            }
            if page.len() < REPLAY_PAGE {
                break;
            }
            from = last.and_then(StreamId::next);
        }
        socket.end_replay(last.or(Some(since)));
        conn.send(packets::connect_with_pid(nsp, sid.as_str(), &session.pid));
        self.presence.connected(&socket);
        self.save_session(&socket);
        if conn.is_closed() {
            // The connection ended during the restore; on_close may have
            // missed the socket.
            self.unadmit(&socket);
        }
        tracing::debug!(sid = %conn.sid, socket = %sid, replayed, "session recovered");
        Ok(())
    }

    /// Removes a socket that [`SocketIo::admit`] added, if it is still there.
    fn unadmit(&self, socket: &Arc<Socket>) {
        if socket.conn.data.remove_id(socket.id) || self.hub.get(socket.id).is_some() {
            self.remove_socket(
                socket,
                SocketLeft::Closed(crate::engine::CloseReason::ClientClosed),
            );
        }
    }
}
