//! The built `switchboard-gateway` binary as a child process on a free port.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    net::{free_port, http_request},
    proc::{LogBuffer, kill_and_reap, signal, wait_timeout},
};

/// Default for [`GatewayOptions::ready_timeout`].
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`GatewayProcess::terminate`] waits after SIGTERM.
pub const DEFAULT_TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of a workspace binary (`switchboard-gateway`, `switchboard`).
///
/// Looks at the env var named after the binary (upper-cased, `-` → `_`,
/// plus `_BIN`: `SWITCHBOARD_GATEWAY_BIN`, `SWITCHBOARD_BIN`) first, then
/// next to the running test executable: tests run from
/// `target/<profile>/deps/<test>-<hash>`, binaries live in
/// `target/<profile>/`. Fails with the `cargo build` command to run if the
/// binary is missing.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let var = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("{var}={} does not name a file", p.display());
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(profile_dir) = dir.parent()
        {
            candidates.push(profile_dir.join(name));
        }
        candidates.push(dir.join(name));
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let package = match name {
        "switchboard-gateway" => "switchboard-gateway",
        "switchboard" => "switchboard-broadcaster",
        _ => "<package>",
    };
    bail!(
        "binary `{name}` not found (looked at {}); run `cargo build -p {package}` (same profile and target dir as the tests) or set {var}",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// How to start a gateway. A builder: every method takes and returns `self`.
///
/// Environment given with [`env`](Self::env) is applied after the testkit's
/// own (`SWITCHBOARD_LISTEN=127.0.0.1:<port>`, `SWITCHBOARD_PORT=<port>`),
/// so it wins. `SWITCHBOARD_*` variables of the test process itself are not
/// inherited.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    env: Vec<(String, String)>,
    args: Vec<String>,
    config_toml: Option<String>,
    port: Option<u16>,
    ready_timeout: Duration,
    binary: Option<PathBuf>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            env: Vec::new(),
            args: Vec::new(),
            config_toml: None,
            port: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            binary: None,
        }
    }
}

impl GatewayOptions {
    /// No extra env, args or config; in-memory bus unless [`redis`](Self::redis) is set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets an environment variable for the gateway.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Uses this Redis (`SWITCHBOARD_REDIS_URL`).
    pub fn redis(self, url: impl Into<String>) -> Self {
        self.env("SWITCHBOARD_REDIS_URL", url)
    }

    /// Sets the HS* JWT secret (`SWITCHBOARD_JWT_SECRET`, at least 32 bytes).
    pub fn secret(self, secret: impl Into<String>) -> Self {
        self.env("SWITCHBOARD_JWT_SECRET", secret)
    }

    /// Writes `text` to a temporary file and passes `--config <file>`.
    pub fn config_toml(mut self, text: impl Into<String>) -> Self {
        self.config_toml = Some(text.into());
        self
    }

    /// Appends a command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Listens on this port instead of a fresh [`free_port`] (e.g. to bring a
    /// gateway back on the port of one that was killed).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// How long [`GatewayProcess::start`] waits for `/healthz` (default 15 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Runs this binary instead of the one found by [`bin_path`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }
}

/// A running `switchboard-gateway` child process listening on
/// `127.0.0.1:<port>`. Its stdout and stderr are captured into one buffer
/// ([`logs`](Self::logs)). Dropping it SIGKILLs and reaps the process.
pub struct GatewayProcess {
    port: u16,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    logs: LogBuffer,
    config_dir: Option<tempfile::TempDir>,
}

impl GatewayProcess {
    /// Spawns the gateway and waits until `GET /healthz` returns 200 (up to
    /// the options' ready timeout, 15 s by default). The error carries the
    /// tail of the process's output. If the port turned out to be taken (and
    /// was not fixed with [`GatewayOptions::port`]) it retries on a new one.
    ///
    /// Blocking; from async code prefer [`start_async`](Self::start_async).
    pub fn start(opts: GatewayOptions) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            let mut gw = Self::spawn(&opts)?;
            match gw.wait_healthy(opts.ready_timeout) {
                Ok(()) => return Ok(gw),
                Err(e) => {
                    let logs = gw.logs().to_ascii_lowercase();
                    if opts.port.is_none() && logs.contains("address already in use") {
                        last = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("gateway did not start")))
    }

