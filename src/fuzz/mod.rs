//! A fuzz loop on the stable toolchain, compiled into the unit tests only.
//!
//! Each target (`targets.rs`) is a function from bytes to nothing that must
//! neither panic nor take long on any input; it may also assert properties
//! (a round trip gives back its input, an encoding is idempotent). The loop
//! here feeds it inputs made by a small deterministic mutation engine of our
//! own: a seeded xorshift generator, a seed corpus and a token dictionary per
//! target, and stacked byte flips, inserts, deletes, repeats, dictionary
//! tokens and splices. It has no coverage feedback; it keeps a ring of recent
//! inputs so that mutations stack over several generations.
//!
//! It catches panics (`catch_unwind`: test builds unwind, unlike the release
//! binary) and flags any execution slower than [`HANG_BOUND`] as a hang; a
//! runaway input that never returns is caught by a watchdog that prints it
//! and aborts the test process. Every failure prints the input in hex.
//!
//! Why a `#[cfg(test)]` module rather than a `fuzz` feature and a hidden
//! subcommand: hearth is a binary crate, and only code inside it can call its
//! private parsers; under `cfg(test)` the loop reaches every one of them,
//! ships in no binary, and `cargo test` runs the short pass (CI) with no
//! extra command. The long pass is the same tests with more executions:
//!
//! ```text
//! HEARTH_FUZZ_EXECS=10000000 cargo test --profile fuzz --bin hearth fuzz -- --nocapture
//! ```
//!
//! `HEARTH_FUZZ_SECONDS` bounds each target's run in time, `HEARTH_FUZZ_SEED`
//! changes the generator's seed (the default makes every run the same).

mod targets;

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

/// One execution slower than this is a hang: the node runs every request on
/// one thread, and nothing input can reach may hold it for long. Debug builds
/// run the same code ~10-30x slower, hence their wider bound.
const HANG_BOUND: Duration =
    if cfg!(debug_assertions) { Duration::from_millis(250) } else { Duration::from_millis(50) };

/// A slow execution is run this many more times, and only a hang if every run
/// is slow: a loaded machine may pause the thread once, not three times.
const HANG_CONFIRMATIONS: usize = 2;

/// An execution that has not returned after this long will never be reported
/// by the loop itself: the watchdog prints its input and aborts the process.
const STALL_LIMIT: Duration = Duration::from_secs(20);

/// A target stops after this many failures (each printed in full): past a
/// few, the same bug is found again, and hangs make every further one slow.
const MAX_FAILURES: u64 = 5;

/// Recent inputs kept for further mutation (stacked generations).
const RING_SIZE: usize = 64;

/// The most mutations stacked on one input.
const MAX_STACKED_MUTATIONS: u32 = 8;

/// The stack of the thread running a target: the size of the main thread's
/// stack on Linux, where the node's event loop runs.
const TARGET_STACK_BYTES: usize = 8 << 20;

/// Thread names of fuzz runs start with this, so the panic hook keeps quiet for them.
const THREAD_PREFIX: &str = "fuzz ";

/// The seed of the generator unless `HEARTH_FUZZ_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x4845_4152_5448_0008;

/// A fuzz target: what to feed and what to call.
pub struct Target {
    pub name: &'static str,
    /// Valid (and nearly valid) inputs to start from.
    pub seeds: &'static [&'static [u8]],
    /// Tokens of the input language, inserted whole by the mutator.
    pub dictionary: &'static [&'static [u8]],
    /// Inputs are cut to this length.
    pub max_len: usize,
    /// Executions in the short pass `cargo test` runs (debug build, a fraction of a second).
    pub short_execs: u64,
    /// Must not panic or take long; may assert properties.
    pub run: fn(&[u8]),
}

/// What one run of a target did.
#[derive(Debug)]
pub struct Report {
    pub execs: u64,
    pub panics: u64,
    pub hangs: u64,
    pub elapsed: Duration,
}

/// xorshift64*: small, fast and the same on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() { None } else { items.get(self.below(items.len())) }
    }
}

/// Bytes that often sit on a parser's edges.
const INTERESTING_BYTES: &[u8] =
    b"\0\x01\x7f\x80\xff\xc3\xa9\xe2\x80\xa8\t\n\r \"\\/:,;=[]{}()<>@!#$*?.-_+%'0189aZ";

