//! A connection-load benchmark against the real release binary: starts
//! `hearth` on loopback with a fresh data dir, then holds one load at a time
//!
//! 1. [`IDLE_CONNECTIONS`] connections that send nothing,
//! 2. [`SLOW_CONNECTIONS`] connections sending a request head, or a request
//!    body, one byte at a time every [`SLOW_BYTE_INTERVAL`],
//! 3. [`LONG_POLLS`] `/sync` long-polls of [`LONG_POLL_USERS`] users, parked
//!    on the server,
//! 4. all three at once,
//!
//! and while each is held times [`PROBES`] `/versions` requests on a
//! connection of their own and reads the node's resident memory (VmRSS,
//! VmHWM), printing each figure beside the target of the hostile-input
//! issue (p99 at most 5 ms, RSS at most 64 MiB). It also checks how many
//! connections of each load the node still holds at the end. It measures and
//! prints; it asserts nothing. Every load loop is bounded in count and time,
//! uses loopback only and ends by itself.
//!
//! Run it with:
//!
//! ```text
//! cargo bench --bench connections
//! ```
//!
//! `HEARTH_BENCH_BIN=/path/to/hearth` measures another build, as for the
//! rooms bench. The bench raises its own soft open-file limit (the node
//! inherits it) and prints the node's limit beside what the loads need.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{Client, Server, announce, ms, percentile, row_with_target as row};

mod support;

/// Connections opened and left silent.
const IDLE_CONNECTIONS: usize = 1_000;
/// `/sync` long-polls parked on the server.
const LONG_POLLS: usize = 1_000;
/// Users the long-polls are spread over.
const LONG_POLL_USERS: usize = 10;
/// Connections that send a byte at a time.
const SLOW_CONNECTIONS: usize = 200;
/// The pause between two bytes on one slow connection.
const SLOW_BYTE_INTERVAL: Duration = Duration::from_millis(100);
/// A slow body's declared length (never reached while the load is held).
const SLOW_BODY_BYTES: usize = 100_000;
/// `/versions` requests timed under each load.
const PROBES: usize = 400;
/// Untimed `/versions` requests before the timed ones (connection set-up).
const WARM_UP: usize = 10;
/// The long-polls' `timeout`: longer than any phase, so none returns while held.
const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most one phase may take; the slow writer stops by then in any case.
const PHASE_DEADLINE: Duration = Duration::from_secs(60);
/// How long the node gets to accept (or park) a load before it is measured.
const SETTLE: Duration = Duration::from_millis(500);
/// Timeout of connecting and of the probes' requests.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors the bench and the node need beyond the loads' connections
/// (probes, SQLite, listeners, the log pipe, margin).
const SPARE_DESCRIPTORS: u64 = 100;
/// The issue's targets.
const P99_TARGET_MS: f64 = 5.0;
const RSS_TARGET_KIB: u64 = 64 * 1024;

