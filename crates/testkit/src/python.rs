//! The official `python-socketio` client (`tests/python/client.py`) run from
//! a venv at `tests/python/.venv`.

use std::{
    path::PathBuf,
    process::{Command as StdCommand, Stdio},
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, ChildStdout, Command},
};

use crate::{lock::FileLock, node::run_install, proc::tail_lines, repo_root};

const VENV_TIMEOUT: Duration = Duration::from_secs(300);

/// `tests/python` in the workspace.
pub fn python_dir() -> PathBuf {
    repo_root().join("tests").join("python")
}

/// The venv's interpreter, `tests/python/.venv/bin/python`.
pub fn venv_python() -> PathBuf {
    python_dir().join(".venv").join("bin").join("python")
}

/// Makes sure `tests/python/.venv` exists with `requirements.txt`
/// installed (`python3 -m venv` + `pip install -r`), under a file lock so
/// parallel tests do not race. Reinstalls when `requirements.txt` changed.
/// Blocking.
pub fn ensure_venv() -> anyhow::Result<()> {
    let dir = python_dir();
    let reqs = std::fs::read(dir.join("requirements.txt"))
        .with_context(|| format!("read {}/requirements.txt", dir.display()))?;
    let venv = dir.join(".venv");
    let marker = venv.join(".switchboard-installed");
    let installed = || venv_python().is_file() && std::fs::read(&marker).is_ok_and(|m| m == reqs);
    if installed() {
        return Ok(());
    }
    let _lock = FileLock::exclusive(&dir.join(".pip-install.lock"))?;
    if installed() {
        return Ok(());
    }
    if !venv_python().is_file() {
        run_install(
            StdCommand::new("python3")
                .args(["-m", "venv", ".venv"])
                .current_dir(&dir),
            "python3 -m venv tests/python/.venv",
            "install Python 3 with venv: apt-get install python3 python3-venv",
            VENV_TIMEOUT,
        )?;
    }
    run_install(
        StdCommand::new(venv_python())
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
                "requirements.txt",
            ])
            .current_dir(&dir),
        "pip install -r tests/python/requirements.txt",
        "the venv has no pip; install python3-venv",
        VENV_TIMEOUT,
    )?;
    std::fs::write(&marker, &reqs).context("write venv marker")?;
    Ok(())
}

/// What the Python client should do.
#[derive(Debug, Clone)]
pub struct PyClientOptions {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Event to wait for.
    pub event: String,
    /// JWT sent as `auth={"token": ...}`.
    pub token: Option<String>,
    /// A whole `auth` payload instead of `token`.
    pub auth: Option<Value>,
    /// Transports, e.g. `["websocket"]` (default polling then websocket).
    pub transports: Vec<String>,
    /// Namespace (default `/`).
    pub namespace: Option<String>,
    /// Engine.IO path without slashes (default `socket.io`).
    pub path: Option<String>,
    /// Extra handshake headers.
    pub headers: Vec<(String, String)>,
    /// An event to emit right after connecting: name and JSON args.
    pub emit: Option<(String, Vec<Value>)>,
    /// How long the client waits to connect and then for the event.
    pub timeout: Duration,
}

impl PyClientOptions {
    /// Wait for `event` on `url`, 10 s timeout, no token.
    pub fn new(url: impl Into<String>, event: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            event: event.into(),
            token: None,
            auth: None,
            transports: Vec::new(),
            namespace: None,
            path: None,
            headers: Vec::new(),
            emit: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets the JWT.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the transports.
    pub fn transports(mut self, transports: &[&str]) -> Self {
        self.transports = transports.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "client.py".to_string(),
            "--url".into(),
            self.url.clone(),
            "--event".into(),
            self.event.clone(),
            "--timeout".into(),
            format!("{}", self.timeout.as_secs_f64()),
        ];
        if let Some(t) = &self.token {
            a.extend(["--token".into(), t.clone()]);
        }
        if let Some(auth) = &self.auth {
            a.extend(["--auth-json".into(), auth.to_string()]);
        }
        if !self.transports.is_empty() {
            a.extend(["--transports".into(), self.transports.join(",")]);
        }
        if let Some(ns) = &self.namespace {
            a.extend(["--namespace".into(), ns.clone()]);
        }
        if let Some(p) = &self.path {
            a.extend(["--path".into(), p.clone()]);
        }
        for (k, v) in &self.headers {
            a.extend(["--header".into(), format!("{k}: {v}")]);
        }
        if let Some((name, args)) = &self.emit {
            a.extend([
                "--emit".into(),
                name.clone(),
                Value::Array(args.clone()).to_string(),
            ]);
        }
        a
    }
}

/// A connected Python client waiting for its event.
pub struct PythonClient {
    child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
    timeout: Duration,
    /// The socket id reported by the client.
    pub sid: String,
    /// The transport at connect time.
    pub transport: String,
}

impl PythonClient {
    /// Spawns the client (installing the venv if needed) and returns once it
    /// reports it is connected, or `Err` with its connect error. Bounded by
    /// the options' timeout plus 10 s.
    pub async fn spawn(opts: &PyClientOptions) -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(ensure_venv)
            .await
            .context("venv install task panicked")??;
        let mut child = Command::new(venv_python())
            .args(opts.args())
            .current_dir(python_dir())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawn python client.py")?;
        let stdout = child.stdout.take().context("python stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let bound = opts.timeout + Duration::from_secs(10);
        let first = tokio::time::timeout(bound, lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(l))) => l,
            Ok(_) => {
                let err = stderr_of(&mut child).await;
                bail!("python client exited before connecting:\n{err}");
            }
            Err(_) => {
                let _ = child.start_kill();
                bail!("python client did not connect within {bound:?}");
            }
        };
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("python client said {line:?}"))?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            let _ = child.wait().await;
            return Err(anyhow!("{e}"));
        }
        Ok(Self {
            sid: v
                .get("sid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            transport: v
                .get("transport")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            child,
            lines,
            timeout: opts.timeout,
        })
    }

    /// Waits for the event line and the client's exit; returns the event's
    /// arguments (binary as `{"$bin":..}`). Bounded by the options' timeout
    /// plus 10 s.
    pub async fn wait_event(mut self) -> anyhow::Result<Vec<Value>> {
        let bound = self.timeout + Duration::from_secs(10);
        let line = match tokio::time::timeout(bound, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            Ok(_) => {
                let err = stderr_of(&mut self.child).await;
                bail!("python client exited without an event:\n{err}");
            }
            Err(_) => {
                let _ = self.child.start_kill();
                bail!("python client gave no event within {bound:?}");
            }
        };
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("python client said {line:?}"))?;
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            bail!("python client: {e}");
        }
        match status {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => bail!("python client exited with {s} after the event"),
            _ => bail!("python client did not exit after the event"),
        }
        Ok(v.get("args")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }
}

async fn stderr_of(child: &mut Child) -> String {
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut s)).await;
    }
    tail_lines(&s, 30)
}

/// Runs the Python client to completion: connect, wait for `opts.event`,
/// return its arguments. `Err` on connect error, timeout or disconnect.
pub async fn run_client(opts: &PyClientOptions) -> anyhow::Result<Vec<Value>> {
    PythonClient::spawn(opts).await?.wait_event().await
}
