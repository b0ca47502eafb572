//! Client events: the gateway has no application handlers, so an event a
//! client emits is published on the bus for API services to consume, on
//! `<key>-upstream#<nsp>#`, as a JSON envelope naming the authenticated
//! user. An event sent with an ack gets `{"ok":true,"receivers":N}` once the
//! bus accepted it, or `{"ok":false,"error":...}` if it did not.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{SocketIo, packets, socket::Socket};

/// The bus channel client events of `nsp` are published on.
pub fn channel(key: &str, nsp: &str) -> String {
    format!("{key}-upstream#{nsp}#")
}

/// Publishes one client event and answers its ack, if asked for.
pub(super) fn relay(
    io: &SocketIo,
    socket: Arc<Socket>,
    mut args: Vec<Value>,
    attachments: Vec<Bytes>,
    ack: Option<i64>,
) {
    let event = args.remove(0);
    let envelope = json!({
        "nsp": &*socket.nsp,
        "socket": socket.id.as_str(),
        "user": socket.user.as_deref(),
        "event": event,
        "args": args,
        "attachments": attachments
            .iter()
            .map(|a| base64::engine::general_purpose::STANDARD.encode(a))
            .collect::<Vec<_>>(),
    });
    let channel = channel(&io.upstream_key, &socket.nsp);
    let bus = io.bus.clone();
    let metrics = io.metrics.clone();
    // Tracked: shutdown lets a client event in flight reach the bus (within
    // `redis.publish_timeout_ms`) before the bus stops.
    io.tasks().spawn(async move {
        let reply = match bus
            .publish(&channel, envelope.to_string().into_bytes())
            .await
        {
            Ok(receivers) => json!([{ "ok": true, "receivers": receivers }]),
            Err(err) => {
                metrics
                    .bus_publish_errors
                    .with_label_values(&["client_event"])
                    .inc();
                tracing::warn!(socket = %socket.id, %err, "client event not published");
                json!([{ "ok": false, "error": err.to_string() }])
            }
        };
        if let Some(id) = ack {
            socket.send_all(&[packets::ack(&socket.nsp, id, &reply)]);
        }
    });
}
