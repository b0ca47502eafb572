//! Sockets as the Admin UI draws them: the `SerializedSocket` shape of
//! `@socket.io/admin-ui` (`{id, clientId, transport, nsp, data, handshake,
//! rooms}`), for gateway sockets and for the sockets other servers report
//! through the adapter's fetchSockets.
//!
//! Credentials never leave the gateway: the `authorization`, `cookie` and
//! `proxy-authorization` headers and the token query parameter are dropped
//! from the handshake, and the CONNECT payload (`auth`) is not shown at all.

use serde_json::{Map, Value, json};
use switchboard_wire::{FetchedSocket, msgpack_to_json};

use crate::{engine::Handshake, socketio::Socket};

/// Headers that carry credentials.
const SECRET_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// A gateway socket, with `data` = its verified token claims.
pub fn socket(socket: &Socket, rooms: Vec<String>, path: &str, token_param: &str) -> Value {
    let conn = &socket.conn;
    let rooms: Vec<String> = std::iter::once(socket.id.to_string())
        .chain(rooms)
        .collect();
    json!({
        "id": socket.id.as_str(),
        "clientId": conn.sid.as_str().get(..12).unwrap_or(conn.sid.as_str()),
        "transport": conn.transport().as_str(),
        "nsp": &*socket.nsp,
        "data": Value::Object(socket.claims.clone()),
        "handshake": handshake(&conn.handshake, path, token_param),
        "rooms": rooms,
    })
}

/// The handshake fields the UI shows, without credentials.
pub fn handshake(h: &Handshake, path: &str, token_param: &str) -> Value {
    let mut headers = Map::new();
    for (name, value) in h.headers.iter() {
        if SECRET_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.insert(name.as_str().to_string(), Value::String(value));
    }
    let mut query = Map::new();
    let mut kept = Vec::new();
    for (pair, key, value) in crate::engine::query::pairs(&h.query) {
        if key == token_param {
            continue;
        }
        query.insert(key.into_owned(), Value::String(value.into_owned()));
        kept.push(pair);
    }
    // The gateway keeps only the headers authentication reads (memory per
    // connection, and the client address is resolved once into
    // `client_ip`), so `headers` holds none of them here; TLS
    // ends at the proxy (`secure` false) and the origin is not kept.
    json!({
        "address": h.client_address(),
        "headers": headers,
        "query": query,
        "issued": h.issued_ms,
        "secure": false,
        "time": js_date(h.issued_ms),
        "url": format!("{path}?{}", kept.join("&")),
        "xdomain": false,
    })
}

/// A socket another server (gateway or Node) reported through fetchSockets.
/// An instrumented Node server keeps `clientId` and `transport` in
/// `data._admin`; they are taken out of `data` as the UI's serializer does.
pub fn fetched(socket: &FetchedSocket, nsp: &str) -> Value {
    let mut data = msgpack_to_json(&socket.data);
    let admin = data
        .as_object_mut()
        .and_then(|d| d.remove("_admin"))
        .unwrap_or(Value::Null);
    let mut handshake = msgpack_to_json(&socket.handshake);
    if let Some(h) = handshake.as_object_mut() {
        h.remove("auth");
        if let Some(Value::Object(headers)) = h.get_mut("headers") {
            for name in SECRET_HEADERS {
                headers.remove(name);
            }
        }
    }
    json!({
        "id": socket.id,
        "clientId": admin.get("clientId").cloned().unwrap_or(Value::Null),
        "transport": admin.get("transport").cloned().unwrap_or(Value::Null),
        "nsp": nsp,
        "data": data,
        "handshake": handshake,
        "rooms": socket.rooms,
    })
}

/// A JavaScript `Date` as JSON shows it (`toString()` would be local time;
/// the UI only parses it).
pub fn js_date(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm), so that no date crate is needed for one ISO string.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_as_javascript_writes_them() {
        assert_eq!(js_date(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(js_date(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(js_date(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn handshake_without_credentials() {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "Bearer secret".parse().unwrap());
        headers.insert("cookie", "token=secret".parse().unwrap());
        headers.insert("user-agent", "test".parse().unwrap());
        let h = Handshake {
            headers: headers.into(),
            query: "EIO=4&transport=polling&token=secret&room=a%20b".into(),
            remote: "10.0.0.7:5000".parse().unwrap(),
            issued_ms: 0,
            client_ip: "10.0.0.7".parse().unwrap(),
        };
        let v = handshake(&h, "/socket.io/", "token");
        assert_eq!(v["address"], "10.0.0.7");
        assert_eq!(v["headers"], json!({"user-agent": "test"}));
        assert_eq!(
            v["query"],
            json!({"EIO": "4", "transport": "polling", "room": "a b"})
        );
        assert!(!v.to_string().contains("secret"), "{v}");
        assert_eq!(v["url"], "/socket.io/?EIO=4&transport=polling&room=a%20b");
    }
}
