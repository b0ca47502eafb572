//! Free loopback ports and a tiny HTTP/1.1 client (blocking, and [`http`]
//! for async tests).

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{TcpListener, TcpStream, ToSocketAddrs},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use anyhow::{Context, bail};

/// Ports already handed out by [`free_port`] in this process.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The OS picks it (bind to port 0), and a process-wide set makes sure the
/// same port is never handed out twice by this process, even after the first
/// user released it. Another process could still grab it before the caller
/// binds it; the process wrappers in this crate retry on a new port when a
/// child fails to bind.
///
/// # Panics
/// If no port can be bound on 127.0.0.1 at all.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        let mut set = handed_out().lock().unwrap_or_else(|e| e.into_inner());
        if set.insert(port) {
            return port;
        }
    }
    panic!("no unused free port found after 1000 tries");
}

/// A parsed HTTP response: status code, headers (lower-cased names) and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was sent chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body lossily decoded as UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET url` (plain `http://` only) with a 10 s timeout; returns the status
/// and the body as text. Meant for `/healthz`, `/readyz` and `/metrics`.
pub fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    let resp = http_request("GET", url, &[], None, Duration::from_secs(10))?;
    Ok((resp.status, resp.text()))
}

/// [`http_request`] from async code, on a blocking worker thread, with a
/// 5 s timeout: the one HTTP helper of the async tests (publish API,
/// `/readyz`, `/metrics`, raw Engine.IO polling).
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<HttpResponse> {
    let method = method.to_string();
    let url = url.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = body.map(<[u8]>::to_vec);
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http_request(
            &method,
            &url,
            &headers,
            body.as_deref(),
            Duration::from_secs(5),
        )
    })
    .await
    .context("http task panicked")?
}

/// One blocking HTTP/1.1 request over a fresh TCP connection
/// (`Connection: close`), bounded by `timeout` for connect, each write and
/// each read. `body`, if given, is sent with a `Content-Length`.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<HttpResponse> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("only http:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolve {authority}"))?
        .next()
        .with_context(|| format!("no address for {authority}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connect to {authority}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    stream
        .write_all(&out)
        .with_context(|| format!("send {method} {url}"))?;

    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&raw, b"\r\n\r\n") {
            break i;
        }
        let n = stream
            .read(&mut chunk)
            .with_context(|| format!("read response of {method} {url}"))?;
        if n == 0 {
            bail!("connection closed before the response head of {method} {url}");
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: raw[head_end + 4..].to_vec(),
    };
    let content_length: Option<usize> = resp.header("content-length").and_then(|v| v.parse().ok());
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let no_body = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
    if !no_body {
        // Read until the body is complete (or EOF, since we asked for close).
        loop {
            if let Some(len) = content_length
                && !chunked
                && resp.body.len() >= len
            {
                resp.body.truncate(len);
                break;
            }
            if chunked && find(&resp.body, b"0\r\n\r\n").is_some() && dechunk(&resp.body).is_some()
            {
                break;
            }
            let n = match stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) => return Err(e).with_context(|| format!("read body of {method} {url}")),
            };
            if n == 0 {
                break;
            }
            resp.body.extend_from_slice(&chunk[..n]);
        }
        if chunked {
            resp.body = dechunk(&resp.body)
                .with_context(|| format!("malformed chunked body from {method} {url}"))?;
        }
    } else {
        resp.body.clear();
    }
    Ok(resp)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body; `None` if it is incomplete or malformed.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_str = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_str = size_str.split(';').next()?.trim();
        let size = usize::from_str_radix(size_str, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_unique() {
        let mut seen = HashSet::new();
        for _ in 0..50 {
            assert!(seen.insert(free_port()));
        }
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"3\r\nab"), None);
    }
}
