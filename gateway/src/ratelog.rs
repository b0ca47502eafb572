//! Rate-limited logging for rejections whose rate an attacker controls.
//!
//! A refused Origin, a connection over the cap or a wrong API key must leave
//! a trace for the operator, but one log line per request would let a
//! client fill the disk (and the log pipeline) at its own rate. Each call
//! site owns one [`LogLimiter`]: the first event in every window is logged
//! with the number of events suppressed since the previous line; metrics
//! still count every single event.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use parking_lot::Mutex;

/// How often a rate-limited call site may log by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);

/// Lets one log line through per `every`; counts the others.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogLimiter {
    /// A limiter allowing one line per `every`; usable in a `static`.
    pub const fn new(every: Duration) -> Self {
        LogLimiter {
            every,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when this event may be logged, with the number of
    /// events swallowed since the last line; `None` when it must not be.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock();
        match *last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_with_the_suppressed_count() {
        let limiter = LogLimiter::new(Duration::from_millis(200));
        assert_eq!(limiter.allow(), Some(0));
        for _ in 0..50 {
            assert_eq!(limiter.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limiter.allow(), Some(50));
        assert_eq!(limiter.allow(), None);
    }
}
