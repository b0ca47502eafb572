//! Settings resolved into what redis-rs needs: connection infos with
//! credentials and TLS material loaded, the sentinel and cluster clients'
//! parameters, and a redacted description for messages.

use std::{path::Path, sync::Arc, time::Duration};

use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
    TlsCertificates, TlsMode, io::tcp::TcpSettings,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::settings::{Mode, RedisSettings, Secret, SettingsError, invalid, read_file};

/// The most connections a publisher may spread its commands over.
const MAX_CONNECTIONS: usize = 64;

/// Reconnection delays: exponential from `min` to `max`, with jitter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

/// Validated settings, ready to connect. Cheap to share.
pub(crate) struct Target {
    /// What to call this Redis in messages: URL or addresses, password removed.
    pub describe: String,
    /// The ACL user, for messages about refused credentials.
    pub username: Option<String>,
    pub timeout: Duration,
    pub backoff: Backoff,
    pub connections: usize,
    pub kind: TargetKind,
}

/// Where the data lives.
pub(crate) enum TargetKind {
    /// One server.
    Standalone(redis::Client),
    /// The master behind the sentinels.
    Sentinel(SentinelParams),
    /// A cluster.
    Cluster(ClusterParams),
}

/// Everything needed to build a [`redis::sentinel::SentinelClient`] (it
/// needs `&mut` to look the master up, so each user builds its own).
#[derive(Clone)]
pub(crate) struct SentinelParams {
    pub sentinels: Vec<ConnectionAddr>,
    pub master_name: String,
    pub node: Credentials,
    pub sentinel: Credentials,
    pub tls: Option<TlsCertificates>,
    pub sentinels_tls: bool,
}

/// Everything needed to build a [`redis::cluster::ClusterClient`] (a
/// subscriber builds its own with a push sender).
#[derive(Clone)]
pub(crate) struct ClusterParams {
    pub nodes: Vec<ConnectionInfo>,
    pub credentials: Credentials,
    pub tls: Option<TlsCertificates>,
}

