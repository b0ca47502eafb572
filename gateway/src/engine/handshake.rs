//! What the gateway knows about a client from the HTTP request that opened its
//! Engine.IO session: the input to authentication and the `handshake` that
//! `fetchSockets()` reports to Node servers.

use std::{
    net::{IpAddr, SocketAddr},
    ops::Deref,
    sync::LazyLock,
};

/// The opening request of an Engine.IO session, kept for the session's life.
///
/// Only what authentication and the adapter's `fetchSockets` need is kept, so
/// an idle connection does not carry every header of its first request.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Headers of the opening request (polling handshake or websocket upgrade).
    pub headers: KeptHeaders,
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

/// The headers a session keeps, boxed and only when there are any: most
/// clients send neither `Authorization` nor `Cookie` (the token travels in
/// the CONNECT packet), and an empty `HeaderMap` inline would still cost
/// every idle connection 96 bytes (issue #17). Reads as a `HeaderMap`.
#[derive(Debug, Clone, Default)]
pub struct KeptHeaders(Option<Box<http::HeaderMap>>);

/// What an absent set of kept headers reads as.
static NO_HEADERS: LazyLock<http::HeaderMap> = LazyLock::new(http::HeaderMap::new);

impl From<http::HeaderMap> for KeptHeaders {
    fn from(headers: http::HeaderMap) -> Self {
        KeptHeaders((!headers.is_empty()).then(|| Box::new(headers)))
    }
}

impl Deref for KeptHeaders {
    type Target = http::HeaderMap;

    fn deref(&self) -> &http::HeaderMap {
        self.0.as_deref().unwrap_or(&NO_HEADERS)
    }
}

impl std::ops::DerefMut for KeptHeaders {
    /// Boxes a map on the first change, as a read-only empty set has none.
    fn deref_mut(&mut self) -> &mut http::HeaderMap {
        self.0.get_or_insert_with(Default::default)
    }
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
            headers: headers.into(),
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

    /// A session without `Authorization` or `Cookie` (most: the token is in
    /// the CONNECT packet) keeps no header map at all, and one with them
    /// reads them as before; either way the handshake stays small.
    #[test]
    fn kept_headers_take_room_only_when_there_are_any() {
        let none = handshake("", None);
        assert!(none.headers.0.is_none());
        assert!(none.headers.is_empty());
        assert_eq!(none.cookie("token"), None);
        let some = handshake("", Some("token=abc"));
        assert!(some.headers.0.is_some());
        assert_eq!(some.headers.len(), 1);
        assert_eq!(some.cookie("token").as_deref(), Some("abc"));
        assert!(
            std::mem::size_of::<Handshake>() <= 104,
            "{} bytes",
            std::mem::size_of::<Handshake>()
        );
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
