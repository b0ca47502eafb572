//! The Socket.IO v5 session layer on top of an Engine.IO session: CONNECT
//! with authentication, DISCONNECT, client EVENTs and ACKs, connect timeout,
//! and closing connections that break the protocol.
//!
//! Packets are parsed with `socketioxide-parser-common`; the session logic
//! is ours so that it can later restore sessions by pid/offset.

mod client;
mod fanout;
mod packets;
mod sharded;
mod socket;
mod streams;
mod upstream;

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use bytes::Bytes;
use engineioxide_core::{Sid, Str};
use socketioxide_core::{
    Value,
    packet::{Packet, PacketData},
    parser::{Parse, ParseConfig, ParseError},
};
use socketioxide_parser_common::CommonParser;
use switchboard_wire::RESERVED_EVENTS;

pub use client::Client;

/// The CONNECT reply, for the admin namespace.
pub(crate) fn packets_connect(nsp: &str, sid: &str) -> crate::engine::Frame {
    packets::connect(nsp, sid)
}

/// A CONNECT_ERROR with a message only (as a Node middleware error).
pub(crate) fn packets_connect_error(nsp: &str, message: &str) -> crate::engine::Frame {
    packets::connect_error(nsp, message, None)
}
pub use socket::Socket;

use crate::{
    actions::Actions,
    admin::Admin,
    auth::Authenticator,
    bus::Bus,
    config::{Config, LimitsConfig},
    disconnect::SocketLeft,
    engine::Handshake,
    engine::{CloseReason, Connection, EngineHandler, TokenBucket},
    hub::{Hub, NewSocket},
    metrics::Metrics,
    presence::Presence,
};

/// An Engine.IO connection as the session layer holds it.
pub type Conn = Arc<Connection<Client>>;

/// The Socket.IO server of one gateway: namespaces, authentication, the
/// [`Hub`] (sockets, rooms, users, expiries, pending acks) and the bus it
/// publishes client events to.
pub struct SocketIo {
    pub(crate) namespaces: Vec<Arc<str>>,
    connect_timeout: Duration,
    parse_config: ParseConfig,
    auth: Authenticator,
    /// The one owner of sockets, room membership, per-user counts, token
    /// expiries and pending acks.
    pub hub: Hub<Arc<Socket>>,
    pub metrics: Metrics,
    pub(crate) bus: Arc<Bus>,
    /// Channel names of the bus (`redis.key` prefix).
    pub(crate) channels: switchboard_wire::Channels,
    /// The `redis.key` prefix, also used for the upstream channel.
    upstream_key: String,
    /// This gateway's uid on the bus; messages carrying it are our own.
    pub uid: String,
    limits: LimitsConfig,
    expiry_grace_s: u64,
    /// The Admin UI server, when `admin.enabled`.
    pub admin: Option<Arc<Admin>>,
    /// The same, only in development mode: the per-socket hooks test this
    /// one field, so they cost one branch when the admin is off or in
    /// production mode.
    pub(crate) admin_events: Option<Arc<Admin>>,
    /// The `[client]` rules (room joins, relays, forwards), when any.
    pub(crate) actions: Option<Arc<Actions>>,
    /// This server itself, for the tasks actions spawn (empty unless built
    /// by [`SocketIo::new_shared`]).
    me: Weak<SocketIo>,
    /// The address peers forward to (`cluster.advertise_addr`), reported to
    /// `switchboard status`.
    pub(crate) advertise: Option<String>,
    /// Streams mode (`redis.bus = "streams"`): the adapter options.
    pub(crate) streams: Option<switchboard_wire::streams::StreamsOptions>,
    /// Connection state recovery, when `recovery.enabled`.
    pub(crate) recovery: Option<crate::config::RecoveryConfig>,
    /// The queue of the task writing recovery sessions in order.
    session_writer:
        std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<(String, streams::SessionOp)>>,
    /// Who is online and in which rooms with presence.
    pub presence: Arc<Presence>,
    /// Background tasks that are not one connection's: the sweeper, the
    /// admin timers, the cluster registration and publishes in flight.
    /// Shutdown closes it and awaits them (bounded) before the bus stops.
    tasks: TaskTracker,
    /// Who sent the requests that came over sharded pub/sub.
    sharded_requesters: sharded::Requesters,
    /// Who sent the broadcasts with acks that came over the streams
    /// adapter's pub/sub (their answers go to the sender's channel).
    streams_requesters: sharded::Requesters,
    /// Whether broadcasts come back to back (a burst), to choose between
    /// writing each delivery at once and queueing for batched writes.
    pace: fanout::Pace,
}

