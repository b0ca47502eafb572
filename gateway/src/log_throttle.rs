//! Log lines whose rate an attacker controls (a refused request, a junk
//! sid) go through a [`LogThrottle`], so a flood cannot flood the logs too:
//! the first line in each period is written, the rest are counted and the
//! count is reported with the next line written. Metrics still count every
//! event.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Lets one log line through per `period`; see the module documentation.
#[derive(Debug)]
pub struct LogThrottle {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// One line per `period`.
    pub const fn new(period: Duration) -> LogThrottle {
        LogThrottle {
            period,
            state: parking_lot::const_mutex((None, 0)),
        }
    }

    /// `Some(suppressed)` when a line may be written now, with the number of
    /// lines held back since the last one; `None` to skip this one.
    pub fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock();
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.period => {
                state.1 += 1;
                None
            }
            _ => {
                let suppressed = std::mem::take(&mut state.1);
                state.0 = Some(now);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_and_the_rest_counted() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow(), None);
        }
        let throttle = LogThrottle::new(Duration::ZERO);
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), Some(0));
    }
}
