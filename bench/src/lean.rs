//! A lean websocket Socket.IO client for holding hundreds of thousands of
//! idle sessions from a few processes (the `scale` scenario).
//!
//! `tokio-tungstenite` keeps a read buffer and a frame state per socket
//! (several KiB each): at a million connections the generators alone would
//! need more memory than the gateways. Here a held session is a bare
//! `TcpStream` read into a stack buffer on readiness; only a frame split
//! across two reads is carried over in a per-connection `Vec`. Frames are
//! written with a zero mask (valid per RFC 6455: the client must mask, any
//! key will do).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    client::tcp_connect,
    proto::{self, ConnectAnswer, EioPacket},
};

/// The masked text frame `3` (pong) with a zero key.
pub const PONG_FRAME: [u8; 7] = [0x81, 0x81, 0, 0, 0, 0, b'3'];

/// A masked (zero key) text frame carrying `payload`.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// One server frame (servers do not mask).
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Text(&'a [u8]),
    /// A websocket ping: answer with a pong carrying the same bytes.
    Ping(&'a [u8]),
    Close,
    /// Binary, pong, continuation: not used by the gateway for these clients.
    Other,
}

/// Parses the frame at the start of `buf`: the frame and its length, or
/// `None` when `buf` holds only part of it.
pub fn parse_frame(buf: &[u8]) -> anyhow::Result<Option<(Frame<'_>, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let opcode = buf[0] & 0x0f;
    if buf[1] & 0x80 != 0 {
        bail!("masked frame from the server");
    }
    let (len, head) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if buf.len() < head + len {
        return Ok(None);
    }
    let payload = &buf[head..head + len];
    let frame = match opcode {
        1 => Frame::Text(payload),
        8 => Frame::Close,
        9 => Frame::Ping(payload),
        _ => Frame::Other,
    };
    Ok(Some((frame, head + len)))
}

/// An open, authenticated session: the socket and whatever the server sent
/// after the CONNECT answer (normally nothing).
pub struct Session {
    pub stream: TcpStream,
    pub carry: Vec<u8>,
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 2048];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        bail!("connection closed");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads the next text frame (answering websocket and Engine.IO pings on
/// the way), leaving what follows it in `buf`.
async fn next_text(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<String> {
    loop {
        if let Some((frame, used)) = parse_frame(buf)? {
            let text = match frame {
                Frame::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                Frame::Close => bail!("closed by server"),
                Frame::Ping(p) => {
                    let mut pong = text_frame(p);
                    pong[0] = 0x8a;
                    stream.write_all(&pong).await?;
                    None
                }
                Frame::Other => None,
            };
            buf.drain(..used);
            if let Some(t) = text {
                if t == "2" {
                    stream.write_all(&PONG_FRAME).await?;
                    continue;
                }
                return Ok(t);
            }
            continue;
        }
        read_more(stream, buf).await?;
    }
}

/// TCP connect from `src`, websocket upgrade, Engine.IO open, Socket.IO
/// CONNECT with `token`; returns once the server accepted the CONNECT.
pub async fn open(
    addr: SocketAddr,
    src: Option<std::net::Ipv4Addr>,
    token: &str,
) -> anyhow::Result<Session> {
    let mut stream = tcp_connect(addr, src)
        .await
        .with_context(|| format!("tcp connect to {addr} from {src:?}"))?;
    let req = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 16 * 1024 {
            bail!("websocket handshake: response head too long");
        }
        read_more(&mut stream, &mut buf)
            .await
            .context("websocket handshake")?;
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        let line = String::from_utf8_lossy(&buf[..head_end.min(80)]).into_owned();
        bail!("websocket handshake refused: {}", line.trim());
    }
    buf.drain(..head_end);
    let open = next_text(&mut stream, &mut buf).await?;
    match proto::parse_eio(&open)? {
        EioPacket::Open(json) => {
            proto::parse_open(json)?;
        }
        other => bail!("expected the open packet, got {other:?}"),
    }
    stream
        .write_all(&text_frame(proto::connect_frame(token).as_bytes()))
        .await?;
    loop {
        let frame = next_text(&mut stream, &mut buf).await?;
        match proto::parse_connect_answer(&frame)? {
            Some(ConnectAnswer::Accepted { .. }) => {
                buf.shrink_to_fit();
                return Ok(Session { stream, carry: buf });
            }
            Some(ConnectAnswer::Refused { message }) => bail!("CONNECT refused: {message}"),
            None => continue,
        }
    }
}

/// What the holder of a session is told about each text frame.
pub trait Sink {
    /// A text frame other than an Engine.IO ping.
    fn text(&self, text: &str);
    /// An Engine.IO ping was answered.
    fn pong(&self) {}
}

/// Why [`hold`] returned.
#[derive(Debug)]
pub enum Ended {
    /// Websocket close frame or Engine.IO close packet.
    Closed,
    /// EOF or a socket error.
    Dropped(String),
    /// A frame the client could not parse.
    Protocol(String),
}

/// Holds `session` until the server closes it: answers pings with pongs,
/// hands every other text frame to `sink`. Nothing but the socket and a
/// (normally empty) carry-over buffer lives across the awaits.
pub async fn hold(session: Session, sink: &impl Sink) -> Ended {
    let Session { stream, mut carry } = session;
    loop {
        if let Err(e) = stream.readable().await {
            return Ended::Dropped(e.to_string());
        }
        // The buffer lives only in this synchronous block, not in the future.
        let step = {
            let mut chunk = [0u8; 4096];
            match stream.try_read(&mut chunk) {
                Ok(0) => Err(Ended::Dropped("eof".into())),
                Ok(n) => {
                    if carry.is_empty() {
                        consume(&chunk[..n], &mut carry, sink)
                    } else {
                        carry.extend_from_slice(&chunk[..n]);
                        let data = std::mem::take(&mut carry);
                        consume(&data, &mut carry, sink)
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Replies::default()),
                Err(e) => Err(Ended::Dropped(e.to_string())),
            }
        };
        let replies = match step {
            Ok(r) => r,
            Err(end) => return end,
        };
        for _ in 0..replies.pongs {
            if let Err(e) = write_all(&stream, &PONG_FRAME).await {
                return Ended::Dropped(e.to_string());
            }
            sink.pong();
        }
        for p in replies.ws_pongs {
            let mut pong = text_frame(&p);
            pong[0] = 0x8a;
            if let Err(e) = write_all(&stream, &pong).await {
                return Ended::Dropped(e.to_string());
            }
        }
        if let Some(end) = replies.end {
            return end;
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stream.writable().await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a chunk of frames asks the holder to do.
#[derive(Default)]
struct Replies {
    pongs: usize,
    ws_pongs: Vec<Vec<u8>>,
    end: Option<Ended>,
}

/// Handles the whole frames in `data`; an incomplete tail goes to `carry`.
fn consume(data: &[u8], carry: &mut Vec<u8>, sink: &impl Sink) -> Result<Replies, Ended> {
    let mut r = Replies::default();
    let mut at = 0;
    while at < data.len() {
        match parse_frame(&data[at..]) {
            Ok(Some((frame, used))) => {
                match frame {
                    Frame::Text(b"2") => r.pongs += 1,
                    Frame::Text(b"1") => r.end = Some(Ended::Closed),
                    Frame::Text(t) => match std::str::from_utf8(t) {
                        Ok(s) => sink.text(s),
                        Err(_) => return Err(Ended::Protocol("text frame not UTF-8".into())),
                    },
                    Frame::Ping(p) => r.ws_pongs.push(p.to_vec()),
                    Frame::Close => r.end = Some(Ended::Closed),
                    Frame::Other => {}
                }
                at += used;
                if r.end.is_some() {
                    return Ok(r);
                }
            }
            Ok(None) => {
                carry.extend_from_slice(&data[at..]);
                return Ok(r);
            }
            Err(e) => return Err(Ended::Protocol(e.to_string())),
        }
    }
    Ok(r)
}

/// The per-connect bound used by the `scale` generators.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_parser() {
        let f = text_frame(b"40{}");
        assert_eq!(&f[..2], &[0x81, 0x84]);
        // A server frame of 300 bytes (16-bit length).
        let payload = vec![b'x'; 300];
        let mut s = vec![0x81, 126, 1, 44];
        s.extend_from_slice(&payload);
        s.extend_from_slice(&[0x81, 1, b'2']);
        let (frame, used) = parse_frame(&s).unwrap().unwrap();
        assert_eq!(frame, Frame::Text(&payload[..]));
        assert_eq!(used, 304);
        assert_eq!(
            parse_frame(&s[used..]).unwrap().unwrap(),
            (Frame::Text(b"2"), 3)
        );
        assert!(parse_frame(&s[..100]).unwrap().is_none());
        assert!(parse_frame(&[0x81, 0x81]).is_err());
    }

    struct Texts(std::sync::Mutex<Vec<String>>);
    impl Sink for Texts {
        fn text(&self, t: &str) {
            self.0.lock().unwrap().push(t.into());
        }
    }

    #[test]
    fn split_frames_are_carried_over() {
        let sink = Texts(Default::default());
        let mut data = vec![0x81, 1, b'2', 0x81, 5];
        data.extend_from_slice(b"42[\"a");
        let mut carry = Vec::new();
        let r = consume(&data[..6], &mut carry, &sink).unwrap();
        assert_eq!(r.pongs, 1);
        assert_eq!(carry, data[3..6]);
        carry.extend_from_slice(&data[6..]);
        let rest = std::mem::take(&mut carry);
        consume(&rest, &mut carry, &sink).unwrap();
        assert!(carry.is_empty());
        assert_eq!(sink.0.lock().unwrap().as_slice(), ["42[\"a"]);
        let r = consume(&[0x88, 0], &mut carry, &sink).unwrap();
        assert!(matches!(r.end, Some(Ended::Closed)));
    }
}
