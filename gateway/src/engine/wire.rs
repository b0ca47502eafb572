//! The TCP stream of a websocket session, shared by the session's task and
//! the fan-out path, so that a delivery to an idle socket is one `writev`
//! from the fan-out, without waking the task (see
//! [`Connection::send_frames`](super::Connection::send_frames)).
//!
//! Three writers reach one stream, and their bytes must never interleave
//! inside a websocket frame:
//! - tungstenite, from the session's task (the probe reply, pongs to client
//!   pings, the close frame), through [`WireStream`]'s `AsyncWrite`;
//! - the task's own batches of queued frames ([`write_batch`](super::websocket)),
//!   through the same `AsyncWrite`;
//! - a direct write from the fan-out ([`Wire::try_direct`]), only while the
//!   task has nothing queued and no batch in flight (the outbox lock
//!   decides that, see `Outbox::wire`).
//!
//! Every write takes the wire's small lock and records whether it left a
//! frame half-written, and by whom ([`Seam`]): a direct write never starts
//! inside someone else's frame, and when a direct write is cut short, its
//! unwritten end is queued first in the outbox and nothing else (not even a
//! pong) goes out until the task has written it ([`Wire::finish_tail`]).

use std::{
    io::{self, IoSlice, Read},
    mem::MaybeUninit,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf},
    net::TcpStream,
    sync::OwnedSemaphorePermit,
};

use super::Frame;

/// Where the bytes written so far end, relative to websocket frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seam {
    /// At a frame boundary: anyone may start a frame.
    Clean,
    /// Inside a frame the session's task began (tungstenite or a batch); the
    /// task finishes it, and direct writes wait (they queue instead).
    Task,
    /// Inside a frame a direct write began; its end is queued first in the
    /// outbox, and only [`Wire::finish_tail`] may write next.
    Direct,
}

/// A websocket session's TCP stream with the record of who may write next.
#[derive(Debug)]
pub(crate) struct Wire {
    stream: TcpStream,
    seam: Mutex<Seam>,
}

/// What a direct write did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Direct {
    /// Every frame went out.
    Written,
    /// Nothing went out (the socket would block, the task is inside a frame
    /// of its own, or the frames do not fit one vectored write): queue them
    /// all.
    NotWritten,
    /// Part went out: queue `tail` (the unwritten end of a frame, to be
    /// written as is), then the frames from index `next` on.
    Partial {
        /// The rest of the frame the write stopped in, if it stopped inside
        /// one rather than between two.
        tail: Option<Bytes>,
        /// The first frame not written at all.
        next: usize,
    },
}

/// Frames one direct write takes at most (an event and its attachments);
/// more go through the queue.
const DIRECT_MAX_FRAMES: usize = 4;

/// Direct writes up to this many bytes (headers included) are copied into
/// one buffer and sent with `send`; longer ones go out with one `sendmsg`
/// of their parts. At a steady rate a delivery is one small frame, and
/// `send` of one buffer costs the kernel about 0.15 µs less than `sendmsg`
/// of a header and a payload (4.4 against 4.55 µs per call on loopback, 500
/// sockets), far more than the copy.
const DIRECT_COPY_MAX: usize = 1024;

/// The longest websocket frame header a server writes (no mask).
const MAX_HEADER: usize = 10;

/// The header of one unmasked, unfragmented server-to-client websocket frame
/// (RFC 6455 section 5.2) for `payload`, and its length.
fn frame_header(opcode: u8, payload: usize) -> ([u8; MAX_HEADER], usize) {
    let mut head = [0u8; MAX_HEADER];
    head[0] = 0x80 | opcode;
    if payload < 126 {
        head[1] = payload as u8;
        (head, 2)
    } else if let Ok(len) = u16::try_from(payload) {
        head[1] = 126;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        (head, 4)
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(payload as u64).to_be_bytes());
        (head, 10)
    }
}

