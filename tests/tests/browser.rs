//! A real browser against a real gateway: headless Chromium (Debian's
//! `chromium` + `chromium-driver`, driven by selenium) opens a plain page
//! that loads socket.io-client's browser bundle from a static server with
//! its own origin, connects to the gateway with a JWT, and shows the events
//! published through the gateway's HTTP API. One browser runs four phases:
//! websocket only; polling upgraded to websocket; a refused token; a page
//! origin the gateway does not allow. A screenshot of the upgraded page is
//! kept under `target/test-artifacts/browser/`.
//!
//! Skips (loudly) only where Chromium or chromedriver is not installed;
//! fails instead when `SWITCHBOARD_REQUIRE_TOOLS` lists `chromium`, as
//! `.ci/run` sets it.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_testkit::{
    GatewayOptions, GatewayProcess,
    browser::{Browser, BrowserPaths, StaticSite, artifacts_dir},
    jwt::Claims,
    net::http_request,
    node::{ensure_node_modules, node_dir},
    repo_root,
    tools::skip_missing,
};

const SECRET: &str = "browser-test-secret-0123456789abcdef";
const API_KEY: &str = "browser-test-api-key-0123456789";
/// Bound for anything the page should show; generous for a loaded machine.
const T: Duration = Duration::from_secs(20);

/// `POST /api/v1/emit`, which must be accepted.
fn publish(gw: &GatewayProcess, body: Value) {
    let auth = format!("Bearer {API_KEY}");
    let resp = http_request(
        "POST",
        &format!("{}/api/v1/emit", gw.url()),
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        Some(body.to_string().as_bytes()),
        Duration::from_secs(10),
    )
    .expect("POST /api/v1/emit");
    assert_eq!(resp.status, 200, "publish {body}: {}", resp.text());
}

/// The page URL for `origin`, connecting to `gw` with `token`.
fn page(origin: &str, gw: &GatewayProcess, token: &str, transports: Option<&str>) -> String {
    let mut url = format!("{origin}/socketio.html?gateway={}&token={token}", gw.url());
    if let Some(t) = transports {
        url.push_str(&format!("&transports={t}"));
    }
    url
}

/// The value of `series` in the gateway's `/metrics`, 0 if absent.
fn metric(gw: &GatewayProcess, series: &str) -> f64 {
    let (status, text) =
        switchboard_testkit::http_get(&format!("{}/metrics", gw.url())).expect("GET /metrics");
    assert_eq!(status, 200);
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn browser_page_connects_authenticates_and_shows_published_events() {
    let paths = match BrowserPaths::find() {
        Ok(p) => p,
        Err(why) => {
            skip_missing("chromium", "browser test", &why);
            return;
        }
    };
    ensure_node_modules().expect("npm ci in tests/node (for socket.io-client's bundle)");
    let bundle = node_dir().join("node_modules/socket.io-client/dist/socket.io.min.js");
    let page_src = repo_root().join("tests/browser/socketio.html");
    let site = StaticSite::start(&[
        ("socketio.html", page_src.as_path()),
        ("socket.io.min.js", bundle.as_path()),
    ])
    .expect("static site");
    // Only the site's own origin may connect (this also turns on CORS for
    // it, which the polling transport needs across origins).
    let gw = GatewayProcess::start(
        GatewayOptions::new()
            .secret(SECRET)
            .env("SWITCHBOARD_API_KEYS", API_KEY)
            .env("SWITCHBOARD_ALLOWED_ORIGINS", site.origin()),
    )
    .expect("gateway starts");
    let alice = Claims::new().sub("alice").sign_hs256(SECRET);
    let mut browser = Browser::start(&paths).expect("Chromium starts");
    eprintln!("browser: {}", browser.version);

    // 1. Websocket only.
    browser
        .open(&page(&site.origin(), &gw, &alice, Some("websocket")))
        .unwrap();
    browser.wait_text("#status", "connected", T).unwrap();
    assert_eq!(browser.text("#transport").unwrap(), "websocket");
    let sid = browser.text("#sid").unwrap();
    assert!(sid.len() >= 16, "socket id shown: {sid:?}");
    publish(
        &gw,
        json!({"event": "ticket_updated", "users": ["alice"], "data": {"id": 7, "title": "Printer on fire"}}),
    );
    let events = browser.wait_text("#events", "ticket_updated", T).unwrap();
    assert!(
        events.contains(r#"[{"id":7,"title":"Printer on fire"}]"#),
        "{events}"
    );

    // 2. Polling first, then the upgrade to websocket (a new page load, so
    // a new connection).
    browser
        .open(&page(&site.origin(), &gw, &alice, None))
        .unwrap();
    browser.wait_text("#status", "connected", T).unwrap();
    browser
        .wait_text("#transport", "websocket (upgraded from polling)", T)
        .unwrap();
    assert!(
        browser.text("#events").unwrap().is_empty(),
        "a fresh page has no events yet"
    );
    publish(
        &gw,
        json!({"event": "ticket_assigned", "users": ["alice"], "data": {"id": 8, "assignee": "alice"}}),
    );
    let events = browser.wait_text("#events", "ticket_assigned", T).unwrap();
    assert!(
        events.contains(r#"[{"id":8,"assignee":"alice"}]"#),
        "{events}"
    );
    assert!(metric(&gw, "switchboard_upgrades_total") >= 1.0);
    let shot = artifacts_dir("browser")
        .unwrap()
        .join("socketio-polling-upgrade.png");
    browser.screenshot(&shot).unwrap();
    eprintln!("screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);

    // 3. A token signed with another key is refused, with its reason.
    let forged = Claims::new()
        .sub("mallory")
        .sign_hs256("not-the-gateway-secret-0123456789");
    browser
        .open(&page(&site.origin(), &gw, &forged, Some("websocket")))
        .unwrap();
    let status = browser.wait_text("#status", "connect_error", T).unwrap();
    assert!(status.contains("bad_signature"), "{status}");

    // 4. The same page from an origin the gateway does not allow: the
    // browser sends its real Origin and the gateway refuses it.
    let refused_before = metric(
        &gw,
        r#"switchboard_engine_errors_total{error="origin_not_allowed"}"#,
    );
    browser
        .open(&page(&site.other_origin(), &gw, &alice, Some("websocket")))
        .unwrap();
    browser.wait_text("#status", "connect_error", T).unwrap();
    assert!(
        metric(
            &gw,
            r#"switchboard_engine_errors_total{error="origin_not_allowed"}"#
        ) > refused_before,
        "the gateway did not count the refused origin; logs:\n{}",
        gw.logs()
    );
    browser.quit().unwrap();
}
