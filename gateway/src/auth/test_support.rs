//! Shared helpers for the auth unit tests: fixture keys, configs and
//! handshakes. Test-only; the keys under `tests/fixtures/auth/` are published
//! and must never be used outside tests.

use std::path::PathBuf;

use crate::{config::AuthConfig, engine::Handshake};

/// An HMAC secret long enough for the config's 16-byte minimum.
pub const SECRET: &str = "test-only-secret-0123456789abcdef";

pub const RSA_PRIVATE: &str = "test-only-rsa2048-private.pem";
pub const RSA_PUBLIC: &str = "test-only-rsa2048-public.pem";
pub const EC_PRIVATE: &str = "test-only-ec-p256-private.pem";
pub const EC_PUBLIC: &str = "test-only-ec-p256-public.pem";
pub const ED_PRIVATE: &str = "test-only-ed25519-private.pem";
pub const ED_PUBLIC: &str = "test-only-ed25519-public.pem";

/// Path of a fixture file under `gateway/tests/fixtures/auth/`.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth")
        .join(name)
}

/// Bytes of a fixture file.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).expect("fixture key present")
}

/// Defaults with a secret and the given HS* algorithms.
pub fn hs_config(algorithms: &[&str]) -> AuthConfig {
    AuthConfig {
        algorithms: algorithms.iter().map(|a| a.to_string()).collect(),
        secret: Some(SECRET.into()),
        ..AuthConfig::default()
    }
}

/// Defaults with a public key fixture and the given algorithms.
pub fn key_config(algorithms: &[&str], public_key: &str) -> AuthConfig {
    AuthConfig {
        algorithms: algorithms.iter().map(|a| a.to_string()).collect(),
        public_key_file: Some(fixture_path(public_key)),
        ..AuthConfig::default()
    }
}

/// A handshake with the given query string and headers.
pub fn handshake(query: &str, headers: &[(&str, &str)]) -> Handshake {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(value).expect("header value"),
        );
    }
    Handshake {
        headers: map.into(),
        query: query.into(),
        remote: "127.0.0.1:5000".parse().expect("addr"),
        issued_ms: 0,
        client_ip: "127.0.0.1".parse().expect("addr"),
    }
}
