//! The heartbeat of every websocket session of an engine, kept by one task.
//!
//! Each session used to own a tokio timer and be woken by it twice per
//! heartbeat (to send the ping, and to move its timer to the next ping once
//! the pong was in). With hundreds of thousands of idle sessions those
//! wake-ups, and the timer wheel entries they re-armed, were a large part
//! of the idle CPU (issues #10 and #17). Here one task per engine walks the
//! sessions due in a slot of the shared grid (see `on_grid` in
//! `connection.rs`), writes their pings itself (a direct write through the
//! outbox, see [`Connection::send_frames`]) and checks their pongs; a
//! session's own task is woken only by the pong it has to read, and by the
//! close when a pong is missing.
//!
//! The timing and the decision are the per-session [`Heartbeat`]'s, as
//! before: this module only decides when [`Heartbeat::tick`] runs.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use parking_lot::Mutex;
use prometheus::IntCounterVec;
use tokio::{sync::Notify, time::Instant};

use super::{
    CloseReason, Connection,
    connection::{Heartbeat, LATE_CHECK, Step, on_grid},
};

/// Beats handled between two yields of the heartbeat task, so that a slot
/// with many sessions (all connected in one wave) does not hold a worker
/// thread for long.
const BEATS_PER_YIELD: usize = 256;

/// How many beats ahead of the one it runs the heartbeat task asks the CPU
/// to load a session's state (see [`Connection::prefetch`]): every session
/// of a slot was last touched a heartbeat ago, so each step would otherwise
/// wait for main memory several times.
const PREFETCH_AHEAD: usize = 4;

/// How long a failed pong check waits before it closes the session. When
/// the process was behind, the timer and the pong's readiness come due
/// together, and this task may run before the session's own task has read
/// the pong sitting in the kernel's receive buffer; waiting this long lets
/// the runtime poll its I/O driver and run that task first. An answer that
/// arrived is an answer. A silent client is closed this much later than
/// `ping_timeout`.
const CONFIRM_AFTER: Duration = Duration::from_millis(10);

/// When a failed pong check is confirmed and the session's socket still
/// holds bytes its task has not read, the close waits for that task: the
/// bytes are most likely the pong, unread because the gateway is behind
/// (a throttled core, a run queue thousands of tasks long), which is the
/// gateway's lateness, not the client's. The confirmation is looked at
/// again after this long, then after as long as the close has waited so
/// far (100, 100, 200, 400 ms...: a few looks per session however long the
/// stall), and the waits of one ping add up to `ping_timeout` at most: a
/// client that keeps sending without ever answering is still closed, at
/// most `3 × ping_timeout` after its ping (plus the process's lateness),
/// and a silent one (nothing unread) exactly as before.
const UNREAD_RECHECK: Duration = Duration::from_millis(100);

/// Overdue pings go out at no more than this many times the steady rate
/// (sessions / interval) while the task catches up after running late.
const CATCH_UP_FACTOR: u32 = 2;

/// ... and at no less than this many per second, so that a gateway with
/// few sessions never holds a ping back for long.
const MIN_CATCH_UP_PER_SEC: u32 = 1000;

/// Held-back pings share slots of this size (one map entry, one wake-up
/// each), on the heartbeat grid's epoch.
const PACE_STEP: Duration = Duration::from_millis(5);

/// Paces the pings that fell due while the heartbeat task could not run
/// (a long fan-out, a starved core).
///
/// When the task comes back after a stall of `L`, every ping that fell due
/// meanwhile is overdue at once: `L × sessions / interval` of them. Sent
/// in one pass, they hold the thread again and draw all their pongs back
/// at the same moment, on a machine that is already behind (issue #17: at
/// 1M, the rolling restart that followed two broadcasts). Instead, a ping
/// at least [`LATE_CHECK`] overdue goes out at no more than
/// [`CATCH_UP_FACTOR`] times the steady rate (pings falling due on time
/// meanwhile go out on time, besides): the backlog of a stall of `L` is
/// sent within about `L / CATCH_UP_FACTOR` more, each ping held back at
/// most that long. Pong checks are never held back (they are
/// what closes a session, and their own lateness puts them off), and pings
/// due on time are not paced: a connect wave's sessions share a slot.
/// The pong deadline counts from when a ping is written, so a held-back
/// ping costs the client nothing.
struct CatchUp {
    /// When the next overdue ping may go.
    next: Instant,
}

