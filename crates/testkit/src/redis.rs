//! A private `redis-server` per test, on a free loopback port.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    net::free_port,
    proc::{LogBuffer, kill_and_reap},
    tls::TestPki,
};

/// How long [`RedisServer::start`] and [`RedisServer::restart`] wait for PONG.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How a [`RedisServer`] is started beyond the defaults (loopback, no
/// persistence): TLS, ACL users, extra configuration directives.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    tls: Option<ServerTls>,
    users: Vec<String>,
    args: Vec<String>,
    config_file: Option<String>,
}

/// The server side of TLS: certificate, key, the CA clients are checked
/// against, and whether clients must present a certificate.
#[derive(Debug, Clone)]
struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    auth_clients: bool,
}

/// Password of the `admin` ACL user the harness adds when ACL users are
/// configured (the `default` user is then disabled).
pub const ADMIN_PASSWORD: &str = "testkit-admin-password";

impl RedisOptions {
    /// Serve TLS with `pki`'s server certificate on the client port
    /// ([`RedisServer::url`] becomes `rediss://`). With `require_client_cert`
    /// clients must present a certificate signed by `pki`'s CA (mutual TLS).
    /// A plain port stays open on loopback for the harness's own commands
    /// ([`RedisServer::command`]).
    pub fn tls(mut self, pki: &TestPki, require_client_cert: bool) -> Self {
        self.tls = Some(ServerTls {
            cert: pki.server_cert_file(),
            key: pki.server_key_file(),
            ca: pki.ca_file(),
            auth_clients: require_client_cert,
        });
        self
    }

    /// Adds an ACL user, as a `user` directive: e.g.
    /// `"publisher on >secret resetchannels &socket.io* -@all +publish"`.
    /// The first user also disables the `default` user and adds `admin`
    /// (password [`ADMIN_PASSWORD`]), which the harness authenticates as.
    pub fn user(mut self, rule: impl Into<String>) -> Self {
        self.users.push(rule.into());
        self
    }

    /// Adds raw command-line arguments (configuration directives), e.g.
    /// `["--cluster-enabled", "yes"]`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Writes `contents` as the configuration file, passed first on the
    /// command line (Sentinel needs a writable one).
    pub fn config_file(mut self, contents: impl Into<String>) -> Self {
        self.config_file = Some(contents.into());
        self
    }
}

/// A `redis-server` child process bound to `127.0.0.1` on a free port, with
/// persistence off and its own working directory. Dropping it SIGKILLs and
/// reaps the process and removes the directory.
pub struct RedisServer {
    port: u16,
    tls_port: Option<u16>,
    options: RedisOptions,
    dir: tempfile::TempDir,
    child: Option<Child>,
    logs: LogBuffer,
}

