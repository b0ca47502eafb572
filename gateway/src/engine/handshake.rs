//! What the gateway knows about a client from the HTTP request that opened its
//! Engine.IO session: the input to authentication and the `handshake` that
//! `fetchSockets()` reports to Node servers.

use std::net::{IpAddr, SocketAddr};

/// The opening request of an Engine.IO session, kept for the session's life.
///
/// Only what authentication and the adapter's `fetchSockets` need is kept, so
/// an idle connection does not carry every header of its first request.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Headers of the opening request (polling handshake or websocket upgrade).
    pub headers: http::HeaderMap,
    /// The raw query string, without the leading `?`.
    pub query: String,
    /// The peer address as seen by the gateway (nginx's, behind a proxy).
    pub remote: SocketAddr,
    /// Unix time in milliseconds when the session opened.
    pub issued_ms: u64,
    /// The client address: the peer, or behind `server.trusted_proxies` the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy
    /// (resolved once, when the session opens; see [`crate::client_ip`]).
    pub client_ip: IpAddr,
}

impl Handshake {
    /// The value of one query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded_pairs(&self.query)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The value of one cookie from the `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v.trim_matches('"')))
    }

    /// The client address, as used by per-address limits and logs.
    pub fn client_address(&self) -> String {
        self.client_ip.to_string()
    }
}

fn form_urlencoded_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(pair), String::new()),
        })
}

/// Decodes `%XX` escapes and `+` as space; invalid escapes are kept as written.
pub fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(query: &str, cookie: Option<&str>) -> Handshake {
        let mut headers = http::HeaderMap::new();
        if let Some(c) = cookie {
            headers.insert(http::header::COOKIE, c.parse().unwrap());
        }
        Handshake {
            headers,
            query: query.into(),
            remote: "127.0.0.1:5000".parse().unwrap(),
            issued_ms: 0,
            client_ip: "127.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn reads_query_and_cookie() {
        let h = handshake(
            "EIO=4&transport=polling&token=a%2Eb+c",
            Some("x=1; token=abc.def"),
        );
        assert_eq!(h.query_param("token").as_deref(), Some("a.b c"));
        assert_eq!(h.query_param("EIO").as_deref(), Some("4"));
        assert_eq!(h.query_param("missing"), None);
        assert_eq!(h.cookie("token").as_deref(), Some("abc.def"));
        assert_eq!(h.cookie("nope"), None);
    }

    #[test]
    fn bad_escapes_are_kept() {
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