impl CatchUp {
    /// When the overdue ping being looked at at `now` may go: `None` for
    /// now, with `sessions` in the schedule. A ping that goes now or later
    /// takes its place in the pace.
    fn slot(&mut self, now: Instant, sessions: usize, interval: Duration) -> Option<Instant> {
        let per_sec = (sessions as f64 * f64::from(CATCH_UP_FACTOR) / interval.as_secs_f64())
            .max(f64::from(MIN_CATCH_UP_PER_SEC));
        let gap = Duration::from_secs_f64(1.0 / per_sec);
        // Unused pace does not accumulate past one [`LATE_CHECK`]'s worth.
        let floor = now.checked_sub(LATE_CHECK).unwrap_or(now);
        let at = self.next.max(floor);
        self.next = at + gap;
        (at > now).then_some(at)
    }

    /// How far behind the pace is: how long until the last overdue ping
    /// held back goes out (zero when none is held back).
    fn behind(&self, now: Instant) -> Duration {
        self.next.saturating_duration_since(now)
    }
}

/// How long after a ping its pong is first looked for. A pong check due
/// `ping_timeout` after the ping finds the session's lines long gone from
/// the CPU caches (several misses per session, a good part of an idle
/// heartbeat's cost); one this soon after the ping, rounded up to the next
/// slot of the grid, finds them still cached, since the ping and the pong's
/// read just touched them. A session that has answered by then goes
/// straight to its next ping; one that has not is checked again at its
/// real deadline, so when a silent client is closed does not change.
const EARLY_CHECK: Duration = Duration::from_millis(100);

/// One session's place in the schedule: its heartbeat state and a weak
/// reference, so that the schedule never keeps a finished session alive.
struct Beat<D> {
    conn: Weak<Connection<D>>,
    heartbeat: Heartbeat,
    /// What the next step of this beat is.
    stage: Stage,
    /// Its overdue ping was held back by the catch-up pace and goes out
    /// when its slot comes, however late (it is not paced twice).
    paced: bool,
    /// How long, in milliseconds, the close for the outstanding ping has
    /// waited for bytes left unread in the socket (see [`UNREAD_RECHECK`]);
    /// at most `ping_timeout`. In what was the struct's padding.
    held_ms: u32,
}

/// What a beat's next step does, besides its heartbeat's own next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The heartbeat's step: a ping, or the pong check at its deadline.
    Due,
    /// A ping went out; look for its pong early (see [`EARLY_CHECK`]).
    Early,
    /// The last pong check failed; this step confirms it (see
    /// [`CONFIRM_AFTER`]).
    Confirming,
}

/// Where a beat goes after its step.
enum Next {
    /// Into the slot of its heartbeat's next deadline.
    Schedule,
    /// Into the slot at this instant, for the early pong check.
    Early(Instant),
    /// Back in this long, to confirm a failed pong check
    /// ([`CONFIRM_AFTER`]), or to look again at a close that waits for
    /// unread bytes ([`UNREAD_RECHECK`]).
    Confirm(Duration),
    /// Out of the schedule: the session is closed.
    Done,
}

/// What the sessions' tasks hand to the heartbeat task.
struct Inbox<D> {
    /// Sessions registered since the task last looked.
    new: Vec<Beat<D>>,
    /// Whether the heartbeat task exists; it ends when it has no session
    /// left, and the next registration starts it again.
    running: bool,
}

/// The heartbeats of an engine's websocket sessions: registration from the
/// sessions' tasks, and the one task that sends every ping and checks
/// every pong on time.
pub(crate) struct Heartbeats<D> {
    interval: Duration,
    timeout: Duration,
    inbox: Mutex<Inbox<D>>,
    /// `switchboard_heartbeat_late_total`, by what ran late.
    late: IntCounterVec,
    /// Wakes the task for a registration (its first ping may be due before
    /// anything the task is waiting for).
    wake: Notify,
    /// How far behind the task ran when it last looked, in microseconds:
    /// the lateness of the slot it was working on, or of the last ping its
    /// catch-up pace holds back. The engine refuses new sessions while
    /// this is over `limits.refuse_when_behind_ms`.
    behind_us: AtomicU64,
}