/// Changes `input` by one to [`MAX_STACKED_MUTATIONS`] stacked mutations.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, target: &Target, corpus: &[Vec<u8>]) {
    // 1, 2, 4 or 8 rounds: mostly small steps, sometimes a leap.
    let rounds = 1u32 << rng.below(MAX_STACKED_MUTATIONS.ilog2() as usize + 1);
    for _ in 0..rounds {
        let len = input.len();
        match rng.below(11) {
            // Flip one bit.
            0 if 0 < len => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            // Overwrite a byte with an interesting one.
            1 if 0 < len => {
                let at = rng.below(len);
                input[at] = *rng.pick(INTERESTING_BYTES).unwrap_or(&0);
            }
            // Insert a few random or interesting bytes.
            2 => {
                let at = rng.below(len + 1);
                for _ in 0..1 + rng.below(4) {
                    let byte = if rng.chance(2) {
                        rng.next() as u8
                    } else {
                        *rng.pick(INTERESTING_BYTES).unwrap_or(&0)
                    };
                    input.insert(at, byte);
                }
            }
            // Delete a range.
            3 if 0 < len => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16.min(len - start))).min(len);
                input.drain(start..end);
            }
            // Copy a range elsewhere.
            4 if 0 < len => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(32.min(len - start))).min(len);
                let piece = input[start..end].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, piece);
            }
            // Insert a dictionary token.
            5 | 6 => {
                if let Some(token) = rng.pick(target.dictionary) {
                    let at = rng.below(len + 1);
                    input.splice(at..at, token.iter().copied());
                }
            }
            // Overwrite with a dictionary token.
            7 if 0 < len => {
                if let Some(token) = rng.pick(target.dictionary) {
                    let at = rng.below(len);
                    let end = (at + token.len()).min(len);
                    input.splice(at..end, token.iter().copied());
                }
            }
            // Repeat a token or a byte many times (long runs, deep nesting).
            8 => {
                let piece: Vec<u8> = match rng.pick(target.dictionary) {
                    Some(token) if rng.chance(2) => token.to_vec(),
                    _ => vec![*rng.pick(INTERESTING_BYTES).unwrap_or(&b'*')],
                };
                let scale = rng.below(10);
                let times = 1 + rng.below(1 << scale);
                let at = rng.below(len + 1);
                let run: Vec<u8> = piece.iter().copied().cycle().take(piece.len() * times).collect();
                input.splice(at..at, run);
            }
            // Splice: this input's head, another one's tail.
            9 => {
                if let Some(other) = rng.pick(corpus) {
                    let keep = rng.below(len + 1);
                    let from = rng.below(other.len() + 1);
                    input.truncate(keep);
                    input.extend_from_slice(&other[from..]);
                }
            }
            // Truncate.
            _ if 0 < len => input.truncate(rng.below(len)),
            _ => input.push(rng.next() as u8),
        }
        input.truncate(target.max_len);
    }
}

/// What the watchdog can see of the loop.
struct Progress {
    execs: AtomicU64,
    current: Mutex<Vec<u8>>,
}

thread_local! {
    /// The message of the last panic on this thread, kept by the panic hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Keeps panics on fuzz threads out of the test output (the loop reports
/// them itself); every other thread keeps the previous hook.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let on_fuzz_thread = thread::current().name().is_some_and(|name| name.starts_with(THREAD_PREFIX));
            if on_fuzz_thread {
                LAST_PANIC.with(|slot| *slot.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|value| value.trim().replace('_', "").parse().ok())
}

/// `input` as hex, 32 bytes a line, with a printable rendering beside it.
fn hex_dump(input: &[u8]) -> String {
    let mut out = String::new();
    for line in input.chunks(32) {
        let hex: String = line.iter().map(|byte| format!("{byte:02x}")).collect();
        let text: String =
            line.iter().map(|&byte| if (0x20..0x7f).contains(&byte) { byte as char } else { '.' }).collect();
        out.push_str(&format!("    {hex:<64}  {text}\n"));
    }
    out
}

/// Runs `target` once on `input`: `Err` with the panic message if it panicked.
fn execute(target: &Target, input: &[u8]) -> (Result<(), String>, Duration) {
    let started = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let elapsed = started.elapsed();
    let outcome = outcome.map_err(|_| {
        LAST_PANIC.with(|slot| slot.borrow_mut().take()).unwrap_or_else(|| "panic without a message".into())
    });
    (outcome, elapsed)
}

/// How long one run of a target goes on.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Executions to run.
    pub execs: u64,
    /// Stops the run early once it has run this long.
    pub time_limit: Option<Duration>,
    /// The generator's seed (mixed with the target's name).
    pub seed: u64,
}

