//! One Engine.IO session: its outbound queue, its transport state and the
//! data the layer above keeps per connection.
//!
//! Whatever transport currently carries the session, everything sent to the
//! client goes through [`Connection::send`] into one queue, and exactly one
//! writer drains it: the websocket task, or the pending long-polling GET.
//! That keeps ordering intact across the polling-to-websocket upgrade.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::time::Instant;

use bytes::Bytes;
use engineioxide_core::{Sid, Str};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::wire::{Direct, Wire};
use crate::engine::Handshake;

/// One Engine.IO message ready for the wire, shared (by reference count)
/// between every connection a broadcast reaches.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A text packet including its Engine.IO type digit (`4...`, `2`, `6`).
    Text(Utf8Bytes),
    /// A binary message (a Socket.IO attachment).
    Binary(Bytes),
    /// The unwritten end of a websocket frame that a direct write began
    /// (see [`Connection::send_frames`]): written as is, before anything
    /// else. Only ever first in a websocket session's queue; a polling
    /// session never has one, since direct writes need a websocket.
    WireTail(Bytes),
}

impl Frame {
    /// A text frame from a string that already carries its packet type.
    pub fn text(s: impl Into<Utf8Bytes>) -> Frame {
        Frame::Text(s.into())
    }

    /// An Engine.IO `message` packet (`4` + payload).
    pub fn message(payload: &str) -> Frame {
        let mut s = String::with_capacity(payload.len() + 1);
        s.push('4');
        s.push_str(payload);
        Frame::Text(s.into())
    }

    /// Bytes this frame occupies in a queue, for the outbound bound.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) | Frame::WireTail(b) => b.len(),
        }
    }
}

/// Converts a websocket text payload into the codec's string type without a
/// copy or a second UTF-8 check.
pub fn str_from_utf8_bytes(text: Utf8Bytes) -> Str {
    let bytes: Bytes = text.into();
    // SAFETY: `Utf8Bytes` is guaranteed valid UTF-8 by tungstenite, which is
    // exactly the invariant `Str` requires.
    unsafe { Str::from_bytes_unchecked(bytes) }
}

/// Which transport carries a session right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Polling,
    Websocket,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Polling => "polling",
            TransportKind::Websocket => "websocket",
        }
    }
}

pub use crate::disconnect::CloseReason;

/// Mutable per-session transport state, behind one small lock.
#[derive(Debug)]
pub(crate) struct TransportState {
    pub kind: TransportKind,
    /// An upgrade request was accepted and has not finished yet (probe, then
    /// `5`); set before the probe so a second one is turned away.
    pub upgrading: bool,
    /// The upgrading websocket answered `3probe`: polling GETs are answered
    /// with a noop at once, so the client can pause polling and send `5`.
    pub probed: bool,
    /// A long-polling GET is waiting for frames.
    pub get_active: bool,
    /// A long-polling POST is being read.
    pub post_active: bool,
    /// A ping was sent and its pong has not come back yet.
    pub awaiting_pong: bool,
    /// When the outstanding ping was queued, to time its round trip.
    pub ping_sent_at: Option<Instant>,
    /// A closed polling session's close packet has gone out in answer to a
    /// GET (after what was queued, in earlier answers), or is no longer
    /// waited for: a later request finds the session gone. See
    /// [`Connection::awaits_last_poll`].
    pub last_poll_done: bool,
    /// The session's end has been accounted for (gauges, per-address place,
    /// the layer above told); see [`super::Engine::end_session`].
    pub ended: bool,
}

impl TransportState {
    /// A ping goes out now: a pong is due, and its round trip starts.
    pub fn ping_sent(&mut self, at: Instant) {
        self.awaiting_pong = true;
        self.ping_sent_at = Some(at);
    }

    /// A pong came back: the round trip of the ping it answers, if any.
    pub fn pong_received(&mut self) -> Option<std::time::Duration> {
        self.awaiting_pong = false;
        self.ping_sent_at.take().map(|sent| sent.elapsed())
    }
}

/// The queue of frames waiting for the writer, with its size in bytes.
#[derive(Debug)]
pub(crate) struct Outbox {
    pub frames: VecDeque<Frame>,
    pub bytes: usize,
    /// When the writer last took frames: a writer that keeps taking is a
    /// client that keeps reading, whatever the size of a burst.
    pub last_drain: Instant,
    /// When the gateway received the oldest event waiting in `frames`, for
    /// the delivery latency histogram (frames without one, such as pings,
    /// leave it alone).
    pub received: Option<Instant>,
    /// The websocket's stream while a send may write to it directly: set by
    /// the websocket task, and taken away while the task writes a batch
    /// (frames sent meanwhile queue behind it) and when the task ends. With
    /// `frames` empty, it means nothing is waiting or in flight, so a
    /// direct write is next on the wire.
    pub wire: Option<Arc<Wire>>,
}

/// How a send reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Written to the socket at once: the kernel has it.
    Written,
    /// Queued for the session's writer.
    Queued,
    /// Not sent: the session is closed, or this send closed it as a slow
    /// consumer.
    Refused,
}

impl Sent {
    /// Written or queued.
    pub fn is_sent(self) -> bool {
        self != Sent::Refused
    }
}

