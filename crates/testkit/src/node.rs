//! Rust side of `tests/node/driver.mjs`: one long-running node process that
//! drives many official `socket.io-client` sockets, the official
//! `@socket.io/redis-emitter`, and Node `socket.io` servers with the official
//! `@socket.io/redis-adapter`.
//!
//! Binary values travel as `{"$bin": "<base64>"}` in both directions; build
//! them with [`bin`] and read them with [`as_bin`].

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    process::{Command as StdCommand, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::{Notify, oneshot},
    task::JoinHandle,
};

use crate::{lock::FileLock, proc::tail_lines, repo_root};

/// Default bound for a driver request that has no timeout of its own.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`NodeDriver::start`] waits for the driver's ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `npm ci` may take.
const NPM_CI_TIMEOUT: Duration = Duration::from_secs(300);

/// `{"$bin": base64(bytes)}`: a binary value for driver args.
pub fn bin(bytes: impl AsRef<[u8]>) -> Value {
    json!({ "$bin": base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()) })
}

/// The bytes of a `{"$bin": ...}` value, or `None` if `v` is not one.
pub fn as_bin(v: &Value) -> Option<Vec<u8>> {
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    let b64 = obj.get("$bin")?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// `tests/node` in the workspace.
pub fn node_dir() -> PathBuf {
    repo_root().join("tests").join("node")
}

/// Makes sure `tests/node/node_modules` matches `package-lock.json`,
/// running `npm ci` (under a file lock, so parallel tests and processes do
/// not race) if it is missing or stale. Blocking.
pub fn ensure_node_modules() -> anyhow::Result<()> {
    ensure_npm_ci(&node_dir())
}

/// Makes sure `dir/node_modules` matches `dir/package-lock.json`, running
/// `npm ci` there (under a file lock in `dir`, so parallel tests and
/// processes do not race) if it is missing or stale. Blocking.
pub fn ensure_npm_ci(dir: &Path) -> anyhow::Result<()> {
    let lockfile = std::fs::read(dir.join("package-lock.json"))
        .with_context(|| format!("read {}/package-lock.json", dir.display()))?;
    let marker = dir.join("node_modules").join(".switchboard-installed");
    let installed = || std::fs::read(&marker).is_ok_and(|m| m == lockfile);
    if installed() {
        return Ok(());
    }
    let _lock = FileLock::exclusive(&dir.join(".npm-install.lock"))?;
    if installed() {
        return Ok(());
    }
    run_install(
        StdCommand::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir),
        &format!("npm ci (in {})", dir.display()),
        "install Node.js and npm: apt-get install nodejs npm",
        NPM_CI_TIMEOUT,
    )?;
    std::fs::write(&marker, &lockfile).context("write node_modules marker")?;
    Ok(())
}

/// Runs an install command with captured output and a time bound.
pub(crate) fn run_install(
    cmd: &mut StdCommand,
    what: &str,
    missing_hint: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let out_dir = tempfile::tempdir()?;
    let log_path = out_dir.path().join("install.log");
    let log = std::fs::File::create(&log_path)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("{what}: program not found; {missing_hint}")
            } else {
                anyhow::Error::new(e).context(format!("spawn {what}"))
            }
        })?;
    let status = crate::proc::wait_timeout(&mut child, timeout)?;
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => bail!("{what} failed with {s}:\n{}", tail_lines(&output, 40)),
        None => {
            crate::proc::kill_and_reap(&mut child);
            bail!(
                "{what} did not finish within {timeout:?}:\n{}",
                tail_lines(&output, 40)
            )
        }
    }
}

/// Options for `io(url, opts)` of `socket.io-client`. The driver defaults
/// `forceNew: true` and `reconnection: false`; anything set here wins.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    opts: Map<String, Value>,
}

impl ConnectOptions {
    /// No options beyond the driver defaults (polling then upgrade to websocket).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `transports`, e.g. `&["websocket"]`.
    pub fn transports(self, transports: &[&str]) -> Self {
        self.opt("transports", json!(transports))
    }

    /// `transports: ["websocket"]`.
    pub fn websocket_only(self) -> Self {
        self.transports(&["websocket"])
    }

    /// `transports: ["polling"]` (and so no upgrade).
    pub fn polling_only(self) -> Self {
        self.transports(&["polling"])
    }

