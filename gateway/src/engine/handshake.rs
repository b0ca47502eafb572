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
    /// The value of one query parameter, decoded as a form
    /// (`application/x-www-form-urlencoded`: `%XX` escapes and `+`; see
    /// [`super::query`]).
    pub fn query_param(&self, name: &str) -> Option<String> {
        super::query::param(&self.query, name)
    }

    /// The value of one cookie from the `Cookie` headers, percent-decoded
    /// and without surrounding double quotes (parsed by the `cookie` crate;
    /// a malformed cookie is skipped, not the whole header).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(cookie::Cookie::split_parse_encoded)
            .filter_map(Result::ok)
            .find(|c| c.name() == name)
            .map(|c| c.value_trimmed().to_string())
    }

    /// The client address, as used by per-address limits and logs.
    pub fn client_address(&self) -> String {
        self.client_ip.to_string()
    }
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
        let h = handshake("a=100%&b=%zz%41", None);
        assert_eq!(h.query_param("a").as_deref(), Some("100%"));
        assert_eq!(h.query_param("b").as_deref(), Some("%zzA"));
    }

    #[test]
    fn cookies_are_decoded_and_unquoted() {
        let h = handshake("", Some("a=1; token=%22x%20y%22; q=\"v\"; broken; z=2"));
        assert_eq!(h.cookie("token").as_deref(), Some("x y"));
        assert_eq!(h.cookie("q").as_deref(), Some("v"));
        assert_eq!(h.cookie("z").as_deref(), Some("2"));
        assert_eq!(h.cookie("broken"), None);
    }

    #[test]
    fn cookies_from_several_headers() {
        let mut h = handshake("", Some("a=1"));
        h.headers
            .append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(h.cookie("a").as_deref(), Some("1"));
        assert_eq!(h.cookie("b").as_deref(), Some("2"));
    }

    #[test]
    fn a_parameter_without_value_is_empty() {
        let h = handshake("flag&x=1", None);
        assert_eq!(h.query_param("flag").as_deref(), Some(""));
        assert_eq!(h.query_param("x").as_deref(), Some("1"));
    }
}