/// Why a client packet was refused; the label of `switchboard_bad_packets_total`.
#[derive(Debug, Clone, Copy)]
enum BadPacket {
    Unparsable,
    NotConnected,
    InvalidConnectPayload,
    InvalidEventPayload,
    ReservedEvent,
    UnexpectedConnectError,
}

impl BadPacket {
    fn label(self) -> &'static str {
        match self {
            BadPacket::Unparsable => "unparsable",
            BadPacket::NotConnected => "namespace_not_connected",
            BadPacket::InvalidConnectPayload => "invalid_connect_payload",
            BadPacket::InvalidEventPayload => "invalid_event_payload",
            BadPacket::ReservedEvent => "reserved_event",
            BadPacket::UnexpectedConnectError => "unexpected_connect_error",
        }
    }
}

impl SocketIo {
    /// A server shared behind an `Arc`, with the `[client]` rules in
    /// `actions` (see [`Actions::from_config`]).
    pub fn new_shared(
        config: &Config,
        auth: Authenticator,
        metrics: Metrics,
        bus: Arc<Bus>,
        actions: Option<Actions>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| SocketIo {
            me: me.clone(),
            ..SocketIo::new(config, auth, metrics, bus, actions)
        })
    }

    /// This server as an `Arc`, for spawned tasks; `None` when it was not
    /// built by [`SocketIo::new_shared`] (or is shutting down).
    pub(crate) fn shared(&self) -> Option<Arc<SocketIo>> {
        self.me.upgrade()
    }

    /// A server; actions that wait (relays, forwards, hooks) need
    /// [`SocketIo::new_shared`].
    pub fn new(
        config: &Config,
        mut auth: Authenticator,
        metrics: Metrics,
        bus: Arc<Bus>,
        actions: Option<Actions>,
    ) -> Self {
        if let Some(actions) = &actions {
            auth.keep_claims(actions.referenced_claims());
        }
        let parse_config = ParseConfig {
            max_incoming_binaries: config.socketio.max_attachments,
            max_incoming_binary_buf_size: usize::try_from(config.engine.max_payload)
                .unwrap_or(usize::MAX),
            ..ParseConfig::default()
        };
        let uid = engineioxide_core::Sid::new().to_string();
        let admin = Admin::from_config(config, &bus, &uid, &metrics);
        let admin_events = admin.clone().filter(|a| a.development());
        let hub = Hub::new();
        if let Some(watcher) = bus.sharded().and_then(|s| s.room_watcher()) {
            // A fresh hub has no watcher yet.
            let _ = hub.watch_rooms(watcher);
        }
        SocketIo {
            namespaces: config
                .socketio
                .namespaces
                .iter()
                .map(|n| Arc::from(n.as_str()))
                .collect(),
            connect_timeout: config.socketio.connect_timeout(),
            parse_config,
            auth,
            hub,
            metrics: metrics.clone(),
            bus: bus.clone(),
            channels: switchboard_wire::Channels::new(config.redis.key.clone()),
            upstream_key: config.redis.key.clone(),
            limits: config.limits.clone(),
            expiry_grace_s: config.auth.expiry_grace_s,
            admin,
            admin_events,
            actions: actions.map(Arc::new),
            me: Weak::new(),
            advertise: config.advertise_addr().ok().map(|a| a.to_string()),
            sharded_requesters: sharded::Requesters::default(),
            streams_requesters: sharded::Requesters::default(),
            streams: (config.redis.enabled()
                && config.redis.bus == crate::config::BusMode::Streams)
                .then(|| config.redis.streams_options()),
            recovery: config.recovery.enabled.then(|| config.recovery.clone()),
            session_writer: std::sync::OnceLock::new(),
            presence: Arc::new(Presence::new(config, &uid, bus.clone(), metrics.clone())),
            uid,
            tasks: TaskTracker::new(),
            pace: fanout::Pace::default(),
        }
    }

    /// The tracker of the gateway's background tasks; see the field.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Starts the Admin UI's timers, when enabled.
    pub fn start_admin(self: &Arc<Self>, shutdown: CancellationToken) {
        if let Some(admin) = &self.admin {
            admin.start(self, shutdown);
        }
    }

    /// The socket `conn` holds in `nsp`, if any.
    fn socket_of(&self, conn: &Conn, nsp: &str) -> Option<Arc<Socket>> {
        conn.data.socket(nsp).and_then(|id| self.hub.get(id))
    }

    fn namespace(&self, nsp: &str) -> Option<&Arc<str>> {
        self.namespaces.iter().find(|n| &***n == nsp)
    }

    /// Closes a connection that broke the protocol, with a log line and a metric.
    fn refuse_packet(&self, conn: &Conn, why: BadPacket, detail: &str) {
        self.metrics
            .bad_packets
            .with_label_values(&[why.label()])
            .inc();
        tracing::info!(sid = %conn.sid, reason = why.label(), detail, "invalid socket.io packet; closing connection");
        conn.close(CloseReason::ProtocolError);
    }

    /// Answers a refused CONNECT with CONNECT_ERROR (`data.reason` when
    /// `with_reason`; the reference server sends none for a bad namespace).
    /// A session is not a free oracle for guessing tokens: the
    /// [`MAX_REFUSED_CONNECTS`]th refusal on one session closes it, with
    /// reason `too_many_refused_connects` in that last CONNECT_ERROR.
    fn refuse_connect(
        &self,
        conn: &Conn,
        nsp: &str,
        reason: &str,
        message: &str,
        with_reason: bool,
    ) {
        self.metrics
            .connect_refused
            .with_label_values(&[reason])
            .inc();
        if let Some(suppressed) = CONNECT_REFUSED_LOG.allow() {
            tracing::info!(
                sid = %conn.sid,
                nsp,
                reason,
                client = %conn.handshake.client_address(),
                suppressed,
                "connect refused"
            );
        }
        if conn.data.count_refused_connect() >= MAX_REFUSED_CONNECTS {
            self.metrics
                .connect_refused
                .with_label_values(&["too_many_refused_connects"])
                .inc();
            conn.send(packets::connect_error(
                nsp,
                &format!("{message}; too many refused CONNECT attempts, closing the connection"),
                Some(serde_json::json!({ "reason": "too_many_refused_connects", "last": reason })),
            ));
            conn.close(CloseReason::ServerClosed);
            return;
        }
        let data = with_reason.then(|| serde_json::json!({ "reason": reason }));
        conn.send(packets::connect_error(nsp, message, data));
    }

    fn on_packet(&self, conn: &Conn, packet: Packet) {
        let nsp = packet.ns.as_str();
        if let Some(admin) = &self.admin
            && nsp == admin.nsp()
        {
            return self.on_admin_packet(admin, conn, packet);
        }
        match packet.inner {
            PacketData::Connect(payload) => self.on_connect(conn, nsp, payload),
            PacketData::Disconnect => {
                if let Some(socket) = conn.data.remove(nsp).and_then(|id| self.hub.get(id)) {
                    self.remove_socket(&socket, SocketLeft::ClientNamespace);
                }
            }
            PacketData::Event(value, ack) | PacketData::BinaryEvent(value, ack) => {
                let Some(socket) = self.socket_of(conn, nsp) else {
                    return self.refuse_packet(conn, BadPacket::NotConnected, nsp);
                };
                self.on_event(conn, &socket, value, ack);
            }
            PacketData::EventAck(value, id) | PacketData::BinaryAck(value, id) => {
                match self.socket_of(conn, nsp) {
                    Some(socket) => self.on_client_ack(&socket, id, value),
                    None => self.refuse_packet(conn, BadPacket::NotConnected, nsp),
                }
            }
            PacketData::ConnectError(_) => {
                self.refuse_packet(conn, BadPacket::UnexpectedConnectError, nsp)
            }
        }
    }

    /// A packet for the admin namespace: the Admin UI, not an app client.
    fn on_admin_packet(&self, admin: &Arc<Admin>, conn: &Conn, packet: Packet) {
        match packet.inner {
            PacketData::Connect(payload) => {
                if let Some(auth) = self.connect_payload(conn, payload) {
                    admin.on_connect(conn, auth);
                }
            }
            PacketData::Disconnect => admin.on_disconnect(conn),
            PacketData::Event(Value::Str(text, None), _) => {
                match serde_json::from_str::<Vec<serde_json::Value>>(&text) {
                    Ok(args) => admin.on_event(self, conn, args),
                    Err(_) => self.refuse_packet(
                        conn,
                        BadPacket::InvalidEventPayload,
                        "EVENT payload must be a JSON array",
                    ),
                }
            }
            _ => self.refuse_packet(
                conn,
                BadPacket::InvalidEventPayload,
                "unexpected admin packet",
            ),
        }
    }

    /// The CONNECT payload as a JSON object; `None` when the connection was
    /// refused for a malformed one.
    fn connect_payload(
        &self,
        conn: &Conn,
        payload: Option<Value>,
    ) -> Option<Option<serde_json::Value>> {
        match payload {
            None => Some(None),
            Some(Value::Str(text, _)) => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v @ serde_json::Value::Object(_)) => Some(Some(v)),
                _ => {
                    self.refuse_packet(
                        conn,
                        BadPacket::InvalidConnectPayload,
                        "CONNECT payload must be a JSON object",
                    );
                    None
                }
            },
            Some(Value::Bytes(_)) => {
                self.refuse_packet(conn, BadPacket::InvalidConnectPayload, "binary");
                None
            }
        }
    }

    fn on_connect(&self, conn: &Conn, nsp: &str, payload: Option<Value>) {
        let Some(auth) = self.connect_payload(conn, payload) else {
            return;
        };
        let Some(nsp) = self.namespace(nsp).cloned() else {
            return self.refuse_connect(conn, nsp, "invalid_namespace", "Invalid namespace", false);
        };
        if let Some(existing) = conn.data.socket(&nsp) {
            // A repeated CONNECT for a connected namespace gets the same socket.
            let reply = match self.hub.get(existing).and_then(|s| s.pid.clone()) {
                Some(pid) => packets::connect_with_pid(&nsp, existing.as_str(), &pid),
                None => packets::connect(&nsp, existing.as_str()),
            };
            conn.send(reply);
            return;
        }
        self.connect_or_restore(conn, nsp, auth);
    }

    /// A new socket of `conn` in `nsp` for `identity` (with the event
    /// budget of `limits.client_events_per_sec`), and the rooms it joins.
    fn socket_for(
        &self,
        conn: &Conn,
        nsp: &Arc<str>,
        identity: crate::auth::Identity,
    ) -> (Socket, Vec<String>) {
        let budget = (self.limits.client_events_per_sec > 0).then(|| {
            TokenBucket::new(
                self.limits.client_events_per_sec,
                self.limits.client_events_burst,
            )
        });
        let socket = Socket::new(
            nsp.clone(),
            conn.clone(),
            identity.user,
            identity.claims,
            identity.expires_at,
            budget,
        );
        (socket, identity.rooms)
    }

    /// Adds a socket to the Hub (the per-user limit applies) and the gauges.
    fn admit(&self, socket: &Arc<Socket>) -> Result<(), &'static str> {
        let new = NewSocket {
            nsp: &socket.nsp,
            id: socket.id,
            user: socket.user.as_ref(),
            expires_at: socket.expires_at,
        };
        self.hub
            .add(new, socket.clone(), self.limits.max_connections_per_user)
            .map_err(|_| "too many connections for this user")?;
        self.metrics.sockets.inc();
        self.metrics
            .connects
            .with_label_values(&[&socket.nsp])
            .inc();
        Ok(())
    }

    /// Authenticates a CONNECT and connects a new socket (with a recovery
    /// session when `recovery.enabled`).
    fn connect_new(&self, conn: &Conn, nsp: Arc<str>, auth: Option<serde_json::Value>) {
        let identity = match self.auth.authenticate(&conn.handshake, auth.as_ref()) {
            Ok(identity) => identity,
            Err(refusal) => {
                return self.refuse_connect(conn, &nsp, refusal.reason(), &refusal.message(), true);
            }
        };
        let (mut socket, rooms) = self.socket_for(conn, &nsp, identity);
        if self.recovery.is_some() {
            let id = socket.id;
            socket = socket.with_session(id, Sid::new().to_string().into_boxed_str(), false);
        }
        let socket = Arc::new(socket);
        if self.admit(&socket).is_err() {
            return self.refuse_connect(
                conn,
                &nsp,
                "too_many_connections",
                "too many connections for this user",
                true,
            );
        }
        let created = self.hub.join(socket.id, &rooms);
        self.metrics.rooms.add(created as i64);
        conn.data.add(nsp.clone(), socket.id);
        tracing::debug!(sid = %conn.sid, socket = %socket.id, nsp = &*nsp, user = ?socket.user, rooms = ?rooms, "socket connected");
        // Saved before the reply goes out, so even a client that loses its
        // gateway right after connecting can recover.
        self.save_session(&socket);
        conn.send(match &socket.pid {
            Some(pid) => packets::connect_with_pid(&nsp, socket.id.as_str(), pid),
            None => packets::connect(&nsp, socket.id.as_str()),
        });
        self.presence.connected(&socket);
        if let Some(admin) = &self.admin_events {
            admin.socket_connected(&socket);
        }
    }

    fn on_event(&self, conn: &Conn, socket: &Arc<Socket>, value: Value, ack: Option<i64>) {
        let Value::Str(text, attachments) = value else {
            return self.refuse_packet(conn, BadPacket::InvalidEventPayload, "binary payload");
        };
        let args = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Array(args)) => args,
            _ => {
                return self.refuse_packet(
                    conn,
                    BadPacket::InvalidEventPayload,
                    "EVENT payload must be a JSON array",
                );
            }
        };
        let Some(serde_json::Value::String(event)) = args.first() else {
            return self.refuse_packet(
                conn,
                BadPacket::InvalidEventPayload,
                "EVENT name must be a string",
            );
        };
        if RESERVED_EVENTS.contains(&event.as_str()) {
            return self.refuse_packet(conn, BadPacket::ReservedEvent, event);
        }
        self.metrics
            .client_events
            .with_label_values(&[&socket.nsp])
            .inc();
        let actions = self.actions.as_ref().filter(|a| a.handles(event));
        if !socket.allow_event() {
            self.metrics
                .client_events_refused
                .with_label_values(&["rate_limited"])
                .inc();
            tracing::debug!(socket = %socket.id, "client event over its rate; refused");
            if let Some(actions) = actions {
                return actions.refuse_rate_limited(socket, event, ack);
            }
            if let Some(id) = ack {
                socket.send_all(&[packets::ack(
                    &socket.nsp,
                    id,
                    &serde_json::json!([{ "ok": false, "error": "rate limited: too many events" }]),
                )]);
            }
            return;
        }
        if event == PRESENCE_EVENT && actions.is_none() && self.presence.has_rooms() {
            return self.on_presence_query(socket, &args, ack);
        }
        if let Some(admin) = &self.admin_events {
            admin.event_received(socket, &args);
        }
        let attachments: Vec<Bytes> = attachments.map(Vec::from).unwrap_or_default();
        if let Some(actions) = actions {
            return actions
                .clone()
                .on_event(self, socket, args, attachments, ack);
        }
        upstream::relay(self, socket.clone(), args, attachments, ack);
    }

    /// `socket.emit("presence", room, ack)`: the room's members, for a
    /// socket that counts in the room's presence (a member of a room with
    /// presence). Without an ack there is nothing to answer.
    fn on_presence_query(
        &self,
        socket: &Arc<Socket>,
        args: &[serde_json::Value],
        ack: Option<i64>,
    ) {
        let room = match args.get(1) {
            Some(serde_json::Value::String(room)) => Some(room.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let refused = match &room {
            None => Some("invalid_argument"),
            Some(room) if !self.presence.counts_in(socket, room) => Some("not_a_member"),
            Some(_) if ack.is_none() => Some("no_ack"),
            Some(_) => None,
        };
        if let Some(reason) = refused {
            self.metrics
                .client_events_refused
                .with_label_values(&[&format!("presence_{reason}")])
                .inc();
            tracing::debug!(socket = %socket.id, ?room, reason, "presence query refused");
            if let Some(id) = ack {
                socket.send_all(&[packets::ack(
                    &socket.nsp,
                    id,
                    &serde_json::json!([{ "ok": false, "error": reason }]),
                )]);
            }
            return;
        }
        let (Some(room), Some(id)) = (room, ack) else {
            return;
        };
        let presence = self.presence.clone();
        let socket = socket.clone();
        tokio::spawn(async move {
            let answer = match presence.members(&socket.nsp, &room).await {
                Ok(members) => {
                    serde_json::json!([{ "ok": true, "room": room, "members": members }])
                }
                Err(e) => {
                    tracing::info!(socket = %socket.id, room, error = %e, "presence query failed");
                    serde_json::json!([{ "ok": false, "error": "unavailable" }])
                }
            };
            socket.send_all(&[packets::ack(&socket.nsp, id, &answer)]);
        });
    }

    /// Removes a socket from the rooms and the gauges.
    fn remove_socket(&self, socket: &Socket, why: SocketLeft) {
        self.keep_or_drop_session(socket, why);
        self.presence.disconnected(socket);
        let emptied = self.hub.remove(socket.id);
        self.metrics.rooms.sub(emptied as i64);
        self.metrics.sockets.dec();
        tracing::debug!(socket = %socket.id, nsp = &*socket.nsp, why = why.node_reason(), "socket disconnected");
        if let Some(admin) = &self.admin_events {
            admin.socket_disconnected(socket, why.node_reason());
        }
    }

    /// Disconnects a socket from its namespace by server decision: the client
    /// gets a DISCONNECT packet and does not reconnect on its own.
    pub fn disconnect_socket(&self, socket: &Arc<Socket>, close_connection: bool) {
        self.server_disconnect(socket, SocketLeft::ServerNamespace, close_connection);
    }

    /// Disconnects a socket by server decision, as the disconnect table says
    /// for `why`: counted when it has a server label, a CONNECT_ERROR when it
    /// has one (else a DISCONNECT), and the connection closed when asked or
    /// when it holds no other namespace.
    fn server_disconnect(&self, socket: &Arc<Socket>, why: SocketLeft, close_connection: bool) {
        if !socket.conn.data.remove_id(socket.id) {
            return;
        }
        if let Some(label) = why.server_label() {
            self.metrics
                .server_disconnects
                .with_label_values(&[label])
                .inc();
            tracing::info!(socket = %socket.id, user = ?socket.user, reason = label, "disconnecting socket");
        }
        let frame = match why.connect_error() {
            Some((message, reason)) => packets::connect_error(
                &socket.nsp,
                message,
                Some(serde_json::json!({ "reason": reason })),
            ),
            None => packets::disconnect(&socket.nsp),
        };
        socket.send_all(&[frame]);
        self.remove_socket(socket, why);
        if close_connection || !socket.conn.data.has_sockets() {
            socket.conn.close(CloseReason::ServerClosed);
        }
    }

    /// Disconnects every socket whose token expired (plus `auth.expiry_grace_s`)
    /// once a second, until `shutdown`. The client gets a CONNECT_ERROR
    /// "token expired" so it can refresh its token and reconnect.
    pub fn spawn_expiry_sweeper(self: &Arc<Self>, shutdown: CancellationToken) {
        let io = self.clone();
        // Recovery sessions are saved again every half of their lifetime.
        let refresh_every = self
            .recovery
            .as_ref()
            .map(|r| (r.max_disconnection_ms / 2000).max(1));
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut ticks = 0u64;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        io.expire_sockets();
                        io.expire_acks();
                        ticks += 1;
                        if refresh_every.is_some_and(|every| ticks.is_multiple_of(every)) {
                            io.refresh_sessions();
                        }
                    }
                }
            }
        });
    }

    fn expire_sockets(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let cutoff = now.saturating_sub(self.expiry_grace_s);
        for socket in self.hub.take_expired(cutoff) {
            self.server_disconnect(&socket, SocketLeft::TokenExpired, false);
        }
    }

    fn decode_result(&self, conn: &Conn, result: Result<Packet, ParseError>) {
        match result {
            Ok(packet) => self.on_packet(conn, packet),
            Err(ParseError::NeedsMoreBinaryData) => {}
            Err(err) => self.refuse_packet(conn, BadPacket::Unparsable, &err.to_string()),
        }
    }
}