/// A reading client may hold this many times `max_queue_bytes` during a
/// burst; a client whose writer has stalled is cut at `max_queue_bytes`.
const BURST_FACTOR: usize = 4;
/// How long the writer may go without taking frames before a full queue
/// counts as a stalled (slow) consumer.
const STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// How much one connection may have waiting for its writer.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_bytes: usize,
    pub max_frames: usize,
}

/// An Engine.IO session as the rest of the gateway sees it: an address
/// (`sid`), a way to send, a way to close, and `data` for the layer above.
pub struct Connection<D> {
    pub sid: Sid,
    pub handshake: Handshake,
    pub(crate) outbox: Mutex<Outbox>,
    /// Wakes the single writer: a new frame, an upgrade step, or the close.
    pub(crate) wake: Notify,
    /// Wakes the session's driver task (heartbeat) when the session closes.
    pub(crate) closed_signal: Notify,
    pub(crate) state: Mutex<TransportState>,
    closed: AtomicBool,
    limits: QueueLimits,
    close_reason: Mutex<Option<CloseReason>>,
    /// Per-connection state of the layer above (the Socket.IO client).
    pub data: D,
}

impl<D> std::fmt::Debug for Connection<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("sid", &self.sid)
            .finish()
    }
}

impl<D> Connection<D> {
    pub(crate) fn new(
        sid: Sid,
        handshake: Handshake,
        kind: TransportKind,
        limits: QueueLimits,
        data: D,
    ) -> Self {
        Connection {
            sid,
            handshake,
            outbox: Mutex::new(Outbox {
                frames: VecDeque::new(),
                bytes: 0,
                last_drain: Instant::now(),
                received: None,
                wire: None,
            }),
            wake: Notify::new(),
            closed_signal: Notify::new(),
            state: Mutex::new(TransportState {
                kind,
                upgrading: false,
                probed: false,
                get_active: false,
                post_active: false,
                awaiting_pong: false,
                ping_sent_at: None,
                last_poll_done: false,
                ended: false,
            }),
            closed: AtomicBool::new(false),
            limits,
            close_reason: Mutex::new(None),
            data,
        }
    }

    /// Sends frames to the client, in order. Returns false if they were
    /// not sent: the session is closed, or this send would take the queue
    /// past its bound, in which case the client is too slow to keep up and
    /// the session is closed as a slow consumer rather than letting its
    /// queue grow (nothing is silently dropped from a live session).
    ///
    /// The bound is `limits.max_queue_bytes`/`max_queue_frames` once the
    /// writer has not taken frames for a second, and four times that while
    /// it keeps taking them, so a burst larger than the bound (a batch
    /// publish) does not cut clients that are reading.
    pub fn send_all(&self, frames: &[Frame]) -> bool {
        self.send_frames(frames, None, true).is_sent()
    }

    /// Sends frames of an event the gateway received at `received` (the
    /// writer reports the time from then to its write, for a queued send).
    ///
    /// With `direct`, when nothing is queued or being written and the
    /// session is a websocket, the frames are written to the socket here and
    /// now, as far as it takes them without waiting: one `writev`, no
    /// wake-up of the session's task. Whatever the socket does not take is
    /// queued, the end of a frame cut short first. A sender in the middle of
    /// a burst passes `direct = false`, so that frames pile up and the task
    /// writes each socket's share in one batch.
    pub fn send_frames(&self, frames: &[Frame], received: Option<Instant>, direct: bool) -> Sent {
        self.send_frames_at(frames, received, direct, None)
    }

    /// [`Connection::send_frames`] for a caller that has just read the
    /// clock (the heartbeat's ping, the fan-out's latency figure): a direct
    /// write records `now` as the last drain instead of reading the clock
    /// again, one clock read fewer per heartbeat of every idle session and
    /// per delivery.
    pub(crate) fn send_frames_at(
        &self,
        frames: &[Frame],
        received: Option<Instant>,
        direct: bool,
        now: Option<Instant>,
    ) -> Sent {
        if self.is_closed() {
            return Sent::Refused;
        }
        let overflow = {
            let mut outbox = self.outbox.lock();
            let attempt = match &outbox.wire {
                Some(wire) if direct && outbox.frames.is_empty() => wire.try_direct(frames),
                _ => Direct::NotWritten,
            };
            // A direct write that went out (even in part) is the client
            // reading: it counts as a drain for the stall rule.
            let rest = match attempt {
                Direct::Written => {
                    outbox.last_drain = now.unwrap_or_else(Instant::now);
                    return Sent::Written;
                }
                Direct::NotWritten => frames,
                Direct::Partial { tail, next } => {
                    outbox.last_drain = now.unwrap_or_else(Instant::now);
                    if let Some(tail) = tail {
                        outbox.bytes += tail.len();
                        outbox.frames.push_back(Frame::WireTail(tail));
                    }
                    &frames[next..]
                }
            };
            // Whether the writer has stalled is only asked (a clock read)
            // once the queue passes the base bound, never per delivery on a
            // queue that keeps draining.
            let mut stalled: Option<bool> = None;
            let mut overflow = false;
            for frame in rest {
                let bytes = outbox.bytes + frame.len();
                let count = outbox.frames.len();
                if bytes > self.limits.max_bytes || count >= self.limits.max_frames {
                    let stalled =
                        *stalled.get_or_insert_with(|| outbox.last_drain.elapsed() > STALL_AFTER);
                    let factor = if stalled { 1 } else { BURST_FACTOR };
                    if bytes > self.limits.max_bytes.saturating_mul(factor)
                        || count >= self.limits.max_frames.saturating_mul(factor)
                    {
                        overflow = true;
                        break;
                    }
                }
                outbox.bytes = bytes;
                outbox.frames.push_back(frame.clone());
            }
            if overflow {
                outbox.frames.clear();
                outbox.bytes = 0;
                outbox.received = None;
            } else if outbox.received.is_none() {
                outbox.received = received;
            }
            overflow
        };
        if overflow {
            tracing::info!(sid = %self.sid, "outbound queue full; closing slow consumer");
            self.close(CloseReason::SlowConsumer);
            return Sent::Refused;
        }
        self.wake.notify_one();
        Sent::Queued
    }