    /// Sets the `auth` payload sent in the Socket.IO CONNECT packet.
    pub fn auth(self, auth: Value) -> Self {
        self.opt("auth", auth)
    }

    /// `auth: {"token": token}`.
    pub fn token(self, token: impl Into<String>) -> Self {
        self.auth(json!({ "token": token.into() }))
    }

    /// Adds one of `extraHeaders` (sent on polling requests and the websocket
    /// handshake).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let headers = self
            .opts
            .entry("extraHeaders")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(h) = headers {
            h.insert(name.into(), Value::String(value.into()));
        }
        self
    }

    /// Adds one `query` parameter.
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let q = self
            .opts
            .entry("query")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(q) = q {
            q.insert(name.into(), Value::String(value.into()));
        }
        self
    }

    /// Sets `path` (default `/socket.io`).
    pub fn path(self, path: impl Into<String>) -> Self {
        self.opt("path", Value::String(path.into()))
    }

    /// Sets `upgrade` (whether polling may upgrade to websocket).
    pub fn upgrade(self, upgrade: bool) -> Self {
        self.opt("upgrade", Value::Bool(upgrade))
    }

    /// Sets `reconnection` (driver default: false).
    pub fn reconnection(self, on: bool) -> Self {
        self.opt("reconnection", Value::Bool(on))
    }

    /// Sets `forceNew` (driver default: true).
    pub fn force_new(self, on: bool) -> Self {
        self.opt("forceNew", Value::Bool(on))
    }

    /// Sets the client's connect `timeout` (socket.io-client default 20 s).
    pub fn timeout(self, d: Duration) -> Self {
        self.opt("timeout", json!(millis(d)))
    }

    /// Sets any other `socket.io-client` option verbatim.
    pub fn opt(mut self, key: impl Into<String>, value: Value) -> Self {
        self.opts.insert(key.into(), value);
        self
    }

    /// The options as sent to the driver.
    pub fn to_json(&self) -> Value {
        Value::Object(self.opts.clone())
    }

    fn request_timeout(&self) -> Duration {
        let client = self
            .opts
            .get("timeout")
            .and_then(Value::as_u64)
            .unwrap_or(20_000);
        Duration::from_millis(client) + Duration::from_secs(5)
    }
}

/// What a successful connect returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// The Socket.IO socket id (`socket.id`).
    pub sid: String,
    /// The Engine.IO transport at connect time (`polling` or `websocket`).
    pub transport: Option<String>,
}

/// Which emitter (and which sockets) an emitter op addresses: the official
/// `@socket.io/redis-emitter` on `redis_url` with `key`, namespace `nsp`,
/// `.to(to)` and `.except(except)`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmitterTarget {
    /// `redis://127.0.0.1:PORT`.
    pub redis_url: String,
    /// Adapter key prefix (default `socket.io`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Namespace (default `/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nsp: Option<String>,
    /// Rooms to target (empty: everyone in the namespace).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Rooms to exclude.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

impl EmitterTarget {
    /// Everyone in `/` through the emitter on `redis_url`.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            ..Self::default()
        }
    }

    /// Sets the adapter key prefix.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the namespace.
    pub fn nsp(mut self, nsp: impl Into<String>) -> Self {
        self.nsp = Some(nsp.into());
        self
    }

    /// Adds a target room.
    pub fn to(mut self, room: impl Into<String>) -> Self {
        self.to.push(room.into());
        self
    }

    /// Adds an excluded room.
    pub fn except(mut self, room: impl Into<String>) -> Self {
        self.except.push(room.into());
        self
    }
}

/// One `emitter.emit(name, ...args)` through the official redis emitter.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmitterPublish {
    /// `redis://127.0.0.1:PORT`.
    pub redis_url: String,
    /// Adapter key prefix (default `socket.io`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Namespace (default `/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nsp: Option<String>,
    /// Rooms to target (empty: broadcast to the namespace).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Rooms to exclude.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    /// The `volatile` flag.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub volatile: bool,
    /// Event name.
    pub name: String,
    /// Event arguments (`{"$bin":..}` for binary, see [`bin`]).
    pub args: Vec<Value>,
}