/// An ACL user and password.
#[derive(Clone, Default)]
pub(crate) struct Credentials {
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl Target {
    /// Validates `settings` and loads the files they name.
    pub fn resolve(settings: &RedisSettings) -> Result<Arc<Target>, SettingsError> {
        let s = settings;
        if s.timeout_ms == 0 {
            return Err(invalid("timeout_ms", "must be greater than 0"));
        }
        if s.reconnect_min_ms == 0 || s.reconnect_min_ms > s.reconnect_max_ms {
            return Err(invalid(
                "reconnect_min_ms",
                "must be greater than 0 and at most redis.reconnect_max_ms",
            ));
        }
        if s.connections == 0 || s.connections > MAX_CONNECTIONS {
            return Err(invalid(
                "connections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }
        check_mode_keys(s)?;
        let password = s.read_password()?;
        let credentials = Credentials {
            username: s.username.clone().filter(|u| !u.is_empty()),
            password,
        };
        if credentials.username.is_some()
            && credentials.password.is_none()
            && s.mode != Mode::Standalone
        {
            return Err(invalid(
                "password",
                "redis.username is set without a password: set redis.password or redis.password_file",
            ));
        }
        let (kind, describe, username, uses_tls) = match s.mode {
            Mode::Standalone => standalone(s, &credentials)?,
            Mode::Sentinel => sentinel(s, &credentials)?,
            Mode::Cluster => cluster(s, &credentials)?,
        };
        if !uses_tls
            && let Some(key) = [
                ("tls_ca_file", &s.tls_ca_file),
                ("tls_cert_file", &s.tls_cert_file),
                ("tls_key_file", &s.tls_key_file),
            ]
            .into_iter()
            .find_map(|(key, v)| v.as_ref().map(|_| key))
        {
            return Err(invalid(
                key,
                "is set but the connection does not use TLS: use a rediss:// URL or tls = true",
            ));
        }
        Ok(Arc::new(Target {
            describe,
            username,
            timeout: s.timeout(),
            backoff: Backoff {
                min: Duration::from_millis(s.reconnect_min_ms),
                max: Duration::from_millis(s.reconnect_max_ms),
            },
            connections: s.connections,
            kind,
        }))
    }

    /// The mode these settings use.
    pub fn mode(&self) -> Mode {
        match self.kind {
            TargetKind::Standalone(_) => Mode::Standalone,
            TargetKind::Sentinel(_) => Mode::Sentinel,
            TargetKind::Cluster(_) => Mode::Cluster,
        }
    }
}

/// Rejects keys that belong to another mode, so that a half-switched
/// configuration does not silently connect somewhere else.
fn check_mode_keys(s: &RedisSettings) -> Result<(), SettingsError> {
    let mode = s.mode;
    let foreign = |key: &'static str, belongs: &str| {
        invalid(
            key,
            format!("is for mode = \"{belongs}\" but redis.mode is \"{mode}\""),
        )
    };
    if mode != Mode::Standalone && s.url.as_deref().is_some_and(|u| !u.is_empty()) {
        return Err(foreign("url", "standalone"));
    }
    if mode != Mode::Sentinel {
        if !s.sentinels.is_empty() {
            return Err(foreign("sentinels", "sentinel"));
        }
        if s.master_name.is_some() {
            return Err(foreign("master_name", "sentinel"));
        }
        if s.sentinel_username.is_some() || s.sentinel_password.is_some() {
            return Err(foreign("sentinel_password", "sentinel"));
        }
    }
    if mode != Mode::Cluster && !s.nodes.is_empty() {
        return Err(foreign("nodes", "cluster"));
    }
    Ok(())
}

type Resolved = (TargetKind, String, Option<String>, bool);

fn standalone(s: &RedisSettings, creds: &Credentials) -> Result<Resolved, SettingsError> {
    let url = s.url.as_deref().filter(|u| !u.is_empty()).ok_or_else(|| {
        invalid(
            "url",
            "is required in standalone mode, e.g. redis://127.0.0.1:6379 or rediss://user:password@host:6380",
        )
    })?;
    let describe = redact_url(url);
    if !["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .any(|p| url.starts_with(p))
    {
        return Err(invalid(
            "url",
            format!("{describe:?} is not a redis:// or rediss:// URL"),
        ));
    }
    let info = url
        .into_connection_info()
        .map_err(|e| invalid("url", format!("{describe:?} does not parse: {e}")))?;
    // The URL may carry the user and the settings the password (kept out of
    // the URL), but not both giving the same one.
    let from_url = info.redis_settings();
    if from_url.username().is_some() && creds.username.is_some() {
        return Err(invalid(
            "username",
            "the user is given both in redis.url and in redis.username; use one",
        ));
    }
    if from_url.password().is_some() && creds.password.is_some() {
        return Err(invalid(
            "password",
            "the password is given both in redis.url and in redis.password (or password_file); use one",
        ));
    }
    let username = creds
        .username
        .clone()
        .or_else(|| from_url.username().map(str::to_string));
    if username.is_some() && from_url.password().is_none() && creds.password.is_none() {
        return Err(invalid(
            "password",
            "a user is set without a password: set redis.password or redis.password_file (or put it in the URL)",
        ));
    }
    let mut redis = from_url.clone();
    if let Some(u) = &creds.username {
        redis = redis.set_username(u);
    }
    if let Some(p) = &creds.password {
        redis = redis.set_password(p.expose());
    }
    let uses_tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    if let ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
        return Err(invalid(
            "url",
            "#insecure turns off certificate checks, which Switchboard does not allow; give the CA in redis.tls_ca_file",
        ));
    }
    let info = info
        .set_redis_settings(node_settings(redis))
        .set_tcp_settings(tcp_settings(s.timeout()));
    let client = if uses_tls {
        redis::Client::build_with_tls(info, load_tls(s)?)
    } else {
        redis::Client::open(info)
    }
    .map_err(|e| invalid("url", format!("{describe:?}: {e}")))?;
    Ok((TargetKind::Standalone(client), describe, username, uses_tls))
}

fn sentinel(s: &RedisSettings, creds: &Credentials) -> Result<Resolved, SettingsError> {
    if s.sentinels.is_empty() {
        return Err(invalid(
            "sentinels",
            "list the sentinels in sentinel mode, e.g. [\"10.0.0.1:26379\", \"10.0.0.2:26379\"]",
        ));
    }
    let master_name = s
        .master_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            invalid(
                "master_name",
                "is required in sentinel mode (the name in `sentinel monitor <name> ...`)",
            )
        })?;
    let mut sentinels = Vec::new();
    for entry in &s.sentinels {
        sentinels.push(parse_node("sentinels", entry, s.tls)?.addr().clone());
    }
    let sentinels_tls = matches!(sentinels[0], ConnectionAddr::TcpTls { .. });
    if sentinels
        .iter()
        .any(|a| matches!(a, ConnectionAddr::TcpTls { .. }) != sentinels_tls)
    {
        return Err(invalid(
            "sentinels",
            "mixes TLS and plain sentinels; use the same scheme for all",
        ));
    }
    let uses_tls = s.tls || sentinels_tls;
    let tls = if uses_tls { Some(load_tls(s)?) } else { None };
    let describe = format!(
        "master \"{master_name}\" via sentinels {}",
        sentinels
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let params = SentinelParams {
        sentinels,
        master_name,
        node: creds.clone(),
        sentinel: Credentials {
            username: s.sentinel_username.clone(),
            password: s.sentinel_password.clone(),
        },
        tls,
        sentinels_tls,
    };
    // Build once now so that a parameter redis-rs rejects fails at start.
    params
        .client(s.timeout())
        .map_err(|e| invalid("sentinels", e.to_string()))?;
    Ok((
        TargetKind::Sentinel(params),
        describe,
        creds.username.clone(),
        uses_tls,
    ))
}

fn cluster(s: &RedisSettings, creds: &Credentials) -> Result<Resolved, SettingsError> {
    if s.nodes.is_empty() {
        return Err(invalid(
            "nodes",
            "list some cluster nodes in cluster mode, e.g. [\"10.0.0.1:6379\", \"10.0.0.2:6379\"]",
        ));
    }
    let mut nodes = Vec::new();
    for entry in &s.nodes {
        nodes.push(parse_node("nodes", entry, s.tls)?);
    }
    let uses_tls = nodes
        .iter()
        .any(|n| matches!(n.addr(), ConnectionAddr::TcpTls { .. }));
    if nodes
        .iter()
        .any(|n| matches!(n.addr(), ConnectionAddr::TcpTls { .. }) != uses_tls)
    {
        return Err(invalid(
            "nodes",
            "mixes TLS and plain nodes; use the same scheme for all",
        ));
    }
    let tls = if uses_tls { Some(load_tls(s)?) } else { None };
    let describe = format!(
        "cluster {}",
        nodes
            .iter()
            .map(|n| n.addr().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let params = ClusterParams {
        nodes,
        credentials: creds.clone(),
        tls,
    };
    params
        .builder(s.timeout())
        .build()
        .map_err(|e| invalid("nodes", e.to_string()))?;
    Ok((
        TargetKind::Cluster(params),
        describe,
        creds.username.clone(),
        uses_tls,
    ))
}

/// A `host:port` or URL entry of `sentinels` / `nodes`.
fn parse_node(key: &'static str, entry: &str, tls: bool) -> Result<ConnectionInfo, SettingsError> {
    let url = if entry.contains("://") {
        if entry.contains('@') {
            return Err(invalid(
                key,
                format!(
                    "{:?}: give credentials in redis.username / redis.password, not in each address",
                    redact_url(entry)
                ),
            ));
        }
        entry.to_string()
    } else {
        let scheme = if tls { "rediss" } else { "redis" };
        format!("{scheme}://{entry}")
    };
    let info = url.as_str().into_connection_info().map_err(|e| {
        invalid(
            key,
            format!("{entry:?} is not host:port or a redis:// URL: {e}"),
        )
    })?;
    match info.addr() {
        ConnectionAddr::Tcp(..) => Ok(info),
        ConnectionAddr::TcpTls {
            insecure: false, ..
        } => Ok(info),
        _ => Err(invalid(
            key,
            format!("{entry:?} must be a TCP address (host:port), with certificate checks on"),
        )),
    }
}

/// Settings of every connection to a data node: RESP3 (pushes tell a
/// connection it was dropped; sharded subscriptions need it) and a library
/// name in `CLIENT LIST`.
fn node_settings(redis: RedisConnectionInfo) -> RedisConnectionInfo {
    redis
        .set_protocol(ProtocolVersion::RESP3)
        .set_lib_name("switchboard", env!("CARGO_PKG_VERSION"))
}

/// No Nagle delay (publishes are small and latency matters), and the kernel
/// drops a connection whose data stays unacknowledged longer than the
/// timeout (a peer gone without a reset).
fn tcp_settings(timeout: Duration) -> TcpSettings {
    TcpSettings::default()
        .set_nodelay(true)
        .set_user_timeout(timeout.max(Duration::from_secs(1)))
}

/// Reads and checks the PEM files, naming the file that is wrong.
fn load_tls(s: &RedisSettings) -> Result<TlsCertificates, SettingsError> {
    let root_cert = match &s.tls_ca_file {
        Some(path) => {
            let pem = read_file("tls_ca_file", path)?;
            check_certificates("tls_ca_file", path, &pem)?;
            Some(pem.into_bytes())
        }
        None => None,
    };
    let client_tls = match (&s.tls_cert_file, &s.tls_key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = read_file("tls_cert_file", cert)?;
            check_certificates("tls_cert_file", cert, &cert_pem)?;
            let key_pem = read_file("tls_key_file", key)?;
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
                invalid(
                    "tls_key_file",
                    format!("{} holds no PEM private key: {e}", key.display()),
                )
            })?;
            Some(redis::ClientTlsConfig {
                client_cert: cert_pem.into_bytes(),
                client_key: key_pem.into_bytes(),
            })
        }
        (Some(_), None) => {
            return Err(invalid(
                "tls_key_file",
                "redis.tls_cert_file is set without its key: set redis.tls_key_file too",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "tls_cert_file",
                "redis.tls_key_file is set without its certificate: set redis.tls_cert_file too",
            ));
        }
        (None, None) => None,
    };
    Ok(TlsCertificates {
        client_tls,
        root_cert,
    })
}

fn check_certificates(key: &'static str, path: &Path, pem: &str) -> Result<(), SettingsError> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        cert.map_err(|e| {
            invalid(
                key,
                format!("{} has a malformed PEM certificate: {e}", path.display()),
            )
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid(
            key,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// `url` with its password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((auth, host)) = rest.rsplit_once('@')
    {
        return match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            // `redis://password@host` is not valid, but do not print it either.
            None => format!("{scheme}://***@{host}"),
        };
    }
    url.to_string()
}

impl SentinelParams {
    /// A sentinel client that finds the master and connects to it.
    pub fn client(&self, timeout: Duration) -> redis::RedisResult<redis::sentinel::SentinelClient> {
        use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
        let mut b = SentinelClientBuilder::new(
            self.sentinels.clone(),
            &self.master_name,
            SentinelServerType::Master,
        )?
        .set_client_to_redis_protocol(ProtocolVersion::RESP3)
        .set_client_to_redis_tcp_settings(tcp_settings(timeout))
        .set_client_to_sentinel_tcp_settings(tcp_settings(timeout));
        if let Some(u) = &self.node.username {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = &self.node.password {
            b = b.set_client_to_redis_password(p.expose());
        }
        if let Some(u) = &self.sentinel.username {
            b = b.set_client_to_sentinel_username(u);
        }
        if let Some(p) = &self.sentinel.password {
            b = b.set_client_to_sentinel_password(p.expose());
        }
        if let Some(certs) = &self.tls {
            b = b
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_redis_certificates(certs.clone());
            if self.sentinels_tls {
                b = b
                    .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                    .set_client_to_sentinel_certificates(certs.clone());
            }
        }
        b.build()
    }
}

impl ClusterParams {
    /// A cluster client builder with credentials, TLS and timeouts applied.
    pub fn builder(&self, timeout: Duration) -> redis::cluster::ClusterClientBuilder {
        let nodes = self.nodes.iter().map(|n| {
            let redis = node_settings(n.redis_settings().clone());
            n.clone()
                .set_redis_settings(redis)
                .set_tcp_settings(tcp_settings(timeout))
        });
        let mut b = redis::cluster::ClusterClientBuilder::new(nodes)
            .use_protocol(ProtocolVersion::RESP3)
            .tcp_settings(tcp_settings(timeout))
            .connection_timeout(timeout)
            .response_timeout(timeout);
        if let Some(u) = &self.credentials.username {
            b = b.username(u);
        }
        if let Some(p) = &self.credentials.password {
            b = b.password(p.expose());
        }
        if let Some(certs) = &self.tls {
            b = b.tls(TlsMode::Secure).certs(certs.clone());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(s: RedisSettings) -> &'static str {
        match Target::resolve(&s) {
            Ok(_) => "",
            Err(e) => e.key,
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("redis://:secret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact_url("rediss://u:secret@h:1"), "rediss://u:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("redis://secret@h:1"), "redis://***@h:1");
    }

    #[test]
    fn each_mode_needs_its_keys_and_rejects_the_others() {
        let url = |u: &str| RedisSettings::from_url(u);
        assert_eq!(key_of(url("redis://127.0.0.1:6379")), "");
        assert_eq!(key_of(RedisSettings::default()), "url");
        assert_eq!(key_of(url("localhost:6379")), "url");
        assert_eq!(key_of(url("rediss://h:1/#insecure")), "url");
        let sentinel = RedisSettings {
            mode: Mode::Sentinel,
            sentinels: vec!["127.0.0.1:26379".into()],
            master_name: Some("mymaster".into()),
            ..RedisSettings::default()
        };
        assert_eq!(key_of(sentinel.clone()), "");
        assert_eq!(
            key_of(RedisSettings {
                master_name: None,
                ..sentinel.clone()
            }),
            "master_name"
        );
        assert_eq!(
            key_of(RedisSettings {
                url: Some("redis://h".into()),
                ..sentinel.clone()
            }),
            "url"
        );
        assert_eq!(
            key_of(RedisSettings {
                sentinels: vec!["no port at all:".into()],
                ..sentinel.clone()
            }),
            "sentinels"
        );
        let cluster = RedisSettings {
            mode: Mode::Cluster,
            nodes: vec!["127.0.0.1:7000".into(), "127.0.0.1:7001".into()],
            ..RedisSettings::default()
        };
        assert_eq!(key_of(cluster.clone()), "");
        assert_eq!(
            key_of(RedisSettings {
                nodes: vec![],
                ..cluster.clone()
            }),
            "nodes"
        );
        assert_eq!(
            key_of(RedisSettings {
                nodes: vec!["redis://u:p@127.0.0.1:7000".into()],
                ..cluster.clone()
            }),
            "nodes"
        );
        assert_eq!(
            key_of(RedisSettings {
                sentinels: vec!["a:1".into()],
                ..cluster
            }),
            "sentinels"
        );
    }

    #[test]
    fn credentials_and_limits() {
        let base = RedisSettings::from_url("redis://127.0.0.1:6379");
        assert_eq!(
            key_of(RedisSettings {
                url: Some("redis://u:p@127.0.0.1".into()),
                password: Some("q".into()),
                ..base.clone()
            }),
            "password"
        );
        assert_eq!(
            key_of(RedisSettings {
                url: Some("redis://u@127.0.0.1".into()),
                username: Some("v".into()),
                password: Some("q".into()),
                ..base.clone()
            }),
            "username"
        );
        // The user in the URL, the password kept out of it.
        assert_eq!(
            key_of(RedisSettings {
                url: Some("redis://u@127.0.0.1".into()),
                password: Some("q".into()),
                ..base.clone()
            }),
            ""
        );
        assert_eq!(
            key_of(RedisSettings {
                url: Some("redis://u@127.0.0.1".into()),
                ..base.clone()
            }),
            "password"
        );
        assert_eq!(
            key_of(RedisSettings {
                username: Some("app".into()),
                ..base.clone()
            }),
            "password"
        );
        assert_eq!(
            key_of(RedisSettings {
                timeout_ms: 0,
                ..base.clone()
            }),
            "timeout_ms"
        );
        assert_eq!(
            key_of(RedisSettings {
                reconnect_min_ms: 5000,
                ..base.clone()
            }),
            "reconnect_min_ms"
        );
        assert_eq!(
            key_of(RedisSettings {
                connections: 0,
                ..base.clone()
            }),
            "connections"
        );
        let t = Target::resolve(&RedisSettings {
            username: Some("app".into()),
            password: Some("pw".into()),
            ..base
        })
        .unwrap();
        assert_eq!(t.username.as_deref(), Some("app"));
        assert_eq!(t.describe, "redis://127.0.0.1:6379");
    }

    #[test]
    fn tls_files_are_checked_at_start() {
        let dir = std::env::temp_dir().join(format!("sb-redis-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let tls = RedisSettings::from_url("rediss://127.0.0.1:6380");
        let err = Target::resolve(&RedisSettings {
            tls_ca_file: Some(garbage.clone()),
            ..tls.clone()
        })
        .err()
        .unwrap();
        assert_eq!(err.key, "tls_ca_file");
        assert!(err.message.contains("holds no PEM certificate"), "{err}");
        let err = Target::resolve(&RedisSettings {
            tls_ca_file: Some(dir.join("missing.pem")),
            ..tls.clone()
        })
        .err()
        .unwrap();
        assert_eq!(err.key, "tls_ca_file");
        assert!(err.message.contains("cannot read"), "{err}");
        assert_eq!(
            key_of(RedisSettings {
                tls_key_file: Some(garbage.clone()),
                ..tls.clone()
            }),
            "tls_cert_file"
        );
        // TLS files with a plain URL: a mistake, not silently plain.
        assert_eq!(
            key_of(RedisSettings {
                tls_ca_file: Some(garbage),
                ..RedisSettings::from_url("redis://127.0.0.1:6379")
            }),
            "tls_ca_file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
