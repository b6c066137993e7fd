//! A federation benchmark against the real release binary: starts two `hearth`
//! nodes on loopback that federate (a test CA issues their certificates, each
//! trusts it with `--federation-ca`), then measures
//!
//! 1. node B joining a room of `--members N` members (default
//!    [`DEFAULT_MEMBERS`]) hosted by node A: the wall time of the join
//!    request, B's memory before, at its peak and after, and how long B's
//!    other users wait for `/versions` and `/sync` meanwhile (the design
//!    requires they keep being served during a big join); it prints the line
//!    `join: members=N seconds=S peak_rss_kib=R` and the join's row of the
//!    targets table beside its target;
//!    then times B asking A for `/state` at the room's latest event (signed
//!    by `hearth federation request`) and prints A's peak memory answering
//!    it;
//! 2. how fast B accepts PDUs from A's transactions: [`MESSAGES`] messages
//!    sent on A, timed from the first send until B holds them all, and how
//!    A's sender batched them;
//! 3. how long an incremental `/sync` of B's member takes after a message
//!    in the big room.
//!
//! It measures and prints; it asserts nothing (it is not a timed test).
//!
//! Run it with:
//!
//! ```text
//! cargo bench --bench federation
//! cargo bench --bench federation -- --members 10000
//! ```
//!
//! A's members are an application service's users (registered without a
//! password, so no password hashing, and joined by masquerading with
//! `?user_id=`), on several connections at once: no password hashing, and
//! a join costs A the same in a room of any size (the set-up prints the
//! rate of each 1,000 joins, which shows it: 50,000 members take well
//! under a minute on a shared 2-core machine, where a cost growing with the
//! room once made 10,000 take minutes).
//!
//! `HEARTH_BENCH_BIN=/path/to/hearth` measures another build instead of the
//! one Cargo built (`CARGO_BIN_EXE_hearth`), as in `benches/rooms.rs`.
//!
//! The client side uses threads and blocking HTTP/1.1 with keep-alive (ureq)
//! on the nodes' plain listeners; the nodes talk to each other over TLS.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::common::federation::{TestCa, federating_serve_args};
use support::common::rooms::enc;
use support::common::{TempDir, free_port, wait_ready};
use support::{
    Client, Memory, announce, app_service_client, app_service_registration, file_size, ms, percentile,
    register, register_by_app_service, spawn_serve,
};

mod support;

/// Members of the room on A that B joins (the creator included), unless
/// `--members N` says otherwise.
const DEFAULT_MEMBERS: usize = 1_000;
/// The join rows of the targets table (issue 12): members, target.
const TARGETS: [(usize, &str); 3] =
    [(1_000, "–"), (10_000, "≤ 10 s, peak RSS ≤ 64 MiB"), (50_000, "works, peak RSS ≤ 96 MiB")];
/// Threads registering and joining A's members (a few keep the server busy).
const SETUP_THREADS: usize = 4;
/// Joins per line of the set-up's progress (with the rate of that chunk).
const SETUP_CHUNK: usize = 1_000;
/// The user namespace (local part prefix) of the application service on A
/// whose users are the room's members.
const MEMBER_PREFIX: &str = "member";
/// Messages sent on A in the transaction phase.
const MESSAGES: usize = 2_000;
/// Threads sending those messages, each as a different member of A.
const SENDER_THREADS: usize = 4;
/// Messages bob's incremental syncs follow, one each, in phase 3.
const SYNC_ROUNDS: usize = 20;
/// How long the remote join may take before the bench gives up on it.
const JOIN_DEADLINE: Duration = Duration::from_secs(600);
/// How long B may take to hold every message once they are all sent.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(300);
/// Pause between the probes of B's other user during the join.
const PROBE_PAUSE: Duration = Duration::from_millis(2);
/// Pause between polls of B's timeline while waiting for the messages.
const POLL_PAUSE: Duration = Duration::from_millis(5);
/// How long a node may take to start.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Log lines kept per node (printed when something fails).
const LOG_TAIL: usize = 400;
/// The room alias (local part) on A.
const ALIAS: &str = "bench";

/// `--members N` from the command line (Cargo adds `--bench`, which is ignored).
fn members_argument() -> usize {
    let arguments: Vec<String> = std::env::args().collect();
    match arguments.iter().position(|argument| argument == "--members") {
        Some(index) => arguments
            .get(index + 1)
            .and_then(|count| count.parse().ok())
            .filter(|&count| count >= 2)
            .unwrap_or_else(|| panic!("--members takes a member count of at least 2")),
        None => DEFAULT_MEMBERS,
    }
}

