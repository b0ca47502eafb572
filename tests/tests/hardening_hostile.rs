//! Hostile input at the gateway.
//!
//! - JWT attacks, each refused at CONNECT with its own reason (client-visible
//!   `data.reason` and `switchboard_connect_refused_total{reason}`): `alg:
//!   none`, HS/RS key confusion, unsigned and truncated tokens, wrong
//!   `iss`/`aud`, `exp` past, `nbf` future, a token over 8 KiB.
//! - Malformed Engine.IO / Socket.IO traffic over raw websocket and raw
//!   polling closes only the offending connection: a well-behaved client on
//!   the same gateway keeps receiving broadcasts throughout.

mod common;
mod hardening_support;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use hardening_support::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use switchboard_testkit::{
    GatewayOptions,
    jwt::{Claims, alg_none, now_secs, sign_hmac},
    repo_root,
};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "switchboard";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn good_claims() -> Claims {
    Claims::new()
        .sub("u1")
        .claim("iss", ISSUER)
        .claim("aud", AUDIENCE)
}

/// CONNECT over a raw websocket with `token`; returns the CONNECT_ERROR body.
async fn refused_with(port: u16, token: &str) -> Value {
    let mut ws = RawWs::connect(port, "").await.unwrap();
    let reply = ws
        .sio_handshake(Some(json!({ "token": token })))
        .await
        .unwrap();
    let body = reply
        .strip_prefix("44")
        .unwrap_or_else(|| panic!("token must be refused, got {reply}"));
    serde_json::from_str(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attacks_are_refused_each_with_its_reason() {
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_AUTH__ISSUER", ISSUER),
        ("SWITCHBOARD_AUTH__AUDIENCE", AUDIENCE),
    ])
    .await;
    let port = gw.port();
    let good = good_claims().sign_hs256(SECRET);
    let last_dot = good.rfind('.').unwrap();
    let first_dot = good.find('.').unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            alg_none(&good_claims().build()),
            "algorithm_not_allowed",
        ),
        (
            "alg none, empty signature",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(good_claims().build().to_string().as_bytes())
            ),
            "algorithm_not_allowed",
        ),
        (
            "HS512 not configured",
            sign_hmac(Algorithm::HS512, SECRET, &good_claims().build()),
            "algorithm_not_allowed",
        ),
        (
            "unsigned (signature stripped)",
            good[..=last_dot].to_string(),
            "bad_signature",
        ),
        (
            "truncated in the payload",
            good[..first_dot + 10].to_string(),
            "malformed",
        ),
        ("not a JWT", "hello.world".to_string(), "malformed"),
        (
            "signed with another secret",
            good_claims().sign_hs256("another-secret-0123456789abcdef"),
            "bad_signature",
        ),
        (
            "claims swapped under a valid signature",
            {
                let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
                parts[1] = b64(good_claims().sub("admin").build().to_string().as_bytes());
                parts.join(".")
            },
            "bad_signature",
        ),
        (
            "wrong iss",
            good_claims()
                .claim("iss", "https://evil.example")
                .sign_hs256(SECRET),
            "wrong_issuer",
        ),
        (
            "wrong aud",
            good_claims()
                .claim("aud", "someone-else")
                .sign_hs256(SECRET),
            "wrong_audience",
        ),
        (
            "exp past (beyond leeway)",
            good_claims().expired(600).sign_hs256(SECRET),
            "expired",
        ),
        (
            "nbf future (beyond leeway)",
            good_claims()
                .claim("nbf", now_secs() + 600)
                .sign_hs256(SECRET),
            "not_yet_valid",
        ),
        (
            "no exp",
            good_claims().no_exp().sign_hs256(SECRET),
            "missing_claim",
        ),
        (
            "oversize (> 8 KiB)",
            good_claims()
                .claim("pad", "z".repeat(9 * 1024))
                .sign_hs256(SECRET),
            "token_too_large",
        ),
    ];
    for (name, token, reason) in &cases {
        let body = refused_with(port, token).await;
        assert_eq!(body["data"]["reason"], json!(reason), "{name}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("authentication failed: ")),
            "{name}: {body}"
        );
        // The message never echoes the token.
        assert!(!body.to_string().contains(token.as_str()), "{name}");
    }
    let text = metrics(&gw).await;
    for (_, _, reason) in &cases {
        let want = cases.iter().filter(|(_, _, r)| r == reason).count() as f64;
        let series = format!("switchboard_connect_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &series), Some(want), "{series}\n{text}");
    }
    // After all that, a good token still connects.
    RawWs::connected(port, &good)
        .await
        .expect("good token admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs_rs_key_confusion_is_refused() {
    let public = repo_root().join("gateway/tests/fixtures/auth/test-only-rsa2048-public.pem");
    let pem = std::fs::read(&public).expect("RSA public key fixture");
    let gw = start(
        GatewayOptions::new()
            .env("SWITCHBOARD_JWT_ALGORITHMS", "RS256")
            .env(
                "SWITCHBOARD_JWT_PUBLIC_KEY_FILE",
                public.display().to_string(),
            ),
    )
    .await;
    let port = gw.port();
    let claims = Claims::new().sub("mallory").role("admin").build();

    // HS256 "signed" with the public key PEM as the HMAC secret.
    let hs = sign_hmac(
        Algorithm::HS256,
        std::str::from_utf8(&pem).unwrap(),
        &claims,
    );
    let body = refused_with(port, &hs).await;
    assert_eq!(
        body["data"]["reason"],
        json!("algorithm_not_allowed"),
        "{body}"
    );

    // The same HMAC under a header that claims RS256: the key type decides,
    // never the token, so the signature simply does not verify.
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(&pem),
        Algorithm::HS256,
    )
    .unwrap();
    let body = refused_with(port, &format!("{input}.{sig}")).await;
    assert_eq!(body["data"]["reason"], json!("bad_signature"), "{body}");

    let text = metrics(&gw).await;
    assert_eq!(
        metric_or_zero(&text, "switchboard_connects_total{namespace=\"/\"}"),
        0.0,
        "nobody got in:\n{text}"
    );
}