/// The opcode and payload of a frame; `None` for the end of a frame a
/// direct write began, which is written as is.
fn message_parts(frame: &Frame) -> Option<(u8, &[u8])> {
    match frame {
        Frame::Text(text) => Some((0x1, text.as_str().as_bytes())),
        Frame::Binary(data) => Some((0x2, &data[..])),
        Frame::WireTail(_) => None,
    }
}

/// Appends `frame` to `buf` as it goes on the wire: a websocket frame, or
/// the bytes of a tail as they are.
pub(super) fn encode_frame(buf: &mut Vec<u8>, frame: &Frame) {
    match message_parts(frame) {
        Some((opcode, payload)) => {
            let (head, len) = frame_header(opcode, payload.len());
            buf.extend_from_slice(&head[..len]);
            buf.extend_from_slice(payload);
        }
        None => {
            if let Frame::WireTail(tail) = frame {
                buf.extend_from_slice(tail);
            }
        }
    }
}

impl Wire {
    /// Writes `frames` now, as far as the socket takes them without waiting.
    ///
    /// The caller holds the connection's outbox lock and has checked that
    /// nothing is queued and no batch of the task is in flight, so these
    /// frames are next on the wire.
    pub(crate) fn try_direct(&self, frames: &[Frame]) -> Direct {
        if frames.is_empty() {
            return Direct::Written;
        }
        if frames.len() > DIRECT_MAX_FRAMES {
            return Direct::NotWritten;
        }
        let mut heads = [([0u8; MAX_HEADER], 0usize); DIRECT_MAX_FRAMES];
        let mut payloads: [&[u8]; DIRECT_MAX_FRAMES] = [&[]; DIRECT_MAX_FRAMES];
        for (i, frame) in frames.iter().enumerate() {
            let Some((opcode, payload)) = message_parts(frame) else {
                return Direct::NotWritten;
            };
            heads[i] = frame_header(opcode, payload.len());
            payloads[i] = payload;
        }
        let mut iov = [IoSlice::new(&[]); 2 * DIRECT_MAX_FRAMES];
        let mut total = 0;
        for i in 0..frames.len() {
            let (head, len) = &heads[i];
            iov[2 * i] = IoSlice::new(&head[..*len]);
            iov[2 * i + 1] = IoSlice::new(payloads[i]);
            total += len + payloads[i].len();
        }
        let mut seam = self.seam.lock();
        if *seam != Seam::Clean {
            return Direct::NotWritten;
        }
        // `sendmsg` on the socket itself rather than tokio's
        // `try_write_vectored`, which first reads the stream's readiness
        // from the I/O driver's record (one more cache miss per delivery, a
        // few percent of the whole at 5,000 sockets). Skipping it is safe:
        // tokio's own writes still find out for themselves that the socket
        // is full.
        let socket = socket2::SockRef::from(&self.stream);
        let iov = &iov[..2 * frames.len()];
        let sent = if total <= DIRECT_COPY_MAX {
            // One buffer and `send`, as the raw-write floor writes: the
            // kernel's `sendmsg` entry (copying in the message header and
            // the iovec array) costs more than copying a small frame here.
            // Left uninitialised: zeroing the whole buffer first was a
            // 1 KiB `memset` on every delivery and every ping, for the
            // 3 bytes of a ping frame.
            let mut buf = [MaybeUninit::<u8>::uninit(); DIRECT_COPY_MAX];
            let mut at = 0;
            for part in iov {
                buf[at..at + part.len()].write_copy_of_slice(part);
                at += part.len();
            }
            // SAFETY: the parts just written cover `buf[..at]` without a
            // gap, and `at == total`.
            socket.send(unsafe { buf[..at].assume_init_ref() })
        } else {
            socket.send_vectored(iov)
        };
        let written = match sent {
            Ok(n) => n,
            // Would block, or the connection broke: the task's own write
            // finds out which and ends the session if it has to.
            Err(_) => return Direct::NotWritten,
        };
        if written >= total {
            return Direct::Written;
        }
        // Cut short: find the frame the write stopped in.
        let mut start = 0;
        for i in 0..frames.len() {
            let (head, len) = &heads[i];
            let end = start + len + payloads[i].len();
            if written < end {
                let into = written - start;
                if into == 0 {
                    return Direct::Partial {
                        tail: None,
                        next: i,
                    };
                }
                *seam = Seam::Direct;
                let tail = if into >= *len {
                    Bytes::copy_from_slice(&payloads[i][into - len..])
                } else {
                    let mut rest = Vec::with_capacity(end - written);
                    rest.extend_from_slice(&head[into..*len]);
                    rest.extend_from_slice(payloads[i]);
                    Bytes::from(rest)
                };
                return Direct::Partial {
                    tail: Some(tail),
                    next: i + 1,
                };
            }
            start = end;
        }
        Direct::Written
    }