impl EmitterPublish {
    /// A broadcast of `name(args...)` to `/` through the emitter on `redis_url`.
    pub fn new(redis_url: impl Into<String>, name: impl Into<String>, args: Vec<Value>) -> Self {
        Self {
            redis_url: redis_url.into(),
            name: name.into(),
            args,
            ..Self::default()
        }
    }

    /// Sets the adapter key prefix.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the namespace.
    pub fn nsp(mut self, nsp: impl Into<String>) -> Self {
        self.nsp = Some(nsp.into());
        self
    }

    /// Adds a target room.
    pub fn to(mut self, room: impl Into<String>) -> Self {
        self.to.push(room.into());
        self
    }

    /// Adds an excluded room.
    pub fn except(mut self, room: impl Into<String>) -> Self {
        self.except.push(room.into());
        self
    }

    /// Sets the volatile flag.
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }
}

/// Options for a Node `socket.io` 4.x server with `@socket.io/redis-adapter`
/// started inside the driver. Every connection joins the rooms listed in its
/// `auth.rooms`; an `echo` event is acked (or, without ack, emitted back)
/// with its arguments; a `join` event joins its argument rooms.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartServer {
    /// `redis://127.0.0.1:PORT` for the adapter.
    pub redis_url: String,
    /// Port to listen on (on 127.0.0.1); 0 or `None` picks one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Adapter key prefix (default `socket.io`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Adapter `requestsTimeout` in ms (adapter default 5000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_timeout: Option<u64>,
    /// Extra namespaces to create up front (so they receive adapter traffic).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Use `createShardedAdapter` (SSUBSCRIBE / SPUBLISH) with this
    /// `subscriptionMode` (`static`, `dynamic`, `dynamic-private`) instead
    /// of the classic adapter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharded: Option<String>,
    /// Connect to a Redis Cluster seeded from these `redis://host:port`
    /// URLs (node-redis `createCluster`) instead of `redis_url`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster_nodes: Vec<String>,
    /// `"streams"`: `@socket.io/redis-streams-adapter` 0.3 instead of the
    /// classic `@socket.io/redis-adapter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// Options of the streams adapter (`{streamName, maxLen, ...}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter_opts: Option<Value>,
    /// Extra `Server` options, e.g. `{"connectionStateRecovery": {}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_opts: Option<Value>,
    /// Instrument the server with `@socket.io/admin-ui`:
    /// `{username, passwordHash, serverId?, mode?, readonly?}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_ui: Option<Value>,
}

/// A targeted operation on a driver-hosted Node server.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTarget {
    /// The server's port (as returned by [`NodeDriver::start_server`]).
    pub port: u16,
    /// Namespace (default `/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nsp: Option<String>,
    /// Rooms to target (empty: everyone).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Rooms to exclude.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    /// Only this server's own sockets (`.local`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

impl ServerTarget {
    /// Everyone in `/` across the cluster, from the server on `port`.
    pub fn new(port: u16) -> Self {
        Self {
            port,
            ..Self::default()
        }
    }

    /// Sets the namespace.
    pub fn nsp(mut self, nsp: impl Into<String>) -> Self {
        self.nsp = Some(nsp.into());
        self
    }

    /// Adds a target room.
    pub fn to(mut self, room: impl Into<String>) -> Self {
        self.to.push(room.into());
        self
    }

    /// Adds an excluded room.
    pub fn except(mut self, room: impl Into<String>) -> Self {
        self.except.push(room.into());
        self
    }

    /// Restricts to the server's own sockets.
    pub fn local(mut self) -> Self {
        self.local = true;
        self
    }
}

/// A socket as seen by `fetchSockets()` (local or remote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedSocket {
    /// Socket id.
    pub id: String,
    /// Rooms, including the socket's own id room.
    pub rooms: Vec<String>,
}