fn main() {
    let members_count = members_argument();
    let binary = announce("federation");
    let ca = TestCa::new();
    let a = Node::start(&binary, &ca, "a", true);
    let b = Node::start(&binary, &ca, "b", false);
    println!("node A: {} (pid {}), node B: {} (pid {})", a.server_name, a.pid(), b.server_name, b.pid());
    println!();

    // Setup on A: the room and its members.
    let setup_started = Instant::now();
    let host = a.register("host");
    let (status, body) = host.post(
        "/_matrix/client/v3/createRoom",
        &json!({"preset": "public_chat", "room_alias_name": ALIAS, "name": "Federation bench"}),
    );
    assert_eq!(status, 200, "createRoom: {body}");
    let room_id = body["room_id"].as_str().unwrap().to_string();
    let members = register_and_join(&a, &room_id, members_count - 1);
    let setup_elapsed = setup_started.elapsed();
    println!(
        "setup on A: {} users registered and joined in {:.1} s ({:.2} ms per user)",
        members_count,
        setup_elapsed.as_secs_f64(),
        setup_elapsed.as_secs_f64() * 1000.0 / members_count as f64
    );
    let (status, body) = host.get(&format!("/_matrix/client/v3/rooms/{room_id}/joined_members"));
    let joined_on_a = body["joined"].as_object().map_or(0, |joined| joined.len());
    println!("joined members on A: {joined_on_a} (status {status})");

    // Phase 1: B joins the big room while another user of B keeps asking.
    let bob = b.register("bob");
    let carol = b.register("carol");
    let (status, body) = carol.get("/_matrix/client/v3/sync?timeout=0");
    assert_eq!(status, 200, "carol's first sync: {body}");
    let carol_since = body["next_batch"].as_str().unwrap().to_string();
    // Registration hashed passwords (argon2, 12 MiB each): reset the peak so
    // VmHWM below is the join's own.
    b.reset_peak();
    // A's peak from here on is its answer to the join (setup is over).
    a.reset_peak();
    let resident_before = a.memory();
    let before = b.memory();
    let joining = Arc::new(AtomicBool::new(true));
    let prober = {
        let carol = carol.with_timeout(JOIN_DEADLINE);
        let joining = joining.clone();
        thread::spawn(move || probe(&carol, &carol_since, &joining))
    };
    thread::sleep(Duration::from_millis(50));
    let alias = format!("%23{ALIAS}:{}", a.server_name);
    let join_client = bob.with_timeout(JOIN_DEADLINE);
    let started = Instant::now();
    let (status, body) = join_client.post(&format!("/_matrix/client/v3/join/{alias}"), &json!({}));
    let join_elapsed = started.elapsed();
    joining.store(false, Ordering::SeqCst);
    let probes = prober.join().unwrap();
    let after = b.memory();
    let resident_after = a.memory();
    if status != 200 {
        println!("join FAILED after {:.3} s: {status} {body}", join_elapsed.as_secs_f64());
        println!("--- B's log tail ---\n{}", b.log_tail());
        println!("--- A's log tail ---\n{}", a.log_tail());
        std::process::exit(1);
    }
    assert_eq!(body["room_id"], room_id.as_str(), "joined another room: {body}");
    let (_, body) = bob.get(&format!("/_matrix/client/v3/rooms/{room_id}/joined_members"));
    let joined_on_b = body["joined"].as_object().map_or(0, |joined| joined.len());

    println!(
        "join: members={members_count} seconds={:.3} peak_rss_kib={}",
        join_elapsed.as_secs_f64(),
        after.hwm_kib
    );
    println!("join answer: members={members_count} peak_rss_kib_resident={}", resident_after.hwm_kib);
    println!();
    let target =
        TARGETS.iter().find(|(count, _)| *count == members_count).map_or("–", |(_, target)| target);
    println!("{:<44} {:>26}   target", "targets table row", "measured");
    println!(
        "{:<44} {:>26}   {target}",
        format!("joining a {members_count}-member room"),
        format!(
            "{:.2} s, peak {:.1} MiB (+{:.1})",
            join_elapsed.as_secs_f64(),
            after.hwm_kib as f64 / 1024.0,
            after.hwm_kib.saturating_sub(before.rss_kib) as f64 / 1024.0
        ),
    );
    println!();
    println!("{:<52} {:>14}", "figure", "measured");
    row(&format!("join of a {members_count}-member room by alias (until 200)"), secs(join_elapsed));
    row("joined members as B sees them after the join", joined_on_b.to_string());
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    row("B VmRSS before the join", mib(before.rss_kib));
    row("B VmHWM after the join (peak since reset)", mib(after.hwm_kib));
    row("B VmRSS after the join", mib(after.rss_kib));
    row("A VmRSS before the join", mib(resident_before.rss_kib));
    row("A VmHWM answering the join (peak since reset)", mib(resident_after.hwm_kib));
    for (name, mut latencies) in [("/versions", probes.versions), ("/sync?timeout=0", probes.syncs)] {
        latencies.sort();
        if latencies.is_empty() {
            row(&format!("B's other user: {name} during the join"), "none answered".into());
            continue;
        }
        row(&format!("B's other user: {name} requests answered"), latencies.len().to_string());
        row(&format!("B's other user: {name} median"), ms(latencies[latencies.len() / 2]));
        row(&format!("B's other user: {name} p99"), ms(percentile(&latencies, 99)));
        row(&format!("B's other user: {name} max"), ms(*latencies.last().unwrap()));
    }
    println!();

    // Phase 1b: B asks A for the room's state at its latest event
    // (`/state`, signed as B by `hearth federation request`).
    let (_, body) = host.get(&format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=1"));
    let latest = body["chunk"][0]["event_id"].as_str().unwrap_or_default().to_string();
    a.reset_peak();
    let resident_before_state = a.memory();
    let started = Instant::now();
    let (status, bytes) = b.state_request(&binary, &ca, &a.server_name, &room_id, &latest);
    let state_elapsed = started.elapsed();
    let resident_state = a.memory();
    row(
        &format!("/state of the {members_count}-member room, asked by B (status {status})"),
        secs(state_elapsed),
    );
    row("/state answer size", format!("{:.2} MB", bytes as f64 / 1e6));
    row("A VmRSS before /state", mib(resident_before_state.rss_kib));
    row("A VmHWM answering /state (peak since reset)", mib(resident_state.hwm_kib));
    println!("state answer: members={members_count} peak_rss_kib_resident={}", resident_state.hwm_kib);
    println!();

    // Phase 2: messages sent on A, accepted by B from A's transactions.
    let a_log_mark = a.log_len();
    let (a_cpu_before, b_cpu_before) = (a.cpu_seconds(), b.cpu_seconds());
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..SENDER_THREADS)
        .map(|index| {
            let (client, sender) = &members[index % members.len()];
            let (client, sender) = (client.fresh_connection(), sender.clone());
            let room_id = room_id.clone();
            let counter = counter.clone();
            thread::spawn(move || {
                loop {
                    let number = counter.fetch_add(1, Ordering::SeqCst);
                    if number >= MESSAGES {
                        break;
                    }
                    let path = format!(
                        "/_matrix/client/v3/rooms/{room_id}/send/m.room.message/fed{number}?user_id={sender}"
                    );
                    let (status, body) =
                        client.put(&path, &json!({"msgtype": "m.text", "body": format!("fed {number}")}));
                    assert_eq!(status, 200, "send: {body}");
                }
            })
        })
        .collect();
    senders.into_iter().for_each(|sender| sender.join().unwrap());
    let sent_elapsed = started.elapsed();
    let (status, body) = host.get(&format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=1"));
    assert_eq!(status, 200, "A's last message: {body}");
    let last_event = body["chunk"][0]["event_id"].as_str().unwrap().to_string();
    let delivered = wait_for_event(&bob, &room_id, &last_event, started);
    let a_cpu = a.cpu_seconds() - a_cpu_before;
    let b_cpu = b.cpu_seconds() - b_cpu_before;
    let Some(delivered) = delivered else {
        println!("B did not receive {last_event} within {DELIVERY_DEADLINE:?}");
        println!("--- B's log tail ---\n{}", b.log_tail());
        println!("--- A's log tail ---\n{}", a.log_tail());
        std::process::exit(1);
    };
    let on_b = count_messages(&bob, &room_id);
    let batches = transaction_sizes(&a.log_since(a_log_mark), &b.server_name);

    row(&format!("{MESSAGES} sends on A ({SENDER_THREADS} threads)"), secs(sent_elapsed));
    row("first send until B holds the last message", secs(delivered));
    row("PDUs/s accepted by B (N / elapsed)", format!("{:.0}/s", MESSAGES as f64 / delivered.as_secs_f64()));
    row("last send answered until B holds it", secs(delivered.saturating_sub(sent_elapsed)));
    row("A's CPU in the phase (sending + federating)", format!("{a_cpu:.2} s"));
    row("A's CPU per send", format!("{:.2} ms", a_cpu * 1000.0 / MESSAGES as f64));
    row("B's CPU in the phase (accepting + polls)", format!("{b_cpu:.2} s"));
    row("B's CPU per accepted PDU", format!("{:.2} ms", b_cpu * 1000.0 / MESSAGES as f64));
    row("PDUs/s B could accept on one core (N / B's CPU)", format!("{:.0}/s", MESSAGES as f64 / b_cpu));
    row("messages B holds (paged /messages)", format!("{on_b} of {MESSAGES}"));
    if !batches.is_empty() {
        let pdus: usize = batches.iter().sum();
        row("A's transactions to B (in the phase)", batches.len().to_string());
        row("PDUs per transaction: mean", format!("{:.1}", pdus as f64 / batches.len() as f64));
        row("PDUs per transaction: max", batches.iter().max().unwrap().to_string());
    }
    let memory = b.memory();
    row("B VmRSS after the messages", mib(memory.rss_kib));
    row("B VmHWM since the reset", mib(memory.hwm_kib));

    // Phase 3: bob's incremental syncs in the big room, one message each.
    let syncs = incremental_syncs(&members[0], &bob, &room_id, started);
    if let Some(median) = syncs {
        row(&format!("bob's incremental /sync after a message (median of {SYNC_ROUNDS})"), ms(median));
    }
    let memory = b.memory();
    row("B VmRSS at the end", mib(memory.rss_kib));
    row("B VmHWM since the reset (bob's first sync included)", mib(memory.hwm_kib));
    let database = file_size(&b.data_dir.join("hearth.db")) + file_size(&b.data_dir.join("hearth.db-wal"));
    row("B database + WAL at the end", format!("{:.2} MB", database as f64 / 1e6));
}

/// Latencies of B's other user while the join runs.
struct Probes {
    versions: Vec<Duration>,
    syncs: Vec<Duration>,
}

/// Alternates `/versions` and incremental `/sync?timeout=0` until the join ends.
fn probe(client: &Client, since: &str, joining: &AtomicBool) -> Probes {
    let mut probes = Probes { versions: Vec::new(), syncs: Vec::new() };
    let mut since = since.to_string();
    while joining.load(Ordering::SeqCst) {
        let started = Instant::now();
        let (status, body) = client.get("/_matrix/client/versions");
        assert_eq!(status, 200, "versions: {body}");
        probes.versions.push(started.elapsed());
        let started = Instant::now();
        let (status, body) = client.get(&format!("/_matrix/client/v3/sync?since={since}&timeout=0"));
        assert_eq!(status, 200, "sync: {body}");
        probes.syncs.push(started.elapsed());
        since = body["next_batch"].as_str().unwrap().to_string();
        thread::sleep(PROBE_PAUSE);
    }
    probes
}

/// Registers `count` users of the application service on `node` and joins
/// each to `room_id`, on [`SETUP_THREADS`] threads; returns a client of the
/// service and the user ID to masquerade as, for the first few.
fn register_and_join(node: &Node, room_id: &str, count: usize) -> Vec<(Client, String)> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    // When the last chunk of SETUP_CHUNK joins ended: the rate per chunk shows
    // how a join's cost grows with the room.
    let chunk_started = Arc::new(Mutex::new(Instant::now()));
    let threads: Vec<_> = (0..SETUP_THREADS)
        .map(|_| {
            let (room_id, next, done) = (room_id.to_string(), next.clone(), done.clone());
            let chunk_started = chunk_started.clone();
            let service = app_service_client(&node.http);
            thread::spawn(move || {
                let mut first = None;
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    if index >= count {
                        break;
                    }
                    let localpart = format!("{MEMBER_PREFIX}{index}");
                    let user_id = register_by_app_service(&service, &localpart);
                    let path =
                        format!("/_matrix/client/v3/join/{room_id}?user_id={}", user_id.replace(':', "%3A"));
                    let (status, body) = service.post(&path, &json!({}));
                    assert_eq!(status, 200, "join of {user_id}: {body}");
                    first.get_or_insert(user_id.replace(':', "%3A"));
                    let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if finished % SETUP_CHUNK == 0 || finished == count {
                        let mut started = chunk_started.lock().unwrap();
                        let chunk = (finished - 1) % SETUP_CHUNK + 1;
                        let seconds = started.elapsed().as_secs_f64();
                        *started = Instant::now();
                        println!(
                            "  setup: {finished} of {count} members registered and joined, \
                             the last {chunk} at {:.0} joins/s",
                            chunk as f64 / seconds
                        );
                    }
                }
                first.map(|user_id| (service, user_id))
            })
        })
        .collect();
    threads.into_iter().filter_map(|thread| thread.join().unwrap()).collect()
}