impl<D: Send + Sync + 'static> Heartbeats<D> {
    pub(crate) fn new(interval: Duration, timeout: Duration, late: IntCounterVec) -> Arc<Self> {
        Arc::new(Heartbeats {
            interval,
            timeout,
            late,
            inbox: Mutex::new(Inbox {
                new: Vec::new(),
                running: false,
            }),
            wake: Notify::new(),
            behind_us: AtomicU64::new(0),
        })
    }

    /// How far behind the heartbeats run (see `behind_us`); zero when on
    /// time or without websocket sessions.
    pub(crate) fn behind(&self) -> Duration {
        Duration::from_micros(self.behind_us.load(Relaxed))
    }

    fn set_behind(&self, by: Duration) {
        let us = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.behind_us.store(us, Relaxed);
    }

    /// Starts the heartbeat of `conn` now: its first ping is due one
    /// interval from now, then every interval, and the session is closed
    /// with [`CloseReason::PingTimeout`] when a pong is not in by the
    /// timeout. It ends by itself once the session is closed.
    pub(crate) fn register(self: &Arc<Self>, conn: &Arc<Connection<D>>) {
        let beat = self.beat_for(conn);
        let (start, notify) = {
            let mut inbox = self.inbox.lock();
            let notify = inbox.new.is_empty();
            inbox.new.push(beat);
            let start = !inbox.running;
            inbox.running = true;
            (start, notify)
        };
        if start {
            // Per engine: the heartbeat of its websocket sessions, ending
            // when the last of them has closed.
            tokio::spawn(self.clone().keep());
        } else if notify {
            self.wake.notify_one();
        }
    }

    /// A new session's place in the schedule: its first ping due one
    /// interval from now.
    fn beat_for(&self, conn: &Arc<Connection<D>>) -> Beat<D> {
        Beat {
            conn: Arc::downgrade(conn),
            heartbeat: Heartbeat::new(self.interval, self.timeout),
            stage: Stage::Due,
            paced: false,
            held_ms: 0,
        }
    }

    /// The heartbeat task: runs every beat whose deadline has come, slot by
    /// slot, and sleeps until the next one.
    async fn keep(self: Arc<Self>) {
        let mut due: BTreeMap<Instant, Vec<Beat<D>>> = BTreeMap::new();
        // Sessions in the schedule, for the catch-up pace.
        let mut sessions = 0usize;
        let mut catch_up = CatchUp {
            next: Instant::now(),
        };
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            {
                let mut inbox = self.inbox.lock();
                for beat in inbox.new.drain(..) {
                    sessions += 1;
                    schedule(&mut due, beat);
                }
                if due.is_empty() {
                    inbox.running = false;
                    return;
                }
            }
            let mut handled = 0usize;
            while let Some(slot) = due.first_entry() {
                let slot_at = *slot.key();
                let now = Instant::now();
                if slot_at > now {
                    break;
                }
                self.set_behind(
                    now.saturating_duration_since(slot_at)
                        .max(catch_up.behind(now)),
                );
                let overdue = now.saturating_duration_since(slot_at) >= LATE_CHECK;
                let mut beats = slot.remove().into_iter();
                for ahead in beats.as_slice().iter().take(PREFETCH_AHEAD) {
                    Connection::prefetch(ahead.conn.as_ptr());
                }
                while let Some(mut beat) = beats.next() {
                    if let Some(ahead) = beats.as_slice().get(PREFETCH_AHEAD - 1) {
                        Connection::prefetch(ahead.conn.as_ptr());
                    }
                    // Only a ping is paced: never an early look for a
                    // pong, a check or its confirmation.
                    if overdue
                        && beat.stage == Stage::Due
                        && !std::mem::take(&mut beat.paced)
                        && beat.heartbeat.pings_next()
                        && let Some(at) = catch_up.slot(now, sessions, self.interval)
                    {
                        self.late.with_label_values(&["ping_paced"]).inc();
                        beat.paced = true;
                        due.entry(on_grid(at, PACE_STEP)).or_default().push(beat);
                        continue;
                    }
                    let next = match beat.conn.upgrade() {
                        Some(conn) => self.beat(&conn, &mut beat),
                        None => Next::Done,
                    };
                    match next {
                        Next::Schedule => schedule(&mut due, beat),
                        Next::Early(at) => due.entry(at).or_default().push(beat),
                        Next::Confirm(after) => {
                            due.entry(Instant::now() + after).or_default().push(beat);
                        }
                        Next::Done => sessions = sessions.saturating_sub(1),
                    }
                    handled += 1;
                    if handled.is_multiple_of(BEATS_PER_YIELD) {
                        tokio::task::yield_now().await;
                    }
                }
            }
            self.set_behind(catch_up.behind(Instant::now()));
            let Some(next) = due.keys().next().copied() else {
                continue;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = woken => {}
            }
        }
    }

    /// One step of one session's heartbeat: the ping, the check of its
    /// pong (early, or at its deadline), or the confirmation of a failed
    /// check (closing the session when the pong is still missing).
    fn beat(&self, conn: &Connection<D>, beat: &mut Beat<D>) -> Next {
        if conn.is_closed() {
            return Next::Done;
        }
        match std::mem::replace(&mut beat.stage, Stage::Due) {
            Stage::Due => {}
            Stage::Early => {
                // Answered: on to the next ping. Not yet: the heartbeat
                // still waits for its pong check at the deadline.
                beat.heartbeat.settle(conn, self.interval);
                return Next::Schedule;
            }
            Stage::Confirming => {
                if beat.heartbeat.settle(conn, self.interval) {
                    beat.held_ms = 0;
                    self.late.with_label_values(&["unread_pong"]).inc();
                    return Next::Schedule;
                }
                if let Some(after) = self.hold_for_unread(conn, beat) {
                    beat.stage = Stage::Confirming;
                    return Next::Confirm(after);
                }
                beat.held_ms = 0;
                conn.close(CloseReason::PingTimeout);
                return Next::Done;
            }
        }
        match beat.heartbeat.tick(conn, self.interval, self.timeout) {
            Ok(step) => {
                count_late(&self.late, step);
                if matches!(step, Step::Ping { .. })
                    && let Some(at) = beat.heartbeat.before_deadline(EARLY_CHECK)
                {
                    beat.stage = Stage::Early;
                    return Next::Early(at);
                }
                Next::Schedule
            }
            Err(_) => {
                beat.stage = Stage::Confirming;
                Next::Confirm(CONFIRM_AFTER)
            }
        }
    }

    /// Whether the close of `conn`, whose pong is still missing at its
    /// confirmation, waits for bytes left unread in its socket, and how
    /// long until the next look (see [`UNREAD_RECHECK`]). The first wait
    /// for a ping is counted as `unread_bytes`.
    fn hold_for_unread(&self, conn: &Connection<D>, beat: &mut Beat<D>) -> Option<Duration> {
        let held = Duration::from_millis(u64::from(beat.held_ms));
        let left = self.timeout.saturating_sub(held);
        if left.is_zero() || !conn.has_unread() {
            return None;
        }
        if beat.held_ms == 0 {
            self.late.with_label_values(&["unread_bytes"]).inc();
        }
        let wait = held.max(UNREAD_RECHECK).min(left);
        beat.held_ms = u32::try_from((held + wait).as_millis()).unwrap_or(u32::MAX);
        Some(wait)
    }
}

