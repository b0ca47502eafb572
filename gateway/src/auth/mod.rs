//! Connect-time authentication: find the client's JWT, verify it, and turn
//! its claims into the user name and rooms the connection joins.
//!
//! - `token`: where the token is found (`auth.token_sources`, in order);
//! - `verify`: signature and claim checks with `jsonwebtoken`;
//! - `rooms`: claims -> user and room names (`auth.rooms` templates);
//! - `refusal`: why a connection was refused, for metrics and the client.
//!
//! Everything configurable is read once by [`Authenticator::from_config`];
//! [`Authenticator::authenticate`] then runs per CONNECT without I/O.
//!
//! Policy worth knowing:
//! - `exp` is required: a gateway keeps connections open for hours, so a
//!   token without expiry would be a credential valid forever;
//! - the accepted algorithms come from `auth.algorithms` only, never from the
//!   token (`alg: none` and HS/RS key confusion are refused);
//! - the first source holding a token wins, and a present but invalid token
//!   is refused even when anonymous connections are allowed.

mod refusal;
mod rooms;
#[cfg(test)]
pub(crate) mod test_support;
mod token;
mod verify;

use std::collections::HashSet;

use serde_json::{Map, Value};

pub use refusal::Refusal;
pub use rooms::roles_in;
pub use verify::MAX_TOKEN_BYTES;

use rooms::RoomPlan;
use token::TokenLocator;
use verify::Verifier;

use crate::{
    config::{AuthConfig, ConfigError},
    engine::Handshake,
};

/// Standard claims kept in [`Identity::claims`] besides those the room plan
/// reads, because Node servers commonly inspect them in `socket.data`.
const ALWAYS_KEPT_CLAIMS: [&str; 2] = ["iss", "exp"];

/// Verifies tokens and maps claims to rooms; built once at start, shared by
/// all connections.
///
/// Holds the parsed key, validation rules, token locations and room
/// templates, so a bad key or template stops the start rather than refusing
/// every client. Immutable and `Send + Sync`: share it behind an `Arc`.
#[derive(Debug)]
pub struct Authenticator {
    locator: TokenLocator,
    verifier: Verifier,
    rooms: RoomPlan,
    allow_anonymous: bool,
    /// Claim names copied into [`Identity::claims`].
    kept_claims: HashSet<String>,
}

/// Who a connection is: filled from verified claims, or anonymous.
///
/// The session layer joins `rooms`, may disconnect at `expires_at`, and
/// reports `claims` to Node servers as `socket.data` through
/// `fetchSockets()`; for that reason `claims` holds only the claims the
/// gateway itself uses (user, roles, template claims) plus `iss` and `exp`,
/// not the whole token payload.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user claim as a string (`42` -> `"42"`); `None` when anonymous.
    pub user: Option<String>,
    /// Rooms to join, deduplicated: template rooms, then `auth.public_rooms`.
    pub rooms: Vec<String>,
    /// Unix seconds from `exp`; `None` when anonymous.
    pub expires_at: Option<u64>,
    /// True when no token was presented and `auth.allow_anonymous` is on.
    pub anonymous: bool,
    /// A small subset of the verified claims (see the type docs); empty when
    /// anonymous.
    pub claims: Map<String, Value>,
}

impl Authenticator {
    /// Loads keys (PEM file read and parsed here, so a bad key stops the
    /// start with an error naming `auth.public_key_file`) and parses the
    /// room templates (errors name `auth.rooms`).
    pub fn from_config(cfg: &AuthConfig) -> Result<Self, ConfigError> {
        let verifier = Verifier::from_config(cfg)?;
        let rooms = RoomPlan::from_config(cfg)?;
        let mut kept_claims = rooms.referenced_claims();
        kept_claims.extend(ALWAYS_KEPT_CLAIMS.iter().map(|c| c.to_string()));
        Ok(Authenticator {
            locator: TokenLocator::new(
                cfg.token_sources.clone(),
                cfg.cookie_name.clone(),
                cfg.query_param.clone(),
            ),
            verifier,
            rooms,
            allow_anonymous: cfg.allow_anonymous,
            kept_claims,
        })
    }

    /// Also keeps these claims in [`Identity::claims`]: the ones the
    /// client rules read and `client.hooks.claims` (sent to the API).
    pub fn keep_claims(&mut self, names: impl IntoIterator<Item = String>) {
        for name in names {
            if let Some((first, _)) = name.split_once('.') {
                self.kept_claims.insert(first.to_string());
            }
            self.kept_claims.insert(name);
        }
    }

