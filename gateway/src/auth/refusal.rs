//! Why a connection was refused at CONNECT, in two forms: a bounded metric
//! label for operators and a short message for the client.

use std::fmt;

/// Why a connection was refused.
///
/// One variant per cause an operator may need to tell apart on a dashboard
/// (`switchboard_connect_refused_total{reason=...}`) or in logs. The client
/// gets [`Refusal::message`] in its CONNECT_ERROR, which names the cause but
/// never echoes configuration values, key material or token contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token in any configured source and anonymous connections are off.
    MissingToken,
    /// The token is not a well-formed JWS compact token (parts, base64, JSON).
    Malformed,
    /// The signature does not match the configured key or secret.
    BadSignature,
    /// `exp` is in the past (beyond `auth.leeway_s`).
    Expired,
    /// `nbf` is in the future (beyond `auth.leeway_s`).
    NotYetValid,
    /// `iss` is not `auth.issuer`.
    WrongIssuer,
    /// `aud` holds none of `auth.audience`.
    WrongAudience,
    /// The token's header `alg` is not in `auth.algorithms` (covers `none`
    /// and HS/RS key confusion).
    AlgorithmNotAllowed,
    /// A required claim is absent: `exp`, the user claim, or `iss`/`aud`
    /// when those are configured. Holds the claim name (from config or the
    /// JWT spec, never from the token).
    MissingClaim(String),
    /// A claim the gateway relies on has an unusable type, e.g. a
    /// non-numeric `exp` or an object as the user claim. Holds the claim name.
    InvalidClaim(String),
    /// The token is longer than [`super::MAX_TOKEN_BYTES`]; refused before
    /// any parsing.
    TokenTooLarge,
    /// A token was presented but the gateway has no key to verify it with
    /// (HS* configured without `auth.secret`, anonymous-only mode). Set
    /// `auth.token_sources = []` to ignore tokens instead.
    NoVerificationKey,
    /// The verifier failed for a reason that is the gateway's, not the
    /// client's (a key that passed the start-up check but not a later use).
    Internal,
}

impl Refusal {
    /// Stable snake_case label for the metric
    /// `switchboard_connect_refused_total{reason=...}` and logs. Bounded:
    /// variants with a payload share one label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::AlgorithmNotAllowed => "algorithm_not_allowed",
            Refusal::MissingClaim(_) => "missing_claim",
            Refusal::InvalidClaim(_) => "invalid_claim",
            Refusal::TokenTooLarge => "token_too_large",
            Refusal::NoVerificationKey => "no_verification_key",
            Refusal::Internal => "internal_error",
        }
    }

    /// Client-visible message for CONNECT_ERROR, e.g.
    /// `"authentication failed: token expired"`. Never leaks key material,
    /// configured values or token contents.
    pub fn message(&self) -> String {
        let detail = match self {
            Refusal::MissingToken => "no token".to_string(),
            Refusal::Malformed => "malformed token".to_string(),
            Refusal::BadSignature => "invalid token signature".to_string(),
            Refusal::Expired => "token expired".to_string(),
            Refusal::NotYetValid => "token not yet valid".to_string(),
            Refusal::WrongIssuer => "token issuer not accepted".to_string(),
            Refusal::WrongAudience => "token audience not accepted".to_string(),
            Refusal::AlgorithmNotAllowed => "token algorithm not allowed".to_string(),
            Refusal::MissingClaim(claim) => format!("token lacks required claim `{claim}`"),
            Refusal::InvalidClaim(claim) => format!("token claim `{claim}` has an invalid value"),
            Refusal::TokenTooLarge => "token too large".to_string(),
            Refusal::NoVerificationKey => "this gateway does not accept tokens".to_string(),
            Refusal::Internal => "internal error".to_string(),
        };
        format!("authentication failed: {detail}")
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Refusal> {
        vec![
            Refusal::MissingToken,
            Refusal::Malformed,
            Refusal::BadSignature,
            Refusal::Expired,
            Refusal::NotYetValid,
            Refusal::WrongIssuer,
            Refusal::WrongAudience,
            Refusal::AlgorithmNotAllowed,
            Refusal::MissingClaim("sub".into()),
            Refusal::InvalidClaim("exp".into()),
            Refusal::TokenTooLarge,
            Refusal::NoVerificationKey,
            Refusal::Internal,
        ]
    }

    #[test]
    fn reasons_are_unique_snake_case_labels() {
        let reasons: Vec<_> = all().iter().map(Refusal::reason).collect();
        let mut unique = reasons.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), reasons.len());
        for r in reasons {
            assert!(r.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{r}");
        }
        assert_eq!(
            Refusal::MissingClaim("a".into()).reason(),
            Refusal::MissingClaim("b".into()).reason()
        );
    }

    #[test]
    fn messages_share_a_prefix() {
        assert_eq!(
            Refusal::Expired.message(),
            "authentication failed: token expired"
        );
        assert_eq!(
            Refusal::MissingClaim("sub".into()).to_string(),
            "authentication failed: token lacks required claim `sub`"
        );
        for r in all() {
            assert!(r.message().starts_with("authentication failed: "));
        }
    }
}