/// An asynchronous notification from the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// The client connected (also after a reconnect).
    Connect {
        /// Socket id.
        sid: String,
        /// Transport at connect time.
        transport: Option<String>,
        /// `socket.recovered`: the server restored the session (connection
        /// state recovery).
        recovered: bool,
    },
    /// `connect_error`: `message` is `err.message`, `data` is `err.data`.
    ConnectError {
        /// The error message (e.g. the server middleware's error message).
        message: String,
        /// `err.data` (null when absent).
        data: Value,
    },
    /// An event received by the client.
    Event {
        /// Event name.
        name: String,
        /// Arguments (binary as `{"$bin":..}`).
        args: Vec<Value>,
    },
    /// The client disconnected, e.g. reason `io server disconnect`.
    Disconnect {
        /// socket.io-client's disconnect reason.
        reason: String,
    },
    /// The transport was upgraded (name is `websocket`).
    Transport {
        /// The new transport's name.
        name: String,
    },
    /// An event received by a driver-hosted server from one of its clients
    /// (queued under [`NodeDriver::server_queue`]).
    ServerEvent {
        /// Namespace.
        nsp: String,
        /// The sending socket's id.
        sid: String,
        /// Event name.
        name: String,
        /// Arguments.
        args: Vec<Value>,
    },
    /// A `serverSideEmit` received by a driver-hosted server.
    ServerSideEvent {
        /// Namespace.
        nsp: String,
        /// Event name.
        name: String,
        /// Arguments.
        args: Vec<Value>,
    },
    /// Anything else, verbatim.
    Other(Value),
}

impl Note {
    fn parse(v: &Value) -> (Option<String>, Note) {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let args = || {
            v.get("args")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let client = v.get("client").and_then(Value::as_str).map(str::to_string);
        let server = v
            .get("port")
            .and_then(Value::as_u64)
            .map(|p| server_queue_name(p as u16));
        let note = match v.get("note").and_then(Value::as_str).unwrap_or_default() {
            "connect" => Note::Connect {
                sid: s("sid"),
                transport: v
                    .get("transport")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                recovered: v.get("recovered").and_then(Value::as_bool).unwrap_or(false),
            },
            "connect_error" => Note::ConnectError {
                message: s("message"),
                data: v.get("data").cloned().unwrap_or(Value::Null),
            },
            "event" => Note::Event {
                name: s("name"),
                args: args(),
            },
            "disconnect" => Note::Disconnect {
                reason: s("reason"),
            },
            "transport" => Note::Transport { name: s("name") },
            "server_event" => Note::ServerEvent {
                nsp: s("nsp"),
                sid: s("sid"),
                name: s("name"),
                args: args(),
            },
            "server_side_event" => Note::ServerSideEvent {
                nsp: s("nsp"),
                name: s("name"),
                args: args(),
            },
            _ => Note::Other(v.clone()),
        };
        (client.or(server), note)
    }
}

/// The note queue name for the driver-hosted server on `port`.
fn server_queue_name(port: u16) -> String {
    format!("server:{port}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

type Pending = HashMap<u64, oneshot::Sender<Result<Value, String>>>;

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    queues: Mutex<HashMap<String, VecDeque<Note>>>,
    notify: Notify,
    closed: AtomicBool,
    stderr: Mutex<Vec<u8>>,
}

impl Shared {
    fn stderr_tail(&self) -> String {
        let buf = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        tail_lines(&String::from_utf8_lossy(&buf), 30)
    }
}

/// A running `node tests/node/driver.mjs`. All methods take `&self`, so one
/// driver can be shared (e.g. in an `Arc`) by concurrent tasks. Dropping it
/// kills node.
pub struct NodeDriver {
    child: Child,
    stdin: tokio::sync::Mutex<ChildStdin>,
    next_id: AtomicU64,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeDriver {
    /// Installs `tests/node/node_modules` if needed ([`ensure_node_modules`]),
    /// spawns node and waits (up to 20 s) until the driver is ready.
    pub async fn start() -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(ensure_node_modules)
            .await
            .context("npm install task panicked")??;
        let dir = node_dir();
        Self::spawn(&dir).await
    }

    async fn spawn(dir: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new("node")
            .arg("driver.mjs")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow!(
                        "node not found on PATH; install Node.js >= 18: apt-get install nodejs npm"
                    )
                } else {
                    anyhow::Error::new(e).context("spawn node driver.mjs")
                }
            })?;
        let stdin = child.stdin.take().context("node stdin")?;
        let stdout = child.stdout.take().context("node stdout")?;
        let mut stderr = child.stderr.take().context("node stderr")?;
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = oneshot::channel::<()>();

