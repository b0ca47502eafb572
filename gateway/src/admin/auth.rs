//! Admin UI login, as `@socket.io/admin-ui`'s basic auth does it: the UI
//! sends `{username, password}` in the CONNECT payload once, gets a random
//! session id back (`session` event), and sends `{sessionId}` on every later
//! connect. Sessions live in Redis (`socket.io-admin#<id>`, 24 h, the keys of
//! the package's `RedisStore`) when the gateway has Redis, so a UI that
//! reconnects through another gateway stays logged in; in memory otherwise.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde_json::Value;

use crate::bus::Bus;

/// How long a session id stays valid (the `RedisStore` default).
const SESSION_TTL: Duration = Duration::from_secs(86_400);
/// The `RedisStore` key prefix.
const KEY_PREFIX: &str = "socket.io-admin#";

/// Where session ids are kept.
enum Store {
    /// One gateway alone: a map with expiry times.
    Memory(Mutex<HashMap<String, Instant>>),
    /// Shared by every gateway (and Node server using `RedisStore`).
    Redis(Arc<Bus>),
}

/// The configured login and the session store.
pub struct AdminAuth {
    username: String,
    /// The bcrypt hash; shared with the blocking verification task.
    hash: Arc<str>,
    store: Store,
}

/// The outcome of a successful login.
#[derive(Debug, PartialEq, Eq)]
pub enum LoggedIn {
    /// An existing session id was presented.
    Session,
    /// The password matched: a new session to hand to the UI.
    NewSession(String),
}

impl AdminAuth {
    /// `shared` is the bus when it is Redis (sessions shared fleet-wide).
    pub fn new(username: &str, password_bcrypt: &str, shared: Option<Arc<Bus>>) -> AdminAuth {
        AdminAuth {
            username: username.to_string(),
            hash: Arc::from(password_bcrypt),
            store: match shared {
                Some(bus) => Store::Redis(bus),
                None => Store::Memory(Mutex::new(HashMap::new())),
            },
        }
    }

    /// Checks a CONNECT payload; `None` means "invalid credentials".
    pub async fn login(&self, auth: Option<&Value>) -> Option<LoggedIn> {
        let field = |name: &str| auth.and_then(|a| a.get(name)).and_then(Value::as_str);
        if let Some(session) = field("sessionId")
            && self.session_exists(session).await
        {
            return Some(LoggedIn::Session);
        }
        if field("username") != Some(self.username.as_str()) {
            return None;
        }
        let password = field("password")?.to_string();
        let hash = self.hash.clone();
        // bcrypt costs tens of milliseconds by design: never on the async threads.
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()?
            .ok()?;
        if !matches {
            return None;
        }
        let session = new_session_id();
        self.save_session(&session).await;
        Some(LoggedIn::NewSession(session))
    }

    async fn session_exists(&self, id: &str) -> bool {
        match &self.store {
            Store::Memory(map) => map
                .lock()
                .get(id)
                .is_some_and(|created| created.elapsed() < SESSION_TTL),
            Store::Redis(bus) => bus
                .admin_session_exists(&format!("{KEY_PREFIX}{id}"))
                .await
                .unwrap_or(false),
        }
    }

    async fn save_session(&self, id: &str) {
        match &self.store {
            Store::Memory(map) => {
                let mut map = map.lock();
                map.retain(|_, created| created.elapsed() < SESSION_TTL);
                map.insert(id.to_string(), Instant::now());
            }
            Store::Redis(bus) => {
                let saved = bus
                    .save_admin_session(&format!("{KEY_PREFIX}{id}"), SESSION_TTL)
                    .await;
                if let Err(err) = saved {
                    tracing::warn!(%err, "admin session not saved in redis; the UI will have to log in again");
                }
            }
        }
    }
}

/// 16 hex characters, like the package's `randomBytes(8).toString("hex")`.
fn new_session_id() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn password_then_session_id() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = AdminAuth::new("admin", &hash, None);
        assert_eq!(auth.login(None).await, None);
        assert_eq!(
            auth.login(Some(&json!({"username": "admin", "password": "nope"})))
                .await,
            None
        );
        assert_eq!(
            auth.login(Some(&json!({"username": "root", "password": "s3cret"})))
                .await,
            None
        );
        let Some(LoggedIn::NewSession(id)) = auth
            .login(Some(&json!({"username": "admin", "password": "s3cret"})))
            .await
        else {
            panic!("the right password logs in");
        };
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            auth.login(Some(&json!({ "sessionId": id }))).await,
            Some(LoggedIn::Session)
        );
        assert_eq!(
            auth.login(Some(&json!({"sessionId": "0000000000000000"})))
                .await,
            None
        );
    }
}
