//! A client event as the gateway forwards it to the API: the JSON body of a
//! `[[client.forward]] url` POST, and the `data` field of a
//! `[[client.forward]] stream` entry. Written by the gateway, read by the
//! broadcaster's stream consumer (and by API services in any language; the
//! shape is documented in `docs/protocol.md`).
//!
//! ```json
//! {"event":"create_ticket","args":[{"title":"printer"}],"user":"42",
//!  "claims":{"sub":"42","company_id":"c1"},"socket":"Zm9v...","nsp":"/",
//!  "rooms":["user:42","company:c1"],"gateway":"a1b2c3","attachments":[]}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One forwarded client event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientEvent {
    /// The event name the client emitted.
    pub event: String,
    /// Its arguments after the name (the ack callback is not one).
    pub args: Vec<Value>,
    /// The verified user id from the token; `null` for an anonymous socket.
    pub user: Option<String>,
    /// The verified claims the gateway keeps for the socket (user, roles,
    /// claims its rules read, `client.hooks.claims`, `iss`, `exp`).
    pub claims: Map<String, Value>,
    /// The Socket.IO socket id (usable as a room to answer that socket).
    pub socket: String,
    /// The namespace.
    pub nsp: String,
    /// The rooms the socket is in.
    pub rooms: Vec<String>,
    /// The uid of the gateway that holds the socket.
    pub gateway: String,
    /// Binary attachments, base64; the args hold Socket.IO's
    /// `{"_placeholder":true,"num":N}` where each goes.
    #[serde(default)]
    pub attachments: Vec<String>,
}

/// The stream entry field holding the event name.
pub const STREAM_EVENT_FIELD: &str = "event";
/// The stream entry field holding the [`ClientEvent`] JSON.
pub const STREAM_DATA_FIELD: &str = "data";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_field_names() {
        let e = ClientEvent {
            event: "create_ticket".into(),
            args: vec![serde_json::json!({"title": "x"})],
            user: Some("42".into()),
            claims: Map::new(),
            socket: "s".into(),
            nsp: "/".into(),
            rooms: vec!["user:42".into()],
            gateway: "g".into(),
            attachments: vec![],
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"event":"create_ticket","args":[{"title":"x"}],"user":"42","claims":{},"socket":"s","nsp":"/","rooms":["user:42"],"gateway":"g","attachments":[]}"#
        );
        assert_eq!(serde_json::from_str::<ClientEvent>(&text).unwrap(), e);
    }
}