    /// Authenticates one CONNECT.
    ///
    /// `connect_auth` is the JSON payload of the Socket.IO CONNECT packet
    /// (the client's `auth` option), if any. No token anywhere gives an
    /// anonymous identity when `auth.allow_anonymous` is set and
    /// [`Refusal::MissingToken`] otherwise; a token that is present is
    /// verified and must pass.
    pub fn authenticate(
        &self,
        handshake: &Handshake,
        connect_auth: Option<&Value>,
    ) -> Result<Identity, Refusal> {
        let Some(found) = self.locator.find(handshake, connect_auth)? else {
            return self.anonymous();
        };
        let verified = self
            .verifier
            .verify(&found.token)
            .and_then(|claims| Ok((self.rooms.resolve(&claims)?, claims)));
        let (resolved, claims) = verified.inspect_err(|refusal| {
            // The session layer logs and counts refusals; only the source is
            // known here. Never log the token.
            tracing::debug!(source = ?found.source, reason = refusal.reason(), "token refused");
        })?;
        let claims = claims
            .into_iter()
            .filter(|(name, _)| self.kept_claims.contains(name))
            .collect();
        Ok(identified(resolved, claims))
    }
}

/// The identity of verified (kept) claims resolved to a user and rooms.
fn identified(resolved: rooms::Resolved, claims: Map<String, Value>) -> Identity {
    Identity {
        user: Some(resolved.user),
        rooms: resolved.rooms,
        expires_at: claims.get("exp").and_then(unix_seconds),
        anonymous: false,
        claims,
    }
}