        let s = shared.clone();
        let err_task = tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                s.stderr
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        });

        let s = shared.clone();
        let out_task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    s.stderr
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(format!("[non-JSON stdout] {line}\n").as_bytes());
                    continue;
                };
                if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    let tx = s
                        .pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    if let Some(tx) = tx {
                        let res = if v.get("ok").and_then(Value::as_bool) == Some(true) {
                            Ok(v.get("result").cloned().unwrap_or(Value::Null))
                        } else {
                            Err(v
                                .get("error")
                                .and_then(Value::as_str)
                                .unwrap_or("unknown driver error")
                                .to_string())
                        };
                        let _ = tx.send(res);
                    }
                } else if v.get("note").and_then(Value::as_str) == Some("ready") {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                } else {
                    let (queue, note) = Note::parse(&v);
                    let queue = queue.unwrap_or_else(|| "_".to_string());
                    s.queues
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(queue)
                        .or_default()
                        .push_back(note);
                    s.notify.notify_waiters();
                }
            }
            s.closed.store(true, Ordering::SeqCst);
            // Fail every request still waiting: dropping the senders does it.
            s.pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
            s.notify.notify_waiters();
        });

        let driver = Self {
            child,
            stdin: tokio::sync::Mutex::new(stdin),
            next_id: AtomicU64::new(1),
            shared,
            tasks: vec![out_task, err_task],
        };
        match tokio::time::timeout(READY_TIMEOUT, ready_rx).await {
            Ok(Ok(())) => Ok(driver),
            Ok(Err(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!(
                    "node driver exited before it was ready:\n{}",
                    driver.shared.stderr_tail()
                )
            }
            Err(_) => bail!(
                "node driver not ready within {READY_TIMEOUT:?}:\n{}",
                driver.shared.stderr_tail()
            ),
        }
    }

    /// Sends `{"id":N,"op":op,...fields}` and waits up to `timeout` for the
    /// response; `Err` carries the driver's error message. `fields` must be
    /// a JSON object (or null).
    pub async fn request(
        &self,
        op: &str,
        fields: Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut msg = match fields {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => bail!("driver request fields must be an object, got {other}"),
        };
        msg.insert("id".into(), json!(id));
        msg.insert("op".into(), json!(op));
        let (tx, rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        if self.shared.closed.load(Ordering::SeqCst) {
            self.forget(id);
            bail!("node driver has exited:\n{}", self.shared.stderr_tail());
        }
        let mut line = serde_json::to_vec(&Value::Object(msg))?;
        line.push(b'\n');
        let write = async {
            let mut stdin = self.stdin.lock().await;
            stdin.write_all(&line).await?;
            stdin.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.forget(id);
                bail!("write to node driver: {e}\n{}", self.shared.stderr_tail());
            }
            Err(_) => {
                self.forget(id);
                bail!("writing driver op {op} timed out after {timeout:?}");
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(msg))) => Err(anyhow!("{msg}")),
            Ok(Err(_)) => bail!(
                "node driver exited during op {op}:\n{}",
                self.shared.stderr_tail()
            ),
            Err(_) => {
                self.forget(id);
                bail!("driver op {op} timed out after {timeout:?}")
            }
        }
    }

    fn forget(&self, id: u64) {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Round-trips a `ping` op (driver liveness).
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.request("ping", Value::Null, DEFAULT_REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// Connects a new `socket.io-client` socket named `client` to `url`
    /// (`http://host:port[/namespace]`). Returns once it is connected, or
    /// `Err` with the `connect_error` message (e.g. the gateway's auth
    /// error); the `connect`/`connect_error` note is also queued. Bounded by
    /// the client's connect timeout (default 20 s) plus 5 s.
    pub async fn connect(
        &self,
        client: &str,
        url: &str,
        opts: ConnectOptions,
    ) -> anyhow::Result<Connected> {
        let timeout = opts.request_timeout();
        let v = self
            .request(
                "connect",
                json!({ "client": client, "url": url, "opts": opts.to_json() }),
                timeout,
            )
            .await
            .with_context(|| format!("connect {client} to {url}"))?;
        Ok(Connected {
            sid: v
                .get("sid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            transport: v
                .get("transport")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// `socket.emit(name, ...args)`.
    pub async fn emit(&self, client: &str, name: &str, args: Vec<Value>) -> anyhow::Result<()> {
        self.request(
            "emit",
            json!({ "client": client, "name": name, "args": args }),
            DEFAULT_REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// `socket.volatile.emit(name, ...args)`.
    pub async fn emit_volatile(
        &self,
        client: &str,
        name: &str,
        args: Vec<Value>,
    ) -> anyhow::Result<()> {
        self.request(
            "emit",
            json!({ "client": client, "name": name, "args": args, "volatile": true }),
            DEFAULT_REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// `socket.timeout(t).emit(name, ...args, cb)`: returns the ack's
    /// arguments as a JSON array, or `Err` if no ack came within `timeout`.
    pub async fn emit_with_ack(
        &self,
        client: &str,
        name: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.request(
            "emitWithAck",
            json!({ "client": client, "name": name, "args": args, "timeoutMs": millis(timeout) }),
            timeout + Duration::from_secs(5),
        )
        .await
    }

    /// `socket.disconnect()` (a `disconnect` note with reason
    /// `io client disconnect` follows).
    pub async fn disconnect(&self, client: &str) -> anyhow::Result<()> {
        self.request(
            "disconnect",
            json!({ "client": client }),
            DEFAULT_REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// `{connected, sid, transport}` of a client right now.
    pub async fn client_state(&self, client: &str) -> anyhow::Result<Value> {
        self.request(
            "clientState",
            json!({ "client": client }),
            DEFAULT_REQUEST_TIMEOUT,
        )
        .await
    }

    /// Publishes through the official `@socket.io/redis-emitter`. Returns once
    /// Redis has processed the PUBLISH.
    pub async fn emitter_publish(&self, p: EmitterPublish) -> anyhow::Result<()> {
        self.request(
            "emitterPublish",
            serde_json::to_value(p)?,
            DEFAULT_REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// `emitter.in(to).except(except).socketsJoin(rooms)`.
    pub async fn emitter_join(&self, t: EmitterTarget, rooms: &[&str]) -> anyhow::Result<()> {
        let mut v = serde_json::to_value(t)?;
        v["rooms"] = json!(rooms);
        self.request("emitterJoin", v, DEFAULT_REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `emitter.in(to).except(except).socketsLeave(rooms)`.
    pub async fn emitter_leave(&self, t: EmitterTarget, rooms: &[&str]) -> anyhow::Result<()> {
        let mut v = serde_json::to_value(t)?;
        v["rooms"] = json!(rooms);
        self.request("emitterLeave", v, DEFAULT_REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `emitter.in(to).except(except).disconnectSockets(close)`.
    pub async fn emitter_disconnect(&self, t: EmitterTarget, close: bool) -> anyhow::Result<()> {
        let mut v = serde_json::to_value(t)?;
        v["close"] = json!(close);
        self.request("emitterDisconnect", v, DEFAULT_REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `emitter.serverSideEmit(name, ...args)` (to/except are ignored).
    pub async fn emitter_server_side_emit(
        &self,
        t: EmitterTarget,
        name: &str,
        args: Vec<Value>,
    ) -> anyhow::Result<()> {
        let mut v = serde_json::to_value(t)?;
        v["name"] = json!(name);
        v["args"] = json!(args);
        self.request("emitterServerSideEmit", v, DEFAULT_REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// Starts a Node `socket.io` server with the Redis adapter on
    /// `redis_url` (default key) and returns its port on 127.0.0.1.
    pub async fn start_server(&self, redis_url: &str) -> anyhow::Result<u16> {
        self.start_server_with(StartServer {
            redis_url: redis_url.to_string(),
            ..StartServer::default()
        })
        .await
    }

    /// [`start_server`](Self::start_server) with all options.
    pub async fn start_server_with(&self, s: StartServer) -> anyhow::Result<u16> {
        let v = self
            .request(
                "startServer",
                serde_json::to_value(s)?,
                DEFAULT_REQUEST_TIMEOUT,
            )
            .await?;
        v.get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .context("startServer returned no port")
    }

    /// Closes a driver-hosted server (its clients are disconnected).
    pub async fn stop_server(&self, port: u16) -> anyhow::Result<()> {
        self.request(
            "stopServer",
            json!({ "port": port }),
            DEFAULT_REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// `io.of(nsp).to(to).except(except).emit(name, ...args)` on a
    /// driver-hosted server (reaches the whole cluster through the adapter
    /// unless `local`).
    pub async fn server_emit(
        &self,
        t: ServerTarget,
        name: &str,
        args: Vec<Value>,
    ) -> anyhow::Result<()> {
        let mut v = serde_json::to_value(t)?;
        v["name"] = json!(name);
        v["args"] = json!(args);
        self.request("serverEmit", v, DEFAULT_REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `fetchSockets()` across the cluster from a driver-hosted server; the
    /// adapter waits for every other server (its `requestsTimeout`).
    pub async fn server_fetch_sockets(
        &self,
        t: ServerTarget,
    ) -> anyhow::Result<Vec<FetchedSocket>> {
        let v = self
            .request(
                "serverFetchSockets",
                serde_json::to_value(t)?,
                DEFAULT_REQUEST_TIMEOUT,
            )
            .await?;
        let list = v.as_array().context("serverFetchSockets: not an array")?;
        Ok(list
            .iter()
            .map(|s| FetchedSocket {
                id: s
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                rooms: s
                    .get("rooms")
                    .and_then(Value::as_array)
                    .map(|r| {
                        r.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// `adapter.allRooms()` across the cluster, from a driver-hosted server.
    pub async fn server_all_rooms(
        &self,
        port: u16,
        nsp: Option<&str>,
    ) -> anyhow::Result<Vec<String>> {
        let v = self
            .request(
                "serverAllRooms",
                json!({ "port": port, "nsp": nsp.unwrap_or("/") }),
                DEFAULT_REQUEST_TIMEOUT,
            )
            .await?;
        Ok(v.as_array()
            .context("serverAllRooms: not an array")?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect())
    }

    /// `socketsJoin(rooms)` from a driver-hosted server.
    pub async fn server_sockets_join(&self, t: ServerTarget, rooms: &[&str]) -> anyhow::Result<()> {
        let mut v = serde_json::to_value(t)?;
        v["rooms"] = json!(rooms);
        self.request("serverSocketsJoin", v, DEFAULT_REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `socketsLeave(rooms)` from a driver-hosted server.
    pub async fn server_sockets_leave(
        &self,
        t: ServerTarget,
        rooms: &[&str],
    ) -> anyhow::Result<()> {
        let mut v = serde_json::to_value(t)?;
        v["rooms"] = json!(rooms);
        self.request("serverSocketsLeave", v, DEFAULT_REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `disconnectSockets(close)` from a driver-hosted server.
    pub async fn server_disconnect_sockets(
        &self,
        t: ServerTarget,
        close: bool,
    ) -> anyhow::Result<()> {
        let mut v = serde_json::to_value(t)?;
        v["close"] = json!(close);
        self.request("serverDisconnectSockets", v, DEFAULT_REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `serverSideEmit(name, ...args)` from a driver-hosted server. With
    /// `ack_timeout` it uses `serverSideEmitWithAck` and returns the replies
    /// of the other servers as a JSON array.
    pub async fn server_side_emit(
        &self,
        port: u16,
        name: &str,
        args: Vec<Value>,
        ack_timeout: Option<Duration>,
    ) -> anyhow::Result<Value> {
        let mut v = json!({ "port": port, "name": name, "args": args });
        let mut timeout = DEFAULT_REQUEST_TIMEOUT;
        if let Some(t) = ack_timeout {
            v["withAck"] = json!(true);
            v["timeoutMs"] = json!(millis(t));
            timeout = t + Duration::from_secs(5);
        }
        self.request("serverSideEmit", v, timeout).await
    }

    /// The note queue name of the driver-hosted server on `port`, for
    /// [`next_note`](Self::next_note) and friends (it receives
    /// [`Note::ServerEvent`] and [`Note::ServerSideEvent`]).
    pub fn server_queue(port: u16) -> String {
        server_queue_name(port)
    }

    /// Pops the oldest note of `client`, waiting up to `timeout`.
    pub async fn next_note(&self, client: &str, timeout: Duration) -> anyhow::Result<Note> {
        self.take_note(client, timeout, |_| true)
            .await
            .with_context(|| format!("no note for {client} within {timeout:?}"))
    }

    /// Removes and returns the first queued (or arriving) note of `client`
    /// that matches `pred`, waiting up to `timeout`; notes that do not match
    /// stay queued in order.
    pub async fn take_note(
        &self,
        client: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Note) -> bool,
    ) -> anyhow::Result<Note> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut queues = self.shared.queues.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(q) = queues.get_mut(client)
                    && let Some(i) = q.iter().position(&mut pred)
                {
                    return Ok(q.remove(i).expect("index in range"));
                }
            }
            if self.shared.closed.load(Ordering::SeqCst) {
                bail!("node driver has exited:\n{}", self.shared.stderr_tail());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let queued = self.queued(client);
                bail!(
                    "timed out after {timeout:?} waiting for a note of {client}; queued: {queued:?}"
                );
            }
        }
    }

    /// Waits up to `timeout` for event `name` on `client` and returns its
    /// arguments; other notes stay queued.
    pub async fn expect_event(
        &self,
        client: &str,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let note = self
            .take_note(
                client,
                timeout,
                |n| matches!(n, Note::Event { name: n, .. } if n == name),
            )
            .await
            .with_context(|| format!("{client} did not receive event {name:?}"))?;
        match note {
            Note::Event { args, .. } => Ok(args),
            _ => unreachable!("predicate matched an event"),
        }
    }

    /// Waits up to `timeout` for `client` to disconnect; returns the reason.
    pub async fn expect_disconnect(
        &self,
        client: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let note = self
            .take_note(client, timeout, |n| matches!(n, Note::Disconnect { .. }))
            .await
            .with_context(|| format!("{client} did not disconnect"))?;
        match note {
            Note::Disconnect { reason } => Ok(reason),
            _ => unreachable!("predicate matched a disconnect"),
        }
    }

    /// Waits up to `timeout` for a transport upgrade note; returns the
    /// transport name (`websocket`).
    pub async fn expect_upgrade(&self, client: &str, timeout: Duration) -> anyhow::Result<String> {
        let note = self
            .take_note(client, timeout, |n| matches!(n, Note::Transport { .. }))
            .await
            .with_context(|| format!("{client} did not upgrade"))?;
        match note {
            Note::Transport { name } => Ok(name),
            _ => unreachable!("predicate matched a transport note"),
        }
    }

    /// Fails if `client` has or receives any event within `within`.
    pub async fn expect_no_event(&self, client: &str, within: Duration) -> anyhow::Result<()> {
        self.expect_no(client, within, |n| matches!(n, Note::Event { .. }))
            .await
    }

    /// Fails if `client` has or receives event `name` within `within`.
    pub async fn expect_no_event_named(
        &self,
        client: &str,
        name: &str,
        within: Duration,
    ) -> anyhow::Result<()> {
        self.expect_no(
            client,
            within,
            |n| matches!(n, Note::Event { name: n, .. } if n == name),
        )
        .await
    }

    async fn expect_no(
        &self,
        client: &str,
        within: Duration,
        pred: impl Fn(&Note) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(n) = self
                .shared
                .queues
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(client)
                .and_then(|q| q.iter().find(|n| pred(n)).cloned())
            {
                bail!("{client} received an unexpected note: {n:?}");
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(20))).await;
        }
    }

    /// A snapshot of `client`'s queued notes (not removed).
    pub fn queued(&self, client: &str) -> Vec<Note> {
        self.shared
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(client)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Removes and returns all of `client`'s queued notes.
    pub fn drain(&self, client: &str) -> Vec<Note> {
        self.shared
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(client)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// What node wrote to stderr so far (library warnings, redis errors).
    pub fn stderr(&self) -> String {
        let buf = self.shared.stderr.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Closes every client, server and Redis connection and waits (up to
    /// 5 s) for node to exit; kills it otherwise.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self
            .request("shutdown", Value::Null, Duration::from_secs(5))
            .await;
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => {
                let _ = self.child.start_kill();
                bail!("node driver did not exit after shutdown; killed it")
            }
        }
    }
}

impl Drop for NodeDriver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // Reap now if possible so no zombie outlives the test.
        for _ in 0..50 {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}