impl Settings {
    /// The short pass's executions, or what `HEARTH_FUZZ_EXECS`,
    /// `HEARTH_FUZZ_SECONDS` and `HEARTH_FUZZ_SEED` say.
    pub fn from_env(target: &Target) -> Settings {
        Settings {
            execs: env_number("HEARTH_FUZZ_EXECS").unwrap_or(target.short_execs),
            time_limit: env_number("HEARTH_FUZZ_SECONDS").map(Duration::from_secs),
            seed: env_number("HEARTH_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
        }
    }
}

/// Fuzzes `target` on a thread of its own and prints a one-line summary.
pub fn fuzz(target: &'static Target, settings: Settings) -> Report {
    install_panic_hook();
    let Settings { execs, time_limit, seed } = settings;
    let progress = Arc::new(Progress { execs: AtomicU64::new(0), current: Mutex::new(Vec::new()) });
    let (done, finished) = mpsc::channel::<()>();
    let watched = Arc::clone(&progress);
    let watchdog = thread::spawn(move || watch(target.name, &watched, &finished));
    let report = thread::Builder::new()
        .name(format!("{THREAD_PREFIX}{}", target.name))
        .stack_size(TARGET_STACK_BYTES)
        .spawn(move || run_loop(target, execs, time_limit, seed, &progress))
        .and_then(|handle| handle.join().map_err(|_| std::io::Error::other("the fuzz loop panicked")));
    let _ = done.send(());
    let _ = watchdog.join();
    let report = report.unwrap_or_else(|error| panic!("fuzz {}: {error}", target.name));
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "fuzz {:<16} {:>11} execs {:>9.0} execs/s  {} panics  {} hangs  ({seconds:.1} s)",
        target.name,
        report.execs,
        report.execs as f64 / seconds.max(1e-9),
        report.panics,
        report.hangs,
    );
    report
}

/// How often the watchdog looks at the loop's progress.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Aborts the process, printing the input, if one execution never returns.
///
/// It counts looks without progress rather than reading the clock, so that
/// a process stopped for a while (SIGSTOP, a suspended laptop) is no stall.
fn watch(name: &str, progress: &Progress, finished: &mpsc::Receiver<()>) {
    let stalled_looks = (STALL_LIMIT.as_millis() / WATCH_INTERVAL.as_millis()) as u32;
    let mut last = u64::MAX;
    let mut unchanged = 0;
    while finished.recv_timeout(WATCH_INTERVAL) == Err(mpsc::RecvTimeoutError::Timeout) {
        let now = progress.execs.load(Ordering::Relaxed);
        if now != last {
            last = now;
            unchanged = 0;
            continue;
        }
        unchanged += 1;
        if stalled_looks <= unchanged {
            let input = progress.current.lock().map(|input| input.clone()).unwrap_or_default();
            eprintln!(
                "fuzz {name}: HANG: one execution has run for over {STALL_LIMIT:?}; aborting. Input ({} bytes):\n{}",
                input.len(),
                hex_dump(&input)
            );
            std::process::abort();
        }
    }
}

