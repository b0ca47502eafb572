//! JWT verification with `jsonwebtoken`: the key and the validation rules are
//! built once from config, then every token is checked against them.
//!
//! What is checked, in order:
//! 1. length: over [`MAX_TOKEN_BYTES`] is [`Refusal::TokenTooLarge`], before
//!    any parsing;
//! 2. shape and header, decoded here rather than by `jsonwebtoken`, so that an
//!    `alg` it cannot even name (`none`) is still reported as
//!    [`Refusal::AlgorithmNotAllowed`] and not as a parse error: the header
//!    `alg` must be one of `auth.algorithms`, never trusted from the token;
//!    a `crit` header is refused (no JWS extension is supported);
//! 3. signature, with the configured key only;
//! 4. claims: `exp` is **required** and checked, `nbf` checked when present,
//!    both with `auth.leeway_s` (a non-numeric `exp`/`nbf` is
//!    [`Refusal::InvalidClaim`]); `iss` required and checked when
//!    `auth.issuer` is set; `aud` (string or array of strings) required and
//!    checked when `auth.audience` is set, and ignored otherwise.

use std::path::Path;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, Validation, errors::ErrorKind as JwtErrorKind,
};
use serde_json::{Map, Value};

use super::Refusal;
use crate::config::{AuthConfig, ConfigError};

/// Tokens longer than this (8 KiB) are refused before any parsing: real
/// access tokens are far smaller, and the cap bounds the work a client can
/// ask of the verifier.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Checks tokens against the configured key and rules.
///
/// Built once at start by [`Verifier::from_config`]; holds no per-connection
/// state, so one instance serves every connection. Its `Debug` output never
/// shows key material (`jsonwebtoken` redacts `DecodingKey`).
#[derive(Debug, Clone)]
pub struct Verifier {
    /// `None` only in anonymous-only mode (HS* without a secret): every
    /// presented token is then refused with [`Refusal::NoVerificationKey`].
    key: Option<DecodingKey>,
    /// The configured algorithm names, exactly as JOSE spells them.
    allowed: Vec<String>,
    validation: Validation,
}

impl Verifier {
    /// Loads the secret or the PEM public key and builds the validation rules.
    ///
    /// Errors name the config key at fault: `auth.algorithms` (unknown name,
    /// or public-key algorithms of more than one key type, which one PEM file
    /// cannot serve), `auth.secret`, or `auth.public_key_file` (unreadable,
    /// a private key, not a key of the type the algorithms need).
    pub fn from_config(cfg: &AuthConfig) -> Result<Verifier, ConfigError> {
        let algorithms = parse_algorithms(&cfg.algorithms)?;
        let family = algorithms[0].family();
        if algorithms.iter().any(|a| a.family() != family) {
            return Err(invalid(
                "auth.algorithms",
                format!(
                    "{:?} need different kinds of key; list algorithms of one kind only (HS*, RS*/PS*, ES* or EdDSA)",
                    cfg.algorithms
                ),
            ));
        }

        let key = match family {
            AlgorithmFamily::Hmac => match cfg.secret.as_deref().filter(|s| !s.is_empty()) {
                Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
                None if cfg.allow_anonymous => None,
                None => {
                    return Err(invalid(
                        "auth.secret",
                        "HS* algorithms need a secret (or allow_anonymous = true to run without tokens)",
                    ));
                }
            },
            _ => {
                let path = cfg.public_key_file.as_deref().ok_or_else(|| {
                    invalid(
                        "auth.public_key_file",
                        "public-key algorithms need a PEM public key file",
                    )
                })?;
                Some(load_public_key(path, family, &algorithms)?)
            }
        };

        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = cfg.leeway_s;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Presence is checked in `check_required` instead, so that a claim of
        // the wrong type is told apart from a missing one.
        validation.required_spec_claims.clear();
        if let Some(issuer) = &cfg.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &cfg.audience {
            Some(audience) => {
                if audience.is_empty() {
                    return Err(invalid(
                        "auth.audience",
                        "list at least one audience, or remove the key to accept any",
                    ));
                }
                validation.set_audience(audience);
            }
            // jsonwebtoken refuses any token carrying `aud` when no audience
            // is configured; with none configured we accept any.
            None => validation.validate_aud = false,
        }

        Ok(Verifier {
            key,
            allowed: cfg.algorithms.clone(),
            validation,
        })
    }