    /// Sends one frame to the client.
    pub fn send(&self, frame: Frame) -> bool {
        self.send_all(std::slice::from_ref(&frame))
    }

    /// Takes every queued frame, for the writer.
    pub(crate) fn take_frames(&self) -> VecDeque<Frame> {
        self.take_frames_received().0
    }

    /// Takes every queued frame, with when the gateway received the oldest
    /// event among them (see [`Outbox::received`]).
    pub(crate) fn take_frames_received(&self) -> (VecDeque<Frame>, Option<Instant>) {
        let mut outbox = self.outbox.lock();
        outbox.bytes = 0;
        outbox.last_drain = Instant::now();
        (std::mem::take(&mut outbox.frames), outbox.received.take())
    }

    /// Takes every queued frame for the websocket writer, as
    /// [`Connection::take_frames_received`]; when there are any, direct
    /// writes stop until [`Connection::allow_direct`], so that nothing sent
    /// meanwhile overtakes them.
    pub(crate) fn take_for_write(&self) -> (VecDeque<Frame>, Option<Instant>) {
        let mut outbox = self.outbox.lock();
        outbox.last_drain = Instant::now();
        if outbox.frames.is_empty() {
            return (VecDeque::new(), None);
        }
        outbox.wire = None;
        outbox.bytes = 0;
        (std::mem::take(&mut outbox.frames), outbox.received.take())
    }

    /// Lets sends write to `wire` directly (the websocket task has nothing
    /// in flight), unless the session is closed.
    pub(crate) fn allow_direct(&self, wire: &Arc<Wire>) {
        let mut outbox = self.outbox.lock();
        if !self.is_closed() {
            outbox.wire = Some(wire.clone());
        }
    }

    /// Whether the session's socket holds bytes its task has not read yet
    /// (see [`Wire::has_unread`]). Only known while the websocket task has
    /// nothing in flight (the outbox holds its stream then); false
    /// otherwise, and for a polling session.
    pub(crate) fn has_unread(&self) -> bool {
        let wire = self.outbox.lock().wire.clone();
        wire.is_some_and(|wire| wire.has_unread())
    }

    /// Stops direct writes for good (the websocket task is ending).
    pub(crate) fn stop_direct(&self) {
        self.outbox.lock().wire = None;
    }

    /// Bytes waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.outbox.lock().bytes
    }

    /// Marks the session closed and wakes its writer, which ends the
    /// transport. The first reason given wins; later calls do nothing.
    pub fn close(&self, reason: CloseReason) {
        {
            // The reason is set under its lock before the flag shows: a
            // reader that sees the session closed and then reads the
            // reason waits for this lock, so it never finds none (a
            // client's close answered `1` instead of `6`).
            let mut slot = self.close_reason.lock();
            if self.closed.swap(true, Ordering::AcqRel) {
                return;
            }
            *slot = Some(reason);
        }
        // No direct write after the close: what is still queued and the
        // close frame come last, from the session's task.
        self.stop_direct();
        self.wake.notify_one();
        self.closed_signal.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether this closed session still waits for GETs to collect its
    /// last frames and then the close packet: the server closed it (a
    /// `disconnect`, the connect timeout) and no GET has been answered the
    /// close packet yet. The reference server keeps such a session until it
    /// is polled too, so that a polling client that was between two GETs
    /// reads the `41` DISCONNECT it was sent instead of getting a 400.
    pub(crate) fn awaits_last_poll(&self) -> bool {
        self.close_reason() == Some(CloseReason::ServerClosed) && !self.state.lock().last_poll_done
    }

    /// The close packet went out to a GET, or is no longer waited for (the
    /// client closed too, the bound passed, the gateway shuts down): wakes
    /// the session's driver, which then finishes the session.
    pub(crate) fn last_poll_done(&self) {
        self.state.lock().last_poll_done = true;
        self.closed_signal.notify_waiters();
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.close_reason.lock()
    }

    /// The transport that carries the session now.
    pub fn transport(&self) -> TransportKind {
        self.state.lock().kind
    }

    /// Asks the CPU to start loading what a heartbeat step reads of the
    /// session at `conn` (a [`std::sync::Weak::as_ptr`]): the reference
    /// counts in front of it, the closed flag, the transport state and the
    /// outbox. A hint only: it reads nothing into the program and cannot
    /// fault, whatever the address, so a session that has ended since
    /// costs nothing.
    pub(crate) fn prefetch(conn: *const Self) {
        let base = conn.cast::<u8>();
        // An `Arc`'s counts are the two words in front of its value.
        let counts = base.wrapping_sub(2 * std::mem::size_of::<usize>());
        for at in [
            counts,
            base.wrapping_add(std::mem::offset_of!(Self, closed)),
            base.wrapping_add(std::mem::offset_of!(Self, state)),
            base.wrapping_add(std::mem::offset_of!(Self, outbox)),
        ] {
            prefetch_line(at);
        }
    }

    /// Asks the CPU to start loading what a direct write to this session
    /// touches after the outbox: its stream's write lock and descriptor
    /// (the [`Wire`], found under the outbox lock, which a busy lock skips).
    /// The fan-out calls it a delivery ahead, once [`Connection::prefetch`]
    /// has loaded the outbox, so that no delivery waits for main memory on
    /// the gateway's own per-socket state (in the profile of a steady
    /// fan-out at 5,000 sockets, the first reads of the connection and of
    /// the wire were 7% of the process's CPU time).
    pub(crate) fn prefetch_wire(&self) {
        if let Some(outbox) = self.outbox.try_lock()
            && let Some(wire) = &outbox.wire
        {
            wire.prefetch();
        }
    }
}