/// Bob syncs with members loaded lazily (as clients do in big rooms), then
/// [`SYNC_ROUNDS`] times a member on A sends a message and bob, once B holds
/// it, asks for what is new: the median time of those incremental syncs.
fn incremental_syncs(
    sender: &(Client, String),
    bob: &Client,
    room_id: &str,
    started: Instant,
) -> Option<Duration> {
    let filter = r#"{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":5}}}"#;
    let filter: String = filter.bytes().map(|byte| format!("%{byte:02X}")).collect();
    let (status, body) = bob.get(&format!("/_matrix/client/v3/sync?timeout=0&filter={filter}"));
    assert_eq!(status, 200, "bob's first sync: {body}");
    let mut since = body["next_batch"].as_str()?.to_string();
    let (client, user_id) = sender;
    let mut durations = Vec::new();
    for round in 0..SYNC_ROUNDS {
        let path =
            format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/sync{round}?user_id={user_id}");
        let (status, body) =
            client.put(&path, &json!({"msgtype": "m.text", "body": format!("sync {round}")}));
        assert_eq!(status, 200, "send: {body}");
        let event_id = body["event_id"].as_str()?.to_string();
        wait_for_event(bob, room_id, &event_id, started)?;
        let begun = Instant::now();
        let (status, body) =
            bob.get(&format!("/_matrix/client/v3/sync?timeout=0&filter={filter}&since={since}"));
        durations.push(begun.elapsed());
        assert_eq!(status, 200, "bob's sync: {body}");
        since = body["next_batch"].as_str()?.to_string();
    }
    durations.sort();
    Some(durations[durations.len() / 2])
}