    /// [`start`](Self::start) on a blocking thread, for async tests.
    pub async fn start_async(opts: GatewayOptions) -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(move || Self::start(opts))
            .await
            .context("gateway start task panicked")?
    }

    /// Spawns the gateway without waiting for it to become healthy (for
    /// tests of start-up failures: follow with [`wait_exit`](Self::wait_exit)).
    pub fn spawn(opts: &GatewayOptions) -> anyhow::Result<Self> {
        let bin = match &opts.binary {
            Some(b) => b.clone(),
            None => bin_path("switchboard-gateway")?,
        };
        let port = opts.port.unwrap_or_else(free_port);
        let mut cmd = Command::new(&bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SWITCHBOARD_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("SWITCHBOARD_PORT", port.to_string());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut config_dir = None;
        if let Some(text) = &opts.config_toml {
            let dir = tempfile::Builder::new()
                .prefix("switchboard-gateway-")
                .tempdir()
                .context("create config dir")?;
            let file = dir.path().join("gateway.toml");
            std::fs::write(&file, text).context("write gateway.toml")?;
            cmd.arg("--config").arg(&file);
            config_dir = Some(dir);
        }
        cmd.args(&opts.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let logs = LogBuffer::default();
        if let Some(out) = child.stdout.take() {
            logs.capture(out, "gateway-stdout");
        }
        if let Some(err) = child.stderr.take() {
            logs.capture(err, "gateway-stderr");
        }
        Ok(Self {
            port,
            child: Some(child),
            exit: None,
            logs,
            config_dir,
        })
    }

    /// Polls `GET /healthz` until it returns 200; fails if the process exits
    /// first or `timeout` passes, with the tail of its output.
    pub fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/healthz", self.url());
        let mut last;
        loop {
            if let Some(status) = self.try_exit()? {
                thread::sleep(Duration::from_millis(50));
                bail!(
                    "switchboard-gateway exited with {status} before /healthz answered:\n{}",
                    self.logs.tail(30)
                );
            }
            match http_request("GET", &url, &[], None, Duration::from_secs(1)) {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => last = format!("last answer {} {}", r.status, r.text()),
                Err(e) => last = format!("last error: {e:#}"),
            }
            if Instant::now() >= deadline {
                bail!(
                    "switchboard-gateway on port {} not healthy within {timeout:?} ({last}); output tail:\n{}",
                    self.port,
                    self.logs.tail(30)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the gateway listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while the process has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the gateway wrote to stdout and stderr so far, interleaved
    /// in arrival order.
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// Waits until the captured output contains `needle`; fails with the
    /// output tail after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs.text().contains(needle) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "gateway output did not contain {needle:?} within {timeout:?}; tail:\n{}",
                    self.logs.tail(30)
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends SIGTERM and waits (up to 30 s) for the process to exit,
    /// returning its exit status. If it does not exit in time it is
    /// SIGKILLed and an error is returned.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        self.terminate_timeout(DEFAULT_TERMINATE_TIMEOUT)
    }

    /// [`terminate`](Self::terminate) with an explicit timeout.
    pub fn terminate_timeout(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_exit()? {
            return Ok(status);
        }
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGTERM).context("send SIGTERM")?;
        }
        self.wait_exit(timeout).map_err(|e| {
            self.kill();
            e.context("gateway did not exit after SIGTERM; killed it")
        })
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        let child = self
            .child
            .as_mut()
            .context("gateway process already reaped")?;
        match wait_timeout(child, timeout)? {
            Some(status) => {
                self.exit = Some(status);
                // Let the capture threads drain the last output.
                thread::sleep(Duration::from_millis(50));
                Ok(status)
            }
            None => bail!(
                "gateway did not exit within {timeout:?}; output tail:\n{}",
                self.logs.tail(30)
            ),
        }
    }

    /// SIGKILLs and reaps the process (no-op if it already exited).
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_and_reap(child);
            if let Ok(Some(status)) = child.try_wait() {
                self.exit.get_or_insert(status);
            }
        }
    }

    /// Sends an arbitrary signal (e.g. `libc::SIGSTOP`) to the process.
    pub fn signal(&self, sig: i32) -> anyhow::Result<()> {
        let pid = self.pid().context("gateway process already reaped")?;
        signal(pid, sig).context("send signal")
    }

    /// The exit status, if the process has exited (reaps it).
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if let Some(status) = self.exit {
            return Ok(Some(status));
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = child.try_wait().context("poll gateway process")?;
        self.exit = status;
        Ok(status)
    }

    /// The path of the gateway's TOML config file, if one was written.
    pub fn config_path(&self) -> Option<PathBuf> {
        self.config_dir
            .as_ref()
            .map(|d| Path::new(d.path()).join("gateway.toml"))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
