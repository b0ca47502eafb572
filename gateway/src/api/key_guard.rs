//! API-key checks that leak nothing and cannot be brute-forced at speed.
//!
//! Keys are compared as SHA-256 digests with `subtle`'s constant-time
//! equality, against every configured key: the time taken depends neither
//! on how much of a key matched nor on the key's length. Failed attempts
//! are counted per client address in a fixed window; past the allowance
//! the address is refused with 429 and `Retry-After` before its key is even
//! looked at.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured API keys, kept as digests.
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a String>) -> Self {
        ApiKeys {
            digests: keys.into_iter().map(|k| digest(k.as_bytes())).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the keys; every key is compared.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let presented = digest(presented);
        let mut ok = subtle::Choice::from(0);
        for key in &self.digests {
            ok |= key.ct_eq(&presented);
        }
        ok.into()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Failed attempts one address may make per window.
pub const MAX_FAILURES: u32 = 10;
/// The window failed attempts are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; beyond it expired windows are dropped first,
/// so a spray from many addresses cannot grow memory without bound.
const MAX_TRACKED: usize = 10_000;

/// Counts failed API-key attempts per client address.
pub struct FailedKeyLimiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Default for FailedKeyLimiter {
    fn default() -> Self {
        FailedKeyLimiter {
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl FailedKeyLimiter {
    /// `Err(retry_after)` when `ip` used up its failed attempts.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let failures = self.failures.lock();
        match failures.get(&ip) {
            Some((start, count)) if *count >= MAX_FAILURES && now < *start + WINDOW => {
                Err(*start + WINDOW - now)
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed attempt from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock();
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&ip) {
            failures.retain(|_, (start, _)| now < *start + WINDOW);
            if failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = failures.entry(ip).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_only_exactly() {
        let keys = ApiKeys::new(&[
            "key-one-0123456789".to_string(),
            "key-two-0123456789".to_string(),
        ]);
        assert!(keys.accepts(b"key-one-0123456789"));
        assert!(keys.accepts(b"key-two-0123456789"));
        assert!(!keys.accepts(b"key-one-012345678"));
        assert!(!keys.accepts(b"key-one-0123456789x"));
        assert!(!keys.accepts(b""));
        assert!(ApiKeys::new(&[]).is_empty());
    }

    #[test]
    fn an_address_is_refused_after_its_failures() {
        let limiter = FailedKeyLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(limiter.check(ip).is_ok());
            limiter.record_failure(ip);
        }
        let retry = limiter.check(ip).unwrap_err();
        assert!(retry <= WINDOW && retry > Duration::ZERO);
        assert!(limiter.check(other).is_ok());
    }
}