fn main() {
    let binary = announce("connections");
    let needed = (IDLE_CONNECTIONS + LONG_POLLS + SLOW_CONNECTIONS) as u64 + SPARE_DESCRIPTORS;
    let own_limit = raise_open_file_limit(needed);
    let server = Server::start(&binary);
    let address: SocketAddr =
        server.http.trim_start_matches("http://").parse().expect("the plain listener's address");
    let node_limit = node_open_file_limit(server.pid());
    println!("server pid {}", server.pid());
    row("open files: bench soft limit", own_limit.to_string(), &format!(">= {needed}"), needed <= own_limit);
    row(
        "open files: node soft limit",
        node_limit.map_or("unknown".into(), |limit| limit.to_string()),
        &format!(">= {needed}"),
        node_limit.is_some_and(|limit| needed <= limit),
    );

    measure(&server, "no load");

    let idle = open_idle(address, IDLE_CONNECTIONS);
    measure(&server, "1,000 idle connections");
    report_held("idle connections held", &idle);
    drop(idle);

    let slow = SlowLoad::start(address, SLOW_CONNECTIONS);
    measure(&server, "200 slow connections");
    let slow_held = slow.stop();
    report_held("slow connections held", &slow_held);
    drop(slow_held);

    let users: Vec<Client> =
        (0..LONG_POLL_USERS).map(|index| server.register(&format!("poller{index}"))).collect();
    let tokens: Vec<(String, String)> =
        users.iter().map(|user| (user.token.clone(), since_token(user))).collect();
    let polls_started = Instant::now();
    let polls = open_long_polls(address, &tokens, LONG_POLLS);
    measure(&server, "1,000 waiting long-polls");
    report_held("long-polls still waiting", &polls);
    drop(polls);
    // The node only notices a closed long-poll when it answers it: wait for
    // those to time out so that the next phase holds only its own.
    thread::sleep(LONG_POLL_TIMEOUT.saturating_sub(polls_started.elapsed()) + SETTLE);

    let idle = open_idle(address, IDLE_CONNECTIONS);
    let polls = open_long_polls(address, &tokens, LONG_POLLS);
    let slow = SlowLoad::start(address, SLOW_CONNECTIONS);
    measure(&server, "all three at once");
    let slow_held = slow.stop();
    report_held("idle connections held", &idle);
    report_held("long-polls still waiting", &polls);
    report_held("slow connections held", &slow_held);
    let memory = server.memory();
    row(
        "node peak RSS over the whole run (VmHWM)",
        format!("{:.1} MiB", memory.hwm_kib as f64 / 1024.0),
        "<= 64 MiB",
        memory.hwm_kib <= RSS_TARGET_KIB,
    );
    println!("(shared C library pages in the RSS: {:.1} MiB)", memory.shared_libraries_kib as f64 / 1024.0);
}

/// Times [`PROBES`] `/versions` requests while a load is held and prints
/// their percentiles and the node's memory.
fn measure(server: &Server, load: &str) {
    thread::sleep(SETTLE);
    let client = Client::new(&server.http, CONNECT_TIMEOUT);
    for _ in 0..WARM_UP {
        client.get("/_matrix/client/versions");
    }
    let mut latencies = Vec::with_capacity(PROBES);
    let mut failures = 0;
    for _ in 0..PROBES {
        let started = Instant::now();
        let (status, _) = client.get("/_matrix/client/versions");
        latencies.push(started.elapsed());
        if status != 200 {
            failures += 1;
        }
    }
    latencies.sort();
    let memory = server.memory();
    println!("\n-- {load} --");
    let p99 = percentile(&latencies, 99);
    row("/versions p50", ms(percentile(&latencies, 50)), "", true);
    row("/versions p95", ms(percentile(&latencies, 95)), "", true);
    row("/versions p99", ms(p99), "<= 5 ms", p99.as_secs_f64() * 1000.0 <= P99_TARGET_MS);
    row("/versions max", ms(latencies[latencies.len() - 1]), "", true);
    row("/versions answers other than 200", failures.to_string(), "0", failures == 0);
    row(
        "node RSS (VmRSS)",
        format!("{:.1} MiB", memory.rss_kib as f64 / 1024.0),
        "<= 64 MiB",
        memory.rss_kib <= RSS_TARGET_KIB,
    );
    row("node peak RSS so far (VmHWM)", format!("{:.1} MiB", memory.hwm_kib as f64 / 1024.0), "", true);
}