fn run_loop(
    target: &Target,
    execs: u64,
    time_limit: Option<Duration>,
    seed: u64,
    progress: &Progress,
) -> Report {
    let mut rng =
        Rng::new(seed ^ target.name.bytes().fold(0u64, |hash, byte| hash.rotate_left(5) ^ byte as u64));
    let seeds: Vec<Vec<u8>> = target.seeds.iter().map(|seed| seed.to_vec()).collect();
    let mut ring: Vec<Vec<u8>> = Vec::with_capacity(RING_SIZE);
    let mut report = Report { execs: 0, panics: 0, hangs: 0, elapsed: Duration::ZERO };
    let started = Instant::now();
    let mut input = Vec::new();
    while report.execs < execs {
        if report.execs % 1024 == 0 && time_limit.is_some_and(|limit| limit < started.elapsed()) {
            break;
        }
        // The seeds as they are first, then mutants of seeds or of recent inputs.
        input.clear();
        match seeds.get(report.execs as usize) {
            Some(seed) => input.extend_from_slice(seed),
            None => {
                let parent =
                    if !ring.is_empty() && rng.chance(2) { rng.pick(&ring) } else { rng.pick(&seeds) };
                input.extend_from_slice(parent.map_or(&[][..], Vec::as_slice));
                mutate(&mut rng, &mut input, target, &seeds);
            }
        }
        if let Ok(mut current) = progress.current.lock() {
            current.clear();
            current.extend_from_slice(&input);
        }
        let (mut outcome, mut elapsed) = execute(target, &input);
        // Far past the bound is no scheduler hiccup: no need to confirm.
        if outcome.is_ok() && HANG_BOUND < elapsed && elapsed < HANG_BOUND * 10 {
            for _ in 0..HANG_CONFIRMATIONS {
                let (again, again_elapsed) = execute(target, &input);
                outcome = again;
                elapsed = elapsed.min(again_elapsed);
            }
        }
        let failure = match outcome {
            Err(message) => {
                report.panics += 1;
                Some(format!("PANIC: {message}"))
            }
            Ok(()) if HANG_BOUND < elapsed => {
                report.hangs += 1;
                Some(format!("HANG: {elapsed:?} (bound {HANG_BOUND:?})"))
            }
            Ok(()) => None,
        };
        if let Some(failure) = failure {
            eprintln!(
                "fuzz {}: {failure}\n  input ({} bytes, exec {}):\n{}",
                target.name,
                input.len(),
                report.execs,
                hex_dump(&input)
            );
            if MAX_FAILURES <= report.panics + report.hangs {
                eprintln!("fuzz {}: stopped after {MAX_FAILURES} failures", target.name);
                report.execs += 1;
                break;
            }
        } else if ring.len() < RING_SIZE {
            ring.push(input.clone());
        } else {
            let slot = rng.below(RING_SIZE);
            ring[slot].clone_from(&input);
        }
        report.execs += 1;
        progress.execs.store(report.execs, Ordering::Relaxed);
    }
    report.elapsed = started.elapsed();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process that runs one target.
    const CHILD_ENV: &str = "HEARTH_FUZZ_CHILD";

    /// Fuzzes one target and fails on any panic or hang.
    ///
    /// The target runs in a child process (this test binary again, running
    /// only this test), so that an input the loop cannot survive (a runaway
    /// execution the watchdog aborts, a stack overflow) fails this test
    /// alone rather than every unit test of the binary.
    fn check(target: &'static Target) {
        if std::env::var_os(CHILD_ENV).is_some() {
            let report = fuzz(target, Settings::from_env(target));
            assert!(
                report.panics == 0 && report.hangs == 0,
                "fuzz {}: {} panics and {} hangs (inputs printed above)",
                target.name,
                report.panics,
                report.hangs
            );
            return;
        }
        let test = format!("fuzz::tests::{}", target.name);
        let output = std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .output()
            .expect("the test binary runs");
        // Through the harness's capture: shown with --nocapture or on failure.
        print!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        assert!(
            output.status.success(),
            "fuzz {}: the fuzz run failed ({}); its output is above. A run killed by a signal \
             with no input printed is most likely a stack overflow: the run is deterministic, \
             rerun it with the same HEARTH_FUZZ_* variables to reproduce",
            target.name,
            output.status
        );
    }

    #[test]
    fn mutations_are_deterministic_and_bounded() {
        let target = &targets::CANONICAL_JSON;
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let corpus: Vec<Vec<u8>> = target.seeds.iter().map(|seed| seed.to_vec()).collect();
            let mut input = corpus[0].clone();
            for _ in 0..1000 {
                mutate(&mut rng, &mut input, target, &corpus);
                assert!(input.len() <= target.max_len);
            }
            input
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn the_loop_reports_panics_and_hangs() {
        fn panics_on_bang(input: &[u8]) {
            assert!(!input.contains(&b'!'), "found a bang");
        }
        fn sleeps_on_z(input: &[u8]) {
            if input.first() == Some(&b'z') {
                thread::sleep(HANG_BOUND * 2);
            }
        }
        static PANICS: Target = Target {
            name: "self-test-panic",
            seeds: &[b"a", b"!"],
            dictionary: &[],
            max_len: 8,
            short_execs: 0,
            run: panics_on_bang,
        };
        static HANGS: Target = Target {
            name: "self-test-hang",
            seeds: &[b"a", b"z"],
            dictionary: &[],
            max_len: 8,
            short_execs: 0,
            run: sleeps_on_z,
        };
        let settings = |execs| Settings { execs, time_limit: None, seed: DEFAULT_SEED };
        assert!(1 <= fuzz(&PANICS, settings(10)).panics);
        assert_eq!(fuzz(&HANGS, settings(2)).hangs, 1);
    }

    #[test]
    fn canonical_json() {
        check(&targets::CANONICAL_JSON);
    }

    #[test]
    fn pdu() {
        check(&targets::PDU);
    }

    #[test]
    fn x_matrix() {
        check(&targets::X_MATRIX);
    }

    #[test]
    fn identifiers() {
        check(&targets::IDENTIFIERS);
    }

    #[test]
    fn filter_json() {
        check(&targets::FILTER_JSON);
    }

    #[test]
    fn sliding_sync_request() {
        check(&targets::SLIDING_SYNC_REQUEST);
    }

    #[test]
    fn filter_glob() {
        check(&targets::FILTER_GLOB);
    }

    #[test]
    fn server_acl_glob() {
        check(&targets::SERVER_ACL_GLOB);
    }

    #[test]
    fn http_head() {
        check(&targets::HTTP_HEAD);
    }

    #[test]
    fn push_rule_glob() {
        check(&targets::PUSH_RULE_GLOB);
    }

    #[test]
    fn url_preview() {
        check(&targets::URL_PREVIEW);
    }

    #[test]
    fn acme() {
        check(&targets::ACME);
    }
}
