//! The query string of an Engine.IO request, parsed once, where the request
//! enters the gateway (`server.rs`), into an [`EngineQuery`] that is passed
//! down to the engine; nothing below parses the query again.
//!
//! The session keeps the raw text in its [`super::Handshake`] (one string,
//! for memory per idle connection); authentication's token parameter and
//! the admin UI's view of the handshake read it through [`param`] and
//! [`pairs`], the only other readers of a query string, which decode it the
//! same way (`application/x-www-form-urlencoded`, by `form_urlencoded`).

use std::borrow::Cow;

/// The Engine.IO parameters of one request, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineQuery {
    /// `EIO`: the protocol version (the gateway speaks `4`).
    pub eio: Option<String>,
    /// `transport`: `polling` or `websocket`.
    pub transport: Option<String>,
    /// `sid`: the session the request belongs to; absent when it opens one.
    pub sid: Option<String>,
}

impl EngineQuery {
    /// Parses the query of `req` (none: every parameter absent).
    pub fn of<B>(req: &http::Request<B>) -> EngineQuery {
        EngineQuery::parse(req.uri().query().unwrap_or(""))
    }

    /// Parses a raw query string (without the `?`). The last occurrence of
    /// a repeated Engine.IO parameter counts, as it always has.
    pub fn parse(raw: &str) -> EngineQuery {
        let mut q = EngineQuery::default();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let slot = match &*k {
                "EIO" => &mut q.eio,
                "transport" => &mut q.transport,
                "sid" => &mut q.sid,
                _ => continue,
            };
            *slot = Some(v.into_owned());
        }
        q
    }

    /// Whether the request opens a new session (it names no sid).
    pub fn opens_session(&self) -> bool {
        self.sid.is_none()
    }
}

/// The value of parameter `name` in the raw query `raw`, decoded; the first
/// occurrence if it repeats.
pub fn param(raw: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(raw.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Every non-empty `&`-separated pair of the raw query `raw`: its raw text
/// (to rebuild a URL as the client wrote it) and its decoded key and value.
pub fn pairs(raw: &str) -> impl Iterator<Item = (&str, Cow<'_, str>, Cow<'_, str>)> {
    raw.split('&').filter(|p| !p.is_empty()).filter_map(|pair| {
        let (k, v) = form_urlencoded::parse(pair.as_bytes()).next()?;
        Some((pair, k, v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_parameters_are_decoded_once() {
        let q = EngineQuery::parse("EIO=4&transport=polling&sid=ab%2Dc&token=x");
        assert_eq!(q.eio.as_deref(), Some("4"));
        assert_eq!(q.transport.as_deref(), Some("polling"));
        assert_eq!(q.sid.as_deref(), Some("ab-c"));
        assert!(!q.opens_session());
        let open = EngineQuery::parse("EIO=4&transport=websocket");
        assert!(open.opens_session());
        assert_eq!(EngineQuery::parse(""), EngineQuery::default());
        assert_eq!(EngineQuery::parse("EIO=3&EIO=4").eio.as_deref(), Some("4"));
    }

    #[test]
    fn an_empty_sid_still_names_a_session() {
        // As the draining check always treated `sid=`: not a new session.
        assert!(!EngineQuery::parse("EIO=4&sid=").opens_session());
    }

    #[test]
    fn pairs_keep_the_raw_text_and_skip_empty_ones() {
        let got: Vec<_> = pairs("a=1&&room=a%20b&flag")
            .map(|(raw, k, v)| (raw.to_string(), k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            got,
            [
                ("a=1".into(), "a".into(), "1".into()),
                ("room=a%20b".into(), "room".into(), "a b".into()),
                ("flag".into(), "flag".into(), String::new()),
            ]
        );
        assert_eq!(param("x=1&x=2", "x").as_deref(), Some("1"));
    }
}
