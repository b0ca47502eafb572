//! The server side of the official Socket.IO Admin UI
//! (`@socket.io/admin-ui` 0.5.x), so that the UI works against gateways as
//! it does against Node servers instrumented with `instrument()`.
//!
//! - [`auth`]: the UI's basic auth (bcrypt) and its session ids;
//! - [`stats`]: `server_stats` every 2 s with per-second aggregated events;
//! - [`serialize`]: sockets in the UI's `SerializedSocket` shape, without credentials;
//! - [`fetch`]: `all_sockets` across the fleet through the adapter's fetchSockets;
//! - [`actions`]: `join`, `leave`, `_disconnect` and `emit` from the UI, fleet-wide;
//! - [`ui`]: the UI's static files under `/admin/`.
//!
//! Admin sockets live here, not in the room index: they never receive app
//! broadcasts and never count as app clients. Every admin emit goes to the
//! local admin sockets and, as a redis-adapter broadcast to the admin
//! namespace, to every other gateway and Node server, so a UI connected to
//! any of them sees the whole fleet; broadcasts to the admin namespace from
//! others are delivered to the local admin sockets.

pub mod actions;
pub mod auth;
pub mod fetch;
pub mod serialize;
pub mod stats;
pub mod ui;

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use bytes::Bytes;
use engineioxide_core::Sid;
use parking_lot::Mutex;
use serde_json::{Value, json};
use switchboard_wire::{
    BroadcastMessage, BroadcastOptions, BusPacket, decode_broadcast, encode_broadcast,
    encode_event, json_to_msgpack,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    bus::Bus,
    config::{AdminMode, Config},
    engine::{Frame, TransportKind},
    metrics::Metrics,
    socketio::{Conn, Socket, SocketIo},
};

use auth::{AdminAuth, LoggedIn};

/// How often `server_stats` is emitted (the package's interval; the UI marks
/// a server unhealthy after 10 s without one).
const STATS_EVERY: Duration = Duration::from_secs(2);
/// Admin emits waiting to be published on the bus; beyond, they are dropped
/// (the UI is a monitor, the app's traffic must not wait for it).
const PUBLISH_QUEUE: usize = 4096;

/// One connected Admin UI.
struct AdminSocket {
    id: Sid,
    conn: Conn,
}

/// The Admin UI server of one gateway.
pub struct Admin {
    nsp: Arc<str>,
    readonly: bool,
    development: bool,
    /// `server.path`, shown in handshakes.
    path: String,
    /// `auth.query_param`, removed from handshakes.
    token_param: String,
    auth: AdminAuth,
    stats: stats::Stats,
    fetches: fetch::Fetches,
    /// Admin sockets by Engine.IO sid (one per connection).
    sockets: Mutex<HashMap<Sid, AdminSocket>>,
    /// The bus channel of the admin namespace, `<key>#<nsp>#`.
    channel: String,
    uid: String,
    /// Encoded broadcasts for the publisher task.
    outbox: OnceLock<mpsc::Sender<Vec<u8>>>,
    /// The session layer, for the async connect path and the timers.
    io: OnceLock<Weak<SocketIo>>,
    metrics: Metrics,
    /// The UI's static files, when `admin.ui_dir` is set.
    pub ui: Option<ui::UiFiles>,
}

impl Admin {
    /// The admin server the config asks for, if enabled.
    pub fn from_config(
        config: &Config,
        bus: &Arc<Bus>,
        uid: &str,
        metrics: &Metrics,
    ) -> Option<Arc<Admin>> {
        let a = &config.admin;
        if !a.enabled {
            return None;
        }
        let shared = config.redis.enabled().then(|| bus.clone());
        Some(Arc::new(Admin {
            nsp: Arc::from(a.namespace.as_str()),
            readonly: a.readonly,
            development: a.mode == AdminMode::Development,
            path: config.server.path.clone(),
            token_param: config.auth.query_param.clone(),
            auth: AdminAuth::new(&a.username, &a.password_bcrypt, shared),
            stats: stats::Stats::new(metrics),
            fetches: fetch::Fetches::default(),
            sockets: Mutex::new(HashMap::new()),
            channel: switchboard_wire::Channels::new(config.redis.key.clone())
                .broadcast(&a.namespace),
            uid: uid.to_string(),
            outbox: OnceLock::new(),
            io: OnceLock::new(),
            metrics: metrics.clone(),
            ui: a.ui_dir.as_deref().map(ui::UiFiles::new),
        }))
    }

    /// The admin namespace (`/admin`).
    pub fn nsp(&self) -> &str {
        &self.nsp
    }

