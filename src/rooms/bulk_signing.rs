//! Signs a run of events on a second thread while the loop's thread goes on
//! building and storing them: a `createRoom` inviting thousands of users
//! makes thousands of member events, and their Ed25519 signatures were
//! nearly half of its CPU time on the one thread (5,000 invites: 0.46 s,
//! 0.42 s with this). A v3+ event's ID is its reference
//! hash, which leaves the signatures out, so each event is named, checked
//! and built upon before its signature comes back, and stored once it has.
//!
//! The thread lives for one run (a scope: it borrows the key and ends
//! before the run returns) and knows nothing but the key and the texts to
//! sign. Signatures come back in the order the texts went in. A run too
//! short to gain from a thread, or one whose thread cannot be started,
//! signs on the caller's thread: same signatures, same order.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, Sender};

use crate::protocol::signing::SigningKey;

/// Runs shorter than this sign on the caller's thread: starting a thread
/// (tens of microseconds) costs more than a few signatures do.
pub const MIN_EVENTS_FOR_A_THREAD: usize = 16;

/// Texts handed to a [`Signer`] and signatures not yet taken back.
pub struct Signer<'key> {
    key: &'key SigningKey,
    thread: Option<(Sender<String>, Receiver<String>)>,
    /// Texts the thread has and whose signatures were not taken back yet.
    on_the_thread: usize,
    /// Signatures made on the caller's thread, oldest first (all later
    /// than the thread's: the caller signs only once the thread is gone).
    signed_here: VecDeque<String>,
}

impl Signer<'_> {
    fn new(key: &SigningKey, thread: Option<(Sender<String>, Receiver<String>)>) -> Signer<'_> {
        Signer { key, thread, on_the_thread: 0, signed_here: VecDeque::new() }
    }

    /// Hands over one text to sign (the canonical JSON of a redacted event).
    pub fn submit(&mut self, text: String) {
        let text = match &self.thread {
            Some((texts, _)) => match texts.send(text) {
                Ok(()) => {
                    self.on_the_thread += 1;
                    return;
                }
                // The thread is gone (it never is before the run ends): sign here.
                Err(mpsc::SendError(text)) => text,
            },
            None => text,
        };
        self.signed_here.push_back(self.key.sign_bytes(text.as_bytes()));
    }

    /// The signature of the oldest text not yet answered, waiting for the
    /// thread if it is still signing it; `None` if nothing is outstanding.
    pub fn next_signature(&mut self) -> Option<String> {
        if self.on_the_thread > 0 {
            if let Some((_, signatures)) = &self.thread {
                self.on_the_thread -= 1;
                match signatures.recv() {
                    Ok(signature) => return Some(signature),
                    // Gone before signing it: what it still owed is signed nowhere.
                    Err(_) => {
                        self.thread = None;
                        self.on_the_thread = 0;
                        return None;
                    }
                }
            }
        }
        self.signed_here.pop_front()
    }
}

/// Runs `run` with a [`Signer`] for about `expected` events, on a thread of
/// its own when there are enough of them.
pub fn with_signer<T>(key: &SigningKey, expected: usize, run: impl FnOnce(&mut Signer<'_>) -> T) -> T {
    if expected < MIN_EVENTS_FOR_A_THREAD {
        return run(&mut Signer::new(key, None));
    }
    std::thread::scope(|scope| {
        let (texts, to_sign) = mpsc::channel::<String>();
        let (signed, signatures) = mpsc::channel::<String>();
        let started = std::thread::Builder::new().name("hearth-sign".into()).spawn_scoped(scope, move || {
            for text in to_sign {
                if signed.send(key.sign_bytes(text.as_bytes())).is_err() {
                    return;
                }
            }
        });
        let thread = match started {
            Ok(_) => Some((texts, signatures)),
            Err(error) => {
                log::warn!("cannot start a signing thread, signing on the event loop: {error}");
                None
            }
        };
        // The signer (and with it the sending half) is dropped when `run`
        // returns, which ends the thread before the scope waits for it.
        let mut signer = Signer::new(key, thread);
        run(&mut signer)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a thread or not, the signatures are the key's, in the order the
    /// texts were handed over, however far the caller runs ahead.
    #[test]
    fn signatures_come_back_in_order_on_a_thread_or_not() {
        let key = SigningKey::generate("1").unwrap();
        let texts: Vec<String> = (0..100).map(|index| format!("{{\"n\":{index}}}")).collect();
        let expected: Vec<String> = texts.iter().map(|text| key.sign_bytes(text.as_bytes())).collect();
        for count in [3, MIN_EVENTS_FOR_A_THREAD, 100] {
            let signed = with_signer(&key, count, |signer| {
                let mut signed = Vec::new();
                for (index, text) in texts.iter().take(count).enumerate() {
                    signer.submit(text.clone());
                    if index % 7 == 6 {
                        signed.push(signer.next_signature().unwrap());
                    }
                }
                while let Some(signature) = signer.next_signature() {
                    signed.push(signature);
                }
                signed
            });
            assert_eq!(signed, expected[..count], "{count} texts");
        }
    }

    /// A run that stops early (an error half-way) leaves nothing behind:
    /// the thread ends with the run.
    #[test]
    fn a_run_that_stops_early_ends_its_thread() {
        let key = SigningKey::generate("1").unwrap();
        let outcome: Result<(), &str> = with_signer(&key, 50, |signer| {
            for index in 0..50 {
                signer.submit(format!("{index}"));
            }
            Err("stopped")
        });
        assert_eq!(outcome, Err("stopped"));
    }
}
