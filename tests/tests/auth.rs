//! Connect-time authentication seen from the official client: every token
//! location and their configured order, every refusal reason (client-visible
//! and counted in `/metrics`), unknown namespaces, anonymous connections and
//! RS256 with a PEM public key.
//!
//! Which token a connection was admitted with is checked by publishing to
//! `user:<sub>` through the publish API: only the right user gets it.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use switchboard_testkit::{
    GatewayProcess,
    jwt::{Claims, alg_none, now_secs, sign_hmac, sign_pem},
    node::{ConnectOptions, NodeDriver, Note},
    repo_root,
};

/// Asserts that the client `name` was admitted as user `sub`: an event for
/// `user:<sub>` reaches it exactly once.
async fn assert_is_user(node: &NodeDriver, gw: &GatewayProcess, name: &str, sub: &str) {
    let event = format!("for-{name}");
    api_emit_ok(gw, json!({"event": event, "data": sub, "users": [sub]})).await;
    assert_eq!(expect_once(node, name, &event).await, vec![json!(sub)]);
}

/// Connects a client that must be refused; returns (message, data).
async fn refused(
    node: &NodeDriver,
    gw: &GatewayProcess,
    name: &str,
    url_path: &str,
    opts: ConnectOptions,
) -> (String, Value) {
    let url = format!("{}{url_path}", gw.url());
    let res = node
        .connect(name, &url, opts.timeout(Duration::from_secs(8)))
        .await;
    assert!(
        res.is_err(),
        "{name} was admitted but must be refused: {res:?}"
    );
    let note = node
        .take_note(name, T, |n| matches!(n, Note::ConnectError { .. }))
        .await
        .expect("connect_error note");
    match note {
        Note::ConnectError { message, data } => (message, data),
        _ => unreachable!(),
    }
}

