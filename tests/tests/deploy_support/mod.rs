//! Shared by the `deploy_*` tests: the shipped files under `deploy/`, the
//! textual adaptation of the shipped nginx site (ports and upstream
//! addresses only) and a real nginx process on loopback ports.

#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
pub use switchboard_testkit::tools::find_tool;

pub mod promql;

/// Set to `1` to turn every "tool not installed" skip into a failure.
pub const REQUIRE_TOOLS_VAR: &str = "SWITCHBOARD_REQUIRE_DEPLOY_TOOLS";

/// The workspace root.
pub fn repo() -> PathBuf {
    switchboard_testkit::repo_root()
}

/// `deploy/<rel>` as text.
pub fn deploy_file(rel: &str) -> String {
    let path = repo().join("deploy").join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Reports a check that could not run. It is printed loudly (run with
/// `--nocapture` / nextest's output to see it) and fails the test when
/// `SWITCHBOARD_REQUIRE_DEPLOY_TOOLS=1`, so a skip never passes silently
/// where the tool is expected.
pub fn skip(check: &str, reason: &str) {
    let msg = format!("SKIPPED CHECK `{check}`: {reason}");
    if std::env::var(REQUIRE_TOOLS_VAR).is_ok_and(|v| v == "1") {
        panic!("{msg} (and {REQUIRE_TOOLS_VAR}=1)");
    }
    eprintln!("\n===== {msg} =====\n");
}

/// [`skip`] for a check that needs `tool`; also fails when
/// `SWITCHBOARD_REQUIRE_TOOLS` lists it (as `.ci/run` does for what it
/// installs).
pub fn skip_tool(tool: &str, check: &str, reason: &str) {
    if switchboard_testkit::tools::required(tool) {
        switchboard_testkit::tools::skip_missing(tool, check, reason);
    }
    skip(check, reason);
}

/// The shipped site with ONLY the upstream `server` lines and the `listen`
/// lines changed:
/// - every `server` line of `upstream switchboard_gateways` is replaced by
///   one line per address in `gateways`, keeping the parameters of the first
///   shipped line (`max_fails=... fail_timeout=...`);
/// - the `server` line of `upstream switchboard_api` points at `api`;
/// - with `listen = Some(addr)`, `listen 80;` becomes `listen <addr>;` and
///   `listen [::]:80;` is dropped.
///
/// Panics if the shipped file does not have those lines any more, so a
/// reshaped config breaks the tests instead of being silently skipped.
pub fn adapt_site(text: &str, gateways: &[String], api: &str, listen: Option<&str>) -> String {
    #[derive(PartialEq, Clone, Copy)]
    enum Block {
        None,
        Gateways,
        Api,
    }
    let mut out = Vec::new();
    let mut block = Block::None;
    let (mut gw_done, mut api_done, mut listen_done) = (false, false, false);
    for line in text.split('\n') {
        let t = line.trim();
        if t.starts_with("upstream switchboard_gateways") {
            block = Block::Gateways;
        } else if t.starts_with("upstream switchboard_api") {
            block = Block::Api;
        } else if t == "}" {
            block = Block::None;
        }
        if block != Block::None && t.starts_with("server ") {
            let done = match block {
                Block::Gateways => &mut gw_done,
                _ => &mut api_done,
            };
            if *done {
                continue;
            }
            *done = true;
            let indent = &line[..line.len() - line.trim_start().len()];
            let params: Vec<&str> = t.trim_end_matches(';').split_whitespace().collect();
            let rest = params[2..].join(" ");
            let addrs: Vec<String> = match block {
                Block::Gateways => gateways.to_vec(),
                _ => vec![api.to_string()],
            };
            for a in addrs {
                if rest.is_empty() {
                    out.push(format!("{indent}server {a};"));
                } else {
                    out.push(format!("{indent}server {a} {rest};"));
                }
            }
            continue;
        }
        if let Some(addr) = listen {
            if t == "listen 80;" {
                out.push(line.replace("listen 80;", &format!("listen {addr};")));
                listen_done = true;
                continue;
            }
            if t == "listen [::]:80;" {
                continue;
            }
            // The private nginx logs inside its prefix, in the format the
            // tests parse (the shipped format leaves query strings out).
            if t.starts_with("access_log /var/log/nginx/") {
                out.push(format!(
                    "{}access_log access.log deploytest;",
                    &line[..line.len() - line.trim_start().len()]
                ));
                continue;
            }
        }
        out.push(line.to_string());
    }
    assert!(
        gw_done,
        "shipped nginx site has no `server` line in `upstream switchboard_gateways`"
    );
    assert!(
        api_done,
        "shipped nginx site has no `server` line in `upstream switchboard_api`"
    );
    assert!(
        listen.is_none() || listen_done,
        "shipped nginx site has no `listen 80;` line"
    );
    out.join("\n")
}

/// A complete nginx.conf for a private nginx under `dir`: pid, logs and
/// temp paths inside `dir`, the access log with status and upstream address,
/// and `include <site>`.
pub fn full_nginx_conf(dir: &Path, site: &Path) -> String {
    let d = dir.display();
    format!(
        r#"# Generated by the deploy tests: only the process scaffolding; the site is included verbatim.
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    log_format deploytest '$status $request_method $uri "$args" upstream=$upstream_addr up_status=$upstream_status';
    access_log {d}/access.log deploytest;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {site};
}}
"#,
        site = site.display()
    )
}

