//! Rate limits: a leaky bucket per key, in memory (they protect against
//! guessing, and a restart resetting them is harmless), and the login limits
//! built from them (Synapse's `rc_login`: per client address, per account,
//! per account's wrong passwords).
//!
//! Each limiter's memory is bounded: keys are kept as 16-byte digests (a
//! 1 MiB user name costs what `@a:b` does), at most [`MAX_TRACKED_KEYS`] of
//! them, and a bucket that has drained is the same as no bucket, so it is
//! dropped when room is needed. Made-up names therefore cannot grow the map,
//! nor push out the bucket of an account under attack: when every tracked
//! bucket still holds something, the emptiest one goes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::config::{self, RateLimit};
use crate::error::{Error, Result};
use crate::storage::now_ms;

/// At most this many keys are tracked per limiter (about 50 bytes each, so
/// under 1 MiB); when full, drained buckets go first, then the emptiest.
const MAX_TRACKED_KEYS: usize = 10_000;

/// A key as stored: the first half of its SHA-256 (collisions would need
/// 2^64 tries), so every entry has the same small size.
type Digest16 = [u8; 16];

fn digest(key: &str) -> Digest16 {
    let full = Sha256::digest(key.as_bytes());
    let mut short = [0u8; 16];
    short.copy_from_slice(&full[..16]);
    short
}

/// How full one key's bucket was at `updated_ms`.
#[derive(Clone, Copy)]
struct Bucket {
    level: f64,
    updated_ms: i64,
}

impl Bucket {
    /// The level at `now_ms`, after draining (a clock going back drains nothing).
    fn level_at(&self, per_ms: f64, now_ms: i64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.updated_ms).max(0) as f64;
        (self.level - elapsed * per_ms).max(0.0)
    }
}

/// A leaky bucket per key: `burst_count` attempts at once, draining at
/// `per_second`.
pub struct Limiter {
    per_ms: f64,
    burst: f64,
    buckets: RefCell<HashMap<Digest16, Bucket>>,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter {
            per_ms: limit.per_second / 1000.0,
            burst: f64::from(limit.burst_count.max(1)),
            buckets: RefCell::new(HashMap::new()),
        }
    }

    /// `M_LIMIT_EXCEEDED`, with when to retry, if one more attempt for `key`
    /// would overflow its bucket. Counts nothing.
    pub fn check(&self, key: &str) -> Result<()> {
        self.check_at(&digest(key), now_ms())
    }

    /// Checks, then counts one attempt for `key`.
    pub fn take(&self, key: &str) -> Result<()> {
        let key = digest(key);
        let now = now_ms();
        self.check_at(&key, now)?;
        let level = self.level_at(&key, now);
        self.store(key, Bucket { level: level + 1.0, updated_ms: now });
        Ok(())
    }

    /// Gives back one attempt counted for `key` (it turned out not to count here).
    pub fn refund(&self, key: &str) {
        let key = digest(key);
        let now = now_ms();
        let mut buckets = self.buckets.borrow_mut();
        if let Some(bucket) = buckets.get_mut(&key) {
            *bucket = Bucket { level: (bucket.level_at(self.per_ms, now) - 1.0).max(0.0), updated_ms: now };
        }
    }

    fn level_at(&self, key: &Digest16, now: i64) -> f64 {
        self.buckets.borrow().get(key).map_or(0.0, |bucket| bucket.level_at(self.per_ms, now))
    }

    fn check_at(&self, key: &Digest16, now: i64) -> Result<()> {
        let level = self.level_at(key, now);
        if level + 1.0 <= self.burst {
            return Ok(());
        }
        // Until the bucket has drained enough to hold one more.
        let wait_ms = ((level + 1.0 - self.burst) / self.per_ms).ceil();
        Err(Error::LimitExceeded { retry_after_ms: (wait_ms as u64).max(1) })
    }

    fn store(&self, key: Digest16, bucket: Bucket) {
        let mut buckets = self.buckets.borrow_mut();
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(&key) {
            let now = bucket.updated_ms;
            buckets.retain(|_, old| old.level_at(self.per_ms, now) > 0.0);
            if buckets.len() >= MAX_TRACKED_KEYS {
                let emptiest = buckets
                    .iter()
                    .min_by(|a, b| a.1.level_at(self.per_ms, now).total_cmp(&b.1.level_at(self.per_ms, now)))
                    .map(|(key, _)| *key);
                if let Some(emptiest) = emptiest {
                    buckets.remove(&emptiest);
                }
            }
        }
        buckets.insert(key, bucket);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.borrow().len()
    }
}

/// What a client address is limited as: IPv4 addresses (IPv4-mapped IPv6
/// ones too) one by one, IPv6 per /64, the block one host is usually given.
pub fn address_key(address: IpAddr) -> String {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", segments[0], segments[1], segments[2], segments[3])
        }
    }
}