/// Asks the CPU to start loading the cache line at `at`. A hint only: it
/// reads nothing into the program and cannot fault, whatever the address,
/// so an address of memory freed since costs nothing.
pub(crate) fn prefetch_line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE, which `_mm_prefetch` needs, is part of every x86_64
        // CPU; a prefetch never faults nor reads into the program, whatever
        // the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// The server side of the Engine.IO heartbeat: a ping every `ping_interval`,
/// a pong expected within `ping_timeout`. Whichever task keeps the heartbeat
/// (the engine's heartbeat task for a websocket, the polling driver for a
/// polling session) waits until [`Heartbeat::deadline`] and then calls
/// [`Heartbeat::tick`].
///
/// Pings are scheduled from when they were due, not from when the task
/// happened to run, so scheduling delays never add up from one cycle to the
/// next. A pong's deadline, though, counts from when its ping was actually
/// written: a ping the process sent late (it was busy) still gives the
/// client its whole `ping_timeout` to answer.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    /// When the next step is due, exactly.
    due: Instant,
    /// `due` moved onto the shared grid (equal to `due` when exact).
    deadline: Instant,
    /// When the outstanding ping was due, while one is outstanding.
    ping_due: Option<Instant>,
    /// The grid step; zero for exact per-connection deadlines.
    quantum: std::time::Duration,
    /// How long, in milliseconds, the outstanding ping's pong check has
    /// been put off because it ran late (see [`LATE_CHECK`]); at most
    /// `ping_timeout` in all. Milliseconds in a `u32` keep the per-session
    /// state as small as the flag it replaced.
    grace_ms: u32,
}

/// A heartbeat step that runs this long after it was due ran late because
/// the process was behind (both cores saturated, a long fan-out), not
/// because of the client: the timer wheel itself is accurate to a
/// millisecond.
///
/// A pong check that runs this late is put off by as long as it was late,
/// so that a pong that arrived while the process was behind is read before
/// the client is judged, and a client on the same busy machine gets the
/// time the process was away. It may be put off again if the next check
/// is late too, up to `ping_timeout` in all: a client that really stopped
/// answering is closed at most `2 × ping_timeout` after its ping was
/// written (plus however late the process runs that last check). Without
/// it a starved gateway closes healthy clients for its own lateness, and
/// their reconnects make it later still.
pub(super) const LATE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// The client missed its pong.
#[derive(Debug)]
pub(crate) struct PingTimedOut;

/// What a [`Heartbeat::tick`] did, for the caller's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A ping was written; `late` when at least [`LATE_CHECK`] after the
    /// grid slot it was due in (its pong deadline counts from now, not from
    /// when it was due).
    Ping { late: bool },
    /// The pong had come back.
    Answered,
    /// No pong yet, but the check ran late: put off (see [`LATE_CHECK`]).
    PutOff,
}

/// Heartbeat deadlines can be rounded up to a shared grid so that one timer
/// wake-up serves every connection due in the same slot: with hundreds of
/// thousands of idle connections, waking once per connection (a context
/// switch each) was most of the idle CPU.
///
/// The step is 1/64 of the shorter of the two periods, so a deadline is at
/// most ~1.6% late, inside the bound of max(5 ms, 2% of the interval) we
/// promise (312 ms at the default 25 s / 20 s: still one wake-up for every
/// connection due in the same third of a second). Below [`MIN_GRID_STEP`]
/// grouping saves nothing worth the lateness (the tokio timer wheel already
/// has 1 ms slots), so short intervals (the protocol test suite's 300 ms /
/// 200 ms) get exact per-connection deadlines instead.
const GRID_DIVISOR: u32 = 64;
/// The smallest grid step worth sharing a wake-up for.
const MIN_GRID_STEP: std::time::Duration = std::time::Duration::from_millis(20);

/// The grid step for these periods; zero means exact deadlines.
fn grid_step(interval: std::time::Duration, timeout: std::time::Duration) -> std::time::Duration {
    let step = interval.min(timeout) / GRID_DIVISOR;
    if step < MIN_GRID_STEP {
        std::time::Duration::ZERO
    } else {
        step
    }
}