/// Raises this process's soft open-file limit towards `needed` (up to the
/// hard limit); the node, started after, inherits it. Answers the soft limit.
fn raise_open_file_limit(needed: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current < needed {
        let wanted = limit.maximum.map_or(needed, |maximum| maximum.min(needed));
        if let Err(error) = setrlimit(Resource::Nofile, Rlimit { current: Some(wanted), ..limit }) {
            println!("cannot raise the open-file limit to {wanted}: {error}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The node's soft open-file limit, from /proc/PID/limits.
fn node_open_file_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
        .unwrap_or_else(|error| panic!("connect to {address}: {error}"));
    let _ = stream.set_nodelay(true);
    stream
}

fn open_idle(address: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count).map(|_| connect(address)).collect()
}

/// The `next_batch` of an initial sync, so that a sync `since` it waits.
fn since_token(user: &Client) -> String {
    let (status, body) = user.get("/_matrix/client/v3/sync?timeout=0");
    assert_eq!(status, 200, "initial sync: {body}");
    body["next_batch"].as_str().expect("a next_batch").to_string()
}

/// Opens `count` connections, each sending one long-polling `/sync`, spread
/// over the users' `(token, since)`.
fn open_long_polls(address: SocketAddr, users: &[(String, String)], count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|index| {
            let (token, since) = &users[index % users.len()];
            let mut stream = connect(address);
            let head = format!(
                "GET /_matrix/client/v3/sync?since={since}&timeout={} HTTP/1.1\r\nHost: {address}\r\n\
                 Authorization: Bearer {token}\r\n\r\n",
                LONG_POLL_TIMEOUT.as_millis()
            );
            stream.write_all(head.as_bytes()).expect("send a long-poll");
            stream
        })
        .collect()
}

/// Counts the connections of a load the node still holds: open and
/// unanswered (a read would block), and prints it against their number.
fn report_held(name: &str, streams: &[TcpStream]) {
    let mut held = 0;
    for mut stream in streams {
        let _ = stream.set_nonblocking(true);
        let mut byte = [0u8; 1];
        if matches!(stream.read(&mut byte), Err(error) if error.kind() == ErrorKind::WouldBlock) {
            held += 1;
        }
    }
    row(name, format!("{held} of {}", streams.len()), "", true);
}

/// Connections sending a request a byte at a time, from one writer thread.
struct SlowLoad {
    stop: Arc<AtomicBool>,
    writer: thread::JoinHandle<Vec<TcpStream>>,
}

impl SlowLoad {
    /// Half the connections dribble a request head (a long header that never
    /// ends while the load is held), half send a head at once and dribble
    /// the body it announces.
    fn start(address: SocketAddr, count: usize) -> SlowLoad {
        let padding = "a".repeat(4_000);
        let slow_head = format!(
            "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: {address}\r\nX-Padding: {padding}\r\n\r\n"
        );
        let body_head = format!(
            "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Content-Length: {SLOW_BODY_BYTES}\r\n\r\n"
        );
        let body =
            format!("{{\"type\":\"m.login.password\",\"padding\":\"{}\"}}", "b".repeat(SLOW_BODY_BYTES));
        let mut streams: Vec<(TcpStream, Vec<u8>, usize)> = (0..count)
            .map(|index| {
                let mut stream = connect(address);
                if index % 2 == 0 {
                    (stream, slow_head.clone().into_bytes(), 0)
                } else {
                    stream.write_all(body_head.as_bytes()).expect("send a head");
                    (stream, body.clone().into_bytes(), 0)
                }
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let writer = thread::spawn(move || {
            let started = Instant::now();
            while !stopped.load(Ordering::Relaxed) && started.elapsed() < PHASE_DEADLINE {
                let round = Instant::now();
                for (stream, bytes, sent) in &mut streams {
                    if let Some(byte) = bytes.get(*sent) {
                        // A connection the node closed just stops receiving bytes.
                        if stream.write_all(std::slice::from_ref(byte)).is_ok() {
                            *sent += 1;
                        }
                    }
                }
                thread::sleep(SLOW_BYTE_INTERVAL.saturating_sub(round.elapsed()));
            }
            streams.into_iter().map(|(stream, _, _)| stream).collect()
        });
        SlowLoad { stop, writer }
    }

    /// Stops the writer and hands back the connections.
    fn stop(self) -> Vec<TcpStream> {
        self.stop.store(true, Ordering::Relaxed);
        self.writer.join().expect("the slow writer")
    }
}