/// Counts a heartbeat step the process ran late, in
/// `switchboard_heartbeat_late_total`.
pub(super) fn count_late(late: &IntCounterVec, step: Step) {
    match step {
        Step::Ping { late: true } => late.with_label_values(&["ping"]).inc(),
        Step::PutOff => late.with_label_values(&["check"]).inc(),
        Step::Ping { late: false } | Step::Answered => {}
    }
}

/// Puts `beat` in the slot of its next deadline.
fn schedule<D>(due: &mut BTreeMap<Instant, Vec<Beat<D>>>, beat: Beat<D>) {
    due.entry(beat.heartbeat.deadline()).or_default().push(beat);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Frame, connection::test_conn, wire::test_pair};
    use tokio::io::AsyncReadExt;

    fn conn() -> Arc<Connection<()>> {
        Arc::new(test_conn())
    }

    /// A schedule with its own late-step counter.
    fn heartbeats(interval: Duration, timeout: Duration) -> Arc<Heartbeats<()>> {
        let late = IntCounterVec::new(prometheus::Opts::new("late", "late steps"), &["what"])
            .expect("counter");
        Heartbeats::new(interval, timeout, late)
    }

    /// A schedule and a session on a real socket (pings written directly),
    /// with the client's end of the socket.
    async fn wired(
        interval: Duration,
        timeout: Duration,
    ) -> (
        Arc<Heartbeats<()>>,
        Arc<Connection<()>>,
        super::super::wire::WireStream,
        tokio::net::TcpStream,
    ) {
        let (server, client) = test_pair().await;
        let conn = conn();
        conn.allow_direct(&server.wire().clone());
        (heartbeats(interval, timeout), conn, server, client)
    }

    /// Reads one ping frame (`2`) from the client side of the socket.
    async fn read_ping(client: &mut tokio::net::TcpStream) {
        let mut frame = [0u8; 3];
        client.read_exact(&mut frame).await.expect("read ping");
        assert_eq!(&frame, &[0x81, 1, b'2'], "a ping frame");
    }

    /// Waits for `closed` (enabled before the ping) and checks that `conn`
    /// was closed for its missing pong, and not before `timeout` after the
    /// ping went out at `pinged`.
    async fn closed_for_the_pong(
        closed: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
        conn: &Connection<()>,
        pinged: Instant,
        timeout: Duration,
    ) {
        tokio::time::timeout(Duration::from_secs(2), closed)
            .await
            .expect("closed for the missing pong");
        let after = pinged.elapsed();
        assert!(
            after + Duration::from_millis(5) >= timeout,
            "closed {after:?} after the ping, before the timeout"
        );
        assert_eq!(conn.close_reason(), Some(CloseReason::PingTimeout));
    }

    /// Pings go out every interval, written to the socket by the heartbeat
    /// task (the session's task is not involved), and a session that
    /// answers them is never closed.
    #[tokio::test]
    async fn answered_pings_go_out_every_interval_and_never_close() {
        let (interval, timeout) = (Duration::from_millis(60), Duration::from_millis(40));
        let (beats, conn, _server, mut client) = wired(interval, timeout).await;
        let start = Instant::now();
        beats.register(&conn);
        for n in 1..=5u32 {
            read_ping(&mut client).await;
            let at = start.elapsed();
            let want = interval * n;
            assert!(
                at + Duration::from_millis(2) >= want && at < want + Duration::from_millis(30),
                "ping {n} at {at:?}, due at {want:?}"
            );
            // What the session's task does when it reads the pong.
            assert!(conn.state.lock().pong_received().is_some());
        }
        assert!(!conn.is_closed());
        assert!(
            conn.take_frames().is_empty(),
            "every ping was written directly"
        );
    }

    /// A ping without a pong closes the session once the timeout has
    /// passed, not before.
    #[tokio::test]
    async fn a_missing_pong_closes_after_the_timeout() {
        let (interval, timeout) = (Duration::from_millis(50), Duration::from_millis(80));
        let (beats, conn, _server, mut client) = wired(interval, timeout).await;
        let closed = conn.closed_signal.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        beats.register(&conn);
        read_ping(&mut client).await;
        let pinged = Instant::now();
        closed_for_the_pong(closed, &conn, pinged, timeout).await;
    }

    /// Right after a ping the beat comes back early (see [`EARLY_CHECK`]):
    /// a session that has answered by then goes on to its next ping
    /// without a check at the deadline; one that has not keeps its pong
    /// deadline, and is closed there and not before.
    #[tokio::test]
    async fn the_early_check_moves_answered_sessions_on_and_keeps_the_deadline() {
        let (interval, timeout) = (Duration::from_millis(200), Duration::from_millis(300));
        let beats = heartbeats(interval, timeout);
        let (answers, silent) = (conn(), conn());
        let mut answering = beats.beat_for(&answers);
        let mut quiet = beats.beat_for(&silent);
        tokio::time::sleep(interval).await;
        let pinged = Instant::now();
        let early = |next: Next| match next {
            Next::Early(at) => at,
            _ => panic!("a ping is followed by an early check"),
        };
        let at = early(beats.beat(&answers, &mut answering));
        early(beats.beat(&silent, &mut quiet));
        assert!(
            at >= pinged + EARLY_CHECK && at < pinged + timeout,
            "{at:?}"
        );
        let check = quiet.heartbeat.deadline();
        assert!(
            check >= pinged + timeout,
            "the pong deadline counts from the ping"
        );
        assert!(answers.state.lock().pong_received().is_some());
        tokio::time::sleep_until(at).await;
        assert!(matches!(
            beats.beat(&answers, &mut answering),
            Next::Schedule
        ));
        let next = answering.heartbeat.deadline();
        assert!(
            next + Duration::from_millis(20) > pinged + interval && next <= pinged + interval,
            "answered: the next step is the next ping, one interval after the last"
        );
        assert!(matches!(beats.beat(&silent, &mut quiet), Next::Schedule));
        assert_eq!(quiet.heartbeat.deadline(), check, "silent: still the check");
        assert!(!silent.is_closed());
        tokio::time::sleep_until(check).await;
        assert!(matches!(beats.beat(&silent, &mut quiet), Next::Confirm(_)));
        tokio::time::sleep(CONFIRM_AFTER).await;
        assert!(matches!(beats.beat(&silent, &mut quiet), Next::Done));
        assert_eq!(silent.close_reason(), Some(CloseReason::PingTimeout));
        // The answered session's next step is its ping.
        tokio::time::sleep_until(answering.heartbeat.deadline()).await;
        early(beats.beat(&answers, &mut answering));
        assert_eq!(
            answers.take_frames().len(),
            2,
            "two pings, written as queued"
        );
    }

    /// With a pong deadline sooner than [`EARLY_CHECK`] there is no early
    /// check: the ping's next step is the check itself.
    #[tokio::test]
    async fn no_early_check_when_the_deadline_is_sooner() {
        let (interval, timeout) = (Duration::from_millis(30), Duration::from_millis(60));
        let beats = heartbeats(interval, timeout);
        let session = conn();
        let mut beat = beats.beat_for(&session);
        tokio::time::sleep(interval).await;
        assert!(matches!(beats.beat(&session, &mut beat), Next::Schedule));
        assert_eq!(beat.stage, Stage::Due);
    }

    /// Through the task, on real sockets: a silent session is closed once
    /// the timeout after its ping has passed, not at the early check before
    /// it, while an answering one is pinged every interval, its pongs found
    /// by the early checks.
    #[tokio::test]
    async fn with_early_checks_the_timeout_still_decides() {
        let (interval, timeout) = (Duration::from_millis(150), Duration::from_millis(250));
        let (beats, silent, _server, mut silent_client) = wired(interval, timeout).await;
        let (server, mut client) = test_pair().await;
        let answering = conn();
        answering.allow_direct(&server.wire().clone());
        let closed = silent.closed_signal.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        let start = Instant::now();
        beats.register(&silent);
        beats.register(&answering);
        read_ping(&mut silent_client).await;
        let pinged = Instant::now();
        for n in 1..=3u32 {
            read_ping(&mut client).await;
            let at = start.elapsed();
            assert!(
                at < interval * n + Duration::from_millis(40),
                "ping {n} at {at:?}"
            );
            assert!(answering.state.lock().pong_received().is_some());
        }
        closed_for_the_pong(closed, &silent, pinged, timeout).await;
        assert!(!answering.is_closed());
    }

    /// A pong that came in while its check was failing (read by the
    /// session's task just after the heartbeat task looked) is an answer:
    /// the confirmation finds it and the session goes on, counted as
    /// `unread_pong`; a session still silent at the confirmation is closed.
    #[tokio::test]
    async fn a_failed_check_is_confirmed_before_the_close() {
        let (interval, timeout) = (Duration::from_millis(50), Duration::from_millis(40));
        let beats = heartbeats(interval, timeout);
        let (answers, silent) = (conn(), conn());
        let mut answering = beats.beat_for(&answers);
        let mut quiet = beats.beat_for(&silent);
        tokio::time::sleep(interval).await;
        assert!(matches!(
            beats.beat(&answers, &mut answering),
            Next::Schedule
        ));
        assert!(matches!(beats.beat(&silent, &mut quiet), Next::Schedule));
        tokio::time::sleep(timeout + Duration::from_millis(5)).await;
        // Both checks find no pong and ask for a confirmation.
        assert!(matches!(
            beats.beat(&answers, &mut answering),
            Next::Confirm(_)
        ));
        assert!(matches!(beats.beat(&silent, &mut quiet), Next::Confirm(_)));
        assert!(
            !answers.is_closed() && !silent.is_closed(),
            "not closed yet"
        );
        // Meanwhile the session's task reads the pong that was waiting.
        assert!(answers.state.lock().pong_received().is_some());
        assert!(matches!(
            beats.beat(&answers, &mut answering),
            Next::Schedule
        ));
        assert!(matches!(beats.beat(&silent, &mut quiet), Next::Done));
        assert!(!answers.is_closed());
        assert_eq!(silent.close_reason(), Some(CloseReason::PingTimeout));
        assert_eq!(beats.late.with_label_values(&["unread_pong"]).get(), 1);
        // The answered session's next ping keeps its schedule.
        assert!(answering.heartbeat.deadline() > Instant::now());
    }

    /// A client's pong frame (masked with a zero key, as a client sends it).
    const PONG_FRAME: [u8; 7] = [0x81, 0x81, 0, 0, 0, 0, b'3'];

    /// A failed check whose pong sits unread in the socket (the session's
    /// task starved: the gateway's lateness, not the client's) does not
    /// close the session: the close waits, counted once as `unread_bytes`,
    /// and when the task reads the pong the session goes on (`unread_pong`).
    #[tokio::test]
    async fn a_pong_unread_in_the_socket_holds_the_close_until_it_is_read() {
        use tokio::io::AsyncWriteExt;
        let (interval, timeout) = (Duration::from_millis(50), Duration::from_millis(300));
        let (beats, conn, mut server, mut client) = wired(interval, timeout).await;
        let mut beat = beats.beat_for(&conn);
        tokio::time::sleep(interval).await;
        let Next::Early(early) = beats.beat(&conn, &mut beat) else {
            panic!("a ping is followed by an early check");
        };
        read_ping(&mut client).await;
        tokio::time::sleep_until(early).await;
        assert!(matches!(beats.beat(&conn, &mut beat), Next::Schedule));
        client.write_all(&PONG_FRAME).await.expect("pong");
        // Nobody reads the server's end: its task is starved.
        tokio::time::sleep_until(beat.heartbeat.deadline()).await;
        assert!(matches!(
            beats.beat(&conn, &mut beat),
            Next::Confirm(CONFIRM_AFTER)
        ));
        tokio::time::sleep(CONFIRM_AFTER).await;
        assert!(
            matches!(beats.beat(&conn, &mut beat), Next::Confirm(UNREAD_RECHECK)),
            "the pong waits unread: the close waits too"
        );
        assert!(!conn.is_closed());
        assert_eq!(beats.late.with_label_values(&["unread_bytes"]).get(), 1);
        tokio::time::sleep(UNREAD_RECHECK).await;
        // Still unread: waits again, counted once per ping.
        assert!(matches!(
            beats.beat(&conn, &mut beat),
            Next::Confirm(UNREAD_RECHECK)
        ));
        assert_eq!(beats.late.with_label_values(&["unread_bytes"]).get(), 1);
        // The session's task runs at last and reads the pong.
        let mut got = [0u8; PONG_FRAME.len()];
        server.read_exact(&mut got).await.expect("read the pong");
        assert!(conn.state.lock().pong_received().is_some());
        assert!(matches!(beats.beat(&conn, &mut beat), Next::Schedule));
        assert!(!conn.is_closed());
        assert_eq!(beats.late.with_label_values(&["unread_pong"]).get(), 1);
        assert!(beat.heartbeat.pings_next(), "on to the next ping");
    }

    /// Bytes that are never a pong hold the close for `ping_timeout` at
    /// most: a client that keeps sending without answering is still
    /// closed. A silent client on the same kind of socket is closed at its
    /// first confirmation, as before.
    #[tokio::test]
    async fn unread_bytes_without_a_pong_hold_the_close_for_the_timeout_at_most() {
        use tokio::io::AsyncWriteExt;
        let (interval, timeout) = (Duration::from_millis(50), Duration::from_millis(400));
        let (beats, chatty, _server, mut chatty_client) = wired(interval, timeout).await;
        let (silent_server, mut silent_client) = test_pair().await;
        let silent = conn();
        silent.allow_direct(&silent_server.wire().clone());
        let mut chatting = beats.beat_for(&chatty);
        let mut quiet = beats.beat_for(&silent);
        tokio::time::sleep(interval).await;
        let pinged = Instant::now();
        let (Next::Early(early), Next::Early(_)) = (
            beats.beat(&chatty, &mut chatting),
            beats.beat(&silent, &mut quiet),
        ) else {
            panic!("a ping is followed by an early check");
        };
        read_ping(&mut chatty_client).await;
        read_ping(&mut silent_client).await;
        tokio::time::sleep_until(early).await;
        assert!(matches!(beats.beat(&chatty, &mut chatting), Next::Schedule));
        assert!(matches!(beats.beat(&silent, &mut quiet), Next::Schedule));
        chatty_client.write_all(b"garbage").await.expect("write");
        tokio::time::sleep_until(chatting.heartbeat.deadline()).await;
        // Nothing unread: closed at the first confirmation, as before.
        assert!(matches!(beats.beat(&silent, &mut quiet), Next::Confirm(_)));
        tokio::time::sleep(CONFIRM_AFTER).await;
        assert!(matches!(beats.beat(&silent, &mut quiet), Next::Done));
        assert_eq!(silent.close_reason(), Some(CloseReason::PingTimeout));
        assert_eq!(beats.late.with_label_values(&["unread_bytes"]).get(), 0);
        let mut held = Duration::ZERO;
        let mut looks = 0;
        let closed_after = loop {
            match beats.beat(&chatty, &mut chatting) {
                Next::Confirm(after) => {
                    // The first is the confirmation; the others wait.
                    if looks > 0 {
                        held += after;
                    }
                    looks += 1;
                    assert!(looks < 20, "held without bound");
                    tokio::time::sleep(after).await;
                }
                Next::Done => break pinged.elapsed(),
                _ => panic!("no pong: the check fails or waits"),
            }
        };
        assert_eq!(chatty.close_reason(), Some(CloseReason::PingTimeout));
        assert_eq!(held, timeout, "held for the timeout in all");
        // 100 + 100 + 200 (the rest of 400): three looks that wait, the
        // confirmation before them and the close.
        assert_eq!(looks, 4, "{looks}");
        assert!(
            closed_after >= timeout * 2 && closed_after < timeout * 3,
            "closed {closed_after:?} after the ping"
        );
        assert_eq!(beats.late.with_label_values(&["unread_bytes"]).get(), 1);
    }

    /// Through the task, on a real socket: a session whose task is starved
    /// past its pong check, with the pong in the kernel's receive queue,
    /// is not closed; once the task reads the pong it is pinged again.
    #[tokio::test]
    async fn a_starved_reader_with_its_pong_queued_is_not_closed() {
        use tokio::io::AsyncWriteExt;
        let (interval, timeout) = (Duration::from_millis(100), Duration::from_millis(100));
        let (beats, conn, mut server, mut client) = wired(interval, timeout).await;
        beats.register(&conn);
        read_ping(&mut client).await;
        let pinged = Instant::now();
        client.write_all(&PONG_FRAME).await.expect("pong");
        // The reader is starved past the check and its confirmation
        // (the close came at `timeout` + 10 ms without the wait).
        tokio::time::sleep_until(pinged + timeout + Duration::from_millis(60)).await;
        assert!(!conn.is_closed(), "closed with its pong unread");
        let mut got = [0u8; PONG_FRAME.len()];
        server.read_exact(&mut got).await.expect("read the pong");
        assert_eq!(got, PONG_FRAME);
        assert!(conn.state.lock().pong_received().is_some());
        read_ping(&mut client).await;
        assert!(!conn.is_closed());
        assert_eq!(beats.late.with_label_values(&["unread_bytes"]).get(), 1);
        assert_eq!(beats.late.with_label_values(&["unread_pong"]).get(), 1);
    }

    /// Sessions that end leave the schedule, and the task ends with the
    /// last of them; a new session starts it again.
    #[tokio::test]
    async fn the_task_ends_with_the_last_session_and_restarts() {
        let (interval, timeout) = (Duration::from_millis(30), Duration::from_millis(30));
        let beats = heartbeats(interval, timeout);
        let first = conn();
        beats.register(&first);
        first.close(CloseReason::ServerClosed);
        tokio::time::sleep(interval * 3).await;
        assert!(!beats.inbox.lock().running, "the task ended");
        let second = conn();
        beats.register(&second);
        assert!(beats.inbox.lock().running);
        // Without a socket the ping is queued for the session's writer.
        tokio::time::sleep(interval + Duration::from_millis(15)).await;
        let frames = second.take_frames();
        assert!(
            matches!(frames.front(), Some(Frame::Text(t)) if t.as_str() == "2"),
            "the new session was pinged"
        );
    }

    /// After a stall of the thread (a long fan-out) the pings that fell due
    /// meanwhile do not all go out in one pass: past a burst of
    /// [`LATE_CHECK`]'s worth they are paced at the catch-up rate, each
    /// counted as `ping_paced`, and the engine sees the task behind until
    /// the last of them is out. None is held back longer than the pace
    /// needs.
    #[tokio::test]
    async fn overdue_pings_after_a_stall_are_paced() {
        let (interval, timeout) = (Duration::from_secs(1), Duration::from_secs(5));
        let beats = heartbeats(interval, timeout);
        let conns: Vec<_> = (0..300).map(|_| conn()).collect();
        for c in &conns {
            beats.register(c);
        }
        // Let the task take the registrations, then hold the thread past
        // every first ping's deadline, as a long fan-out does.
        tokio::task::yield_now().await;
        std::thread::sleep(interval + Duration::from_millis(500));
        let resumed = Instant::now();
        let mut sent_at = vec![None; conns.len()];
        let mut behind_seen = Duration::ZERO;
        while sent_at.iter().any(Option::is_none) && resumed.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(2)).await;
            behind_seen = behind_seen.max(beats.behind());
            for (c, at) in conns.iter().zip(sent_at.iter_mut()) {
                if at.is_none() && !c.take_frames().is_empty() {
                    *at = Some(resumed.elapsed());
                }
            }
        }
        let times: Vec<Duration> = sent_at
            .iter()
            .map(|t| t.expect("every session pinged"))
            .collect();
        let first = times.iter().min().copied().unwrap_or_default();
        let last = times.iter().max().copied().unwrap_or_default();
        // 300 sessions at 1 s: the pace is 1,000/s (its floor), with a
        // burst of 100 ms' worth: ~100 at once, the other ~200 over ~200 ms.
        let at_once = times
            .iter()
            .filter(|t| **t <= first + Duration::from_millis(20))
            .count();
        assert!(
            (80..=150).contains(&at_once),
            "{at_once} pings in the first burst"
        );
        assert!(
            last >= first + Duration::from_millis(150) && last < Duration::from_millis(600),
            "pings from {first:?} to {last:?} after the stall"
        );
        let paced = beats.late.with_label_values(&["ping_paced"]).get();
        assert!((150..=220).contains(&paced), "{paced} pings paced");
        assert!(
            behind_seen >= Duration::from_millis(100),
            "behind {behind_seen:?}"
        );
        assert!(beats.behind() < Duration::from_millis(50), "caught up");
    }

    /// A session registered while the task sleeps toward a later deadline
    /// still gets its first ping on time.
    #[tokio::test]
    async fn a_new_session_wakes_a_task_sleeping_toward_a_later_deadline() {
        let (interval, timeout) = (Duration::from_millis(40), Duration::from_millis(400));
        let beats = heartbeats(interval, timeout);
        let early = conn();
        beats.register(&early);
        // `early` is pinged and the task now sleeps until its pong check,
        // 400 ms later.
        tokio::time::sleep(interval + Duration::from_millis(10)).await;
        assert_eq!(early.take_frames().len(), 1);
        let late = conn();
        let registered = Instant::now();
        beats.register(&late);
        tokio::time::sleep(interval + Duration::from_millis(20)).await;
        assert_eq!(late.take_frames().len(), 1, "pinged one interval after");
        assert!(registered.elapsed() < timeout);
    }
}
