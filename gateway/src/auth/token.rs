//! Where a client's token is found: the CONNECT `auth` payload, the
//! `Authorization` header, a cookie or a query parameter, tried in the order
//! of `auth.token_sources`. The first source that holds a token wins, even if
//! that token later fails verification: a client never gets a second chance
//! with a token from a lower-priority place.

use serde_json::Value;

use super::Refusal;
use crate::{config::TokenSource, engine::Handshake};

/// A token taken from one source, not yet verified.
///
/// Keeps the source so that logs can say where a refused token came from
/// without logging the token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct FoundToken {
    /// The raw compact JWS, with any `Bearer ` prefix removed.
    pub token: String,
    /// Where it was found.
    pub source: TokenSource,
}

impl std::fmt::Debug for FoundToken {
    /// Tokens are bearer credentials: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoundToken")
            .field("token", &format_args!("[{} bytes]", self.token.len()))
            .field("source", &self.source)
            .finish()
    }
}

/// The names the cookie and query sources read, fixed at start.
///
/// Kept apart from [`crate::config::AuthConfig`] so the per-connection path
/// reads only what it needs.
#[derive(Debug, Clone)]
pub struct TokenLocator {
    sources: Vec<TokenSource>,
    cookie_name: String,
    query_param: String,
}

impl TokenLocator {
    pub fn new(sources: Vec<TokenSource>, cookie_name: String, query_param: String) -> Self {
        Self {
            sources,
            cookie_name,
            query_param,
        }
    }

    /// The first token found in the configured order; `Ok(None)` when no
    /// source holds one. Empty values (`token: ""`, `token: null`, an empty
    /// cookie) count as absent so logged-out clients can connect
    /// anonymously; a non-string `token` in the CONNECT payload is
    /// [`Refusal::Malformed`].
    pub fn find(
        &self,
        handshake: &Handshake,
        connect_auth: Option<&Value>,
    ) -> Result<Option<FoundToken>, Refusal> {
        for &source in &self.sources {
            let token = match source {
                TokenSource::Auth => from_connect_auth(connect_auth)?,
                TokenSource::Header => from_authorization(handshake),
                TokenSource::Cookie => handshake.cookie(&self.cookie_name),
                TokenSource::Query => handshake.query_param(&self.query_param),
            };
            let token = token
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty());
            if let Some(token) = token {
                return Ok(Some(FoundToken { token, source }));
            }
        }
        Ok(None)
    }
}

/// `{"token": "<jwt>"}` or `{"token": "Bearer <jwt>"}` from the CONNECT
/// packet. A payload that is not an object carries no token.
fn from_connect_auth(connect_auth: Option<&Value>) -> Result<Option<String>, Refusal> {
    match connect_auth.and_then(|auth| auth.get("token")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(strip_bearer(s).unwrap_or(s).to_string())),
        Some(_) => Err(Refusal::Malformed),
    }
}

/// `Authorization: Bearer <jwt>` (scheme case-insensitive). Other schemes,
/// e.g. `Basic` added by a proxy, are not ours and count as absent; so does
/// a value that is not visible ASCII.
fn from_authorization(handshake: &Handshake) -> Option<String> {
    handshake
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(strip_bearer)
        .map(str::to_string)
}

