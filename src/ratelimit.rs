//! Rate limits: sliding counts of recent failures per key, in memory (they
//! protect against guessing, and a restart resetting them is harmless).

use std::cell::RefCell;
use std::collections::HashMap;

use crate::error::Error;
use crate::storage::now_ms;

/// At most this many keys are tracked; the oldest are forgotten first.
const MAX_TRACKED_KEYS: usize = 10_000;

/// Allows `max` events per `window_ms` for each key.
pub struct Limiter {
    max: usize,
    window_ms: i64,
    recent: RefCell<HashMap<String, Vec<i64>>>,
}

impl Limiter {
    pub fn new(max: usize, window_ms: i64) -> Limiter {
        Limiter { max, window_ms, recent: RefCell::new(HashMap::new()) }
    }

    /// `M_LIMIT_EXCEEDED` if `key` used up its allowance, with when to retry.
    pub fn check(&self, key: &str) -> Result<(), Error> {
        let now = now_ms();
        let mut recent = self.recent.borrow_mut();
        let Some(times) = recent.get_mut(key) else { return Ok(()) };
        times.retain(|time| now - *time < self.window_ms);
        if times.len() < self.max {
            return Ok(());
        }
        let oldest = times.iter().min().copied().unwrap_or(now);
        Err(Error::LimitExceeded { retry_after_ms: (oldest + self.window_ms - now).max(1) as u64 })
    }

    /// Counts one event for `key`.
    pub fn record(&self, key: &str) {
        let now = now_ms();
        let mut recent = self.recent.borrow_mut();
        if recent.len() >= MAX_TRACKED_KEYS && !recent.contains_key(key) {
            recent.retain(|_, times| times.iter().any(|time| now - *time < self.window_ms));
            if recent.len() >= MAX_TRACKED_KEYS {
                return;
            }
        }
        recent.entry(key.to_string()).or_default().push(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_limited_after_its_allowance() {
        let limiter = Limiter::new(2, 60_000);
        limiter.record("a");
        assert!(limiter.check("a").is_ok());
        limiter.record("a");
        assert!(
            matches!(limiter.check("a"), Err(Error::LimitExceeded { retry_after_ms }) if retry_after_ms > 0)
        );
        assert!(limiter.check("b").is_ok());
    }
}
