//! A private `redis-server` per test, on a free loopback port.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    net::free_port,
    proc::{LogBuffer, kill_and_reap},
};

/// How long [`RedisServer::start`] and [`RedisServer::restart`] wait for PONG.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process bound to `127.0.0.1` on a free port, with
/// persistence off and its own working directory. Dropping it SIGKILLs and
/// reaps the process and removes the directory.
pub struct RedisServer {
    port: u16,
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
        let dir = tempfile::Builder::new()
            .prefix("switchboard-redis-")
            .tempdir()
            .context("create redis working directory")?;
        let mut server = Self {
            port: free_port(),
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
                    server.logs = LogBuffer::default();
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on (stable across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
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

    /// Runs one command over a fresh connection and returns its reply, e.g.
    /// `redis.command(&["PUBSUB", "NUMSUB", "socket.io#/#"])`. 5 s timeout.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<Resp> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.command_bytes(&args)
    }

    /// Like [`command`](Self::command) with binary-safe arguments (e.g. a
    /// msgpack payload for `PUBLISH`).
    pub fn command_bytes(&self, args: &[&[u8]]) -> anyhow::Result<Resp> {
        resp_command(self.port, args, Duration::from_secs(5))
    }

    fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let port = self.port.to_string();
        let mut child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", ""])
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
            if let Ok(Resp::Simple(s)) =
                resp_command(self.port, &[b"PING"], Duration::from_millis(500))
                && s == "PONG"
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

/// A RESP2 reply.
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

/// Sends one command to `127.0.0.1:port` and reads one reply.
fn resp_command(port: u16, args: &[&[u8]], timeout: Duration) -> anyhow::Result<Resp> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connect to redis on port {port}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out)?;
    let mut reader = BufReader::new(stream);
    read_resp(&mut reader)
}

fn read_resp(r: &mut impl BufRead) -> anyhow::Result<Resp> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        bail!("truncated RESP reply");
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    Ok(match line[0] {
        b'+' => Resp::Simple(body),
        b'-' => Resp::Error(body),
        b':' => Resp::Integer(body.parse().context("RESP integer")?),
        b'$' => {
            let n: i64 = body.parse().context("RESP bulk length")?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut buf = vec![0u8; usize::try_from(n)? + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(buf.len() - 2);
                Resp::Bulk(Some(buf))
            }
        }
        b'*' => {
            let n: i64 = body.parse().context("RESP array length")?;
            if n < 0 {
                Resp::Array(None)
            } else {
                let mut items = Vec::with_capacity(usize::try_from(n)?);
                for _ in 0..n {
                    items.push(read_resp(r)?);
                }
                Resp::Array(Some(items))
            }
        }
        other => bail!("unexpected RESP type byte {:?}", other as char),
    })
}
