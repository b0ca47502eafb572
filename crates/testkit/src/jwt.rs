//! JWTs for tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Map, Value, json};

/// Signs `claims` (any JSON object) with HS256 and `secret`.
///
/// # Panics
/// If the claims cannot be serialized (never for a `serde_json::Value`).
pub fn hs256(secret: &str, claims: &Value) -> String {
    sign_hmac(Algorithm::HS256, secret, claims)
}

/// Signs `claims` with an HMAC algorithm (`HS256`, `HS384` or `HS512`).
///
/// # Panics
/// If `alg` is not an HMAC algorithm.
pub fn sign_hmac(alg: Algorithm, secret: &str, claims: &Value) -> String {
    assert!(
        matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512),
        "sign_hmac needs an HS* algorithm, got {alg:?}"
    );
    encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode JWT")
}

/// Signs `claims` with an RSA/EC/Ed PEM private key (e.g. `RS256`, `ES256`,
/// `EdDSA`).
pub fn sign_pem(alg: Algorithm, private_key_pem: &[u8], claims: &Value) -> anyhow::Result<String> {
    let key = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(private_key_pem)?,
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(private_key_pem)?,
        Algorithm::EdDSA => EncodingKey::from_ed_pem(private_key_pem)?,
        other => anyhow::bail!("sign_pem does not handle {other:?}"),
    };
    Ok(encode(&Header::new(alg), claims, &key)?)
}

/// An unsigned token with header `{"alg":"none","typ":"JWT"}` and an empty
/// signature, for tests that the gateway rejects it.
pub fn alg_none(claims: &Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    )
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Builder for test claims. `exp` defaults to one hour from now.
///
/// ```
/// use switchboard_testkit::jwt::Claims;
/// let token = Claims::new().sub("u1").role("admin").sign_hs256("0123456789abcdef0123");
/// assert_eq!(token.split('.').count(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct Claims {
    map: Map<String, Value>,
}

impl Default for Claims {
    fn default() -> Self {
        Self::new()
    }
}

impl Claims {
    /// Empty claims apart from `iat` (now) and `exp` (now + 1 h).
    pub fn new() -> Self {
        let now = now_secs();
        let mut map = Map::new();
        map.insert("iat".into(), json!(now));
        map.insert("exp".into(), json!(now + 3600));
        Self { map }
    }

    /// Sets `sub`.
    #[allow(clippy::should_implement_trait)] // `sub` is the JWT claim name.
    pub fn sub(self, sub: impl Into<String>) -> Self {
        self.claim("sub", sub.into())
    }

    /// Sets `role` (a single string).
    pub fn role(self, role: impl Into<String>) -> Self {
        self.claim("role", role.into())
    }

    /// Sets `roles` (an array of strings).
    pub fn roles<I, S>(self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let roles: Vec<String> = roles.into_iter().map(Into::into).collect();
        self.claim("roles", roles)
    }

    /// Sets `exp` to an absolute Unix time in seconds.
    pub fn exp(self, unix_secs: i64) -> Self {
        self.claim("exp", unix_secs)
    }

    /// Sets `exp` to now + `d`.
    pub fn expires_in(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        self.exp(now_secs().saturating_add(secs))
    }

    /// Sets `exp` to `secs_ago` seconds in the past (beyond any default
    /// leeway when `secs_ago` > 30).
    pub fn expired(self, secs_ago: i64) -> Self {
        self.exp(now_secs() - secs_ago)
    }

    /// Removes `exp`.
    pub fn no_exp(mut self) -> Self {
        self.map.remove("exp");
        self
    }

    /// Sets any claim.
    pub fn claim(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.map.insert(key.into(), value.into());
        self
    }

    /// The claims as a JSON object.
    pub fn build(self) -> Value {
        Value::Object(self.map)
    }

    /// Builds and signs with HS256.
    pub fn sign_hs256(self, secret: &str) -> String {
        hs256(secret, &self.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};

    #[test]
    fn hs256_roundtrip() {
        let secret = "0123456789abcdef0123";
        let token = Claims::new()
            .sub("u1")
            .role("admin")
            .roles(["a", "b"])
            .sign_hs256(secret);
        let data = decode::<Value>(
            &token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "u1");
        assert_eq!(data.claims["role"], "admin");
        assert_eq!(data.claims["roles"], json!(["a", "b"]));
        assert!(data.claims["exp"].as_i64().unwrap() > now_secs());
    }

    #[test]
    fn expired_is_rejected() {
        let secret = "0123456789abcdef0123";
        let token = Claims::new().sub("u1").expired(3600).sign_hs256(secret);
        let err = decode::<Value>(
            &token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &Validation::new(Algorithm::HS256),
        );
        assert!(err.is_err());
    }

    #[test]
    fn alg_none_shape() {
        let t = alg_none(&json!({"sub":"x"}));
        assert!(t.ends_with('.'));
        assert_eq!(t.split('.').count(), 3);
    }
}
