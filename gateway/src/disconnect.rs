//! Why a connection or a socket ends: one table, like centrifuge's
//! `disconnect.go`.
//!
//! Each reason has its metric label (`switchboard_engine_closed_total{reason}`
//! for connections, `switchboard_server_disconnects_total{reason}` for
//! sockets the gateway drops), the websocket close frame it sends (code and
//! text; none when the peer is already gone), what a polling client's last
//! poll gets, whether the client should reconnect, and the wording Node's
//! Socket.IO uses (which the Admin UI shows). Every place that closes a
//! connection or disconnects a socket names one of these reasons; the
//! transports and the metrics read the rest from here.

/// Why an Engine.IO session (a connection) ended; logged, counted, and
/// handed to the Socket.IO layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent an Engine.IO close packet or closed the websocket.
    ClientClosed,
    /// The transport failed (reset, write error, bad frame).
    TransportError,
    /// No pong within `ping_timeout` after a ping.
    PingTimeout,
    /// The client broke the protocol (bad packet, concurrent polls, oversize).
    ProtocolError,
    /// The layer above closed it (Socket.IO reasons such as connect timeout).
    ServerClosed,
    /// The gateway is shutting down; the client should reconnect elsewhere.
    ShuttingDown,
    /// The client does not read fast enough; its queue hit the bound.
    SlowConsumer,
}

/// What the table says about one [`CloseReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseSpec {
    /// Stable label for logs and `switchboard_engine_closed_total{reason}`.
    pub label: &'static str,
    /// The websocket close frame (code, text); `None` when the peer is
    /// already gone and no frame is sent.
    pub ws_close: Option<(u16, &'static str)>,
    /// The Engine.IO packet a pending poll gets: `6` (noop) when the client
    /// closed it itself, `1` (close) otherwise.
    pub last_poll: &'static str,
    /// Whether the client is expected to reconnect (Socket.IO clients do so
    /// on their own after these).
    pub reconnect: bool,
    /// Node's Engine.IO wording for it (the Admin UI's disconnection chart).
    pub node_reason: &'static str,
}

impl CloseReason {
    /// Every reason, to read each labelled series.
    pub const ALL: [CloseReason; 7] = [
        CloseReason::ClientClosed,
        CloseReason::TransportError,
        CloseReason::PingTimeout,
        CloseReason::ProtocolError,
        CloseReason::ServerClosed,
        CloseReason::ShuttingDown,
        CloseReason::SlowConsumer,
    ];

    /// The table.
    pub const fn spec(self) -> CloseSpec {
        let (label, ws_close, reconnect, node_reason) = match self {
            CloseReason::ClientClosed => ("client_closed", None, false, "transport close"),
            CloseReason::TransportError => ("transport_error", None, true, "transport error"),
            CloseReason::PingTimeout => (
                "ping_timeout",
                Some((4000, "ping timeout")),
                true,
                "ping timeout",
            ),
            CloseReason::ProtocolError => (
                "protocol_error",
                Some((1002, "protocol error")),
                false,
                "parse error",
            ),
            CloseReason::ServerClosed => (
                "server_closed",
                Some((1000, "closed by server")),
                false,
                "forced close",
            ),
            CloseReason::ShuttingDown => (
                "shutting_down",
                Some((1001, "gateway shutting down; reconnect")),
                true,
                "server shutting down",
            ),
            CloseReason::SlowConsumer => (
                "slow_consumer",
                Some((4008, "slow consumer: outbound queue full")),
                true,
                "forced close",
            ),
        };
        let last_poll = match self {
            CloseReason::ClientClosed => "6",
            _ => "1",
        };
        CloseSpec {
            label,
            ws_close,
            last_poll,
            reconnect,
            node_reason,
        }
    }

    /// Stable label for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        self.spec().label
    }
}

/// Why one socket left its namespace (its connection may stay open for
/// other namespaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketLeft {
    /// The client sent DISCONNECT for the namespace.
    ClientNamespace,
    /// The gateway disconnected it (`disconnectSockets`, admin action).
    ServerNamespace,
    /// Its token expired (plus `auth.expiry_grace_s`); the client gets a
    /// CONNECT_ERROR so it can refresh its token and reconnect.
    TokenExpired,
    /// Its connection ended.
    Closed(CloseReason),
}

