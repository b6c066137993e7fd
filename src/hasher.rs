//! The password hashing thread: each hash (argon2id, ~12 MiB and tens of
//! milliseconds, see `credentials.rs`) runs here so the event loop keeps
//! answering meanwhile.
//!
//! One dedicated thread, fed through a bounded queue we own, rather than
//! `smol::unblock` (the `blocking` pool grows to 500 threads): one hash at a
//! time bounds the memory to one argon2 block, and a full queue answers
//! 429 `M_LIMIT_EXCEEDED` instead of growing. The loop awaits each answer.
//! This module knows nothing of Matrix or the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use smol::channel::{self, Sender, TrySendError};

use crate::credentials;
use crate::error::{Error, Result};

/// Hashes waiting for the thread at most; one more is refused with 429. At
/// ~50 ms a hash (a Pi 4 is slower) the last one waits a second or two;
/// each waiting job holds only a password (at most
/// [`credentials::MAX_PASSWORD_CHARS`] characters) and a stored hash.
pub const QUEUE_CAPACITY: usize = 32;

/// What `retry_after_ms` says when the queue is full and no hash has been
/// timed yet.
const DEFAULT_HASH_MS: u64 = 100;

enum Job {
    Hash { password: String, reply: Sender<Result<String>> },
    Verify { password: String, stored: Option<String>, reply: Sender<bool> },
}

/// The loop's handle on the hashing thread. Dropping it ends the thread once
/// the queue is empty.
pub struct Hasher {
    jobs: Sender<Job>,
    /// How long the last hash took, for `retry_after_ms`.
    last_hash_ms: Arc<AtomicU64>,
}

impl Hasher {
    /// Starts the thread. It hashes nothing until asked: the node starts
    /// without an argon2 block (12 MiB) in memory or its code paged in.
    pub fn start() -> Result<Hasher> {
        let (jobs, queue) = channel::bounded::<Job>(QUEUE_CAPACITY);
        let last_hash_ms = Arc::new(AtomicU64::new(0));
        let timings = last_hash_ms.clone();
        std::thread::Builder::new()
            .name("hearth-hash".into())
            .spawn(move || {
                while let Ok(job) = queue.recv_blocking() {
                    let started = Instant::now();
                    // A job whose client left (nobody awaits the answer) is skipped.
                    match job {
                        Job::Hash { password, reply } if !reply.is_closed() => {
                            let _ = reply.send_blocking(credentials::hash_password(&password));
                        }
                        Job::Verify { password, stored, reply } if !reply.is_closed() => {
                            let matches = match &stored {
                                Some(stored) => credentials::verify_password(&password, stored),
                                // No hash to check against: hashing the password
                                // costs what a check does (one argon2 pass with
                                // the same parameters), and cannot match.
                                None => {
                                    let _ = credentials::hash_password(&password);
                                    false
                                }
                            };
                            let _ = reply.send_blocking(matches);
                        }
                        Job::Hash { .. } | Job::Verify { .. } => continue,
                    }
                    let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    timings.store(elapsed.max(1), Ordering::Relaxed);
                }
            })
            .map_err(|error| Error::Internal(format!("cannot start the password hashing thread: {error}")))?;
        Ok(Hasher { jobs, last_hash_ms })
    }

    /// The PHC string of a new hash of `password`.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let (reply, answer) = channel::bounded(1);
        self.submit(Job::Hash { password: password.to_string(), reply })?;
        answer.recv().await.map_err(|_| Error::Internal("the password hashing thread stopped".into()))?
    }

    /// Whether `password` matches `stored`; with `None` (no such account, or
    /// one without a password) the password is hashed instead, which takes
    /// as long, and it does not match.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool> {
        let (reply, answer) = channel::bounded(1);
        self.submit(Job::Verify {
            password: password.to_string(),
            stored: stored.map(str::to_owned),
            reply,
        })?;
        answer.recv().await.map_err(|_| Error::Internal("the password hashing thread stopped".into()))
    }

    fn submit(&self, job: Job) -> Result<()> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                let per_hash = match self.last_hash_ms.load(Ordering::Relaxed) {
                    0 => DEFAULT_HASH_MS,
                    measured => measured,
                };
                Err(Error::LimitExceeded { retry_after_ms: per_hash.saturating_mul(QUEUE_CAPACITY as u64) })
            }
            Err(TrySendError::Closed(_)) => {
                Err(Error::Internal("the password hashing thread stopped".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_checks_off_the_calling_thread() {
        let hasher = Hasher::start().unwrap();
        smol::block_on(async {
            let hash = hasher.hash("correct horse").await.unwrap();
            assert!(hasher.verify("correct horse", Some(&hash)).await.unwrap());
            assert!(!hasher.verify("wrong", Some(&hash)).await.unwrap());
            assert!(!hasher.verify("correct horse", None).await.unwrap());
        });
    }

    #[test]
    fn a_full_queue_is_refused_not_grown() {
        let hasher = Hasher::start().unwrap();
        let mut waiting = Vec::new();
        let mut refused = 0;
        for _ in 0..QUEUE_CAPACITY + 10 {
            let (reply, answer) = channel::bounded(1);
            match hasher.submit(Job::Verify { password: "p".into(), stored: None, reply }) {
                Ok(()) => waiting.push(answer),
                Err(Error::LimitExceeded { retry_after_ms }) => {
                    assert!(retry_after_ms > 0);
                    refused += 1;
                }
                Err(other) => panic!("{other}"),
            }
        }
        // The thread may have taken one or two jobs meanwhile; the rest were refused.
        assert!(refused >= 8, "{refused} refused");
        assert!(waiting.len() <= QUEUE_CAPACITY + 2);
        // Nobody waits for these any more: the thread skips them, and the
        // queue takes work again.
        drop(waiting);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match smol::block_on(hasher.verify("p", None)) {
                Ok(matches) => break assert!(!matches),
                Err(Error::LimitExceeded { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(other) => panic!("{other}"),
            }
        }
    }
}