/// Polls B's newest event until it is `event_id`; returns the time since `started`.
fn wait_for_event(client: &Client, room_id: &str, event_id: &str, started: Instant) -> Option<Duration> {
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let path = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=1");
    while Instant::now() < deadline {
        let (status, body) = client.get(&path);
        if status == 200 && body["chunk"][0]["event_id"] == event_id {
            return Some(started.elapsed());
        }
        thread::sleep(POLL_PAUSE);
    }
    None
}

/// Counts the bench's messages (`fed N`) in the room by paging `/messages` backwards.
fn count_messages(client: &Client, room_id: &str) -> usize {
    let mut count = 0;
    let mut from = String::new();
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=100");
        if !from.is_empty() {
            path.push_str(&format!("&from={from}"));
        }
        let (status, body) = client.get(&path);
        assert_eq!(status, 200, "messages: {body}");
        let chunk = body["chunk"].as_array().cloned().unwrap_or_default();
        count += chunk
            .iter()
            .filter(|event| event["content"]["body"].as_str().is_some_and(|text| text.starts_with("fed ")))
            .count();
        match body["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = end.to_string(),
            _ => return count,
        }
    }
}

/// The PDU counts of the transactions A logged as sent to `destination`
/// (`sent N items to DEST: {"pdus": {...}}` at debug level).
fn transaction_sizes(log: &[String], destination: &str) -> Vec<usize> {
    let marker = format!(" items to {destination}: ");
    log.iter()
        .filter_map(|line| line.split_once(&marker))
        .filter_map(|(_, answer)| serde_json::from_str::<Value>(answer).ok())
        .map(|answer| answer["pdus"].as_object().map_or(0, |pdus| pdus.len()))
        .filter(|&pdus| pdus > 0)
        .collect()
}

