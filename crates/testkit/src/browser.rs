//! A real headless Chromium for browser tests, and a static HTTP server for
//! the pages it opens.
//!
//! [`Browser`] runs `tests/python/browser.py`: selenium with Debian's
//! `chromium` and its system `chromedriver` (never a downloaded driver).
//! [`StaticSite`] serves test pages with `python3 -m http.server`, so a page
//! has a real `http://127.0.0.1:PORT` origin (for `server.allowed_origins`
//! and CORS). Both are blocking; from async tests call them inside
//! `spawn_blocking`. Screenshots go to [`artifacts_dir`].

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use crate::{
    net::{free_port, http_request},
    proc::{LogBuffer, kill_and_reap, kill_group, wait_timeout},
    python::{ensure_venv, python_dir, venv_python},
    tools::find_tool,
};

/// How long Chromium and chromedriver may take to come up on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for a command that has no timeout of its own (page loads included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the driver gets to close the browser before it is killed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The Chromium and chromedriver executables a [`Browser`] runs.
#[derive(Debug, Clone)]
pub struct BrowserPaths {
    /// The browser (`/usr/bin/chromium` on Debian).
    pub chromium: PathBuf,
    /// The matching driver (`/usr/bin/chromedriver`, package `chromium-driver`).
    pub chromedriver: PathBuf,
}

impl BrowserPaths {
    /// Finds `chromium` (or `chromium-browser`) and `chromedriver` on `PATH`;
    /// `Err` says what is missing and how to install it.
    pub fn find() -> Result<Self, String> {
        let chromium = find_tool("chromium").or_else(|| find_tool("chromium-browser"));
        let chromedriver = find_tool("chromedriver");
        match (chromium, chromedriver) {
            (Some(chromium), Some(chromedriver)) => Ok(Self {
                chromium,
                chromedriver,
            }),
            (c, d) => Err(format!(
                "{} not installed (apt-get install chromium chromium-driver; .ci/run does)",
                [
                    c.is_none().then_some("chromium"),
                    d.is_none().then_some("chromedriver")
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ")
            )),
        }
    }
}

/// `<target>/test-artifacts/<name>/`, created: where tests keep screenshots.
/// `<target>` is the cargo target dir the test executable runs from.
pub fn artifacts_dir(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    // target/<profile>/deps/<test>-<hash>
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "deps"))
        .and_then(|deps| deps.parent())
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::repo_root().join("target"));
    let dir = target.join("test-artifacts").join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// One headless Chromium, driven by `tests/python/browser.py` over JSON