impl RedisServer {
    /// Starts a fresh server and waits (up to 10 s) until it answers PING.
    ///
    /// Fails with "install redis-server: apt-get install redis-server" if the
    /// binary is not on `PATH`. If the chosen port was taken in the meantime
    /// it retries on another port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(RedisOptions::default())
    }

    /// Like [`start`](Self::start) with TLS, ACL users or extra directives.
    pub fn start_with(options: RedisOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-redis-")
            .tempdir()
            .context("create redis working directory")?;
        let mut server = Self {
            port: free_port(),
            tls_port: options.tls.as_ref().map(|_| free_port()),
            options,
            dir,
            child: None,
            logs: LogBuffer::default(),
        };
        let mut last_err = None;
        for _ in 0..5 {
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) if server.logs.text().contains("Address already in use") => {
                    last_err = Some(e);
                    server.port = free_port();
                    server.tls_port = server.tls_port.map(|_| free_port());
                    server.logs = LogBuffer::default();
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:TLS_PORT` with TLS.
    pub fn url(&self) -> String {
        match self.tls_port {
            Some(port) => format!("rediss://127.0.0.1:{port}"),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The port clients use (the TLS port with TLS); stable across
    /// [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.tls_port.unwrap_or(self.port)
    }

    /// The plain-TCP port (the same as [`port`](Self::port) without TLS).
    pub fn plain_port(&self) -> u16 {
        self.port
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the server and reaps it (no-op if it is not running). Data is
    /// lost; clients see their connections reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Kills the server if it is running, then starts a new one on the same
    /// port and waits until it answers PING (retrying for a few seconds if
    /// the port is not yet reusable).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if Instant::now() >= deadline
                        || !self.logs.text().contains("Address already in use")
                    {
                        return Err(e);
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Whether the server process is alive.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything the server logged so far (all incarnations).
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// Runs one command over a fresh plain connection (as `admin` when ACL
    /// users are configured) and returns its reply, e.g.
    /// `redis.command(&["PUBSUB", "NUMSUB", "socket.io#/#"])`. 5 s timeout.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<Resp> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.command_bytes(&args)
    }

    /// Like [`command`](Self::command) with binary-safe arguments (e.g. a
    /// msgpack payload for `PUBLISH`).
    pub fn command_bytes(&self, args: &[&[u8]]) -> anyhow::Result<Resp> {
        resp_command(self.port, self.admin(), args, Duration::from_secs(5))
    }

    /// `INFO commandstats` as (command, calls) pairs, e.g. `("publish", 1000)`;
    /// subcommands look like `client|setinfo`.
    pub fn command_calls(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let info = self
            .command(&["INFO", "commandstats"])?
            .as_str()
            .context("INFO commandstats did not answer a string")?;
        Ok(parse_commandstats(&info))
    }

    fn admin(&self) -> Option<(&'static str, &'static str)> {
        (!self.options.users.is_empty()).then_some(("admin", ADMIN_PASSWORD))
    }

    fn command_line(&self) -> anyhow::Result<Vec<String>> {
        let o = &self.options;
        let mut args = Vec::new();
        if let Some(contents) = &o.config_file {
            let path = self.dir.path().join("redis.conf");
            std::fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
            args.push(path.display().to_string());
        }
        let s = |v: &str| v.to_string();
        args.extend([
            s("--port"),
            self.port.to_string(),
            s("--bind"),
            s("127.0.0.1"),
        ]);
        args.extend([s("--save"), s(""), s("--appendonly"), s("no")]);
        args.extend([s("--daemonize"), s("no"), s("--logfile"), s("")]);
        args.extend([s("--dir"), self.dir.path().display().to_string()]);
        if let (Some(tls), Some(port)) = (&o.tls, self.tls_port) {
            args.extend([s("--tls-port"), port.to_string()]);
            args.extend([s("--tls-cert-file"), tls.cert.display().to_string()]);
            args.extend([s("--tls-key-file"), tls.key.display().to_string()]);
            args.extend([s("--tls-ca-cert-file"), tls.ca.display().to_string()]);
            let auth = if tls.auth_clients { "yes" } else { "no" };
            args.extend([s("--tls-auth-clients"), s(auth)]);
        }
        if !o.users.is_empty() {
            // One argument per ACL rule: redis-server quotes each argument.
            let admin = format!("admin on >{ADMIN_PASSWORD} ~* &* +@all");
            for rule in [admin.as_str(), "default off"]
                .into_iter()
                .chain(o.users.iter().map(String::as_str))
            {
                args.push(s("--user"));
                args.extend(rule.split_whitespace().map(s));
            }
        }
        args.extend(o.args.iter().cloned());
        Ok(args)
    }

    fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let mut child = Command::new("redis-server")
            .args(self.command_line()?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow::anyhow!(
                        "redis-server not found on PATH; install redis-server: apt-get install redis-server"
                    )
                } else {
                    anyhow::Error::new(e).context("spawn redis-server")
                }
            })?;
        if let Some(out) = child.stdout.take() {
            self.logs.capture(out, "redis-stdout");
        }
        if let Some(err) = child.stderr.take() {
            self.logs.capture(err, "redis-stderr");
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("poll redis-server")? {
                // Give the capture threads a moment to drain the pipes.
                thread::sleep(Duration::from_millis(50));
                bail!(
                    "redis-server on port {} exited with {status} before answering PING:\n{}",
                    self.port,
                    self.logs.tail(20)
                );
            }
            if let Ok(Resp::Simple(s)) = resp_command(
                self.port,
                self.admin(),
                &[b"PING"],
                Duration::from_millis(500),
            ) && s == "PONG"
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                kill_and_reap(&mut child);
                bail!(
                    "redis-server on port {} did not answer PING within {:?}:\n{}",
                    self.port,
                    READY_TIMEOUT,
                    self.logs.tail(20)
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A RESP2 reply, as the harness's commands return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$n ...`; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n ...`; `None` for the null array.
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The integer, if this is an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Resp::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The text of a simple or bulk string reply.
    pub fn as_str(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The elements of an array reply.
    pub fn as_array(&self) -> Option<&[Resp]> {
        match self {
            Resp::Array(Some(v)) => Some(v),
            _ => None,
        }
    }
}

/// Parses the text of `INFO commandstats` into (command, calls) pairs.
fn parse_commandstats(info: &str) -> Vec<(String, u64)> {
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

/// Sends one command to `127.0.0.1:port` (as `user` when `auth` is given)
/// over a fresh connection of the `redis` crate, and returns its reply. An
/// error reply (`-MOVED ...`) is a [`Resp::Error`], not an `Err`.
pub(crate) fn resp_command(
    port: u16,
    auth: Option<(&str, &str)>,
    args: &[&[u8]],
    timeout: Duration,
) -> anyhow::Result<Resp> {
    let mut settings = ::redis::RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some((user, pass)) = auth {
        settings = settings.set_username(user).set_password(pass);
    }
    // No `CLIENT SETINFO` on connect: tests count the commands Redis ran.
    let info = ::redis::IntoConnectionInfo::into_connection_info(("127.0.0.1", port))
        .context("redis address")?
        .set_redis_settings(settings);
    let mut con = ::redis::Client::open(info)
        .context("redis client")?
        .get_connection_with_timeout(timeout)
        .with_context(|| format!("connect to redis on port {port}"))?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    let (name, rest) = args.split_first().context("an empty redis command")?;
    let mut cmd = ::redis::cmd(&String::from_utf8_lossy(name));
    for a in rest {
        cmd.arg(*a);
    }
    match cmd.query::<::redis::Value>(&mut con) {
        Ok(value) => Ok(Resp::from(value)),
        Err(e) if e.code().is_some() => Ok(Resp::Error(
            format!(
                "{} {}",
                e.code().unwrap_or_default(),
                e.detail().unwrap_or_default()
            )
            .trim_end()
            .to_string(),
        )),
        Err(e) => Err(anyhow::Error::new(e).context(format!("redis on port {port}"))),
    }
}

impl From<::redis::Value> for Resp {
    fn from(value: ::redis::Value) -> Resp {
        use ::redis::Value as V;
        match value {
            V::Nil => Resp::Bulk(None),
            V::Int(i) => Resp::Integer(i),
            V::BulkString(b) => Resp::Bulk(Some(b)),
            V::Array(items) | V::Set(items) => {
                Resp::Array(Some(items.into_iter().map(Resp::from).collect()))
            }
            V::SimpleString(s) => Resp::Simple(s),
            V::Okay => Resp::Simple("OK".into()),
            V::ServerError(e) => Resp::Error(
                format!("{} {}", e.code(), e.details().unwrap_or_default())
                    .trim_end()
                    .to_string(),
            ),
            // RESP3-only types; the harness speaks RESP2.
            other => Resp::Simple(format!("{other:?}")),
        }
    }
}