fn row(name: &str, measured: String) {
    println!("{name:<52} {measured:>14}");
}

fn secs(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

/// A federating node named `localhost:PORT`; killed on drop, its data dir removed.
struct Node {
    child: Child,
    data_dir: PathBuf,
    _dir: TempDir,
    http: String,
    server_name: String,
    log: Arc<Mutex<Log>>,
}

/// A node's log: every line (for counting A's transactions) and a bounded tail.
#[derive(Default)]
struct Log {
    lines: Vec<String>,
    tail: VecDeque<String>,
}

impl Node {
    /// Starts a node whose TLS listener is on a free port it is also named after.
    /// With `app_service`, the node has the bench's application service
    /// (no URL: nothing is pushed to it), whose users are the room's members.
    fn start(binary: &str, ca: &TestCa, name: &str, app_service: bool) -> Node {
        let port = free_port();
        let dir = TempDir::new(name);
        let server_name = format!("localhost:{port}");
        let mut args = federating_serve_args(ca, port, name);
        args.extend(["--http", "127.0.0.1:0", "--https", &format!("127.0.0.1:{port}")].map(str::to_owned));
        if app_service {
            let registration = dir.0.join("bench-registration.yaml");
            std::fs::write(&registration, app_service_registration(MEMBER_PREFIX)).unwrap();
            let config = dir.0.join("bench.toml");
            std::fs::write(&config, format!("app_service_config_files = [{:?}]\n", registration)).unwrap();
            args.extend(["--config".to_string(), config.to_str().unwrap().to_string()]);
        }
        let log = Arc::new(Mutex::new(Log::default()));
        let kept = log.clone();
        // Debug: A logs each transaction it sent, which gives the batching.
        let (child, receiver) = spawn_serve(binary, &dir.0, &args, "debug", move |line| {
            let mut log = kept.lock().unwrap();
            if log.tail.len() == LOG_TAIL {
                log.tail.pop_front();
            }
            log.tail.push_back(line.to_owned());
            if line.contains(" items to ") {
                log.lines.push(line.to_owned());
            }
        });
        let Some(ready) = wait_ready(&receiver, START_DEADLINE) else {
            let tail = log.lock().unwrap().tail.iter().cloned().collect::<Vec<_>>().join("\n");
            panic!("hearth did not become ready; log:\n{tail}");
        };
        let http = ready.http;
        // Nobody reads the channel from here on: sends fail and are ignored.
        drop(receiver);
        let data_dir = dir.0.clone();
        Node { child, data_dir, _dir: dir, http, server_name, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks `server` for `/state` of `room_id` at `event_id`, signed with
    /// this node's key (`hearth federation request`, a process of its
    /// own); returns the status and the answer's size in bytes.
    fn state_request(
        &self,
        binary: &str,
        ca: &TestCa,
        server: &str,
        room_id: &str,
        event_id: &str,
    ) -> (u16, usize) {
        let path = format!("/_matrix/federation/v1/state/{}?event_id={}", enc(room_id), enc(event_id));
        let output = std::process::Command::new(binary)
            .args(["federation", "--data-dir", self.data_dir.to_str().unwrap()])
            .args([
                "--server-name",
                &self.server_name,
                "--federation-ca",
                ca.certificate_file.to_str().unwrap(),
            ])
            .args(["--federation-allow-ip", "127.0.0.0/8", "request", server, &path])
            .output()
            .expect("hearth federation request");
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        let status = lines.next().and_then(|line| line.trim().parse().ok()).unwrap_or(0);
        (status, lines.next().map_or(0, str::len))
    }

    fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }

    fn cpu_seconds(&self) -> f64 {
        support::cpu_seconds(self.pid())
    }

    /// Resets VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`).
    fn reset_peak(&self) {
        if let Err(error) = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5") {
            println!("(cannot reset the VmHWM of pid {}: {error}; the peak includes set-up)", self.pid());
        }
    }

    fn register(&self, localpart: &str) -> Client {
        register(&self.http, localpart)
    }

    fn log_len(&self) -> usize {
        self.log.lock().unwrap().lines.len()
    }

    fn log_since(&self, mark: usize) -> Vec<String> {
        self.log.lock().unwrap().lines[mark..].to_vec()
    }

    fn log_tail(&self) -> String {
        self.log.lock().unwrap().tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