/// lines. Every command is bounded; a failing command's error carries what
/// the page showed. Dropping it closes the browser (and kills the driver's
/// whole process group if that does not happen in time).
pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: LogBuffer,
    next_id: u64,
    driver_log: PathBuf,
    /// `chrome 156.0...` as reported by the driver.
    pub version: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium (installing the Python venv with selenium if needed)
    /// and waits until it is ready, up to 60 s.
    pub fn start(paths: &BrowserPaths) -> anyhow::Result<Self> {
        ensure_venv()?;
        let profile = tempfile::Builder::new()
            .prefix("switchboard-chromium-")
            .tempdir()
            .context("create the Chromium profile dir")?;
        let driver_log = profile.path().join("chromedriver.log");
        let mut cmd = Command::new(venv_python());
        cmd.arg("browser.py")
            .arg("--chromium")
            .arg(&paths.chromium)
            .arg("--chromedriver")
            .arg(&paths.chromedriver)
            .arg("--profile")
            .arg(profile.path().join("profile"))
            .arg("--driver-log")
            .arg(&driver_log)
            .current_dir(python_dir())
            .env("PYTHONUNBUFFERED", "1")
            // Never let selenium's driver manager go online.
            .env("SE_OFFLINE", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so chromedriver and Chromium can be
            // killed with it if the driver does not quit.
            .process_group(0);
        let mut child = cmd.spawn().context("spawn tests/python/browser.py")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("browser.py stdout")?;
        let stderr = LogBuffer::default();
        if let Some(err) = child.stderr.take() {
            stderr.capture(err, "browser-stderr");
        }
        let (tx, lines) = mpsc::channel();
        thread::Builder::new()
            .name("browser-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .context("spawn the browser reader thread")?;
        let mut browser = Self {
            child,
            stdin,
            lines,
            stderr,
            next_id: 0,
            driver_log,
            version: String::new(),
            _profile: profile,
        };
        let ready = browser.read_line(START_TIMEOUT, "start Chromium")?;
        if let Some(e) = ready.get("error").and_then(Value::as_str) {
            bail!("Chromium did not start: {e}\n{}", browser.diagnostics());
        }
        browser.version = ready["browser"].as_str().unwrap_or_default().to_string();
        Ok(browser)
    }

    /// Loads `url` and waits for the page's load event (up to 20 s).
    pub fn open(&mut self, url: &str) -> anyhow::Result<()> {
        self.command(json!({ "cmd": "open", "url": url }), COMMAND_TIMEOUT)
            .map(drop)
    }

    /// Waits until the element matching `css` exists and its visible text
    /// contains `contains`; returns that text. Fails after `timeout` with
    /// what the element and the page showed.
    pub fn wait_text(
        &mut self,
        css: &str,
        contains: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let v = self.command(
            json!({ "cmd": "wait_text", "css": css, "contains": contains, "timeout_s": timeout.as_secs_f64() }),
            timeout + COMMAND_TIMEOUT,
        )?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The visible text of the element matching `css`.
    pub fn text(&mut self, css: &str) -> anyhow::Result<String> {
        let v = self.command(json!({ "cmd": "text", "css": css }), COMMAND_TIMEOUT)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Clicks the element matching `css`.
    pub fn click(&mut self, css: &str) -> anyhow::Result<()> {
        self.command(json!({ "cmd": "click", "css": css }), COMMAND_TIMEOUT)
            .map(drop)
    }

    /// Clears the input matching `css` and types `text` into it.
    pub fn type_text(&mut self, css: &str, text: &str) -> anyhow::Result<()> {
        self.command(
            json!({ "cmd": "type", "css": css, "text": text }),
            COMMAND_TIMEOUT,
        )
        .map(drop)
    }

    /// Runs `script` in the page (`return ...` gives a value) with
    /// `arguments[i]` bound to `args`.
    pub fn eval(&mut self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        self.command(
            json!({ "cmd": "eval", "script": script, "args": args }),
            COMMAND_TIMEOUT,
        )
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        self.command(
            json!({ "cmd": "screenshot", "path": path }),
            COMMAND_TIMEOUT,
        )
        .map(drop)
    }

    /// The browser console messages since the last call (level: message).
    pub fn console(&mut self) -> anyhow::Result<Vec<String>> {
        let v = self.command(json!({ "cmd": "console" }), COMMAND_TIMEOUT)?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Closes the browser and waits for the driver to exit.
    pub fn quit(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn command(&mut self, mut req: Value, timeout: Duration) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        req["id"] = json!(id);
        let what = format!("browser {}", req["cmd"]);
        let stdin = self.stdin.as_mut().context("the browser was closed")?;
        writeln!(stdin, "{req}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{what}: the driver is gone\n{}", self.diagnostics()))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self.read_line(left, &what)?;
            if answer["id"] != json!(id) {
                continue; // an answer to an earlier command that timed out
            }
            if answer["ok"] == json!(true) {
                return Ok(answer["value"].clone());
            }
            return Err(anyhow!(
                "{what} failed: {}",
                answer["error"].as_str().unwrap_or("no error text")
            ));
        }
    }

    fn read_line(&mut self, timeout: Duration, what: &str) -> anyhow::Result<Value> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => serde_json::from_str(&line)
                .with_context(|| format!("{what}: the driver said {line:?}")),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "{what}: no answer within {timeout:?}\n{}",
                self.diagnostics()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = wait_timeout(&mut self.child, Duration::from_secs(2));
                bail!("{what}: the driver exited\n{}", self.diagnostics())
            }
        }
    }

    /// The driver's stderr and chromedriver's log, for error messages.
    fn diagnostics(&self) -> String {
        let driver_log = std::fs::read_to_string(&self.driver_log).unwrap_or_default();
        format!(
            "--- browser.py stderr ---\n{}\n--- chromedriver log (tail) ---\n{}",
            self.stderr.tail(30),
            crate::proc::tail_lines(&driver_log, 20)
        )
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            // The driver quits the browser on `quit` or at end of input.
            let _ = writeln!(stdin, "{}", json!({ "cmd": "quit" }));
        }
        if wait_timeout(&mut self.child, QUIT_TIMEOUT)?.is_some() {
            // selenium's quit() has stopped chromedriver and Chromium.
            return Ok(());
        }
        // Still running, so its group id is still ours: kill the driver with
        // the chromedriver and Chromium processes it started.
        kill_group(self.child.id());
        kill_and_reap(&mut self.child);
        bail!("the browser driver did not quit within {QUIT_TIMEOUT:?}; killed its process group")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.shutdown();
        }
    }
}