    /// Whether the per-socket events and `all_sockets` are on.
    pub fn development(&self) -> bool {
        self.development
    }

    /// The bus pattern of the admin namespace, for other servers' emits.
    pub fn bus_pattern(&self) -> String {
        format!("{}*", self.channel)
    }

    /// The UI's feature list (`config.supportedFeatures`): what `instrument()`
    /// announces for Socket.IO 4, minus the actions when read-only.
    fn features(&self) -> Vec<&'static str> {
        let mut features = if self.readonly {
            Vec::new()
        } else {
            vec![
                "EMIT",
                "JOIN",
                "LEAVE",
                "DISCONNECT",
                "MJOIN",
                "MLEAVE",
                "MDISCONNECT",
            ]
        };
        features.push("AGGREGATED_EVENTS");
        if self.development {
            features.push("ALL_EVENTS");
        }
        features
    }

    /// Starts the stats timer and the bus publisher, until `shutdown`.
    pub fn start(self: &Arc<Self>, io: &Arc<SocketIo>, shutdown: CancellationToken) {
        let _ = self.io.set(Arc::downgrade(io));
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PUBLISH_QUEUE);
        let _ = self.outbox.set(tx);
        let bus = io.bus.clone();
        let channel = self.channel.clone();
        let metrics = self.metrics.clone();
        let stop = shutdown.clone();
        // One publisher keeps the emits in order (socket_connected before
        // room_joined), as the UI applies them. Both tasks are tracked and
        // end at `shutdown`.
        io.tasks().spawn(async move {
            loop {
                let payload = tokio::select! {
                    _ = stop.cancelled() => return,
                    p = rx.recv() => match p { Some(p) => p, None => return },
                };
                if let Err(err) = bus.publish(&channel, payload).await {
                    metrics
                        .bus_publish_errors
                        .with_label_values(&["admin"])
                        .inc();
                    tracing::debug!(%err, "admin emit not published");
                }
            }
        });
        let admin = self.clone();
        let tasks = io.tasks();
        let io = Arc::downgrade(io);
        tasks.spawn(async move {
            let mut sample = tokio::time::interval(Duration::from_secs(1));
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = sample.tick() => {}
                }
                let Some(io) = io.upgrade() else { return };
                admin.stats.sample(&admin.metrics, serialize::now_ms());
                if n.is_multiple_of(STATS_EVERY.as_secs()) {
                    admin.emit_stats(&io);
                }
                n += 1;
            }
        });
    }

    fn emit_stats(&self, io: &SocketIo) {
        let (admin_conns, admin_polling) = {
            let sockets = self.sockets.lock();
            let polling = sockets
                .values()
                .filter(|s| s.conn.transport() == TransportKind::Polling)
                .count();
            (sockets.len(), polling)
        };
        let gauge = |t: &str| io.metrics.connections.with_label_values(&[t]).get().max(0) as usize;
        let polling = gauge("polling");
        let clients = (polling + gauge("websocket")).saturating_sub(admin_conns);
        let mut namespaces: Vec<Value> = io
            .namespaces
            .iter()
            .map(|nsp| json!({"name": &**nsp, "socketsCount": io.hub.socket_count(nsp)}))
            .collect();
        namespaces.push(json!({"name": &*self.nsp, "socketsCount": admin_conns}));
        let stats =
            self.stats
                .server_stats(clients, polling.saturating_sub(admin_polling), namespaces);
        self.emit("server_stats", vec![stats]);
    }

    /// Sends `[event, ...args]` to every admin socket of the fleet: the
    /// local ones directly, the others through the bus.
    fn emit(&self, event: &str, args: Vec<Value>) {
        let mut data = Vec::with_capacity(args.len() + 1);
        data.push(Value::from(event));
        data.extend(args);
        let data = Value::Array(data);
        self.deliver_local(&format!("2{},{data}", self.nsp));
        if let Some(outbox) = self.outbox.get() {
            let msg = BroadcastMessage {
                uid: self.uid.clone(),
                packet: BusPacket::event(&*self.nsp, json_to_msgpack(&data)),
                opts: BroadcastOptions::default(),
            };
            if outbox.try_send(encode_broadcast(&msg)).is_err() {
                tracing::debug!(
                    event,
                    "admin publish queue full; emit not shared with other servers"
                );
            }
        }
    }

    fn deliver_local(&self, payload: &str) {
        let frame = Frame::message(payload);
        for s in self.sockets.lock().values() {
            s.conn.send(frame.clone());
        }
    }

    /// A broadcast to the admin namespace from another server: to the local UIs.
    pub fn on_bus_broadcast(&self, payload: &Bytes) {
        let Ok(msg) = decode_broadcast(payload) else {
            tracing::debug!("undecodable admin broadcast dropped");
            return;
        };
        if msg.uid == self.uid || self.sockets.lock().is_empty() {
            return;
        }
        match encode_event(&self.nsp, &msg.packet.data, None) {
            Ok(packet) if packet.attachments.is_empty() => self.deliver_local(&packet.text),
            _ => tracing::debug!("admin broadcast with attachments or no event dropped"),
        }
    }

    /// A fetchSockets answer on a response channel, maybe ours.
    pub fn on_bus_response(&self, nsp: &str, payload: &[u8]) {
        self.fetches.on_response(nsp, payload);
    }

    /// CONNECT to the admin namespace: checks the credentials off the
    /// packet path (bcrypt is slow on purpose), then greets the UI.
    pub fn on_connect(self: &Arc<Self>, conn: &Conn, auth: Option<Value>) {
        let admin = self.clone();
        let conn = conn.clone();
        // Per connection, untracked: one login (bcrypt, one Redis command
        // within its timeout) and the greeting; it ends with that.
        tokio::spawn(async move {
            let Some(logged_in) = admin.auth.login(auth.as_ref()).await else {
                admin
                    .metrics
                    .admin_refused
                    .with_label_values(&["invalid_credentials"])
                    .inc();
                tracing::warn!(sid = %conn.sid, client = %conn.handshake.client_address(), "admin connect refused: invalid credentials");
                conn.send(crate::socketio::packets_connect_error(
                    &admin.nsp,
                    "invalid credentials",
                ));
                return;
            };
            if conn.is_closed() {
                return;
            }
            let id = {
                let mut sockets = admin.sockets.lock();
                if let Some(existing) = sockets.get(&conn.sid) {
                    existing.id
                } else {
                    let id = Sid::new();
                    sockets.insert(
                        conn.sid,
                        AdminSocket {
                            id,
                            conn: conn.clone(),
                        },
                    );
                    conn.data.set_admin(true);
                    id
                }
            };
            tracing::info!(sid = %conn.sid, client = %conn.handshake.client_address(), "admin UI connected");
            conn.send(crate::socketio::packets_connect(&admin.nsp, id.as_str()));
            if let LoggedIn::NewSession(session) = logged_in {
                admin.send_to(&conn, "session", vec![Value::from(session)]);
            }
            admin.send_to(
                &conn,
                "config",
                vec![json!({"supportedFeatures": admin.features()})],
            );
            let Some(io) = admin.io.get().and_then(Weak::upgrade) else {
                return;
            };
            if admin.development {
                let sockets = admin.all_sockets(&io).await;
                admin.send_to(&conn, "all_sockets", vec![Value::Array(sockets)]);
            }
            admin.emit_stats(&io);
        });
    }

    fn send_to(&self, conn: &Conn, event: &str, args: Vec<Value>) {
        let mut data = Vec::with_capacity(args.len() + 1);
        data.push(Value::from(event));
        data.extend(args);
        conn.send(Frame::message(&format!(
            "2{},{}",
            self.nsp,
            Value::Array(data)
        )));
    }

    /// Every socket of every app namespace, here and on the other servers.
    async fn all_sockets(&self, io: &SocketIo) -> Vec<Value> {
        let mut all = Vec::new();
        for nsp in &io.namespaces {
            all.extend(
                io.hub
                    .targets::<&str>(nsp, &[], &[])
                    .iter()
                    .map(|s| self.serialize(s)),
            );
            all.extend(self.fetches.remote_sockets(io, nsp).await);
        }
        all
    }

    /// A socket as this gateway answers fetchSockets while the admin is on:
    /// the handshake without credentials, and `data._admin` with the client
    /// id and transport, as `instrument()` keeps them on Node sockets.
    pub fn fetched(&self, socket: &Socket) -> switchboard_wire::FetchedSocket {
        let mut v = self.serialize(socket);
        let mut data = v["data"].take();
        if let Value::Object(d) = &mut data {
            d.insert(
                "_admin".into(),
                json!({"clientId": v["clientId"].take(), "transport": v["transport"].take()}),
            );
        }
        let mut handshake = v["handshake"].take();
        handshake["auth"] = json!({});
        switchboard_wire::FetchedSocket {
            id: socket.id.to_string(),
            handshake: json_to_msgpack(&handshake),
            rooms: std::iter::once(socket.id.to_string())
                .chain(self.rooms_of(socket))
                .collect(),
            data: json_to_msgpack(&data),
        }
    }

    fn serialize(&self, socket: &Socket) -> Value {
        serialize::socket(socket, self.rooms_of(socket), &self.path, &self.token_param)
    }

    /// A socket's rooms, from the hub of the session layer this admin serves.
    fn rooms_of(&self, socket: &Socket) -> Vec<String> {
        self.io
            .get()
            .and_then(Weak::upgrade)
            .map(|io| io.hub.rooms_of(socket.id))
            .unwrap_or_default()
    }

    /// An event from a UI: an action on app sockets, unless read-only.
    pub fn on_event(&self, io: &SocketIo, conn: &Conn, args: Vec<Value>) {
        if !self.sockets.lock().contains_key(&conn.sid) {
            return;
        }
        if self.readonly {
            self.metrics
                .admin_refused
                .with_label_values(&["readonly"])
                .inc();
            tracing::info!(sid = %conn.sid, event = ?args.first(), "admin action refused: admin.readonly is set");
            return;
        }
        if let Err(why) = actions::perform(io, &args) {
            self.metrics
                .admin_refused
                .with_label_values(&["bad_request"])
                .inc();
            tracing::info!(sid = %conn.sid, event = ?args.first(), why, "admin action refused");
        }
    }

    /// The UI left the admin namespace or its connection closed.
    pub fn on_disconnect(&self, conn: &Conn) {
        if self.sockets.lock().remove(&conn.sid).is_some() {
            conn.data.set_admin(false);
            tracing::info!(sid = %conn.sid, "admin UI disconnected");
        }
    }

    // Per-socket events (development mode only: the session layer calls
    // these through `SocketIo::admin_events`, which is `None` otherwise).

    /// A socket connected (`socket_connected(socket, date)`).
    pub fn socket_connected(&self, socket: &Socket) {
        self.emit("socket_connected", vec![self.serialize(socket), now()]);
    }

    /// A socket left (`socket_disconnected(nsp, id, reason, date)`).
    pub fn socket_disconnected(&self, socket: &Socket, reason: &str) {
        self.emit(
            "socket_disconnected",
            vec![
                Value::from(&*socket.nsp),
                Value::from(socket.id.as_str()),
                Value::from(reason),
                now(),
            ],
        );
    }

    /// A polling socket moved to websocket (`socket_updated`).
    pub fn socket_upgraded(&self, socket: &Socket) {
        self.emit(
            "socket_updated",
            vec![json!({"id": socket.id.as_str(), "nsp": &*socket.nsp, "transport": "websocket"})],
        );
    }

    /// Rooms joined (`room_joined(nsp, room, id, date)` per room).
    pub fn rooms_joined<S: AsRef<str>>(&self, socket: &Socket, rooms: &[S]) {
        self.room_events("room_joined", socket, rooms);
    }

    /// Rooms left (`room_left(nsp, room, id, date)` per room).
    pub fn rooms_left<S: AsRef<str>>(&self, socket: &Socket, rooms: &[S]) {
        self.room_events("room_left", socket, rooms);
    }

    fn room_events<S: AsRef<str>>(&self, event: &str, socket: &Socket, rooms: &[S]) {
        for room in rooms {
            self.emit(
                event,
                vec![
                    Value::from(&*socket.nsp),
                    Value::from(room.as_ref()),
                    Value::from(socket.id.as_str()),
                    now(),
                ],
            );
        }
    }

    /// A client event (`event_received(nsp, id, [event, ...args], date)`).
    pub fn event_received(&self, socket: &Socket, args: &[Value]) {
        self.emit(
            "event_received",
            vec![
                Value::from(&*socket.nsp),
                Value::from(socket.id.as_str()),
                Value::Array(args.to_vec()),
                now(),
            ],
        );
    }

    /// An event sent to sockets (`event_sent(nsp, id, [event, ...args], date)`
    /// per socket, as Node's `onAnyOutgoing` reports broadcasts).
    pub fn events_sent(&self, nsp: &str, ids: &[Sid], data: &rmpv::Value) {
        let args = switchboard_wire::msgpack_to_json(data);
        let date = now();
        for id in ids {
            self.emit(
                "event_sent",
                vec![
                    Value::from(nsp),
                    Value::from(id.as_str()),
                    args.clone(),
                    date.clone(),
                ],
            );
        }
    }
}

/// `new Date()` as it reaches the UI.
fn now() -> Value {
    Value::from(serialize::js_date(serialize::now_ms()))
}