    /// Verifies one token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::TokenTooLarge);
        }
        let alg = header_alg(token)?;
        if !self.allowed.contains(&alg) {
            return Err(Refusal::AlgorithmNotAllowed);
        }
        let key = self.key.as_ref().ok_or(Refusal::NoVerificationKey)?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
            .map_err(|e| refusal_for(e.into_kind()))?
            .claims;
        self.check_required(&claims)?;
        Ok(claims)
    }

    /// What `jsonwebtoken` leaves to us: it validates `exp`, `iss` and `aud`
    /// only when present and of the expected type. Here `exp` must be present
    /// (its type was checked), and a configured `iss`/`aud` must be present
    /// and of a type `jsonwebtoken` compared.
    fn check_required(&self, claims: &Map<String, Value>) -> Result<(), Refusal> {
        let present = |name: &str| claims.get(name).filter(|v| !v.is_null());
        if present("exp").is_none() {
            return Err(Refusal::MissingClaim("exp".into()));
        }
        if self.validation.iss.is_some() {
            match present("iss") {
                None => return Err(Refusal::MissingClaim("iss".into())),
                Some(Value::String(_)) => {}
                Some(_) => return Err(Refusal::WrongIssuer),
            }
        }
        if self.validation.aud.is_some() {
            match present("aud") {
                None => return Err(Refusal::MissingClaim("aud".into())),
                Some(Value::String(_)) => {}
                Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
                Some(_) => return Err(Refusal::WrongAudience),
            }
        }
        Ok(())
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, ConfigError> {
    if names.is_empty() {
        return Err(invalid("auth.algorithms", "list at least one algorithm"));
    }
    names
        .iter()
        .map(|name| {
            name.parse::<Algorithm>().map_err(|_| {
                invalid(
                    "auth.algorithms",
                    format!("unknown algorithm {name:?}; use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA"),
                )
            })
        })
        .collect()
}

/// Reads and parses the PEM public key for `family`, then proves it usable
/// for every configured algorithm so a wrong key stops the start instead of
/// refusing every client later.
fn load_public_key(
    path: &Path,
    family: AlgorithmFamily,
    algorithms: &[Algorithm],
) -> Result<DecodingKey, ConfigError> {
    let shown = path.display();
    let pem = std::fs::read(path)
        .map_err(|e| invalid("auth.public_key_file", format!("cannot read {shown}: {e}")))?;
    if String::from_utf8_lossy(&pem).contains("PRIVATE KEY-----") {
        return Err(invalid(
            "auth.public_key_file",
            format!(
                "{shown} holds a private key; give the gateway the public key only (openssl pkey -in private.pem -pubout)"
            ),
        ));
    }
    let (parsed, kind) = match family {
        AlgorithmFamily::Rsa => (DecodingKey::from_rsa_pem(&pem), "an RSA"),
        AlgorithmFamily::Ec => (DecodingKey::from_ec_pem(&pem), "an EC (P-256/P-384)"),
        AlgorithmFamily::Ed => (DecodingKey::from_ed_pem(&pem), "an Ed25519"),
        AlgorithmFamily::Hmac => {
            return Err(invalid(
                "auth.algorithms",
                "HS* algorithms use auth.secret, not a key file",
            ));
        }
    };
    let not_usable = |alg: Option<Algorithm>| {
        let needed = match alg {
            Some(alg) => format!("{alg:?}"),
            None => format!("{algorithms:?}"),
        };
        invalid(
            "auth.public_key_file",
            format!("{shown} is not {kind} public key in PEM form, as {needed} needs"),
        )
    };
    let key = parsed.map_err(|_| not_usable(None))?;
    if family == AlgorithmFamily::Rsa {
        // The RSA verifier parses its key only when verifying, so parse the
        // DER here once to fail at start.
        let der = key.try_get_as_bytes().map_err(|_| not_usable(None))?;
        let parse = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
            .key_utils
            .rsa_pub_components_from_public_key;
        parse(der).map_err(|_| not_usable(None))?;
    }
    for &alg in algorithms {
        // EC and Ed verifiers parse the key (and its curve) when built: a
        // P-256 key configured for ES384 fails here.
        jsonwebtoken::crypto::verify("", b"", &key, alg).map_err(|_| not_usable(Some(alg)))?;
    }
    Ok(key)
}

/// The `alg` of a compact JWS header, checking the three-part shape first.
fn header_alg(token: &str) -> Result<String, Refusal> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Refusal::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| Refusal::Malformed)?;
    if header.contains_key("crit") {
        return Err(Refusal::Malformed);
    }
    match header.get("alg") {
        Some(Value::String(alg)) => Ok(alg.clone()),
        _ => Err(Refusal::Malformed),
    }
}

