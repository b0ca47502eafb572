//! The typed Redis settings every Switchboard component reads (the gateway's
//! `[redis]` section, the broadcaster's `RedisSettings`, the CLI's flags), and
//! their validation.
//!
//! Validation checks everything that can be checked without talking to
//! Redis (URL syntax, which keys go together, that the password and TLS
//! files can be read and parsed) and names the bad key in its error.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// How Switchboard reaches Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One server (or a proxy / managed endpoint) at `url`.
    #[default]
    Standalone,
    /// The master of `master_name`, found through `sentinels`; a failover is
    /// followed without a restart.
    Sentinel,
    /// A Redis Cluster seeded from `nodes`; commands are routed by slot and
    /// MOVED/ASK redirections and topology changes are followed.
    Cluster,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Standalone => "standalone",
            Mode::Sentinel => "sentinel",
            Mode::Cluster => "cluster",
        })
    }
}

/// A password: shown as `***` by `Debug` and `Display`, so it never reaches a
/// log line through the settings. Serialized as itself (configuration
/// layers round-trip through serde).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The password itself, for handing to the Redis client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

/// Where Redis is and how to talk to it. Deserializes from the `[redis]`
/// section of a TOML file (every key optional); see the README for the
/// keys in each mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `standalone` (default), `sentinel` or `cluster`.
    pub mode: Mode,
    /// Standalone: `redis://[user[:password]@]host[:port][/db]`, or
    /// `rediss://...` for TLS.
    pub url: Option<String>,
    /// Sentinel: the sentinels, `host:port` (or `redis://` / `rediss://` URLs).
    pub sentinels: Vec<String>,
    /// Sentinel: the name the sentinels monitor the master under.
    pub master_name: Option<String>,
    /// Cluster: some of the nodes, `host:port` (or URLs); the rest is discovered.
    pub nodes: Vec<String>,
    /// Use TLS with `host:port` entries of `sentinels` / `nodes` (implied by
    /// a `rediss://` URL).
    pub tls: bool,
    /// PEM file of the CA(s) that signed the server certificate; unset:
    /// the system's trusted roots.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// ACL user (instead of a user in the URL).
    pub username: Option<String>,
    /// Password of `username` (or of the `default` user); never logged.
    pub password: Option<Secret>,
    /// File holding the password (a trailing newline is ignored), e.g. a
    /// mounted secret.
    pub password_file: Option<PathBuf>,
    /// Sentinel: ACL user for the sentinels themselves, if they require one.
    pub sentinel_username: Option<String>,
    /// Sentinel: password for the sentinels themselves.
    pub sentinel_password: Option<Secret>,
    /// Bound on every call: connecting (or waiting for a reconnection) plus
    /// the command's round trip. Default 2000.
    pub timeout_ms: u64,
    /// First delay between reconnection attempts. Default 100.
    pub reconnect_min_ms: u64,
    /// Largest delay between reconnection attempts (exponential backoff
    /// with jitter). Default 3000.
    pub reconnect_max_ms: u64,
    /// Multiplexed connections a publisher spreads its commands over
    /// (standalone and sentinel). Default 1: one connection pipelines every
    /// concurrent command; more only help a publisher spread over many cores.
    pub connections: usize,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            mode: Mode::Standalone,
            url: None,
            sentinels: Vec::new(),
            master_name: None,
            nodes: Vec::new(),
            tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            username: None,
            password: None,
            password_file: None,
            sentinel_username: None,
            sentinel_password: None,
            timeout_ms: 2000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 3000,
            connections: 1,
        }
    }
}

/// A setting that cannot work, naming the key (`redis.<key>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`redis.{key}`: {message}")]
pub struct SettingsError {
    /// The key, without the `redis.` prefix (e.g. `tls_ca_file`).
    pub key: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError {
        key,
        message: message.into(),
    }
}

impl RedisSettings {
    /// Standalone settings for `url`, everything else default.
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// The bound on every call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks the settings without connecting: what [`crate::Redis::new`]
    /// checks, for a `check-config` command.
    pub fn validate(&self) -> Result<(), SettingsError> {
        crate::target::Target::resolve(self).map(|_| ())
    }

    /// The password from `password` or `password_file` (exactly one may be
    /// set).
    pub(crate) fn read_password(&self) -> Result<Option<Secret>, SettingsError> {
        match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => Err(invalid(
                "password_file",
                "set either redis.password or redis.password_file, not both",
            )),
            (Some(p), None) => Ok(Some(p.clone())),
            (None, Some(path)) => {
                let text = read_file("password_file", path)?;
                let password = text.trim_end_matches(['\r', '\n']);
                if password.is_empty() {
                    return Err(invalid(
                        "password_file",
                        format!("{} is empty", path.display()),
                    ));
                }
                Ok(Some(Secret::new(password)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// Reads a file named by a setting, naming the key when it cannot.
pub(crate) fn read_file(key: &'static str, path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_never_printed() {
        let s = RedisSettings {
            password: Some("hunter2".into()),
            sentinel_password: Some("s3cret".into()),
            ..RedisSettings::from_url("redis://localhost")
        };
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("s3cret"),
            "{debug}"
        );
        assert!(debug.contains("***"));
        assert_eq!(s.password.as_ref().unwrap().expose(), "hunter2");
    }

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_keys() {
        let s: RedisSettings = serde_json::from_str(
            r#"{"mode":"sentinel","sentinels":["a:26379"],"master_name":"m","password":"p"}"#,
        )
        .unwrap();
        assert_eq!(s.mode, Mode::Sentinel);
        assert_eq!(s.timeout_ms, 2000);
        assert_eq!(s.password, Some(Secret::new("p")));
        assert!(serde_json::from_str::<RedisSettings>(r#"{"mod":"cluster"}"#).is_err());
        assert!(serde_json::from_str::<RedisSettings>(r#"{"mode":"shard"}"#).is_err());
    }

    #[test]
    fn password_from_a_file_drops_the_newline() {
        let dir = std::env::temp_dir().join(format!("sb-redis-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let s = RedisSettings {
            password_file: Some(file.clone()),
            ..RedisSettings::from_url("redis://localhost")
        };
        assert_eq!(s.read_password().unwrap(), Some(Secret::new("from-file")));
        let both = RedisSettings {
            password: Some("x".into()),
            ..s.clone()
        };
        assert_eq!(both.read_password().unwrap_err().key, "password_file");
        std::fs::write(&file, "\n").unwrap();
        assert!(s.read_password().unwrap_err().message.contains("empty"));
        std::fs::remove_dir_all(&dir).unwrap();
        let err = s.read_password().unwrap_err();
        assert_eq!(err.key, "password_file");
        assert!(
            err.to_string()
                .starts_with("`redis.password_file`: cannot read"),
            "{err}"
        );
    }
}