/// Static files served over HTTP on `127.0.0.1:<free port>` by
/// `python3 -m http.server`, from a temporary directory the files are
/// copied into. Dropping it stops the server.
pub struct StaticSite {
    child: Child,
    port: u16,
    logs: LogBuffer,
    _dir: tempfile::TempDir,
}

impl StaticSite {
    /// Copies each `(name, source)` into a fresh directory, serves it, and
    /// waits (up to 15 s) until the server answers.
    pub fn start(files: &[(&str, &Path)]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-site-")
            .tempdir()
            .context("create the site dir")?;
        for (name, source) in files {
            std::fs::copy(source, dir.path().join(name))
                .with_context(|| format!("copy {} into the site", source.display()))?;
        }
        let mut last = None;
        // Another process may grab the free port first: then try a new one.
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new("python3")
                .args(["-m", "http.server", "--bind", "127.0.0.1"])
                .arg(port.to_string())
                .arg("--directory")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("spawn python3 -m http.server (install python3)")?;
            let logs = LogBuffer::default();
            if let Some(out) = child.stdout.take() {
                logs.capture(out, "site-stdout");
            }
            if let Some(err) = child.stderr.take() {
                logs.capture(err, "site-stderr");
            }
            match wait_up(&mut child, port, &logs, Duration::from_secs(15)) {
                Ok(()) => {
                    return Ok(Self {
                        child,
                        port,
                        logs,
                        _dir: dir,
                    });
                }
                Err(e) => {
                    kill_and_reap(&mut child);
                    if !logs.text().contains("Address already in use") {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("the static site did not start")))
    }

    /// `http://127.0.0.1:PORT`: the origin of the pages served.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The same site under another name (`http://localhost:PORT`), which a
    /// browser treats as a different origin.
    pub fn other_origin(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// `origin` + `path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// The port served on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's request log so far.
    pub fn logs(&self) -> String {
        self.logs.text()
    }
}

/// Polls `GET /` of the static server until it answers 200.
fn wait_up(
    child: &mut Child,
    port: u16,
    logs: &LogBuffer,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let url = format!("http://127.0.0.1:{port}/");
    loop {
        if let Some(status) = child.try_wait()? {
            thread::sleep(Duration::from_millis(50));
            bail!(
                "python3 -m http.server exited with {status}:\n{}",
                logs.tail(20)
            );
        }
        if let Ok(r) = http_request("GET", &url, &[], None, Duration::from_secs(1))
            && r.status == 200
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "python3 -m http.server on port {port} did not answer within {timeout:?}:\n{}",
                logs.tail(20)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}