    /// Asks the CPU to start loading what [`Wire::try_direct`] reads: the
    /// write lock and the stream's descriptor.
    pub(crate) fn prefetch(&self) {
        super::connection::prefetch_line(std::ptr::from_ref(&self.seam).cast());
        super::connection::prefetch_line(std::ptr::from_ref(&self.stream).cast());
    }

    /// Writes the end of a frame a direct write began (the first thing in
    /// the batch that follows it), after which the wire is at a frame
    /// boundary again. Only the session's task calls it, with direct writes
    /// stopped.
    pub(crate) async fn finish_tail(&self, tail: &[u8]) -> io::Result<()> {
        let mut at = 0;
        while at < tail.len() {
            self.stream.writable().await?;
            match self.stream.try_write(&tail[at..]) {
                Ok(n) => at += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
        *self.seam.lock() = Seam::Clean;
        Ok(())
    }

    /// Whether the socket holds bytes the session's task has not read yet
    /// (a one-byte `MSG_PEEK`, which neither consumes nor waits: tokio
    /// keeps the socket non-blocking). The heartbeat task asks before it
    /// closes a session for a missing pong: bytes waiting there are most
    /// likely the pong, unread because the gateway itself is behind. A
    /// peer's close (EOF) or an error is not an answer.
    pub(crate) fn has_unread(&self) -> bool {
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        matches!(socket2::SockRef::from(&self.stream).peek(&mut byte), Ok(n) if n > 0)
    }

    /// Whether a direct write left a frame half-written whose end was not
    /// written (dropped with a slow consumer's backlog): nothing more may go
    /// on this stream, not even a close frame.
    pub(crate) fn is_torn_by_direct(&self) -> bool {
        *self.seam.lock() == Seam::Direct
    }
}

/// The websocket's transport: the shared [`Wire`] and the connection's
/// place under `server.max_connections`, given back when the websocket is
/// dropped. Reads and tungstenite's writes go through here, and so does
/// the direct read of a client's pong ([`WireStream::poll_pong`]).
#[derive(Debug)]
pub(crate) struct WireStream {
    wire: Arc<Wire>,
    _slot: OwnedSemaphorePermit,
    /// Bytes read from the socket that tungstenite has not been given yet:
    /// what hyper read past the upgrade request, or what a direct read took
    /// that was not a lone pong. Handed out before anything else is read.
    /// A boxed slice rather than a `Vec`: 8 bytes less in every
    /// websocket, and it is never grown.
    pushback: Box<[u8]>,
    /// How much of `pushback` tungstenite has already been given.
    pushback_at: usize,
    /// Frame boundaries of everything tungstenite has been given.
    handed: FrameCursor,
    /// tungstenite's last read ended waiting for the socket, so it holds no
    /// whole frame (see [`WireStream::set_tungstenite_waiting`]).
    tungstenite_waiting: bool,
    /// The last write through `AsyncWrite` did not take all of its bytes:
    /// tungstenite may still owe a reply (a pong to a client's ping), which
    /// only its own read or flush writes.
    write_owed: bool,
    /// Pongs read directly, for the tests that check the direct path runs.
    #[cfg(test)]
    pub(super) pongs_read_directly: u32,
}

/// The length of a client's Engine.IO pong in one websocket frame: 2 header
/// bytes, the 4-byte mask, the 1-byte payload `3`.
const PONG_FRAME_BYTES: usize = 7;

/// The stack buffer of a direct read: as much as tungstenite reads at once
/// (`READ_BUFFER_BYTES` in `websocket.rs`), so that a client message found
/// there costs no more `recv` calls than tungstenite's own read would.
const DIRECT_READ_BYTES: usize = 512;

/// What [`WireStream::poll_pong`] found.
#[derive(Debug)]
pub(crate) enum PongRead {
    /// One client pong, read and consumed; anything read after it waits
    /// for tungstenite.
    Pong,
    /// Not a lone pong (or the direct path is closed): tungstenite reads
    /// next, beginning with whatever the direct read took.
    Tungstenite,
    /// The socket failed, as tungstenite's read would have reported.
    Failed(io::Error),
}

impl WireStream {
    pub(crate) fn new(stream: TcpStream, slot: OwnedSemaphorePermit) -> Self {
        WireStream {
            wire: Arc::new(Wire {
                stream,
                seam: Mutex::new(Seam::Clean),
            }),
            _slot: slot,
            pushback: Box::default(),
            pushback_at: 0,
            handed: FrameCursor::default(),
            tungstenite_waiting: false,
            write_owed: false,
            #[cfg(test)]
            pongs_read_directly: 0,
        }
    }

    /// Bytes already read off the socket (hyper's, past the upgrade
    /// request), to be read before anything else.
    pub(crate) fn with_already_read(mut self, bytes: Vec<u8>) -> Self {
        self.pushback = bytes.into_boxed_slice();
        self.pushback_at = 0;
        self
    }

    /// The shared stream, for the outbox (direct writes) and the task's
    /// [`Wire::finish_tail`].
    pub(crate) fn wire(&self) -> &Arc<Wire> {
        &self.wire
    }

    /// Records how tungstenite's last read ended: waiting for the socket
    /// (`Pending`, so no whole frame is left in its buffer) or with a
    /// message (it may hold more frames).
    pub(crate) fn set_tungstenite_waiting(&mut self, waiting: bool) {
        self.tungstenite_waiting = waiting;
    }

    /// Whether a direct read may take the next bytes off the socket: only
    /// when tungstenite holds nothing at all. It holds no whole frame once
    /// its read waited for the socket; no part of one when what it was given
    /// ends at a frame boundary; no message in pieces when that boundary is
    /// not inside a fragmented message; and owes no write when the last
    /// write went out whole.
    fn tungstenite_holds_nothing(&self) -> bool {
        self.tungstenite_waiting
            && !self.write_owed
            && self.pushback.is_empty()
            && self.handed.at_message_boundary()
    }

    /// Reads a client's Engine.IO pong without tungstenite, one `recv` into
    /// a stack buffer, when tungstenite holds nothing and the socket starts
    /// with a pong: a masked, final text frame of the one byte `3`. Every
    /// other byte (any other frame, a partial one, what follows the pong)
    /// is kept for tungstenite, which then reads it first, in order, and
    /// applies RFC 6455 to it as always (an unmasked frame, a close, a
    /// ping, a fragment all reach it whole). A frame is never split between
    /// the two: the direct read starts at a frame boundary and consumes
    /// exactly the pong's 7 bytes or nothing.
    ///
    /// Instead of tungstenite's read (two zero-filled 512-byte buffer
    /// resizes, the frame and message machinery, a second read to find the
    /// socket empty), one `recv` whose short count clears the readiness,
    /// as [`WireStream`]'s `poll_read` does.
    pub(crate) fn poll_pong(&mut self, cx: &mut Context<'_>) -> Poll<PongRead> {
        if !self.tungstenite_holds_nothing() {
            return Poll::Ready(PongRead::Tungstenite);
        }
        let stream = &self.wire.stream;
        let mut buf = [MaybeUninit::<u8>::uninit(); DIRECT_READ_BYTES];
        let n = loop {
            if let Err(err) = ready!(stream.poll_read_ready(cx)) {
                return Poll::Ready(PongRead::Failed(err));
            }
            let mut short = None;
            let read = stream.try_io(Interest::READABLE, || {
                let n = socket2::SockRef::from(stream).recv(&mut buf)?;
                if n > 0 && n < DIRECT_READ_BYTES {
                    short = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match (read, short) {
                (_, Some(n)) | (Ok(n), None) => break n,
                (Err(err), None) if err.kind() == io::ErrorKind::WouldBlock => {}
                (Err(err), None) => return Poll::Ready(PongRead::Failed(err)),
            }
        };
        // SAFETY: `recv` initialised the first `n` bytes it returned.
        let read = unsafe { buf[..n].assume_init_ref() };
        if read.len() >= PONG_FRAME_BYTES && is_pong_frame(&read[..PONG_FRAME_BYTES]) {
            if read.len() > PONG_FRAME_BYTES {
                self.pushback = Box::from(&read[PONG_FRAME_BYTES..]);
            }
            #[cfg(test)]
            {
                self.pongs_read_directly += 1;
            }
            return Poll::Ready(PongRead::Pong);
        }
        // Anything else, the peer's close (a zero-length read, which the
        // socket repeats for tungstenite) included, goes to tungstenite.
        self.pushback = Box::from(read);
        Poll::Ready(PongRead::Tungstenite)
    }
}

/// Whether `frame` (7 bytes) is a client's Engine.IO pong: FIN, no RSV
/// bits, text; masked, payload length 1; the payload, unmasked, `3`.
fn is_pong_frame(frame: &[u8]) -> bool {
    matches!(frame, [0x81, 0x81, mask, _, _, _, payload] if payload ^ mask == b'3')
}

/// Follows websocket frame boundaries (RFC 6455 section 5.2) through the
/// bytes handed to tungstenite, a few at a time, without keeping them: it
/// only needs to know whether they end between two frames and outside a
/// fragmented message. A malformed frame is tungstenite's to reject (the
/// session ends), so the cursor does not check anything.
#[derive(Debug, Default)]
struct FrameCursor {
    /// Payload bytes of the current frame still to come (while in a
    /// header: its extended length, as far as read).
    remaining: u64,
    /// Bytes of the current frame's header seen; 0 when not in a header.
    head_seen: u8,
    /// The header's first two bytes, once seen.
    b0: u8,
    b1: u8,
    /// A data frame without FIN was seen and its final continuation not
    /// yet: tungstenite holds the first fragments.
    fragmented: bool,
}

impl FrameCursor {
    fn at_message_boundary(&self) -> bool {
        self.head_seen == 0 && self.remaining == 0 && !self.fragmented
    }

    /// The extended payload length's bytes after the header's second
    /// byte `b1`.
    fn ext_len(b1: u8) -> u8 {
        match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        }
    }

    /// The length of the header whose second byte is `b1`: two bytes, the
    /// extended length, the mask.
    fn header_len(b1: u8) -> u8 {
        2 + Self::ext_len(b1) + if b1 & 0x80 != 0 { 4 } else { 0 }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.head_seen == 0 && self.remaining > 0 {
                // Inside a payload: skip it.
                let skip = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.remaining -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let byte = bytes[0];
            bytes = &bytes[1..];
            match self.head_seen {
                0 => self.b0 = byte,
                1 => {
                    self.b1 = byte;
                    let len7 = byte & 0x7f;
                    self.remaining = if len7 < 126 { u64::from(len7) } else { 0 };
                }
                seen => {
                    if seen < 2 + Self::ext_len(self.b1) {
                        self.remaining = (self.remaining << 8) | u64::from(byte);
                    }
                }
            }
            self.head_seen += 1;
            if self.head_seen >= 2 && self.head_seen == Self::header_len(self.b1) {
                self.head_seen = 0;
                // Data frames (opcodes 0-7) begin, go on with or end a
                // message; control frames (8-15) come between fragments.
                if self.b0 & 0x0f < 8 {
                    self.fragmented = self.b0 & 0x80 == 0;
                }
            }
        }
    }
}

impl AsyncRead for WireStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pushback_at < this.pushback.len() {
            let rest = &this.pushback[this.pushback_at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.handed.feed(&rest[..n]);
            this.pushback_at += n;
            if this.pushback_at == this.pushback.len() {
                this.pushback = Box::default();
                this.pushback_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let start = buf.filled().len();
        let read = this.poll_read_socket(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            this.handed.feed(&buf.filled()[start..]);
        }
        read
    }
}

impl WireStream {
    /// tungstenite's read from the socket itself.
    fn poll_read_socket(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = &self.wire.stream;
        loop {
            ready!(stream.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let room = unfilled.len();
            let mut short = None;
            // A read that returns less than it asked for emptied the
            // socket's receive queue, so the readiness is cleared right
            // away (as a read that would block clears it): the next read
            // waits for the next packet instead of making a `read(2)` only
            // to learn it would block, one syscall per pong saved. Clearing
            // is race-free: tokio only clears the readiness it saw before
            // this read (a packet arriving after it sets it again), and
            // never clears a peer's close (EOF or reset), which stays
            // readable.
            let read = stream.try_io(Interest::READABLE, || {
                let n = (&*socket2::SockRef::from(stream)).read(unfilled)?;
                if n > 0 && n < room {
                    short = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match (read, short) {
                (_, Some(n)) | (Ok(n), None) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                (Err(err), None) if err.kind() == io::ErrorKind::WouldBlock => {}
                (Err(err), None) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for WireStream {
    /// Every caller passes whole frames (tungstenite its whole out buffer,
    /// the batch writer whole frames), so a write that takes all of `buf`
    /// ends at a frame boundary and one that takes less ends inside a frame.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Owed until this write takes all of `buf` (see `write_owed`).
        this.write_owed = true;
        let wire = &this.wire;
        loop {
            ready!(wire.stream.poll_write_ready(cx))?;
            let mut seam = wire.seam.lock();
            if *seam == Seam::Direct {
                // A direct write's tail comes first. It was queued and the
                // task notified when the seam was set, so the task runs its
                // writer (which writes the tail, then flushes tungstenite)
                // without this waker being registered anywhere.
                return Poll::Pending;
            }
            match wire.stream.try_write(buf) {
                Ok(n) => {
                    *seam = if n < buf.len() {
                        Seam::Task
                    } else {
                        Seam::Clean
                    };
                    drop(seam);
                    this.write_owed = n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => {
                    // Whatever was cut short stays cut: no direct write
                    // may follow on a broken stream.
                    *seam = Seam::Task;
                    return Poll::Ready(Err(err));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TCP stream buffers nothing in user space.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&self.wire.stream).shutdown(std::net::Shutdown::Write))
    }
}

/// A connected pair over loopback for tests: the server side as a
/// `WireStream` with a small send buffer (so a write can be cut short), the
/// client side as a plain stream with a small receive buffer.
#[cfg(test)]
pub(super) async fn test_pair() -> (WireStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = tokio::net::TcpSocket::new_v4().expect("socket");
    client.set_recv_buffer_size(4096).expect("rcvbuf");
    let (client, accepted) = tokio::join!(client.connect(addr), listener.accept());
    let (server, _) = accepted.expect("accept");
    socket2::SockRef::from(&server)
        .set_send_buffer_size(4096)
        .expect("sndbuf");
    let slot = Arc::new(tokio::sync::Semaphore::new(1))
        .try_acquire_owned()
        .expect("permit");
    (WireStream::new(server, slot), client.expect("connect"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame as WsFrame,
        coding::{Data, OpCode},
    };

    /// Our framing is byte-identical to tungstenite's for every length
    /// encoding (7-bit, 16-bit, 64-bit) and both data opcodes.
    #[test]
    fn frames_match_tungstenite_at_every_length_boundary() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = "z".repeat(len);
            for (ours, opcode) in [
                (Frame::text(payload.clone()), Data::Text),
                (Frame::Binary(Bytes::from(payload.clone())), Data::Binary),
            ] {
                let mut got = Vec::new();
                encode_frame(&mut got, &ours);
                let mut want = Vec::new();
                WsFrame::message(payload.clone(), OpCode::Data(opcode), true)
                    .format(&mut want)
                    .expect("format");
                assert_eq!(got, want, "length {len}, {opcode:?}");
            }
        }
    }

    fn wire_bytes(frames: &[Frame]) -> Vec<u8> {
        let mut buf = Vec::new();
        for f in frames {
            encode_frame(&mut buf, f);
        }
        buf
    }

    /// A direct write goes out byte for byte as framed, both through the
    /// one-buffer `send` (up to [`DIRECT_COPY_MAX`] bytes) and through
    /// `sendmsg` of the parts (one byte more), with one frame or several.
    #[tokio::test]
    async fn direct_writes_on_both_sides_of_the_copy_limit_arrive_as_framed() {
        let (server, mut client) = test_pair().await;
        let wire = server.wire().clone();
        // A 7-bit header (2 bytes) for payloads under 126 bytes, a 16-bit
        // one (4 bytes) above.
        let at_limit = Frame::text("y".repeat(DIRECT_COPY_MAX - 4));
        let over_limit = Frame::text("z".repeat(DIRECT_COPY_MAX - 3));
        let pair = [
            Frame::text("42[\"ev\",1]"),
            Frame::Binary(Bytes::from(vec![9u8; 300])),
        ];
        assert_eq!(
            wire_bytes(std::slice::from_ref(&at_limit)).len(),
            DIRECT_COPY_MAX
        );
        assert_eq!(
            wire_bytes(std::slice::from_ref(&over_limit)).len(),
            DIRECT_COPY_MAX + 1
        );
        let mut expected = Vec::new();
        for frames in [&[at_limit][..], &[over_limit][..], &pair[..]] {
            assert_eq!(wire.try_direct(frames), Direct::Written);
            expected.extend(wire_bytes(frames));
        }
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).await.expect("read");
        assert!(got == expected, "a direct write differs from its framing");
    }

    /// Direct writes until the socket stops taking them, then the cut-short
    /// frame's tail and the rest through the task's path: the client reads
    /// exactly the frames in order, none cut or interleaved.
    #[tokio::test]
    async fn a_cut_short_direct_write_is_finished_by_its_tail_in_order() {
        let (mut server, mut client) = test_pair().await;
        let wire = server.wire().clone();
        let big = Frame::text("x".repeat(3000));
        let mut sent = Vec::new();
        let mut queued = Vec::new();
        loop {
            let frames = [big.clone(), Frame::Binary(Bytes::from(vec![7u8; 200]))];
            match wire.try_direct(&frames) {
                Direct::Written => sent.extend(frames),
                Direct::NotWritten => {
                    queued.extend(frames);
                    break;
                }
                Direct::Partial { tail, next } => {
                    // Frames before `next` went out, the one with a tail
                    // only in part.
                    sent.extend(frames[..next].iter().cloned());
                    if let Some(tail) = tail {
                        queued.push(Frame::WireTail(tail));
                        // Nothing but the tail may be written now.
                        assert_eq!(wire.try_direct(&[Frame::text("4no")]), Direct::NotWritten);
                        assert!(wire.is_torn_by_direct());
                    }
                    queued.extend(frames[next..].iter().cloned());
                    break;
                }
            }
            assert!(sent.len() < 10_000, "the socket never filled");
        }
        assert!(
            matches!(queued.first(), Some(Frame::WireTail(_))),
            "no direct write was cut inside a frame"
        );
        let after = [Frame::text("4after")];
        // What the client must read: every frame that went out (in part or
        // whole), then those queued whole, then the one sent after.
        let mut expected = wire_bytes(&sent);
        for f in &queued {
            if !matches!(f, Frame::WireTail(_)) {
                encode_frame(&mut expected, f);
            }
        }
        expected.extend(wire_bytes(&after));
        // The task's path: the tail first, then the rest as one batch,
        // while the client reads.
        let writer = async {
            let mut rest = queued.iter().peekable();
            if let Some(Frame::WireTail(tail)) = rest.peek() {
                wire.finish_tail(tail).await.expect("tail");
                rest.next();
            }
            assert!(!wire.is_torn_by_direct());
            let mut batch = Vec::new();
            for f in rest {
                encode_frame(&mut batch, f);
            }
            encode_frame(&mut batch, &after[0]);
            server.write_all(&batch).await.expect("batch");
            server
        };
        let reader = async {
            let mut got = vec![0u8; expected.len()];
            client.read_exact(&mut got).await.expect("read");
            got
        };
        let (_server, got) = tokio::join!(writer, reader);
        assert!(
            got == expected,
            "the client read frames cut or out of order"
        );
    }

    /// A read that empties the socket clears the readiness without a
    /// second `read(2)`; data that arrives later, and the peer's close
    /// right behind the data, are still read.
    #[tokio::test]
    async fn a_short_read_still_sees_later_data_and_the_close() {
        let (mut server, mut client) = test_pair().await;
        let mut buf = [0u8; 512];
        for round in 0..3u8 {
            client.write_all(&[round; 7]).await.expect("write");
            let n = server.read(&mut buf).await.expect("read");
            assert_eq!(&buf[..n], &[round; 7]);
        }
        // Data and the close together: the data, then EOF.
        client.write_all(b"last").await.expect("write");
        client.shutdown().await.expect("shutdown");
        drop(client);
        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(2),
            server.read_to_end(&mut got),
        )
        .await
        .expect("the close was seen")
        .expect("read");
        assert_eq!(got, b"last");
    }

    /// While the task is inside a frame of its own (tungstenite wrote part
    /// of its buffer), a direct write does not start.
    #[tokio::test]
    async fn no_direct_write_inside_a_frame_of_the_task() {
        let (mut server, mut client) = test_pair().await;
        let wire = server.wire().clone();
        // A frame much larger than both socket buffers: the first write
        // takes only part of it.
        let huge = wire_bytes(&[Frame::Binary(Bytes::from(vec![1u8; 1 << 20]))]);
        let n = std::future::poll_fn(|cx| Pin::new(&mut server).poll_write(cx, &huge))
            .await
            .expect("write");
        assert!(n < huge.len());
        assert_eq!(wire.try_direct(&[Frame::text("4x")]), Direct::NotWritten);
        // The task finishes its frame; direct writes are allowed again.
        let finish = async {
            server.write_all(&huge[n..]).await.expect("rest");
            server
        };
        let drain = async {
            let mut sink = vec![0u8; huge.len()];
            client.read_exact(&mut sink).await.expect("read");
            assert!(sink == huge);
            client
        };
        let (_server, mut client) = tokio::join!(finish, drain);
        assert_eq!(wire.try_direct(&[Frame::text("4x")]), Direct::Written);
        let mut small = [0u8; 4];
        client.read_exact(&mut small).await.expect("read");
        assert_eq!(&small, &[0x81, 2, b'4', b'x']);
    }
}