/// One bad input and how it is sent.
struct Bad {
    name: &'static str,
    /// A websocket text frame, or a polling POST body.
    payload: String,
    /// Send over websocket (else polling).
    websocket: bool,
    /// Socket.IO CONNECT first.
    connect: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_traffic_closes_only_the_offender() {
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_SOCKETIO__MAX_ATTACHMENTS", "10"),
        ("SWITCHBOARD_ENGINE__MAX_PAYLOAD", "100000"),
    ])
    .await;
    let port = gw.port();
    let ws_bystander = RawWs::connected(port, &token("bystander"))
        .await
        .unwrap()
        .into_live();

    let too_many_attachments = format!(
        "4511-[\"ev\",{}]",
        (0..11)
            .map(|n| json!({"_placeholder": true, "num": n}).to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let huge = format!("42[\"huge\",\"{}\"]", "h".repeat(300_000));
    let mut cases = Vec::new();
    for websocket in [true, false] {
        for (name, payload, connect) in [
            ("engine.io packet type 9", "9".to_string(), false),
            (
                "engine.io packet type 9 after CONNECT",
                "9".to_string(),
                true,
            ),
            ("empty engine.io packet", String::new(), true),
            ("ack with a non-numeric id", "43abc[]".to_string(), true),
            (
                "event payload not an array",
                r#"42{"a":1}"#.to_string(),
                true,
            ),
            ("event name not a string", "42[1,2]".to_string(), true),
            ("reserved event name", r#"42["connect"]"#.to_string(), true),
            ("unknown socket.io packet type", "47[]".to_string(), true),
            ("event before CONNECT", r#"42["early"]"#.to_string(), false),
            ("CONNECT payload not an object", "40[1]".to_string(), false),
            ("too many attachments", too_many_attachments.clone(), true),
            ("payload over engine.max_payload", huge.clone(), true),
        ] {
            if payload.is_empty() && !websocket {
                continue;
            }
            cases.push(Bad {
                name,
                payload,
                websocket,
                connect,
            });
        }
    }

    for (tag, case) in cases.iter().enumerate() {
        let transport = if case.websocket {
            "websocket"
        } else {
            "polling"
        };
        let label = format!("{} over {transport}", case.name);
        let offender_sub = format!("offender{tag}");
        if case.websocket {
            let ws = if case.connect {
                RawWs::connected(port, &token(&offender_sub)).await.unwrap()
            } else {
                let mut ws = RawWs::connect(port, "").await.unwrap();
                ws.next_reply(STEP).await.unwrap();
                ws
            };
            let offender = ws.into_live();
            offender.send(case.payload.clone());
            let end = offender.wait_end(Duration::from_secs(5)).await;
            assert!(
                end.is_some(),
                "{label}: offender still connected: {}",
                offender.summary()
            );
        } else {
            let sid = if case.connect {
                polling_connected(port, &token(&offender_sub))
                    .await
                    .unwrap()
            } else {
                polling_open(port).await.unwrap()
            };
            let r = polling_post(port, &sid, case.payload.as_bytes()).await;
            if let Ok(r) = &r {
                assert!(
                    [200, 400, 413].contains(&r.status),
                    "{label}: POST answered {} {}",
                    r.status,
                    r.text()
                );
            }
            assert!(
                polling_closed(port, &sid, Duration::from_secs(5)).await,
                "{label}: polling session still open"
            );
        }
        // The bystander is still there and still receives broadcasts.
        api_emit_ok(
            &gw,
            json!({"event": "tick", "data": tag, "users": ["bystander"]}),
        )
        .await;
        assert!(
            ws_bystander.wait_event("tick", &json!(tag), T).await,
            "{label}: bystander lost: {}",
            ws_bystander.summary()
        );
    }
    assert!(ws_bystander.end().is_none(), "{}", ws_bystander.summary());
    assert_eq!(ws_bystander.events_named("tick").len(), cases.len());
    let text = metrics(&gw).await;
    let bad: f64 = text
        .lines()
        .filter(|l| l.starts_with("switchboard_bad_packets_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    assert!(bad >= 10.0, "bad packets counted:\n{text}");
    // Still healthy.
    let (status, _) = get(format!("{}/healthz", gw.url())).await.unwrap();
    assert_eq!(status, 200);
}