/// The origin of the heartbeat grid, shared by every connection.
fn grid_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `t` rounded up to the next multiple of `quantum` past the grid epoch;
/// `t` itself for a zero quantum.
pub(super) fn on_grid(t: Instant, quantum: std::time::Duration) -> Instant {
    if quantum.is_zero() {
        return t;
    }
    let epoch = grid_epoch();
    // In `u64` nanoseconds (584 years): a `u128` division is a library
    // call several times slower, and this runs at every heartbeat step.
    let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let q = nanos(quantum);
    let since = nanos(t.saturating_duration_since(epoch));
    let offset = since.div_ceil(q).saturating_mul(q);
    epoch + std::time::Duration::from_nanos(offset)
}

impl Heartbeat {
    pub fn new(interval: std::time::Duration, timeout: std::time::Duration) -> Self {
        let quantum = grid_step(interval, timeout);
        let due = Instant::now() + interval;
        Heartbeat {
            due,
            deadline: on_grid(due, quantum),
            ping_due: None,
            quantum,
            grace_ms: 0,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the next step is a ping (no ping is outstanding).
    pub fn pings_next(&self) -> bool {
        self.ping_due.is_none()
    }

    /// The slot of the grid `after` from now, when it comes before the
    /// deadline: for a look at the heartbeat's state ahead of its step
    /// (the heartbeat task's early pong check).
    pub fn before_deadline(&self, after: std::time::Duration) -> Option<Instant> {
        let at = on_grid(Instant::now() + after, self.quantum);
        (at < self.deadline).then_some(at)
    }

    /// Moves on to the next ping if the outstanding one has been answered
    /// after all, and says whether it was: the heartbeat task calls this
    /// when it confirms a failed pong check, after the session's own task
    /// had a chance to read a pong that was waiting unread in the socket.
    /// Without an outstanding ping, or before the pong, it does nothing.
    pub fn settle<D>(&mut self, conn: &Connection<D>, interval: std::time::Duration) -> bool {
        let Some(ping_due) = self.ping_due else {
            return false;
        };
        if conn.state.lock().awaiting_pong {
            return false;
        }
        self.ping_due = None;
        self.grace_ms = 0;
        self.due = (ping_due + interval).max(Instant::now());
        self.deadline = on_grid(self.due, self.quantum);
        true
    }

    /// Sends the next ping, or checks the last one was answered. On
    /// `Err` the ping stays outstanding: a caller that finds the pong
    /// in after all goes on with [`Heartbeat::settle`].
    pub fn tick<D>(
        &mut self,
        conn: &Connection<D>,
        interval: std::time::Duration,
        timeout: std::time::Duration,
    ) -> Result<Step, PingTimedOut> {
        let step = match self.ping_due {
            Some(ping_due) => {
                if conn.state.lock().awaiting_pong {
                    let now = Instant::now();
                    let Some(until) = self.put_off(now, timeout) else {
                        return Err(PingTimedOut);
                    };
                    self.due = until;
                    self.deadline = on_grid(self.due, self.quantum);
                    return Ok(Step::PutOff);
                }
                self.ping_due = None;
                self.grace_ms = 0;
                // With a timeout longer than the interval the next ping is
                // already late; send it now rather than in a burst.
                self.due = (ping_due + interval).max(Instant::now());
                Step::Answered
            }
            None => {
                let now = Instant::now();
                conn.state.lock().ping_sent(now);
                let ping = Frame::Text(Utf8Bytes::from_static("2"));
                conn.send_frames_at(std::slice::from_ref(&ping), None, true, Some(now));
                // Late against the grid slot the ping waited for, not the
                // exact time it fell due: the grid rounds up by as much as
                // a step (312 ms at 25 s / 20 s), and counting from `due`
                // called ~70% of pings on time at their slot late at 1M.
                let late = now.saturating_duration_since(self.deadline) >= LATE_CHECK;
                self.ping_due = Some(self.due);
                // The pong is due `timeout` after the ping went out, not
                // after it was due: a ping the process wrote late (a long
                // fan-out, a starved core) must not shorten the client's
                // allowance, nor leave it none at all.
                self.due = now + timeout;
                Step::Ping { late }
            }
        };
        self.deadline = on_grid(self.due, self.quantum);
        Ok(step)
    }

    /// Whether a pong check that finds no pong at `now` is put off, and
    /// until when: only when the check itself ran at least [`LATE_CHECK`]
    /// after its deadline, by as long as it was late, and by no more than
    /// `timeout` over the life of one ping.
    fn put_off(&mut self, now: Instant, timeout: std::time::Duration) -> Option<Instant> {
        let lag = now.saturating_duration_since(self.deadline);
        if lag < LATE_CHECK {
            return None;
        }
        let used = std::time::Duration::from_millis(u64::from(self.grace_ms));
        let left = timeout.saturating_sub(used);
        if left.is_zero() {
            return None;
        }
        let extra = lag.min(left);
        let total = u32::try_from((used + extra).as_millis()).unwrap_or(u32::MAX);
        self.grace_ms = total;
        Some(now + extra)
    }
}

/// A websocket session with roomy queue limits and no layer above, for
/// tests of the engine's parts.
#[cfg(test)]
pub(super) fn test_conn() -> Connection<()> {
    test_conn_with(())
}

/// [`test_conn`] carrying `data` for the layer above (a Socket.IO client
/// in that layer's tests).
#[cfg(test)]
pub(crate) fn test_conn_with<D>(data: D) -> Connection<D> {
    let handshake = Handshake {
        headers: Default::default(),
        query: String::new(),
        remote: "127.0.0.1:1".parse().expect("addr"),
        issued_ms: 0,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
    };
    let limits = QueueLimits {
        max_bytes: 1 << 20,
        max_frames: 1024,
    };
    Connection::new(
        Sid::new(),
        handshake,
        TransportKind::Websocket,
        limits,
        data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::wire::{encode_frame, test_pair};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    fn websocket_conn(max_bytes: usize, max_frames: usize) -> Connection<()> {
        let handshake = Handshake {
            headers: Default::default(),
            query: String::new(),
            remote: "127.0.0.1:5000".parse().expect("addr"),
            issued_ms: 0,
            client_ip: "127.0.0.1".parse().expect("addr"),
        };
        Connection::new(
            Sid::new(),
            handshake,
            TransportKind::Websocket,
            QueueLimits {
                max_bytes,
                max_frames,
            },
            (),
        )
    }

    fn texts(frames: &VecDeque<Frame>) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                Frame::Text(t) => t.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// A direct write happens only with nothing queued and no batch in
    /// flight, so it never overtakes a frame sent before it.
    /// A direct write given the caller's clock reading (the heartbeat's
    /// ping) records that as the last drain, and one without reads the
    /// clock.
    #[tokio::test]
    async fn a_direct_write_at_a_given_time_records_it_as_the_drain() {
        let (server, mut client) = test_pair().await;
        let conn = test_conn();
        conn.allow_direct(&server.wire().clone());
        let then = Instant::now() - Duration::from_secs(5);
        let ping = [Frame::text("2")];
        assert_eq!(
            conn.send_frames_at(&ping, None, true, Some(then)),
            Sent::Written
        );
        assert_eq!(conn.outbox.lock().last_drain, then);
        assert_eq!(conn.send_frames(&ping, None, true), Sent::Written);
        assert!(conn.outbox.lock().last_drain > then + Duration::from_secs(4));
        let mut both = [0u8; 6];
        client.read_exact(&mut both).await.expect("read");
        assert_eq!(&both, &[0x81, 1, b'2', 0x81, 1, b'2']);
    }

    #[tokio::test]
    async fn direct_writes_never_overtake_queued_or_in_flight_frames() {
        let (server, mut client) = test_pair().await;
        let conn = websocket_conn(1 << 20, 4096);
        let wire = server.wire().clone();
        let send =
            |text: &'static str, direct| conn.send_frames(&[Frame::text(text)], None, direct);
        // Not allowed yet (no websocket task): queued.
        assert_eq!(send("4a", true), Sent::Queued);
        conn.allow_direct(&wire);
        // Something is queued: queued behind it, even with direct allowed.
        assert_eq!(send("4b", true), Sent::Queued);
        // The writer takes the batch: while it writes, sends queue.
        let (batch, _) = conn.take_for_write();
        assert_eq!(texts(&batch), ["4a", "4b"]);
        assert_eq!(send("4c", true), Sent::Queued);
        conn.allow_direct(&wire);
        // The batch is written and direct writes allowed again, but "4c" is
        // still queued: the next send queues behind it.
        assert_eq!(send("4d", true), Sent::Queued);
        // A sender in a burst queues even on an idle socket.
        let (rest, _) = conn.take_for_write();
        assert_eq!(texts(&rest), ["4c", "4d"]);
        conn.allow_direct(&wire);
        assert_eq!(send("4e", false), Sent::Queued);
        let (burst, _) = conn.take_for_write();
        assert_eq!(texts(&burst), ["4e"]);
        conn.allow_direct(&wire);
        // Idle: written at once, nothing queued, no wake-up needed.
        assert_eq!(send("4f", true), Sent::Written);
        assert_eq!(conn.queued_bytes(), 0);
        let mut got = [0u8; 4];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, &[0x81, 2, b'4', b'f']);
        // Once the task ends, nothing is written directly any more.
        conn.stop_direct();
        assert_eq!(send("4g", true), Sent::Queued);
        // Nor after a close.
        conn.allow_direct(&wire);
        conn.close(CloseReason::ServerClosed);
        conn.allow_direct(&wire);
        assert_eq!(send("4h", true), Sent::Refused);
        assert!(conn.outbox.lock().wire.is_none());
    }

    /// A client that stops reading: direct writes fill its socket, the cut
    /// frame's tail is queued first and everything after it behind it, and
    /// the queue bound still closes the slow consumer (nothing lost before).
    #[tokio::test]
    async fn a_client_that_stops_reading_is_queued_then_cut_as_before() {
        let (server, mut client) = test_pair().await;
        let conn = websocket_conn(64 * 1024, 64);
        conn.allow_direct(&server.wire().clone());
        let frame = Frame::text(format!("4{}", "y".repeat(999)));
        let mut written = 0usize;
        let mut queued = 0usize;
        let mut refused = false;
        for _ in 0..10_000 {
            match conn.send_frames(std::slice::from_ref(&frame), None, true) {
                Sent::Written => {
                    assert_eq!(queued, 0, "a direct write after a queued frame");
                    written += 1;
                }
                Sent::Queued => queued += 1,
                Sent::Refused => {
                    refused = true;
                    break;
                }
            }
        }
        assert!(
            written > 0 && queued > 0 && refused,
            "{written} {queued} {refused}"
        );
        assert_eq!(conn.close_reason(), Some(CloseReason::SlowConsumer));
        // What the client can read is whole frames: every one written.
        let mut one = Vec::new();
        encode_frame(&mut one, &frame);
        // The task's end: the stream closes once neither holds it.
        conn.stop_direct();
        drop(server);
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got).await;
        assert!(
            got.len() >= one.len() * (written - 1),
            "{} {}",
            got.len(),
            written
        );
        for chunk in got.chunks(one.len()) {
            assert!(one.starts_with(chunk), "the client read a corrupted frame");
        }
    }

    /// The tail of a cut-short direct write goes first in the queue; frames
    /// sent after it follow it.
    #[tokio::test]
    async fn the_tail_of_a_cut_direct_write_is_queued_first() {
        let (server, _client) = test_pair().await;
        let conn = websocket_conn(1 << 24, 1 << 20);
        conn.allow_direct(&server.wire().clone());
        let frame = Frame::text(format!("4{}", "z".repeat(2999)));
        let mut cut = false;
        for _ in 0..10_000 {
            if conn.send_frames(std::slice::from_ref(&frame), None, true) != Sent::Written {
                cut = true;
                break;
            }
        }
        assert!(cut);
        conn.send_frames(&[Frame::text("4next")], None, true);
        let (queue, _) = conn.take_for_write();
        let kinds: Vec<&str> = queue
            .iter()
            .map(|f| match f {
                Frame::WireTail(_) => "tail",
                Frame::Text(t) if t.as_str() == "4next" => "next",
                _ => "frame",
            })
            .collect();
        // Cut inside the frame (a tail), or between frames (the whole frame).
        assert!(
            kinds == ["tail", "next"] || kinds == ["frame", "next"],
            "{kinds:?}"
        );
    }

    #[test]
    fn grid_rounds_up_within_one_step_and_groups_deadlines() {
        let q = Duration::from_millis(250);
        let base = Instant::now();
        for offset_ms in [0u64, 1, 100, 249, 250, 251, 10_000] {
            let t = base + Duration::from_millis(offset_ms);
            let g = on_grid(t, q);
            assert!(g >= t, "rounded down at {offset_ms} ms");
            assert!(g - t < q, "moved by a whole step or more at {offset_ms} ms");
        }
        let slot = on_grid(base, q);
        let a = on_grid(slot + Duration::from_millis(10), q);
        let b = on_grid(slot + Duration::from_millis(20), q);
        assert_eq!(a, b, "deadlines in one slot share a wake-up");
        assert_eq!(a - slot, q, "the next slot is one step later");
        assert_eq!(on_grid(base, Duration::ZERO), base, "zero step is exact");
    }

    fn sleep_until(t: Instant) {
        std::thread::sleep(t.saturating_duration_since(Instant::now()));
    }

    /// A heartbeat whose first ping was sent `late` after it was due: the
    /// heartbeat, when the ping was due, and what the tick did.
    fn ping_late(
        conn: &Connection<()>,
        interval: Duration,
        timeout: Duration,
        late: Duration,
    ) -> (Heartbeat, Instant, Step) {
        let mut hb = Heartbeat::new(interval, timeout);
        let due = hb.deadline();
        sleep_until(due + late);
        let step = hb.tick(conn, interval, timeout).expect("ping sent");
        (hb, due, step)
    }

    /// A heartbeat whose first ping was sent on time, its pong due.
    fn pinged(conn: &Connection<()>, interval: Duration, timeout: Duration) -> Heartbeat {
        ping_late(conn, interval, timeout, Duration::ZERO).0
    }

    /// A pong read before its check: the check passes and the next ping is
    /// due one interval after the last one was due.
    #[test]
    fn an_answered_ping_passes_its_check() {
        let (interval, timeout) = (Duration::from_millis(40), Duration::from_millis(30));
        let conn = test_conn();
        let (mut hb, first_ping, _) = ping_late(&conn, interval, timeout, Duration::ZERO);
        // Armed `timeout` after the ping was written (a little after due).
        let armed = hb.deadline();
        assert!(
            armed >= first_ping + timeout && armed < first_ping + timeout + LATE_CHECK,
            "pong check armed"
        );
        assert_eq!(conn.take_frames().len(), 1, "the ping was queued");
        assert!(!hb.settle(&conn, interval), "no pong yet");
        assert_eq!(hb.deadline(), armed, "no pong yet: unchanged");
        conn.state.lock().pong_received();
        sleep_until(hb.deadline());
        hb.tick(&conn, interval, timeout).expect("answered");
        assert_eq!(hb.deadline(), first_ping + interval, "next ping");
        sleep_until(hb.deadline());
        hb.tick(&conn, interval, timeout).expect("second ping sent");
        assert_eq!(conn.take_frames().len(), 1, "the second ping was queued");
    }

    /// A pong check that runs on time and finds no pong fails; one that
    /// runs late (the process was behind) is put off by its lateness, again
    /// if the next one is late too, but never by more than the timeout in
    /// all: a client that never answers is still closed.
    #[test]
    fn a_late_pong_check_is_put_off_within_the_timeout() {
        let (interval, timeout) = (Duration::from_millis(20), Duration::from_millis(20));
        let conn = test_conn();

        let mut on_time = pinged(&conn, interval, timeout);
        sleep_until(on_time.deadline());
        assert!(
            on_time.tick(&conn, interval, timeout).is_err(),
            "no pong: closed"
        );

        let mut late = pinged(&conn, interval, timeout);
        let check = late.deadline();
        sleep_until(check + LATE_CHECK + Duration::from_millis(50));
        assert_eq!(
            late.tick(&conn, interval, timeout).expect("put off"),
            Step::PutOff
        );
        assert!(late.deadline() > check + LATE_CHECK, "put off past now");
        // The pong was read meanwhile: the session goes on.
        conn.state.lock().pong_received();
        assert_eq!(
            late.tick(&conn, interval, timeout)
                .expect("answered in the grace"),
            Step::Answered
        );

        let mut never = pinged(&conn, interval, timeout);
        sleep_until(never.deadline() + LATE_CHECK + Duration::from_millis(50));
        never.tick(&conn, interval, timeout).expect("put off once");
        sleep_until(never.deadline() + LATE_CHECK + Duration::from_millis(50));
        assert!(
            never.tick(&conn, interval, timeout).is_err(),
            "never answered: closed once the grace reached the timeout"
        );
    }

    /// Several late checks may each be put off while their sum stays
    /// within the timeout; past it the client is closed however late the
    /// check runs.
    #[test]
    fn the_grace_adds_up_to_the_timeout_and_no_more() {
        let (interval, timeout) = (Duration::from_millis(50), Duration::from_millis(400));
        let conn = test_conn();
        let mut hb = pinged(&conn, interval, timeout);
        let mut put_off = 0;
        let closed = loop {
            sleep_until(hb.deadline() + LATE_CHECK + Duration::from_millis(50));
            match hb.tick(&conn, interval, timeout) {
                Ok(step) => {
                    assert_eq!(step, Step::PutOff);
                    put_off += 1;
                    assert!(put_off < 10, "put off without bound");
                }
                Err(PingTimedOut) => break true,
            }
        };
        assert!(closed);
        // Each check runs ~150 ms late, of a 400 ms allowance: three
        // put-offs (the third cut to the 100 ms left), then the close.
        assert_eq!(put_off, 3, "{put_off}");
        // The ping stays outstanding after the verdict: a pong read now
        // (from the socket, before closing) lets the session go on.
        conn.state.lock().pong_received();
        assert!(hb.settle(&conn, interval), "answered after all");
        assert_eq!(
            hb.tick(&conn, interval, timeout).expect("next ping"),
            Step::Ping { late: false }
        );
    }

    /// A ping is late against the grid slot it waited for: one written at
    /// its slot is on time however far the slot is past the exact time it
    /// fell due (up to a step, by design), one written 150 ms after its
    /// slot is late.
    #[test]
    fn a_ping_is_late_only_against_its_grid_slot() {
        let (interval, timeout) = (Duration::from_millis(25_000), Duration::from_millis(20_000));
        let quantum = grid_step(interval, timeout);
        assert!(quantum > Duration::from_millis(250), "{quantum:?}");
        let conn = test_conn();
        let now = Instant::now();
        let mut at_slot = Heartbeat {
            due: now - Duration::from_millis(250),
            deadline: now,
            ping_due: None,
            quantum,
            grace_ms: 0,
        };
        let step = at_slot.tick(&conn, interval, timeout).expect("ping");
        assert_eq!(step, Step::Ping { late: false });
        let conn = test_conn();
        let mut after_slot = Heartbeat {
            due: now - Duration::from_millis(200),
            deadline: now - Duration::from_millis(150),
            ping_due: None,
            quantum,
            grace_ms: 0,
        };
        let step = after_slot.tick(&conn, interval, timeout).expect("ping");
        assert_eq!(step, Step::Ping { late: true });
    }

    /// A ping the process writes late (it was busy when it was due) gives
    /// the client the whole timeout from the write: the pong deadline is
    /// not counted from when the ping was due.
    #[test]
    fn a_late_ping_gets_its_whole_timeout() {
        let (interval, timeout) = (Duration::from_millis(30), Duration::from_millis(200));
        let conn = test_conn();
        // Written 250 ms late: past the deadline counted from when it was due.
        let (mut hb, due, step) = ping_late(&conn, interval, timeout, Duration::from_millis(250));
        // The ping went out no earlier than this.
        let written = due + Duration::from_millis(250);
        assert_eq!(step, Step::Ping { late: true });
        assert!(
            hb.deadline() >= written + timeout,
            "the pong deadline counts from the write"
        );
        // An answer in the timeout after the write is on time.
        sleep_until(written + timeout - Duration::from_millis(50));
        conn.state.lock().pong_received();
        assert!(hb.settle(&conn, interval), "answered");
        assert_eq!(
            hb.tick(&conn, interval, timeout).expect("next ping"),
            Step::Ping { late: false },
            "the next ping keeps its schedule (due + interval, or now)"
        );
    }

    #[test]
    fn grid_step_stays_inside_the_precision_bound() {
        let ms = Duration::from_millis;
        // The defaults share wake-ups, within 2% of the interval.
        let step = grid_step(ms(25_000), ms(20_000));
        assert!(step > Duration::ZERO);
        assert!(step <= ms(25_000) / 50, "{step:?}");
        // The protocol test suite's periods are exact.
        assert_eq!(grid_step(ms(300), ms(200)), Duration::ZERO);
        for (interval, timeout) in [(1_000, 1_000), (5_000, 2_000), (60_000, 60_000)] {
            let step = grid_step(ms(interval), ms(timeout));
            let bound = ms(5).max(ms(interval) / 50);
            assert!(step <= bound, "{interval}/{timeout}: {step:?} > {bound:?}");
        }
    }
}