impl Authenticator {
    /// The identity of a recovered session from the claims it kept
    /// (`socket.data`), without a token: valid only while those claims are
    /// (a token that has expired since is refused with
    /// [`Refusal::Expired`]); no claims is an anonymous session, which needs
    /// `auth.allow_anonymous`.
    pub fn restore(&self, claims: Map<String, Value>) -> Result<Identity, Refusal> {
        if claims.is_empty() {
            return self.anonymous();
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if claims
            .get("exp")
            .and_then(unix_seconds)
            .is_some_and(|exp| exp <= now)
        {
            return Err(Refusal::Expired);
        }
        Ok(identified(self.rooms.resolve(&claims)?, claims))
    }
}

impl Authenticator {
    /// The anonymous identity when `auth.allow_anonymous`, else a refusal.
    fn anonymous(&self) -> Result<Identity, Refusal> {
        if self.allow_anonymous {
            Ok(Identity {
                user: None,
                rooms: self.rooms.public_rooms().to_vec(),
                expires_at: None,
                anonymous: true,
                claims: Map::new(),
            })
        } else {
            Err(Refusal::MissingToken)
        }
    }
}

/// A NumericDate as whole unix seconds (JWT allows fractions).
fn unix_seconds(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
    use serde_json::json;

    use super::test_support::{
        EC_PRIVATE, EC_PUBLIC, RSA_PRIVATE, RSA_PUBLIC, SECRET, fixture, handshake, hs_config,
        key_config,
    };
    use super::*;
    use crate::config::TokenSource;

    fn hs_token(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn exp() -> u64 {
        get_current_timestamp() + 600
    }

    fn auth_payload(token: &str) -> Value {
        json!({ "token": token })
    }

    #[test]
    fn authenticated_identity_from_connect_payload() {
        let a = Authenticator::from_config(&hs_config(&["HS256"])).unwrap();
        let exp = exp();
        let token = hs_token(json!({
            "sub": "u1", "roles": ["admin", "agent"], "exp": exp, "iat": 1,
            "iss": "issuer", "email": "someone@example.com", "perms": vec!["a"; 50]
        }));
        let id = a
            .authenticate(&handshake("", &[]), Some(&auth_payload(&token)))
            .unwrap();
        assert_eq!(id.user.as_deref(), Some("u1"));
        assert_eq!(id.rooms, ["user:u1", "role:admin", "role:agent"]);
        assert_eq!(id.expires_at, Some(exp));
        assert!(!id.anonymous);
        let mut kept: Vec<_> = id.claims.keys().map(String::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["exp", "iss", "roles", "sub"]);
    }

    #[test]
    fn each_source_reaches_the_verifier() {
        let mut cfg = hs_config(&["HS256"]);
        cfg.token_sources = vec![
            TokenSource::Auth,
            TokenSource::Header,
            TokenSource::Cookie,
            TokenSource::Query,
        ];
        let a = Authenticator::from_config(&cfg).unwrap();
        let t = hs_token(json!({"sub": "u", "exp": exp()}));
        let cases = [
            (
                handshake("", &[("authorization", &format!("Bearer {t}"))]),
                None,
            ),
            (handshake("", &[("cookie", &format!("token={t}"))]), None),
            (handshake(&format!("EIO=4&token={t}"), &[]), None),
            (
                handshake("", &[]),
                Some(auth_payload(&format!("Bearer {t}"))),
            ),
        ];
        for (h, payload) in cases {
            let id = a.authenticate(&h, payload.as_ref()).unwrap();
            assert_eq!(id.user.as_deref(), Some("u"));
        }
    }

    #[test]
    fn first_source_wins_even_when_its_token_is_bad() {
        let a = Authenticator::from_config(&hs_config(&["HS256"])).unwrap();
        let good = hs_token(json!({"sub": "good", "exp": exp()}));
        let expired = hs_token(json!({"sub": "old", "exp": 1}));
        let h = handshake("", &[("authorization", &format!("Bearer {good}"))]);
        assert_eq!(
            a.authenticate(&h, Some(&auth_payload(&expired)))
                .unwrap_err(),
            Refusal::Expired
        );
        let mut cfg = hs_config(&["HS256"]);
        cfg.token_sources = vec![TokenSource::Header, TokenSource::Auth];
        let header_first = Authenticator::from_config(&cfg).unwrap();
        let id = header_first
            .authenticate(&h, Some(&auth_payload(&expired)))
            .unwrap();
        assert_eq!(id.user.as_deref(), Some("good"));
    }

    #[test]
    fn anonymous_allowed_or_refused() {
        let mut cfg = hs_config(&["HS256"]);
        cfg.public_rooms = vec!["lobby".into(), "news".into()];
        let strict = Authenticator::from_config(&cfg).unwrap();
        assert_eq!(
            strict.authenticate(&handshake("", &[]), None).unwrap_err(),
            Refusal::MissingToken
        );
        assert_eq!(
            strict
                .authenticate(&handshake("", &[]), Some(&json!({"token": ""})))
                .unwrap_err(),
            Refusal::MissingToken
        );

        cfg.allow_anonymous = true;
        let open = Authenticator::from_config(&cfg).unwrap();
        let id = open.authenticate(&handshake("", &[]), None).unwrap();
        assert!(id.anonymous);
        assert_eq!(id.user, None);
        assert_eq!(id.rooms, ["lobby", "news"]);
        assert_eq!(id.expires_at, None);
        assert!(id.claims.is_empty());

        // A token that is present but invalid is refused, anonymous or not.
        let bad = hs_token(json!({"sub": "u", "exp": 1}));
        assert_eq!(
            open.authenticate(&handshake("", &[]), Some(&auth_payload(&bad)))
                .unwrap_err(),
            Refusal::Expired
        );
        // A valid token still authenticates, with public rooms added.
        let good = hs_token(json!({"sub": "u", "exp": exp()}));
        let id = open
            .authenticate(&handshake("", &[]), Some(&auth_payload(&good)))
            .unwrap();
        assert!(!id.anonymous);
        assert_eq!(id.rooms, ["user:u", "lobby", "news"]);
    }

    #[test]
    fn missing_user_claim_refused() {
        let a = Authenticator::from_config(&hs_config(&["HS256"])).unwrap();
        let t = hs_token(json!({"role": "admin", "exp": exp()}));
        assert_eq!(
            a.authenticate(&handshake("", &[]), Some(&auth_payload(&t)))
                .unwrap_err(),
            Refusal::MissingClaim("sub".into())
        );
    }

    #[test]
    fn public_key_configs_authenticate() {
        let claims = json!({"sub": 42, "role": "admin", "company_id": "c9", "exp": exp()});
        let mut cfg = key_config(&["RS256"], RSA_PUBLIC);
        cfg.rooms = vec![
            "user:{sub}".into(),
            "role_{role}".into(),
            "company:{company_id}".into(),
        ];
        let a = Authenticator::from_config(&cfg).unwrap();
        let t = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&fixture(RSA_PRIVATE)).unwrap(),
        )
        .unwrap();
        let id = a
            .authenticate(&handshake("", &[]), Some(&auth_payload(&t)))
            .unwrap();
        assert_eq!(id.user.as_deref(), Some("42"));
        assert_eq!(id.rooms, ["user:42", "role_admin", "company:c9"]);
        assert!(id.claims.contains_key("company_id"));

        let a = Authenticator::from_config(&key_config(&["ES256"], EC_PUBLIC)).unwrap();
        let t = encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(&fixture(EC_PRIVATE)).unwrap(),
        )
        .unwrap();
        let h = handshake("", &[("authorization", &format!("Bearer {t}"))]);
        assert_eq!(
            a.authenticate(&h, None).unwrap().user.as_deref(),
            Some("42")
        );
    }

    #[test]
    fn bad_room_template_stops_the_start() {
        let mut cfg = hs_config(&["HS256"]);
        cfg.rooms = vec!["user:{sub".into()];
        let err = Authenticator::from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("auth.rooms"), "{err}");
    }

    #[test]
    fn authenticator_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Authenticator>();
    }

    #[test]
    fn fractional_exp_is_truncated() {
        assert_eq!(unix_seconds(&json!(1700000000.7)), Some(1700000000));
        assert_eq!(unix_seconds(&json!(-1)), None);
        assert_eq!(unix_seconds(&json!("1")), None);
    }
}
