//! The text of the Socket.IO packets the gateway itself writes.
//!
//! Events from the bus are encoded by `switchboard-wire`; what is left here
//! are the few control packets, with the namespace prefix rule of the
//! protocol: the main namespace `/` is implicit, others are written `/nsp,`.

use serde_json::Value;

use crate::engine::Frame;

fn with_nsp(kind: char, nsp: &str, rest: &str) -> Frame {
    let mut s = String::with_capacity(2 + nsp.len() + rest.len() + 1);
    s.push('4');
    s.push(kind);
    if nsp != "/" {
        s.push_str(nsp);
        s.push(',');
    }
    s.push_str(rest);
    Frame::text(s)
}

/// `0` CONNECT reply: `40{"sid":"..."}`.
pub fn connect(nsp: &str, sid: &str) -> Frame {
    with_nsp('0', nsp, &serde_json::json!({ "sid": sid }).to_string())
}

/// `0` CONNECT reply with a recovery session: `40{"sid":"...","pid":"..."}`.
pub fn connect_with_pid(nsp: &str, sid: &str, pid: &str) -> Frame {
    with_nsp(
        '0',
        nsp,
        &serde_json::json!({ "sid": sid, "pid": pid }).to_string(),
    )
}

/// `4` CONNECT_ERROR: `44{"message":"...","data":{...}}`.
pub fn connect_error(nsp: &str, message: &str, data: Option<Value>) -> Frame {
    let mut body = serde_json::json!({ "message": message });
    if let Some(data) = data {
        body["data"] = data;
    }
    with_nsp('4', nsp, &body.to_string())
}

/// `1` DISCONNECT, sent when the server removes a socket from a namespace.
pub fn disconnect(nsp: &str) -> Frame {
    with_nsp('1', nsp, "")
}

/// `3` ACK with JSON arguments: `43<id>[...]`.
pub fn ack(nsp: &str, id: i64, args: &Value) -> Frame {
    with_nsp('3', nsp, &format!("{id}{args}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: Frame) -> String {
        match f {
            Frame::Text(t) => t.to_string(),
            other => panic!("not a text frame: {other:?}"),
        }
    }

    #[test]
    fn namespace_prefix_only_outside_main() {
        assert_eq!(text(connect("/", "abc")), r#"40{"sid":"abc"}"#);
        assert_eq!(text(connect("/admin", "abc")), r#"40/admin,{"sid":"abc"}"#);
        assert_eq!(text(disconnect("/")), "41");
        assert_eq!(text(disconnect("/x")), "41/x,");
        assert_eq!(
            text(ack("/", 7, &serde_json::json!([{"ok": true}]))),
            r#"437[{"ok":true}]"#
        );
        assert_eq!(
            text(connect_error(
                "/",
                "nope",
                Some(serde_json::json!({"reason": "expired"}))
            )),
            r#"44{"message":"nope","data":{"reason":"expired"}}"#
        );
    }
}