/// The login limits. An attempt is counted against its address, and against
/// both of its account's buckets while it runs; once its password is
/// checked it stays counted only in the bucket it belongs to (logins or
/// wrong passwords), so concurrent guesses cannot slip past the limit.
pub struct LoginLimits {
    address: Limiter,
    account: Limiter,
    failed: Limiter,
}

impl LoginLimits {
    pub fn new(config: &config::LoginLimits) -> LoginLimits {
        LoginLimits {
            address: Limiter::new(config.address),
            account: Limiter::new(config.account),
            failed: Limiter::new(config.failed_attempts),
        }
    }

    /// Called before anything costly (the database, a password hash): counts
    /// an attempt from `address` naming `user_id`, or refuses it with
    /// `M_LIMIT_EXCEEDED`. An attempt refused for its account still counts
    /// against its address.
    pub fn begin(&self, address: IpAddr, user_id: &str) -> Result<()> {
        self.address.take(&address_key(address))?;
        self.account.check(user_id)?;
        self.failed.check(user_id)?;
        self.account.take(user_id)?;
        self.failed.take(user_id)
    }

    /// The password was right: the attempt was no wrong password.
    pub fn succeeded(&self, user_id: &str) {
        self.failed.refund(user_id);
    }

    /// The password was wrong (or the account does not exist): no login.
    pub fn failed(&self, user_id: &str) {
        self.account.refund(user_id);
    }

    /// The attempt was not made after all (the hashing queue was full).
    pub fn abandoned(&self, user_id: &str) {
        self.account.refund(user_id);
        self.failed.refund(user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst_count: u32) -> Limiter {
        Limiter::new(RateLimit { per_second, burst_count })
    }

    #[test]
    fn a_key_is_limited_after_its_burst_and_others_are_not() {
        let limiter = limiter(0.001, 2);
        assert!(limiter.take("a").is_ok());
        assert!(limiter.take("a").is_ok());
        let refused = limiter.take("a");
        assert!(
            matches!(refused, Err(Error::LimitExceeded { retry_after_ms }) if retry_after_ms > 900_000),
            "{refused:?}"
        );
        assert!(limiter.check("a").is_err());
        assert!(limiter.take("b").is_ok());
        // A refund makes room for one more.
        limiter.refund("a");
        assert!(limiter.take("a").is_ok());
        assert!(limiter.take("a").is_err());
    }

    #[test]
    fn buckets_drain_at_their_rate() {
        let limiter = limiter(1.0, 2);
        let key = digest("a");
        limiter.store(key, Bucket { level: 2.0, updated_ms: 0 });
        assert!(limiter.check_at(&key, 500).is_err());
        assert!(matches!(limiter.check_at(&key, 500), Err(Error::LimitExceeded { retry_after_ms: 500 })));
        assert!(limiter.check_at(&key, 1000).is_ok());
        // A clock that goes back drains nothing and overflows nothing.
        assert!(limiter.check_at(&key, -5_000).is_err());
    }

    #[test]
    fn the_map_is_bounded_and_keeps_the_fullest_buckets() {
        let limiter = limiter(0.001, 3);
        // The account under attack has two wrong guesses ...
        limiter.take("victim").unwrap();
        limiter.take("victim").unwrap();
        // ... then many more made-up names than the map holds, one guess each.
        for index in 0..MAX_TRACKED_KEYS + 100 {
            limiter.take(&format!("made-up-{index}")).unwrap();
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED_KEYS);
        // The victim's bucket survived: one more, then refused.
        limiter.take("victim").unwrap();
        assert!(limiter.take("victim").is_err());
        // A huge key costs what a small one does.
        limiter.take(&"x".repeat(1 << 20)).unwrap();
        assert_eq!(limiter.tracked(), MAX_TRACKED_KEYS);
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        let key = |text: &str| address_key(text.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    #[test]
    fn login_attempts_count_per_address_and_per_account() {
        let limits = LoginLimits::new(&config::LoginLimits {
            address: RateLimit { per_second: 0.001, burst_count: 4 },
            account: RateLimit { per_second: 0.001, burst_count: 2 },
            failed_attempts: RateLimit { per_second: 0.001, burst_count: 2 },
        });
        let here: IpAddr = "192.0.2.1".parse().unwrap();
        let there: IpAddr = "192.0.2.2".parse().unwrap();
        // Two wrong passwords for @a, then @a is refused from anywhere.
        for _ in 0..2 {
            limits.begin(here, "@a:x").unwrap();
            limits.failed("@a:x");
        }
        assert!(limits.begin(there, "@a:x").is_err());
        // Right passwords count as logins, not as failures.
        for _ in 0..2 {
            limits.begin(there, "@b:x").unwrap();
            limits.succeeded("@b:x");
        }
        assert!(limits.begin(there, "@b:x").is_err());
        // `here` made 2 attempts, `there` 4 (the refused ones count too).
        limits.begin(here, "@c:x").unwrap();
        limits.begin(here, "@d:x").unwrap();
        assert!(limits.begin(here, "@e:x").is_err());
        assert!(limits.begin(there, "@e:x").is_err());
    }
}