/// A temporary nginx prefix directory that the (unprivileged) worker
/// processes can enter when the tests run as root.
pub fn nginx_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("switchboard-nginx-")
        .tempdir()
        .expect("create nginx temp dir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod nginx temp dir");
    }
    dir
}

/// Writes `site` and a full config into `dir`; returns the nginx.conf path.
pub fn write_nginx_conf(dir: &Path, site: &str) -> PathBuf {
    let site_path = dir.join("switchboard.conf");
    fs::write(&site_path, site).expect("write site");
    let conf = dir.join("nginx.conf");
    fs::write(&conf, full_nginx_conf(dir, &site_path)).expect("write nginx.conf");
    conf
}

/// `nginx -t` on `conf` with prefix `dir`; `Err` carries nginx's output.
pub fn nginx_t(nginx: &Path, dir: &Path, conf: &Path) -> Result<String, String> {
    let out = Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .output()
        .map_err(|e| format!("spawn nginx: {e}"))?;
    let text = format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("nginx -t failed ({}):\n{text}", out.status))
    }
}

/// A real nginx (master + one worker) in the foreground on a loopback port,
/// from the shipped site adapted by [`adapt_site`]. Dropping it stops nginx
/// (SIGTERM, then SIGKILL) and reaps it.
pub struct Nginx {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    /// Starts nginx serving `site` on `127.0.0.1:port` and waits (up to
    /// 10 s) until the port accepts connections.
    pub fn start(nginx: &Path, site: &str, port: u16) -> anyhow::Result<Self> {
        let dir = nginx_dir();
        let conf = write_nginx_conf(dir.path(), site);
        nginx_t(nginx, dir.path(), &conf).map_err(anyhow::Error::msg)?;
        let stdout = fs::File::create(dir.path().join("stdout.log"))?;
        let stderr = fs::File::create(dir.path().join("stderr.log"))?;
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .context("spawn nginx")?;
        let mut me = Self {
            child: Some(child),
            dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = me.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "nginx exited with {status} at start:\n{}",
                    me.error_log_tail(30)
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(me);
            }
            if Instant::now() >= deadline {
                bail!(
                    "nginx did not listen on {port} within 10 s:\n{}",
                    me.error_log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access log: one `status method uri "args" upstream=... up_status=...` line per request.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The last lines of nginx's error log.
    pub fn error_log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is
            // our own unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Parses `KEY=VALUE` lines (comments and blanks skipped, optional quotes).
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// Runs `switchboard-gateway check-config` with exactly `env` (plus PATH);
/// `Err` carries the exit status and output.
pub fn check_config(env: &[(String, String)]) -> Result<String, String> {
    let bin = switchboard_testkit::bin_path("switchboard-gateway").map_err(|e| format!("{e:#}"))?;
    let mut cmd = Command::new(bin);
    cmd.env_clear();
    if let Some(p) = std::env::var_os("PATH") {
        cmd.env("PATH", p);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .arg("check-config")
        .output()
        .map_err(|e| format!("spawn: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("check-config exited {}: {text}", out.status))
    }
}

/// One `switchboard_*` sample from a Prometheus text page, summed over the
/// series whose labels contain every `label_filter` (e.g. `outcome="ok"`).
pub fn metric(page: &str, name: &str, label_filter: &[&str]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| label_filter.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// Waits until the gateway's `/readyz` is 200 (subscribed to Redis).
pub async fn wait_ready(gw: &switchboard_testkit::GatewayProcess) {
    let url = format!("{}/readyz", gw.url());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let u = url.clone();
        let r = tokio::task::spawn_blocking(move || switchboard_testkit::http_get(&u))
            .await
            .unwrap();
        if matches!(r, Ok((200, _))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gateway {} not ready: {r:?}",
            gw.port()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