// ------------------------------------------------------------ token sources

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_connect_auth_payload() {
    let gw = embedded_gateway(&[]).await;
    let node = node().await;
    connect(
        &node,
        "ws",
        &gw,
        ConnectOptions::new().websocket_only().token(token("u-ws")),
    )
    .await;
    connect(
        &node,
        "poll",
        &gw,
        ConnectOptions::new().polling_only().token(token("u-poll")),
    )
    .await;
    // "Bearer <jwt>" in the payload is accepted too.
    connect(
        &node,
        "bearer",
        &gw,
        ConnectOptions::new()
            .websocket_only()
            .token(format!("Bearer {}", token("u-bearer"))),
    )
    .await;
    assert_is_user(&node, &gw, "ws", "u-ws").await;
    assert_is_user(&node, &gw, "poll", "u-poll").await;
    assert_is_user(&node, &gw, "bearer", "u-bearer").await;
    expect_none(&node, "ws", "for-poll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_authorization_header() {
    let gw = embedded_gateway(&[]).await;
    let node = node().await;
    for (name, opts) in [
        ("poll", ConnectOptions::new().polling_only()),
        ("ws", ConnectOptions::new().websocket_only()),
        ("upgrade", ConnectOptions::new()),
    ] {
        let sub = format!("hdr-{name}");
        connect(
            &node,
            name,
            &gw,
            opts.header("Authorization", format!("Bearer {}", token(&sub))),
        )
        .await;
        assert_is_user(&node, &gw, name, &sub).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_cookie() {
    // Cookie tokens are opt-in and need an origin allowlist (CSWSH).
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_AUTH__TOKEN_SOURCES", "auth,header,cookie"),
        ("SWITCHBOARD_ALLOWED_ORIGINS", "https://app.example.com"),
    ])
    .await;
    let node = node().await;
    for (name, opts) in [
        ("poll", ConnectOptions::new().polling_only()),
        ("ws", ConnectOptions::new().websocket_only()),
    ] {
        let sub = format!("cookie-{name}");
        connect(
            &node,
            name,
            &gw,
            opts.header("Cookie", format!("theme=dark; token={}; x=1", token(&sub))),
        )
        .await;
        assert_is_user(&node, &gw, name, &sub).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_query_parameter() {
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_AUTH__TOKEN_SOURCES", "auth,header,query"),
        ("SWITCHBOARD_ALLOWED_ORIGINS", "https://app.example.com"),
    ])
    .await;
    let node = node().await;
    for (name, opts) in [
        ("poll", ConnectOptions::new().polling_only()),
        ("ws", ConnectOptions::new().websocket_only()),
    ] {
        let sub = format!("query-{name}");
        connect(&node, name, &gw, opts.query("token", token(&sub))).await;
        assert_is_user(&node, &gw, name, &sub).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_sources_default_order_prefers_auth_payload() {
    let gw = embedded_gateway(&[]).await;
    let node = node().await;
    // Default sources and order: auth, header (cookie and query are opt-in).
    connect(
        &node,
        "c",
        &gw,
        ConnectOptions::new()
            .websocket_only()
            .token(token("from-auth"))
            .query("token", token("from-query"))
            .header("Authorization", format!("Bearer {}", token("from-header"))),
    )
    .await;
    assert_is_user(&node, &gw, "c", "from-auth").await;
    api_emit_ok(
        &gw,
        json!({"event": "wrong", "data": 1, "users": ["from-query", "from-header"]}),
    )
    .await;
    expect_none(&node, "c", "wrong").await;

    // The first source holding a token wins even when that token is bad.
    let expired = Claims::new().sub("old").expired(3600).sign_hs256(SECRET);
    let (message, data) = refused(
        &node,
        &gw,
        "c2",
        "",
        ConnectOptions::new()
            .websocket_only()
            .token(expired)
            .query("token", token("from-query")),
    )
    .await;
    assert_eq!(data["reason"], json!("expired"), "{message} {data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_sources_configured_order_query_then_auth() {
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_AUTH__TOKEN_SOURCES", "query,auth"),
        ("SWITCHBOARD_ALLOWED_ORIGINS", "https://app.example.com"),
    ])
    .await;
    let node = node().await;
    connect(
        &node,
        "c",
        &gw,
        ConnectOptions::new()
            .websocket_only()
            .token(token("from-auth"))
            .query("token", token("from-query")),
    )
    .await;
    assert_is_user(&node, &gw, "c", "from-query").await;
    api_emit_ok(
        &gw,
        json!({"event": "wrong", "data": 1, "users": ["from-auth"]}),
    )
    .await;
    expect_none(&node, "c", "wrong").await;

    // Without a query token the auth payload is used.
    connect(
        &node,
        "auth-only",
        &gw,
        ConnectOptions::new()
            .polling_only()
            .token(token("only-auth")),
    )
    .await;
    assert_is_user(&node, &gw, "auth-only", "only-auth").await;

    // An expired token in the query is refused even with a good auth token.
    let expired = Claims::new().sub("old").expired(3600).sign_hs256(SECRET);
    let (_, data) = refused(
        &node,
        &gw,
        "bad-query",
        "",
        ConnectOptions::new()
            .websocket_only()
            .token(token("from-auth"))
            .query("token", expired),
    )
    .await;
    assert_eq!(data["reason"], json!("expired"), "{data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_sources_unlisted_source_is_ignored() {
    let gw = embedded_gateway(&[("SWITCHBOARD_AUTH__TOKEN_SOURCES", "header")]).await;
    let node = node().await;
    let (message, data) = refused(
        &node,
        &gw,
        "c",
        "",
        ConnectOptions::new()
            .websocket_only()
            .token(token("from-auth"))
            .query("token", token("from-query"))
            .header("Cookie", format!("token={}", token("from-cookie"))),
    )
    .await;
    assert_eq!(message, "authentication failed: no token");
    assert_eq!(data["reason"], json!("missing_token"));
    connect(
        &node,
        "hdr",
        &gw,
        ConnectOptions::new()
            .websocket_only()
            .header("Authorization", format!("Bearer {}", token("from-header"))),
    )
    .await;
    assert_is_user(&node, &gw, "hdr", "from-header").await;
}

// ------------------------------------------------------------- refusals

const ISSUER: &str = "https://issuer.switchboard.test";
const AUDIENCE: &str = "switchboard-gateway";

/// Claims valid for the issuer/audience gateway.
fn good_claims() -> Claims {
    Claims::new()
        .sub("u1")
        .claim("iss", ISSUER)
        .claim("aud", AUDIENCE)
}

/// One refusal: the client sees `message` and `data.reason == reason`, the
/// counter for `reason` is 1, and a good token still connects afterwards.
async fn refusal_case(token: Option<String>, reason: &str, message: &str) {
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_AUTH__ISSUER", ISSUER),
        ("SWITCHBOARD_AUTH__AUDIENCE", AUDIENCE),
    ])
    .await;
    let node = node().await;
    let series = format!("switchboard_connect_refused_total{{reason=\"{reason}\"}}");
    assert_eq!(metric_or_zero(&metrics(&gw).await, &series), 0.0);

    for (name, opts) in [
        ("ws", ConnectOptions::new().websocket_only()),
        ("poll", ConnectOptions::new().polling_only()),
    ] {
        let opts = match &token {
            Some(t) => opts.token(t.clone()),
            None => opts,
        };
        let (got_message, data) = refused(&node, &gw, name, "", opts).await;
        assert_eq!(got_message, message, "{name}: data {data}");
        assert_eq!(data, json!({"reason": reason}), "{name}");
    }
    let text = metrics(&gw).await;
    assert_eq!(metric(&text, &series), Some(2.0), "{series} in:\n{text}");
    assert_eq!(
        metric_or_zero(&text, "switchboard_connects_total{namespace=\"/\"}"),
        0.0
    );

    // The same gateway admits a good token.
    connect(
        &node,
        "good",
        &gw,
        ConnectOptions::new()
            .websocket_only()
            .token(good_claims().sign_hs256(SECRET)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_missing_token() {
    refusal_case(None, "missing_token", "authentication failed: no token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_expired() {
    let t = good_claims().expired(3600).sign_hs256(SECRET);
    refusal_case(Some(t), "expired", "authentication failed: token expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bad_signature() {
    let t = good_claims().sign_hs256("some-other-secret-0123456789");
    refusal_case(
        Some(t),
        "bad_signature",
        "authentication failed: invalid token signature",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_wrong_audience() {
    let t = good_claims()
        .claim("aud", "someone-else")
        .sign_hs256(SECRET);
    refusal_case(
        Some(t),
        "wrong_audience",
        "authentication failed: token audience not accepted",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_wrong_issuer() {
    let t = good_claims()
        .claim("iss", "https://evil.example")
        .sign_hs256(SECRET);
    refusal_case(
        Some(t),
        "wrong_issuer",
        "authentication failed: token issuer not accepted",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_nbf_in_future() {
    let t = good_claims()
        .claim("nbf", now_secs() + 3600)
        .sign_hs256(SECRET);
    refusal_case(
        Some(t),
        "not_yet_valid",
        "authentication failed: token not yet valid",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_alg_none() {
    let t = alg_none(&good_claims().build());
    refusal_case(
        Some(t),
        "algorithm_not_allowed",
        "authentication failed: token algorithm not allowed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_algorithm_not_allowed_hs512() {
    let t = sign_hmac(Algorithm::HS512, SECRET, &good_claims().build());
    refusal_case(
        Some(t),
        "algorithm_not_allowed",
        "authentication failed: token algorithm not allowed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_malformed() {
    refusal_case(
        Some("definitely-not-a-jwt".into()),
        "malformed",
        "authentication failed: malformed token",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_namespace_is_invalid_namespace() {
    let gw = embedded_gateway(&[]).await;
    let node = node().await;
    for (name, opts) in [
        ("ws", ConnectOptions::new().websocket_only()),
        ("poll", ConnectOptions::new().polling_only()),
    ] {
        let (message, _data) = refused(
            &node,
            &gw,
            name,
            "/no-such-namespace",
            opts.token(token("u1")),
        )
        .await;
        assert_eq!(message, "Invalid namespace", "{name}");
    }
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_connect_refused_total{reason=\"invalid_namespace\"}"
        ),
        Some(2.0),
        "{text}"
    );
}

// ------------------------------------------------------------- anonymous

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_allowed_joins_only_public_rooms() {
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_AUTH__ALLOW_ANONYMOUS", "true"),
        ("SWITCHBOARD_AUTH__PUBLIC_ROOMS", "lobby,news"),
    ])
    .await;
    let node = node().await;
    let anon = connect(&node, "anon", &gw, ConnectOptions::new().websocket_only()).await;
    connect(
        &node,
        "admin",
        &gw,
        ConnectOptions::new()
            .websocket_only()
            .token(token_role("boss", "admin")),
    )
    .await;

    for room in ["lobby", "news"] {
        api_emit_ok(&gw, json!({"event": room, "data": room, "rooms": [room]})).await;
        assert_eq!(expect_once(&node, "anon", room).await, vec![json!(room)]);
        assert_eq!(expect_once(&node, "admin", room).await, vec![json!(room)]);
    }
    // Rooms from claims are not the anonymous socket's.
    api_emit_ok(
        &gw,
        json!({"event": "private", "data": 1, "roles": ["admin"]}),
    )
    .await;
    expect_once(&node, "admin", "private").await;
    expect_none(&node, "anon", "private").await;
    for room in ["user:", "user:undefined", "user:null", "role:", "other"] {
        api_emit_ok(
            &gw,
            json!({"event": "stray", "data": room, "rooms": [room]}),
        )
        .await;
    }
    expect_none(&node, "anon", "stray").await;
    // The anonymous socket's own id still addresses it.
    api_emit_ok(
        &gw,
        json!({"event": "direct", "data": 1, "rooms": [anon.sid]}),
    )
    .await;
    expect_once(&node, "anon", "direct").await;
    expect_none(&node, "admin", "direct").await;

    // A present but invalid token is still refused.
    let expired = Claims::new().sub("old").expired(3600).sign_hs256(SECRET);
    let (_, data) = refused(
        &node,
        &gw,
        "bad",
        "",
        ConnectOptions::new().websocket_only().token(expired),
    )
    .await;
    assert_eq!(data["reason"], json!("expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_refused_by_default() {
    let gw = embedded_gateway(&[("SWITCHBOARD_AUTH__PUBLIC_ROOMS", "lobby")]).await;
    let node = node().await;
    let (_, data) = refused(
        &node,
        &gw,
        "anon",
        "",
        ConnectOptions::new().websocket_only(),
    )
    .await;
    assert_eq!(data["reason"], json!("missing_token"));
}

// ------------------------------------------------------------- RS256

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_with_pem_public_key_fixture() {
    let fixtures = repo_root().join("gateway/tests/fixtures/auth");
    let public = fixtures.join("test-only-rsa2048-public.pem");
    let private = std::fs::read(fixtures.join("test-only-rsa2048-private.pem")).unwrap();
    let gw = start(
        switchboard_testkit::GatewayOptions::new()
            .env("SWITCHBOARD_API_KEYS", API_KEY)
            .env("SWITCHBOARD_JWT_ALGORITHMS", "RS256")
            .env(
                "SWITCHBOARD_JWT_PUBLIC_KEY_FILE",
                public.display().to_string(),
            ),
    )
    .await;
    let node = node().await;

    let claims = Claims::new().sub("rsa-user").role("admin").build();
    let t = sign_pem(Algorithm::RS256, &private, &claims).unwrap();
    connect(
        &node,
        "rsa",
        &gw,
        ConnectOptions::new().websocket_only().token(t),
    )
    .await;
    assert_is_user(&node, &gw, "rsa", "rsa-user").await;

    // HS256 signed with the public key bytes (key confusion) and a plain
    // HS256 token are refused: the algorithm is not configured.
    let pem = std::fs::read_to_string(&public).unwrap();
    for (name, t) in [
        ("confused", sign_hmac(Algorithm::HS256, &pem, &claims)),
        ("hs", sign_hmac(Algorithm::HS256, SECRET, &claims)),
    ] {
        let (_, data) = refused(
            &node,
            &gw,
            name,
            "",
            ConnectOptions::new().websocket_only().token(t),
        )
        .await;
        assert_eq!(data["reason"], json!("algorithm_not_allowed"), "{name}");
    }
    // A valid RS256 token whose payload was swapped fails the signature.
    let good = sign_pem(Algorithm::RS256, &private, &claims).unwrap();
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[1] = base64_url(Claims::new().sub("intruder").build().to_string().as_bytes());
    let tampered = parts.join(".");
    let (_, data) = refused(
        &node,
        &gw,
        "tampered",
        "",
        ConnectOptions::new().websocket_only().token(tampered),
    )
    .await;
    assert_eq!(data["reason"], json!("bad_signature"));
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
