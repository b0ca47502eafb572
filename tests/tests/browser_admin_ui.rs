//! The official Socket.IO Admin UI (`@socket.io/admin-ui` 0.5.1's
//! `ui/dist`), served by the gateway under `/admin/` (`admin.ui_dir`), in a
//! real headless Chromium (selenium with Debian's chromium-driver): log in
//! through the UI's connection form, see the gateway among the servers, the
//! connected test clients and their rooms, and disconnect a client from the
//! UI. Screenshots are kept under `target/test-artifacts/browser/` (the ones
//! in docs/images come from here).
//!
//! The UI's index.html also loads Roboto and the Material Design icons from
//! public CDNs; offline they fail and the app works without them (text
//! fallback fonts, no icon glyphs), which is what this test sees in CI.
//!
//! Skips (loudly) only where Chromium or chromedriver is not installed;
//! fails instead when `SWITCHBOARD_REQUIRE_TOOLS` lists `chromium`.

mod common;

use common::*;
use serde_json::json;
use switchboard_testkit::{
    browser::{Browser, BrowserPaths, artifacts_dir},
    node::{ConnectOptions, node_dir},
    tools::skip_missing,
};

const USER: &str = "ops";
const PASSWORD: &str = "browser admin password";
/// Bound for anything the page should show; generous for a loaded machine.
const PAGE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs blocking browser commands from the async test.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Marks the connection form's inputs with ids, by their labels, so that
/// selenium can type into them like a user (Vue sees real key events).
const TAG_FORM: &str = r#"
const ids = {"Server URL": "sb-url", "Username": "sb-user", "Password": "sb-pass"};
let found = 0;
for (const field of document.querySelectorAll(".v-dialog .v-input")) {
  const label = field.querySelector("label");
  const input = field.querySelector("input");
  if (label && input && ids[label.textContent.trim()]) {
    input.id = ids[label.textContent.trim()];
    found++;
  }
}
return found;
"#;

/// Clicks the disconnect button of the sockets table row showing `arguments[0]`.
const DISCONNECT_ROW: &str = r#"
for (const row of document.querySelectorAll("tbody tr")) {
  if (row.textContent.includes(arguments[0])) {
    const button = row.querySelector("button");
    if (button) { button.click(); return true; }
  }
}
return false;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ui_served_by_the_gateway_shows_and_disconnects_clients() {
    let paths = match BrowserPaths::find() {
        Ok(p) => p,
        Err(why) => {
            skip_missing("chromium", "Admin UI browser test", &why);
            return;
        }
    };
    let d = node().await; // installs tests/node/node_modules (the UI's files)
    let ui_dir = node_dir().join("node_modules/@socket.io/admin-ui/ui/dist");
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    let gw = embedded_gateway(&[
        ("SWITCHBOARD_ADMIN__ENABLED", "true"),
        ("SWITCHBOARD_ADMIN__USERNAME", USER),
        ("SWITCHBOARD_ADMIN__PASSWORD_BCRYPT", &hash),
        (
            "SWITCHBOARD_ADMIN__UI_DIR",
            ui_dir.to_str().expect("utf-8 path"),
        ),
    ])
    .await;
    let alice = d
        .connect(
            "alice",
            &gw.url(),
            ConnectOptions::new().token(token_role("alice", "agent")),
        )
        .await
        .unwrap();
    let bob = d
        .connect(
            "bob",
            &gw.url(),
            ConnectOptions::new().token(token_role("bob", "supervisor")),
        )
        .await
        .unwrap();

    let mut browser = blocking(|| Browser::start(&paths)).expect("Chromium starts");
    let shots = artifacts_dir("browser").unwrap();
    let url = gw.url();
    blocking(|| -> anyhow::Result<()> {
        browser.open(&format!("{url}/admin/"))?;
        // The connection form: the server URL, the login.
        browser.wait_text(".v-dialog", "Server URL", PAGE)?;
        let tagged = browser.eval(TAG_FORM, &[])?;
        assert_eq!(tagged, json!(3), "the connection form's fields");
        browser.type_text("#sb-url", &url)?;
        browser.type_text("#sb-user", USER)?;
        browser.type_text("#sb-pass", PASSWORD)?;
        browser.eval(
            r#"for (const b of document.querySelectorAll(".v-dialog button"))
                 if (b.textContent.includes("Connect")) { b.click(); return true; }
               return false;"#,
            &[],
        )?;
        // Logged in: this gateway among the servers, healthy.
        browser.eval("location.hash = '#/servers/'; return true;", &[])?;
        let servers =
            browser.wait_text("body", &format!("#{}", gw.pid().unwrap_or_default()), PAGE)?;
        // (The UI upper-cases some labels with CSS; selenium shows them so.)
        assert!(servers.to_lowercase().contains("healthy"), "{servers}");
        assert!(!servers.to_lowercase().contains("unhealthy"), "{servers}");
        browser.screenshot(&shots.join("admin-ui-servers.png"))?;

        // The test clients, then their rooms.
        browser.eval("location.hash = '#/sockets/'; return true;", &[])?;
        browser.wait_text("body", &alice.sid, PAGE)?;
        browser.wait_text("body", &bob.sid, PAGE)?;
        browser.screenshot(&shots.join("admin-ui-sockets.png"))?;
        browser.eval("location.hash = '#/rooms/'; return true;", &[])?;
        browser.wait_text("body", "role:agent", PAGE)?;
        browser.wait_text("body", "user:bob", PAGE)?;
        browser.screenshot(&shots.join("admin-ui-rooms.png"))?;

        // Disconnect bob from the sockets page.
        browser.eval("location.hash = '#/sockets/'; return true;", &[])?;
        browser.wait_text("body", &bob.sid, PAGE)?;
        let clicked = browser.eval(DISCONNECT_ROW, &[json!(bob.sid)])?;
        assert_eq!(clicked, json!(true), "the disconnect button of bob's row");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\ngateway logs:\n{}", gw.logs()));
    assert_eq!(
        d.expect_disconnect("bob", T).await.unwrap(),
        "io server disconnect"
    );
    // The page follows: the click also opened bob's details, which now say
    // disconnected; back on the sockets page his row is gone, alice's stays.
    blocking(|| -> anyhow::Result<()> {
        browser.wait_text("body", "DISCONNECTED", PAGE)?;
        browser.eval("location.hash = '#/sockets/'; return true;", &[])?;
        let deadline = std::time::Instant::now() + PAGE;
        loop {
            let text = browser.text("body")?;
            if !text.contains(&bob.sid) && text.contains(&alice.sid) {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "bob still shown:\n{text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    })
    .unwrap();
    assert_eq!(d.client_state("alice").await.unwrap()["connected"], true);
    for shot in [
        "admin-ui-servers.png",
        "admin-ui-sockets.png",
        "admin-ui-rooms.png",
    ] {
        let len = std::fs::metadata(shots.join(shot)).unwrap().len();
        assert!(len > 1000, "{shot}: {len} bytes");
        eprintln!("screenshot: {}", shots.join(shot).display());
    }
    blocking(|| browser.quit()).unwrap();
}