impl SocketLeft {
    /// Node's Socket.IO wording (what the Admin UI shows).
    pub const fn node_reason(self) -> &'static str {
        match self {
            SocketLeft::ClientNamespace => "client namespace disconnect",
            SocketLeft::ServerNamespace => "server namespace disconnect",
            SocketLeft::TokenExpired => "token expired",
            SocketLeft::Closed(reason) => reason.spec().node_reason,
        }
    }

    /// The label of `switchboard_server_disconnects_total`, for the reasons
    /// counted there (the gateway's own decisions with their own alerting).
    pub const fn server_label(self) -> Option<&'static str> {
        match self {
            SocketLeft::TokenExpired => Some("token_expired"),
            _ => None,
        }
    }

    /// The CONNECT_ERROR the client gets (message, `data.reason`), when it
    /// gets one instead of a DISCONNECT.
    pub const fn connect_error(self) -> Option<(&'static str, &'static str)> {
        match self {
            SocketLeft::TokenExpired => {
                Some(("authentication failed: token expired", "token_expired"))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn labels_are_unique_and_snake_case() {
        let labels: HashSet<_> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), CloseReason::ALL.len());
        for label in labels {
            assert!(
                label.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{label}"
            );
        }
    }

    #[test]
    fn labels_the_dashboards_use() {
        // deploy/grafana and deploy/prometheus query these by name.
        assert_eq!(CloseReason::SlowConsumer.as_str(), "slow_consumer");
        assert_eq!(CloseReason::PingTimeout.as_str(), "ping_timeout");
        assert_eq!(CloseReason::ShuttingDown.as_str(), "shutting_down");
        assert_eq!(
            SocketLeft::TokenExpired.server_label(),
            Some("token_expired")
        );
    }

    #[test]
    fn close_codes_are_valid_to_send() {
        for reason in CloseReason::ALL {
            if let Some((code, text)) = reason.spec().ws_close {
                // 1000-1003 and 1007-1011 are sendable; 4000-4999 are ours.
                assert!(
                    matches!(code, 1000..=1003 | 1007..=1011 | 4000..=4999),
                    "{reason:?}"
                );
                // A close frame's reason fits in 123 bytes.
                assert!(!text.is_empty() && text.len() <= 123, "{reason:?}");
            }
        }
    }

    #[test]
    fn no_frame_when_the_peer_is_gone() {
        assert_eq!(CloseReason::ClientClosed.spec().ws_close, None);
        assert_eq!(CloseReason::TransportError.spec().ws_close, None);
    }

    #[test]
    fn shutdown_and_overload_ask_for_a_reconnect() {
        assert!(CloseReason::ShuttingDown.spec().reconnect);
        assert!(CloseReason::SlowConsumer.spec().reconnect);
        assert!(!CloseReason::ServerClosed.spec().reconnect);
        assert!(!CloseReason::ClientClosed.spec().reconnect);
    }

    #[test]
    fn last_poll_is_noop_only_for_a_client_close() {
        for reason in CloseReason::ALL {
            let want = if reason == CloseReason::ClientClosed {
                "6"
            } else {
                "1"
            };
            assert_eq!(reason.spec().last_poll, want);
        }
    }

    #[test]
    fn node_wording() {
        assert_eq!(
            SocketLeft::Closed(CloseReason::ClientClosed).node_reason(),
            "transport close"
        );
        assert_eq!(
            SocketLeft::Closed(CloseReason::ProtocolError).node_reason(),
            "parse error"
        );
        assert_eq!(
            SocketLeft::ServerNamespace.node_reason(),
            "server namespace disconnect"
        );
        assert_eq!(
            SocketLeft::TokenExpired.connect_error(),
            Some(("authentication failed: token expired", "token_expired"))
        );
        assert_eq!(SocketLeft::ClientNamespace.connect_error(), None);
        assert_eq!(SocketLeft::ClientNamespace.server_label(), None);
    }
}