/// The credentials after a case-insensitive `Bearer ` scheme, if present.
fn strip_bearer(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::test_support::handshake;

    fn locator(sources: &[TokenSource]) -> TokenLocator {
        TokenLocator::new(sources.to_vec(), "jwt".into(), "access_token".into())
    }

    const ALL: [TokenSource; 4] = [
        TokenSource::Auth,
        TokenSource::Header,
        TokenSource::Cookie,
        TokenSource::Query,
    ];

    fn found(
        l: &TokenLocator,
        h: &Handshake,
        auth: Option<&Value>,
    ) -> Option<(String, TokenSource)> {
        l.find(h, auth)
            .expect("no refusal")
            .map(|f| (f.token, f.source))
    }

    #[test]
    fn each_source_alone() {
        let l = locator(&ALL);
        let auth = json!({"token": "from-auth"});
        assert_eq!(
            found(&l, &handshake("", &[]), Some(&auth)),
            Some(("from-auth".into(), TokenSource::Auth))
        );
        let bearer = json!({"token": "Bearer from-auth-bearer"});
        assert_eq!(
            found(&l, &handshake("", &[]), Some(&bearer)),
            Some(("from-auth-bearer".into(), TokenSource::Auth))
        );
        let h = handshake("", &[("authorization", "Bearer from-header")]);
        assert_eq!(
            found(&l, &h, None),
            Some(("from-header".into(), TokenSource::Header))
        );
        let h = handshake("", &[("authorization", "bearer  lower-case")]);
        assert_eq!(
            found(&l, &h, None),
            Some(("lower-case".into(), TokenSource::Header))
        );
        let h = handshake("", &[("cookie", "a=1; jwt=from-cookie; token=not-this")]);
        assert_eq!(
            found(&l, &h, None),
            Some(("from-cookie".into(), TokenSource::Cookie))
        );
        let h = handshake("EIO=4&transport=polling&access_token=from-query", &[]);
        assert_eq!(
            found(&l, &h, None),
            Some(("from-query".into(), TokenSource::Query))
        );
    }

    #[test]
    fn configured_order_decides_and_first_found_wins() {
        let h = handshake(
            "access_token=q",
            &[("authorization", "Bearer h"), ("cookie", "jwt=c")],
        );
        let auth = json!({"token": "a"});
        assert_eq!(found(&locator(&ALL), &h, Some(&auth)).unwrap().0, "a");
        let reversed = [
            TokenSource::Query,
            TokenSource::Cookie,
            TokenSource::Header,
            TokenSource::Auth,
        ];
        assert_eq!(found(&locator(&reversed), &h, Some(&auth)).unwrap().0, "q");
        let cookie_first = [TokenSource::Cookie, TokenSource::Auth];
        assert_eq!(
            found(&locator(&cookie_first), &h, Some(&auth)).unwrap().0,
            "c"
        );
        // An unlisted source is never read.
        let only_header = [TokenSource::Header];
        let h = handshake("access_token=q", &[("cookie", "jwt=c")]);
        assert_eq!(found(&locator(&only_header), &h, Some(&auth)), None);
        assert_eq!(found(&locator(&[]), &h, Some(&auth)), None);
    }

    #[test]
    fn empty_and_foreign_values_are_absent() {
        let l = locator(&ALL);
        let h = handshake(
            "access_token=&x=1",
            &[("authorization", "Basic dXNlcjpwYXNz"), ("cookie", "jwt=")],
        );
        for auth in [
            json!({"token": ""}),
            json!({"token": "  "}),
            json!({"token": null}),
            json!({"other": "x"}),
            json!("just-a-string"),
            json!({"token": "Bearer "}),
        ] {
            assert_eq!(found(&l, &h, Some(&auth)), None, "{auth}");
        }
        assert_eq!(found(&l, &h, None), None);
        // Lower sources are still tried after empty higher ones.
        let h = handshake("access_token=q", &[("authorization", "Bearer")]);
        assert_eq!(found(&l, &h, Some(&json!({"token": ""}))).unwrap().0, "q");
    }

    #[test]
    fn non_string_token_in_connect_payload_is_malformed() {
        let l = locator(&ALL);
        for auth in [json!({"token": 42}), json!({"token": {"jwt": "x"}})] {
            assert_eq!(
                l.find(&handshake("", &[]), Some(&auth)),
                Err(Refusal::Malformed)
            );
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let f = FoundToken {
            token: "secret.token.value".into(),
            source: TokenSource::Query,
        };
        let shown = format!("{f:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("18 bytes"), "{shown}");
    }
}