/// The client event that asks for a room's members.
const PRESENCE_EVENT: &str = "presence";

/// Refused CONNECTs on one session before it is closed.
const MAX_REFUSED_CONNECTS: u8 = 3;

/// Refused CONNECTs happen at the rate clients send them.
static CONNECT_REFUSED_LOG: crate::log_throttle::LogThrottle =
    crate::log_throttle::LogThrottle::new(std::time::Duration::from_secs(10));

/// Unauthenticated sessions time out at the rate clients open them.
static CONNECT_TIMEOUT_LOG: crate::log_throttle::LogThrottle =
    crate::log_throttle::LogThrottle::new(std::time::Duration::from_secs(10));

impl EngineHandler for SocketIo {
    type Data = Client;

    fn new_data(&self, _handshake: &Handshake) -> Client {
        Client::default()
    }

    fn on_open(&self, conn: &Conn) {
        // Close connections that never CONNECT to a namespace.
        let weak: Weak<Connection<Client>> = Arc::downgrade(conn);
        let timeout = self.connect_timeout;
        let metrics = self.metrics.clone();
        // Per connection, untracked: it holds the connection weakly and ends
        // after `socketio.connect_timeout`, whatever happens to it.
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(conn) = weak.upgrade()
                && !conn.is_closed()
                && !conn.data.has_sockets()
            {
                metrics
                    .connect_refused
                    .with_label_values(&["connect_timeout"])
                    .inc();
                if let Some(suppressed) = CONNECT_TIMEOUT_LOG.allow() {
                    tracing::info!(sid = %conn.sid, suppressed, "no CONNECT within socketio.connect_timeout_ms; closing");
                }
                conn.close(CloseReason::ServerClosed);
            }
        });
    }

    fn on_message(&self, conn: &Conn, text: Str) {
        let result = CommonParser.decode_str(&self.parse_config, &conn.data.parser, text);
        self.decode_result(conn, result);
    }

    fn on_binary(&self, conn: &Conn, data: Bytes) {
        let result = CommonParser.decode_bin(&self.parse_config, &conn.data.parser, data);
        self.decode_result(conn, result);
    }

    fn on_close(&self, conn: &Conn, reason: CloseReason) {
        if let Some(admin) = &self.admin
            && conn.data.is_admin()
        {
            admin.on_disconnect(conn);
        }
        for socket in conn
            .data
            .take_all()
            .into_iter()
            .filter_map(|id| self.hub.get(id))
        {
            self.remove_socket(&socket, SocketLeft::Closed(reason));
        }
    }

    fn on_upgrade(&self, conn: &Conn) {
        if let Some(admin) = &self.admin_events {
            for socket in conn
                .data
                .sockets()
                .into_iter()
                .filter_map(|id| self.hub.get(id))
            {
                admin.socket_upgraded(&socket);
            }
        }
    }
}