/// Maps a `jsonwebtoken` failure to the refusal the client and metrics see.
fn refusal_for(kind: JwtErrorKind) -> Refusal {
    match kind {
        JwtErrorKind::InvalidSignature => Refusal::BadSignature,
        JwtErrorKind::ExpiredSignature => Refusal::Expired,
        JwtErrorKind::ImmatureSignature => Refusal::NotYetValid,
        JwtErrorKind::InvalidIssuer => Refusal::WrongIssuer,
        JwtErrorKind::InvalidAudience => Refusal::WrongAudience,
        JwtErrorKind::InvalidAlgorithm | JwtErrorKind::InvalidAlgorithmName => {
            Refusal::AlgorithmNotAllowed
        }
        JwtErrorKind::MissingRequiredClaim(claim) => Refusal::MissingClaim(claim),
        JwtErrorKind::InvalidClaimFormat(claim) => Refusal::InvalidClaim(claim),
        JwtErrorKind::InvalidToken
        | JwtErrorKind::Base64(_)
        | JwtErrorKind::Json(_)
        | JwtErrorKind::Utf8(_) => Refusal::Malformed,
        other => {
            tracing::error!(error = ?other, "token verification failed on the gateway side");
            Refusal::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    use serde_json::json;

    use super::*;
    use crate::auth::test_support::{
        EC_PRIVATE, EC_PUBLIC, ED_PRIVATE, ED_PUBLIC, RSA_PRIVATE, RSA_PUBLIC, SECRET, fixture,
        hs_config, key_config,
    };

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        encode(&Header::new(alg), claims, key).expect("sign")
    }

    fn valid_claims() -> Value {
        json!({"sub": "u1", "exp": get_current_timestamp() + 600})
    }

    fn hs_key() -> EncodingKey {
        EncodingKey::from_secret(SECRET.as_bytes())
    }

    fn rsa_key() -> EncodingKey {
        EncodingKey::from_rsa_pem(&fixture(RSA_PRIVATE)).expect("rsa private fixture")
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn hmac_family_accepted() {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let v = Verifier::from_config(&hs_config(&[&format!("{alg:?}")])).unwrap();
            let claims = v.verify(&sign(alg, &hs_key(), &valid_claims()));
            assert_eq!(claims.unwrap()["sub"], "u1", "{alg:?}");
        }
    }

    #[test]
    fn rsa_and_pss_family_accepted() {
        let all = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
        let v = Verifier::from_config(&key_config(&all, RSA_PUBLIC)).unwrap();
        let key = rsa_key();
        for alg in [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ] {
            assert!(
                v.verify(&sign(alg, &key, &valid_claims())).is_ok(),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn ec_family_accepted() {
        let v = Verifier::from_config(&key_config(&["ES256"], EC_PUBLIC)).unwrap();
        let key = EncodingKey::from_ec_pem(&fixture(EC_PRIVATE)).unwrap();
        assert!(
            v.verify(&sign(Algorithm::ES256, &key, &valid_claims()))
                .is_ok()
        );
    }

    #[test]
    fn eddsa_accepted() {
        let v = Verifier::from_config(&key_config(&["EdDSA"], ED_PUBLIC)).unwrap();
        let key = EncodingKey::from_ed_pem(&fixture(ED_PRIVATE)).unwrap();
        assert!(
            v.verify(&sign(Algorithm::EdDSA, &key, &valid_claims()))
                .is_ok()
        );
    }

    #[test]
    fn wrong_signature() {
        let v = Verifier::from_config(&hs_config(&["HS256"])).unwrap();
        let other = EncodingKey::from_secret(b"another-secret-of-32-bytes-000000");
        assert_eq!(
            v.verify(&sign(Algorithm::HS256, &other, &valid_claims())),
            Err(Refusal::BadSignature)
        );
        // Claims swapped under a valid signature.
        let good = sign(Algorithm::HS256, &hs_key(), &valid_claims());
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = b64(&json!({"sub": "admin", "exp": get_current_timestamp() + 600}));
        parts[1] = &forged;
        assert_eq!(v.verify(&parts.join(".")), Err(Refusal::BadSignature));
        // Public-key families too.
        let ed = Verifier::from_config(&key_config(&["EdDSA"], ED_PUBLIC)).unwrap();
        let ed_token = sign(
            Algorithm::EdDSA,
            &EncodingKey::from_ed_pem(&fixture(ED_PRIVATE)).unwrap(),
            &valid_claims(),
        );
        let mut ed_parts: Vec<String> = ed_token.split('.').map(str::to_string).collect();
        ed_parts[1] = forged.clone();
        assert_eq!(ed.verify(&ed_parts.join(".")), Err(Refusal::BadSignature));
    }

    #[test]
    fn alg_none_is_not_allowed() {
        let v = Verifier::from_config(&hs_config(&["HS256"])).unwrap();
        let payload = b64(&valid_claims());
        for header in [
            "eyJhbGciOiJub25lIn0".to_string(), // {"alg":"none"}
            b64(&json!({"alg": "None", "typ": "JWT"})),
            b64(&json!({"alg": "hs256"})),
            b64(&json!({"alg": "XX999"})),
        ] {
            assert_eq!(
                v.verify(&format!("{header}.{payload}.")),
                Err(Refusal::AlgorithmNotAllowed),
                "{header}"
            );
        }
    }

    #[test]
    fn hs_rs_key_confusion_is_not_allowed() {
        // The classic attack: HMAC-sign with the server's public key as secret.
        let v = Verifier::from_config(&key_config(&["RS256"], RSA_PUBLIC)).unwrap();
        let public_pem = fixture(RSA_PUBLIC);
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&public_pem),
            &valid_claims(),
        );
        assert_eq!(v.verify(&forged), Err(Refusal::AlgorithmNotAllowed));
        // An allowed-family algorithm that is not listed is refused too.
        let rs512 = sign(Algorithm::RS512, &rsa_key(), &valid_claims());
        assert_eq!(v.verify(&rs512), Err(Refusal::AlgorithmNotAllowed));
    }

    #[test]
    fn malformed_and_truncated_tokens() {
        let v = Verifier::from_config(&hs_config(&["HS256"])).unwrap();
        let good = sign(Algorithm::HS256, &hs_key(), &valid_claims());
        let last_dot = good.rfind('.').unwrap();
        let cases = [
            "not-a-jwt".to_string(),
            "a.b".to_string(),
            "a.b.c.d".to_string(),
            "!!!.e30.sig".to_string(),
            format!("{}.e30.sig", URL_SAFE_NO_PAD.encode("[1]")),
            format!("{}.e30.sig", b64(&json!({"typ": "JWT"}))),
            format!(
                "{}.e30.sig",
                b64(&json!({"alg": "HS256", "crit": ["b64"], "b64": false}))
            ),
            // Truncated inside the payload: only two parts remain.
            good[..last_dot - 3].to_string(),
            // Signature cut to a length base64 cannot have.
            format!(
                "{}.{}",
                &good[..last_dot],
                &good[last_dot + 1..good.len() - 42]
            ),
        ];
        for token in cases {
            assert_eq!(v.verify(&token), Err(Refusal::Malformed), "{token}");
        }
        // Signature cut to 40 of its 43 characters (whole base64 quanta, so
        // it decodes): well-formed but does not match.
        assert_eq!(
            v.verify(&good[..last_dot + 1 + 40]),
            Err(Refusal::BadSignature)
        );
        // No signature at all.
        assert_eq!(v.verify(&good[..=last_dot]), Err(Refusal::BadSignature));
        // A payload that is signed but is not a JSON object.
        let header = b64(&json!({"alg": "HS256"}));
        let payload = URL_SAFE_NO_PAD.encode("[1,2]");
        let sig = jsonwebtoken::crypto::sign(
            format!("{header}.{payload}").as_bytes(),
            &hs_key(),
            Algorithm::HS256,
        )
        .unwrap();
        assert_eq!(
            v.verify(&format!("{header}.{payload}.{sig}")),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn expiry_required_and_checked_with_leeway() {
        let mut cfg = hs_config(&["HS256"]);
        cfg.leeway_s = 30;
        let v = Verifier::from_config(&cfg).unwrap();
        let now = get_current_timestamp();
        let token = |claims: Value| sign(Algorithm::HS256, &hs_key(), &claims);
        assert_eq!(
            v.verify(&token(json!({"sub": "u", "exp": now - 120}))),
            Err(Refusal::Expired)
        );
        // Within leeway.
        assert!(
            v.verify(&token(json!({"sub": "u", "exp": now - 10})))
                .is_ok()
        );
        assert_eq!(
            v.verify(&token(json!({"sub": "u"}))),
            Err(Refusal::MissingClaim("exp".into()))
        );
        // jsonwebtoken reads a null `exp` as a bad NumericDate.
        assert_eq!(
            v.verify(&token(json!({"sub": "u", "exp": null}))),
            Err(Refusal::InvalidClaim("exp".into()))
        );
        assert_eq!(
            v.verify(&token(json!({"sub": "u", "exp": "tomorrow"}))),
            Err(Refusal::InvalidClaim("exp".into()))
        );
        cfg.leeway_s = 0;
        let strict = Verifier::from_config(&cfg).unwrap();
        assert_eq!(
            strict.verify(&token(json!({"sub": "u", "exp": now - 10}))),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn not_before_checked_with_leeway() {
        let mut cfg = hs_config(&["HS256"]);
        cfg.leeway_s = 30;
        let v = Verifier::from_config(&cfg).unwrap();
        let now = get_current_timestamp();
        let token = |nbf: u64| {
            sign(
                Algorithm::HS256,
                &hs_key(),
                &json!({"sub": "u", "exp": now + 600, "nbf": nbf}),
            )
        };
        assert_eq!(v.verify(&token(now + 300)), Err(Refusal::NotYetValid));
        assert!(v.verify(&token(now + 10)).is_ok());
        assert!(v.verify(&token(now - 10)).is_ok());
        cfg.leeway_s = 0;
        let strict = Verifier::from_config(&cfg).unwrap();
        assert_eq!(strict.verify(&token(now + 10)), Err(Refusal::NotYetValid));
        let odd = sign(
            Algorithm::HS256,
            &hs_key(),
            &json!({"sub": "u", "exp": now + 600, "nbf": "soon"}),
        );
        assert_eq!(v.verify(&odd), Err(Refusal::InvalidClaim("nbf".into())));
    }

    #[test]
    fn issuer_checked_when_configured() {
        let mut cfg = hs_config(&["HS256"]);
        let exp = get_current_timestamp() + 600;
        let token = |claims: Value| sign(Algorithm::HS256, &hs_key(), &claims);
        let with_iss = token(json!({"sub": "u", "exp": exp, "iss": "https://other"}));
        let no_iss = token(json!({"sub": "u", "exp": exp}));
        // Not configured: any or no issuer.
        let v = Verifier::from_config(&cfg).unwrap();
        assert!(v.verify(&with_iss).is_ok());
        cfg.issuer = Some("https://auth.example".into());
        let v = Verifier::from_config(&cfg).unwrap();
        assert_eq!(v.verify(&with_iss), Err(Refusal::WrongIssuer));
        assert_eq!(v.verify(&no_iss), Err(Refusal::MissingClaim("iss".into())));
        for odd in [json!(5), json!(["https://auth.example"]), json!({"x": 1})] {
            let t = token(json!({"sub": "u", "exp": exp, "iss": odd}));
            assert_eq!(v.verify(&t), Err(Refusal::WrongIssuer), "{odd}");
        }
        let t = token(json!({"sub": "u", "exp": exp, "iss": null}));
        assert_eq!(v.verify(&t), Err(Refusal::MissingClaim("iss".into())));
        let good = token(json!({"sub": "u", "exp": exp, "iss": "https://auth.example"}));
        assert!(v.verify(&good).is_ok());
    }

    #[test]
    fn audience_checked_when_configured() {
        let mut cfg = hs_config(&["HS256"]);
        let exp = get_current_timestamp() + 600;
        let token = |aud: Value| {
            sign(
                Algorithm::HS256,
                &hs_key(),
                &json!({"sub": "u", "exp": exp, "aud": aud}),
            )
        };
        // Not configured: a token with any `aud` is accepted.
        let v = Verifier::from_config(&cfg).unwrap();
        assert!(v.verify(&token(json!("billing"))).is_ok());
        cfg.audience = Some(vec!["switchboard".into(), "ws".into()]);
        let v = Verifier::from_config(&cfg).unwrap();
        assert_eq!(
            v.verify(&token(json!("billing"))),
            Err(Refusal::WrongAudience)
        );
        assert_eq!(
            v.verify(&token(json!(["billing", "api"]))),
            Err(Refusal::WrongAudience)
        );
        assert!(v.verify(&token(json!("ws"))).is_ok());
        assert!(v.verify(&token(json!(["billing", "switchboard"]))).is_ok());
        for odd in [json!(5), json!([]), json!(["ws", 5]), json!({"ws": true})] {
            assert_eq!(
                v.verify(&token(odd.clone())),
                Err(Refusal::WrongAudience),
                "{odd}"
            );
        }
        let no_aud = sign(
            Algorithm::HS256,
            &hs_key(),
            &json!({"sub": "u", "exp": exp}),
        );
        assert_eq!(v.verify(&no_aud), Err(Refusal::MissingClaim("aud".into())));
    }

    #[test]
    fn oversize_token_refused_before_parsing() {
        let v = Verifier::from_config(&hs_config(&["HS256"])).unwrap();
        assert_eq!(
            v.verify(&"x".repeat(MAX_TOKEN_BYTES + 1)),
            Err(Refusal::TokenTooLarge)
        );
        // A real, validly signed token over the cap is still refused.
        let big = json!({"sub": "u", "exp": get_current_timestamp() + 600, "pad": "p".repeat(MAX_TOKEN_BYTES)});
        assert_eq!(
            v.verify(&sign(Algorithm::HS256, &hs_key(), &big)),
            Err(Refusal::TokenTooLarge)
        );
        // Exactly at the cap is parsed (and here malformed).
        assert_eq!(
            v.verify(&"x".repeat(MAX_TOKEN_BYTES)),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn anonymous_only_mode_refuses_presented_tokens() {
        let mut cfg = hs_config(&["HS256"]);
        cfg.secret = None;
        cfg.allow_anonymous = true;
        let v = Verifier::from_config(&cfg).unwrap();
        assert_eq!(
            v.verify(&sign(Algorithm::HS256, &hs_key(), &valid_claims())),
            Err(Refusal::NoVerificationKey)
        );
    }

    #[test]
    fn bad_key_configuration_names_the_key() {
        let err = |cfg: &AuthConfig| Verifier::from_config(cfg).unwrap_err().to_string();

        let mut cfg = hs_config(&["HS256"]);
        cfg.secret = None;
        assert!(err(&cfg).contains("auth.secret"));

        let mut cfg = key_config(&["RS256"], RSA_PUBLIC);
        cfg.public_key_file = None;
        assert!(err(&cfg).contains("auth.public_key_file"));

        let mut cfg = key_config(&["RS256"], RSA_PUBLIC);
        cfg.public_key_file = Some("/nonexistent/key.pem".into());
        let e = err(&cfg);
        assert!(
            e.contains("auth.public_key_file") && e.contains("cannot read"),
            "{e}"
        );

        // Private key given where the public one belongs.
        let e = err(&key_config(&["RS256"], RSA_PRIVATE));
        assert!(
            e.contains("auth.public_key_file") && e.contains("private key"),
            "{e}"
        );

        // Key of the wrong type for the algorithms.
        for (algs, file) in [
            (&["RS256"][..], EC_PUBLIC),
            (&["ES256"][..], RSA_PUBLIC),
            (&["EdDSA"][..], EC_PUBLIC),
            // A P-256 key cannot serve ES384.
            (&["ES256", "ES384"][..], EC_PUBLIC),
        ] {
            let e = err(&key_config(algs, file));
            assert!(e.contains("auth.public_key_file"), "{algs:?}: {e}");
            assert!(!e.contains("BEGIN"), "no key material in errors: {e}");
        }

        // Not a PEM at all.
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let mut cfg = key_config(&["RS256"], RSA_PUBLIC);
        cfg.public_key_file = Some(junk);
        assert!(err(&cfg).contains("auth.public_key_file"));

        // One key file cannot serve two key types.
        let e = err(&key_config(&["RS256", "ES256"], RSA_PUBLIC));
        assert!(e.contains("auth.algorithms"), "{e}");
        assert!(err(&hs_config(&["none"])).contains("auth.algorithms"));
        assert!(err(&hs_config(&[])).contains("auth.algorithms"));
    }
}
