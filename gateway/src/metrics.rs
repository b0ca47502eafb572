//! Prometheus metrics of one gateway.
//!
//! Each gateway owns its own [`prometheus::Registry`] rather than the global
//! default, so several gateways can run in one test process and `/metrics`
//! shows exactly this instance.

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every counter and gauge the gateway exports, registered once at start.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Open Engine.IO sessions by transport (`polling`, `websocket`).
    pub connections: IntGaugeVec,
    /// Engine.IO sessions opened since start.
    pub engine_opened: IntCounter,
    /// Engine.IO sessions closed, by reason.
    pub engine_closed: IntCounterVec,
    /// Polling sessions upgraded to websocket.
    pub upgrades: IntCounter,
    /// Engine.IO requests refused with an HTTP error, by Engine.IO error name.
    pub engine_errors: IntCounterVec,
    /// Connected Socket.IO sockets (one per namespace per connection).
    pub sockets: IntGauge,
    /// Successful Socket.IO connects, by namespace.
    pub connects: IntCounterVec,
    /// Refused Socket.IO connects, by reason (`expired`, `bad_signature`, ...).
    pub connect_refused: IntCounterVec,
    /// Packets from clients that broke the protocol, by reason.
    pub bad_packets: IntCounterVec,
    /// Events received from clients, by namespace.
    pub client_events: IntCounterVec,
    /// Rooms that currently hold at least one socket.
    pub rooms: IntGauge,
    /// Messages that arrived from the bus, by kind (`broadcast`, `request`).
    pub bus_in: IntCounterVec,
    /// Bus messages that could not be decoded, by kind.
    pub bus_decode_errors: IntCounterVec,
    /// Bus (Redis) connection state: 1 subscribed, 0 not.
    pub bus_up: IntGauge,
    /// Redis reconnect attempts.
    pub bus_reconnects: IntCounter,
    /// Times the bus subscription was lost.
    pub bus_outages: IntCounter,
    /// Publishes to the bus that failed, by origin.
    pub bus_publish_errors: IntCounterVec,
    /// Socket.IO packets queued to clients.
    pub messages_out: IntCounter,
    /// Bytes queued to clients (Engine.IO framing included).
    pub bytes_out: IntCounter,
    /// Volatile messages dropped for sockets that were not ready.
    pub volatile_dropped: IntCounter,
    /// Sockets the gateway disconnected, by reason (`token_expired`, `kicked`).
    pub server_disconnects: IntCounterVec,
    /// Client events refused, by reason (`rate_limited`).
    pub client_events_refused: IntCounterVec,
    /// Requests forwarded to the gateway owning their sid, by transport and outcome.
    pub forwarded: IntCounterVec,
    /// Requests naming a foreign sid that were not forwarded, by reason
    /// (`bad_sid`, `unknown_owner`, `peer_not_allowed`, `overloaded`).
    pub forward_refused: IntCounterVec,
    /// Live gateways in this gateway's peer directory (itself included).
    pub peer_directory_entries: IntGauge,
    /// Engine.IO message packets received from clients (any transport).
    pub packets_in: IntCounter,
    /// Bytes of those packets.
    pub bytes_in: IntCounter,
    /// Admin UI connects and actions refused, by reason
    /// (`invalid_credentials`, `readonly`, `bad_request`).
    pub admin_refused: IntCounterVec,
    /// Open TCP connections (HTTP and upgraded websockets).
    pub http_connections: IntGauge,
    /// Connections and requests refused at the HTTP layer, by reason
    /// (`max_connections`, `header_read_timeout`, `header_too_large`,
    /// `body_read_timeout`).
    pub http_rejected: IntCounterVec,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once per registry");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once per registry");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once per registry");
    g
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let connections = IntGaugeVec::new(
            Opts::new(
                "switchboard_connections",
                "Open Engine.IO sessions by transport",
            ),
            &["transport"],
        )
        .expect("static metric definition");
        r.register(Box::new(connections.clone()))
            .expect("metric registered once per registry");
        Metrics {
            connections,
            engine_opened: counter(
                &r,
                "switchboard_engine_sessions_opened_total",
                "Engine.IO sessions opened",
            ),
            engine_closed: counter_vec(
                &r,
                "switchboard_engine_sessions_closed_total",
                "Engine.IO sessions closed, by reason",
                &["reason"],
            ),
            upgrades: counter(
                &r,
                "switchboard_upgrades_total",
                "Polling sessions upgraded to websocket",
            ),
            engine_errors: counter_vec(
                &r,
                "switchboard_engine_errors_total",
                "Engine.IO requests refused, by error",
                &["error"],
            ),
            sockets: gauge(&r, "switchboard_sockets", "Connected Socket.IO sockets"),
            connects: counter_vec(
                &r,
                "switchboard_connects_total",
                "Successful Socket.IO connects, by namespace",
                &["namespace"],
            ),
            connect_refused: counter_vec(
                &r,
                "switchboard_connect_refused_total",
                "Refused Socket.IO connects, by reason",
                &["reason"],
            ),
            bad_packets: counter_vec(
                &r,
                "switchboard_bad_packets_total",
                "Client packets that broke the protocol, by reason",
                &["reason"],
            ),
            client_events: counter_vec(
                &r,
                "switchboard_client_events_total",
                "Events received from clients, by namespace",
                &["namespace"],
            ),
            rooms: gauge(&r, "switchboard_rooms", "Rooms with at least one socket"),
            bus_in: counter_vec(
                &r,
                "switchboard_bus_messages_total",
                "Messages received from the bus, by kind",
                &["kind"],
            ),
            bus_decode_errors: counter_vec(
                &r,
                "switchboard_bus_decode_errors_total",
                "Bus messages that could not be decoded, by kind",
                &["kind"],
            ),
            bus_up: gauge(
                &r,
                "switchboard_bus_up",
                "1 when the bus is connected and subscribed",
            ),
            bus_outages: counter(
                &r,
                "switchboard_bus_outages_total",
                "Times the bus subscription was lost",
            ),
            bus_reconnects: counter(
                &r,
                "switchboard_bus_reconnects_total",
                "Bus reconnect attempts",
            ),
            bus_publish_errors: counter_vec(
                &r,
                "switchboard_bus_publish_errors_total",
                "Failed publishes to the bus, by origin",
                &["origin"],
            ),
            messages_out: counter(
                &r,
                "switchboard_messages_out_total",
                "Socket.IO packets queued to clients",
            ),
            bytes_out: counter(&r, "switchboard_bytes_out_total", "Bytes queued to clients"),
            volatile_dropped: counter(
                &r,
                "switchboard_volatile_dropped_total",
                "Volatile messages dropped",
            ),
            server_disconnects: counter_vec(
                &r,
                "switchboard_server_disconnects_total",
                "Sockets disconnected by the gateway, by reason",
                &["reason"],
            ),
            client_events_refused: counter_vec(
                &r,
                "switchboard_client_events_refused_total",
                "Client events refused, by reason",
                &["reason"],
            ),
            forwarded: counter_vec(
                &r,
                "switchboard_forwarded_requests_total",
                "Requests forwarded to the sid's owner, by transport and outcome",
                &["transport", "outcome"],
            ),
            forward_refused: counter_vec(
                &r,
                "switchboard_forward_refused_total",
                "Requests for another gateway's sid that were not forwarded, by reason",
                &["reason"],
            ),
            peer_directory_entries: gauge(
                &r,
                "switchboard_peer_directory_entries",
                "Live gateways in the peer directory used for sid forwarding",
            ),
            packets_in: counter(
                &r,
                "switchboard_packets_in_total",
                "Engine.IO message packets received from clients",
            ),
            bytes_in: counter(
                &r,
                "switchboard_bytes_in_total",
                "Bytes of message packets received from clients",
            ),
            admin_refused: counter_vec(
                &r,
                "switchboard_admin_refused_total",
                "Admin UI connects and actions refused, by reason",
                &["reason"],
            ),
            http_connections: gauge(
                &r,
                "switchboard_http_connections",
                "Open TCP connections, HTTP and websocket",
            ),
            http_rejected: counter_vec(
                &r,
                "switchboard_http_rejected_total",
                "Connections and requests refused at the HTTP layer, by reason",
                &["reason"],
            ),
            registry: r,
        }
        .with_zero_series()
    }

    /// Creates the labelled series dashboards alert on, so they read 0
    /// instead of being absent until the first event.
    fn with_zero_series(self) -> Self {
        for transport in ["polling", "websocket"] {
            self.connections.with_label_values(&[transport]);
        }
        for kind in ["broadcast", "request"] {
            self.bus_in.with_label_values(&[kind]);
            self.bus_decode_errors.with_label_values(&[kind]);
        }
        self
    }

    /// The text exposition format served on `/metrics`.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
