//! Why a call to Redis failed, in terms an operator can act on: which
//! Redis, what went wrong, and which setting to look at.

use std::time::Duration;

use redis::{ErrorKind, RedisError};

use crate::target::Target;

/// Why a call to Redis failed. Every variant names the Redis it was about
/// (`target`: the URL or addresses, password removed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Redis could not be reached or the connection broke.
    #[error("Redis at {target} is unreachable: {reason}")]
    Unreachable {
        /// The Redis, password removed.
        target: String,
        /// What failed (connection refused, reset, no master known...).
        reason: String,
    },
    /// The call did not complete within the timeout: Redis did not answer,
    /// or no connection could be (re)established in time.
    #[error("Redis at {target} did not answer within {after:?}{}", last_error_suffix(.last_error))]
    Timeout {
        /// The Redis, password removed.
        target: String,
        /// The configured timeout.
        after: Duration,
        /// The last connection error while waiting, if any.
        last_error: Option<String>,
    },
    /// Redis refused the credentials.
    #[error("Redis at {target} refused the credentials{}: {reason}; check redis.username and redis.password (or the user and password in redis.url)", user_suffix(.user))]
    Auth {
        /// The Redis, password removed.
        target: String,
        /// The ACL user the connection authenticated as.
        user: Option<String>,
        /// Redis's answer (`WRONGPASS ...`, `NOAUTH ...`).
        reason: String,
    },
    /// The TLS handshake failed: certificate not trusted, wrong name,
    /// client certificate refused, or the server does not speak TLS.
    #[error("TLS with Redis at {target} failed: {reason}")]
    Tls {
        /// The Redis, password removed.
        target: String,
        /// What the TLS layer reported, and which setting to check.
        reason: String,
    },
    /// Redis answered the command with an error (`NOPERM`, `READONLY`, ...).
    #[error("Redis at {target} answered with an error: {reason}")]
    Server {
        /// The Redis, password removed.
        target: String,
        /// The error code, e.g. `NOPERM`.
        code: Option<String>,
        /// Redis's message, with a hint when there is one.
        reason: String,
    },
}

fn last_error_suffix(last: &Option<String>) -> String {
    match last {
        Some(e) => format!(" (last connection error: {e})"),
        None => String::new(),
    }
}

fn user_suffix(user: &Option<String>) -> String {
    match user {
        Some(u) => format!(" for user \"{u}\""),
        None => String::new(),
    }
}

impl Error {
    /// True when Redis is down, unreachable or too slow (as opposed to
    /// refusing the credentials, the TLS handshake or the command).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Timeout { .. })
    }

    /// What went wrong, without naming the Redis (for nesting in another
    /// message about the same Redis).
    pub fn reason(&self) -> String {
        match self {
            Error::Unreachable { reason, .. } | Error::Tls { reason, .. } => reason.clone(),
            Error::Timeout { after, .. } => format!("no answer within {after:?}"),
            Error::Auth { user, reason, .. } => {
                format!("credentials refused{}: {reason}", user_suffix(user))
            }
            Error::Server { reason, .. } => reason.clone(),
        }
    }

    /// The Redis this error is about, password removed.
    pub fn target(&self) -> &str {
        match self {
            Error::Unreachable { target, .. }
            | Error::Timeout { target, .. }
            | Error::Auth { target, .. }
            | Error::Tls { target, .. }
            | Error::Server { target, .. } => target,
        }
    }

    pub(crate) fn timeout(target: &Target, last_error: Option<String>) -> Self {
        Error::Timeout {
            target: target.describe.clone(),
            after: target.timeout,
            last_error,
        }
    }

    /// Classifies a redis-rs error.
    pub(crate) fn from_redis(target: &Target, e: &RedisError) -> Self {
        let describe = || target.describe.clone();
        if let Some(reason) = tls_reason(e) {
            return Error::Tls {
                target: describe(),
                reason,
            };
        }
        let code = e.code().map(str::to_string);
        if e.kind() == ErrorKind::AuthenticationFailed
            || matches!(code.as_deref(), Some("WRONGPASS" | "NOAUTH"))
        {
            return Error::Auth {
                target: describe(),
                user: target.username.clone(),
                reason: e.to_string(),
            };
        }
        if e.is_timeout() {
            return Error::timeout(target, None);
        }
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
            || matches!(
                e.kind(),
                ErrorKind::MasterNameNotFoundBySentinel
                    | ErrorKind::EmptySentinelList
                    | ErrorKind::ClusterConnectionNotFound
            )
        {
            return Error::Unreachable {
                target: describe(),
                reason: e.to_string(),
            };
        }
        let hint = match code.as_deref() {
            Some("NOPERM") => format!(
                "; the ACL user {} lacks a permission: publishing needs +publish (+spublish for shard channels), subscribing +subscribe / +psubscribe / +ssubscribe, and both the channels (&socket.io* or allchannels)",
                match &target.username {
                    Some(u) => format!("\"{u}\""),
                    None => "\"default\"".into(),
                }
            ),
            Some("READONLY") => "; this server is a replica: point redis.url at the master, or use mode = \"sentinel\"".into(),
            _ => String::new(),
        };
        Error::Server {
            target: describe(),
            code,
            reason: format!("{e}{hint}"),
        }
    }
}

/// A readable reason when `e` comes from the TLS layer.
fn tls_reason(e: &RedisError) -> Option<String> {
    use rustls::{AlertDescription, CertificateError};
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let in_io = |io: &std::io::Error| {
        io.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned()
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        // redis-rs keeps an I/O error in an `Arc<dyn Error>`, and
        // `io::Error::source` skips the error it wraps: look inside both.
        let found = err
            .downcast_ref::<rustls::Error>()
            .cloned()
            .or_else(|| err.downcast_ref::<std::io::Error>().and_then(in_io))
            .or_else(|| {
                err.downcast_ref::<Shared>()
                    .and_then(|shared| shared.downcast_ref::<std::io::Error>())
                    .and_then(in_io)
            });
        if let Some(tls) = found {
            let hint = match &tls {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    "the server's certificate is not signed by a CA in redis.tls_ca_file (or, without it, by a system root)"
                }
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => {
                    "the server's certificate is not valid for the host name or IP connected to (the name is checked)"
                }
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => "the server's certificate has expired",
                rustls::Error::AlertReceived(
                    AlertDescription::CertificateRequired
                    | AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::HandshakeFailure,
                ) => {
                    "the server refused the client certificate or requires one: set redis.tls_cert_file and redis.tls_key_file to a certificate its CA trusts"
                }
                rustls::Error::InvalidMessage(_) => {
                    "the server does not speak TLS on this port (rediss:// needs the server's tls-port)"
                }
                _ => "",
            };
            return Some(if hint.is_empty() {
                tls.to_string()
            } else {
                format!("{hint} ({tls})")
            });
        }
        source = err.source();
    }
    None
}
