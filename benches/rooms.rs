//! A load benchmark against the real release binary: starts `hearth` on
//! loopback with a fresh data dir, sets up 10 users in 20 shared rooms, sends
//! messages with 1 and 8 concurrent senders, and prints latency, throughput,
//! server CPU, /sync and /messages timings, memory and disk figures beside the
//! targets from the performance issue. Then, on a second server, times the
//! initial /sync of a user in 500 rooms and a `createRoom` inviting 5,000
//! users (registered by an application service), and on a third the unread
//! counts at depth (`support/unread.rs`, also `--bench unread`). It measures and prints; it asserts
//! nothing (it is not a timed test).
//!
//! Run it with:
//!
//! ```text
//! cargo bench --bench rooms
//! cargo bench --bench rooms -- --only invites
//! cargo bench --bench rooms -- --only invites --rounds 5
//! ```
//!
//! `--only invites` runs the `createRoom` with [`INVITES`] invites alone (on
//! its own server, without the send load, the 500 rooms and the unread
//! counts); `--rounds N` times that many such `createRoom`s, one after the
//! other on the same server and the same invitees (default 1). Without
//! arguments it prints every row.
//!
//! Cargo builds the `hearth` binary with the bench profile (which inherits the
//! release profile) and hands its path to this program as
//! `CARGO_BIN_EXE_hearth`. `HEARTH_BENCH_BIN=/path/to/hearth` measures another
//! build instead (for example a cross build under qemu, or an older commit).
//!
//! To profile, build a binary with its symbols
//! (`HEARTH_KEEP_SYMBOLS=1 cargo build --release`, see cross/layout/build.rs), point
//! `HEARTH_BENCH_BIN` at it and run the bench executable under
//! `perf record --call-graph dwarf` (perf follows the child server).
//!
//! The client side uses threads and blocking HTTP/1.1 with keep-alive (ureq);
//! each sender has its own connection.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    Client, Server, announce, app_service_client, app_service_registration, file_size, ms, percentile,
    register_by_app_service, row_with_target as row,
};

mod support;

/// Users registered; user 0 is the one whose /sync is timed.
const USERS: usize = 10;
/// Rooms every user joins.
const SHARED_ROOMS: usize = 20;
/// Messages in each send phase.
const SENDS: usize = 1_000;
/// Senders in the concurrent phase, each on its own connection.
const CONCURRENT_SENDERS: usize = 8;
/// Repetitions of the /sync and /messages timings (the median is printed).
const REPEATS: usize = 11;
/// Long-poll wake-ups timed (the median is printed).
const WAKEUPS: usize = 20;
/// How long the long-poll thread waits before the send, so the /sync is parked.
const PARK_DELAY: Duration = Duration::from_millis(30);
/// Rooms of the user whose initial /sync is timed on the second server.
const MANY_ROOMS: usize = 500;
/// Messages sent in each of those rooms.
const MESSAGES_PER_ROOM: usize = 3;
/// Users invited by the one timed `createRoom`.
const INVITES: usize = 5_000;
/// What the command line asks for (Cargo adds `--bench`, which is ignored).
struct Arguments {
    /// `--only invites`: only the `createRoom` with [`INVITES`] invites.
    only_invites: bool,
    /// `--rounds N`: how many of those `createRoom`s are timed.
    rounds: usize,
}

fn arguments() -> Arguments {
    let arguments: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        arguments.iter().position(|argument| argument == name).map(|index| {
            arguments.get(index + 1).map(String::as_str).unwrap_or_else(|| panic!("{name} takes a value"))
        })
    };
    let only_invites = match value("--only") {
        None => false,
        Some("invites") => true,
        Some(other) => panic!("--only takes `invites`, not {other:?}"),
    };
    let rounds = value("--rounds").map_or(1, |rounds| {
        rounds
            .parse()
            .ok()
            .filter(|&rounds| rounds >= 1)
            .unwrap_or_else(|| panic!("--rounds takes a count of at least 1"))
    });
    Arguments { only_invites, rounds }
}

fn main() {
    let arguments = arguments();
    let binary = announce("rooms");
    if arguments.only_invites {
        many_rooms_and_invites(&binary, false, arguments.rounds);
        return;
    }
    let server = Server::start(&binary);
    println!("server pid {}", server.pid());
    let idle = server.memory();

    // Setup: users, rooms, joins.
    let setup_started = Instant::now();
    let users: Vec<Client> = (0..USERS).map(|index| server.register(&format!("user{index}"))).collect();
    let mut rooms = Vec::new();
    for index in 0..SHARED_ROOMS {
        let (status, body) = users[0].post(
            "/_matrix/client/v3/createRoom",
            &json!({"preset": "public_chat", "name": format!("room {index}")}),
        );
        assert_eq!(status, 200, "createRoom: {body}");
        rooms.push(body["room_id"].as_str().unwrap().to_string());
    }
    for user in &users[1..] {
        for room in &rooms {
            let (status, body) = user.post(&format!("/_matrix/client/v3/join/{room}"), &json!({}));
            assert_eq!(status, 200, "join: {body}");
        }
    }
    // User 0 alone in a 21st room.
    let (status, body) = users[0].post("/_matrix/client/v3/createRoom", &json!({"preset": "private_chat"}));
    assert_eq!(status, 200, "createRoom: {body}");
    let after_setup = server.memory();
    println!(
        "setup: {USERS} users, {SHARED_ROOMS} shared rooms (+1 for user0), in {:.1} s",
        setup_started.elapsed().as_secs_f64()
    );
    println!();

    // Sequential sends: one sender, one connection.
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let mut latencies = send_batch(&users[1], &rooms, "seq", SENDS);
    let sequential_elapsed = started.elapsed();
    let sequential_cpu = server.cpu_seconds() - cpu_before;
    latencies.sort();

    // Concurrent sends: 8 senders, each on its own connection, released together.
    let barrier = Arc::new(Barrier::new(CONCURRENT_SENDERS + 1));
    let per_sender = SENDS / CONCURRENT_SENDERS;
    let senders: Vec<_> = (0..CONCURRENT_SENDERS)
        .map(|index| {
            let client = users[1 + index % (USERS - 1)].fresh_connection();
            let rooms = rooms.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                send_batch(&client, &rooms, &format!("par{index}"), per_sender)
            })
        })
        .collect();
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    barrier.wait();
    let mut concurrent_latencies: Vec<Duration> =
        senders.into_iter().flat_map(|sender| sender.join().unwrap()).collect();
    let concurrent_elapsed = started.elapsed();
    let concurrent_cpu = server.cpu_seconds() - cpu_before;
    concurrent_latencies.sort();
    let concurrent_sends = per_sender * CONCURRENT_SENDERS;

    println!("{:<44} {:>14}   target", "figure", "measured");
    let sequential_rate = SENDS as f64 / sequential_elapsed.as_secs_f64();
    let concurrent_rate = concurrent_sends as f64 / concurrent_elapsed.as_secs_f64();
    row(
        "send p50, 1 sender",
        ms(percentile(&latencies, 50)),
        "<= 0.5 ms",
        within_ms(percentile(&latencies, 50), 0.5),
    );
    row("send p99, 1 sender", ms(percentile(&latencies, 99)), "", true);
    row("sends/s, 1 sender", format!("{sequential_rate:.0}/s"), "", true);
    row("send p50, 8 senders", ms(percentile(&concurrent_latencies, 50)), "", true);
    row("send p99, 8 senders", ms(percentile(&concurrent_latencies, 99)), "", true);
    row("sends/s, 8 senders", format!("{concurrent_rate:.0}/s"), ">= 3000/s", concurrent_rate >= 3000.0);
    let per_thousand = |cpu: f64, sends: usize| cpu * 1000.0 / sends as f64;
    let sequential_per_thousand = per_thousand(sequential_cpu, SENDS);
    let concurrent_per_thousand = per_thousand(concurrent_cpu, concurrent_sends);
    let whole_load_per_thousand = per_thousand(sequential_cpu + concurrent_cpu, SENDS + concurrent_sends);
    row(
        "server CPU per 1000 sends, whole load",
        format!("{whole_load_per_thousand:.3} s"),
        "<= 0.3 s",
        whole_load_per_thousand <= 0.3,
    );
    row("  of which 1 sender", format!("{sequential_per_thousand:.3} s"), "", true);
    row("  of which 8 senders", format!("{concurrent_per_thousand:.3} s"), "", true);

    // /sync for user 0 (21 rooms): initial, then incremental with one new event.
    let mut initial_cpu = Vec::new();
    let initial = median(
        (0..REPEATS)
            .map(|_| {
                let cpu_before = server.cpu_seconds();
                let started = Instant::now();
                let (status, body) = users[0].get("/_matrix/client/v3/sync");
                let elapsed = started.elapsed();
                initial_cpu.push(Duration::from_secs_f64(server.cpu_seconds() - cpu_before));
                assert_eq!(status, 200, "sync: {body}");
                elapsed
            })
            .collect(),
    );
    row("initial /sync, 21 rooms", ms(initial), "<= 5 ms", within_ms(initial, 5.0));
    row("  its server CPU", ms(median(initial_cpu)), "", true);
    let (_, body) = users[0].get("/_matrix/client/v3/sync");
    let mut since = body["next_batch"].as_str().unwrap().to_string();
    let mut incremental = Vec::new();
    for index in 0..REPEATS {
        send(&users[1], &rooms[index % rooms.len()], &format!("inc{index}"));
        let started = Instant::now();
        let (status, body) = users[0].get(&format!("/_matrix/client/v3/sync?since={since}&timeout=0"));
        incremental.push(started.elapsed());
        assert_eq!(status, 200, "sync: {body}");
        since = body["next_batch"].as_str().unwrap().to_string();
    }
    row("incremental /sync, 1 new event", ms(median(incremental)), "", true);

    // Long-poll wake-up: user 0 parks a /sync, user 1 sends, time to the answer.
    let (from_request, from_response) = long_poll_wakeups(&users[0], &users[1], &rooms[0], since);
    row("long-poll wake-up (from send request)", ms(from_request), "<= 2 ms", within_ms(from_request, 2.0));
    row("long-poll wake-up (from send response)", ms_signed(from_response), "", true);

    // /messages: a page of 100 backwards from the end of a busy room.
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", rooms[0]);
    let (status, body) = users[0].get(&path);
    if status == 404 {
        println!("{:<44} {:>14}   <= 2 ms", "/messages page of 100", "n/a (endpoint missing)");
    } else {
        assert_eq!(status, 200, "messages: {body}");
        let chunk = body["chunk"].as_array().map_or(0, Vec::len);
        let page = median(
            (0..REPEATS)
                .map(|_| {
                    let started = Instant::now();
                    let (status, _) = users[0].get(&path);
                    assert_eq!(status, 200);
                    started.elapsed()
                })
                .collect(),
        );
        row(&format!("/messages page ({chunk} events)"), ms(page), "<= 2 ms", within_ms(page, 2.0));
    }

    // Memory and disk.
    let loaded = server.memory();
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    row("RSS idle (after start)", mib(idle.rss_kib), "<= 6 MiB", idle.rss_kib <= 6 * 1024);
    if idle.shared_libraries_kib > 0 {
        row("  of which shared libraries (libc, ...)", mib(idle.shared_libraries_kib), "", true);
    }
    row("RSS after setup (registrations)", mib(after_setup.rss_kib), "", true);
    row("RSS peak during setup (VmHWM)", mib(after_setup.hwm_kib), "", true);
    row("RSS after the load", mib(loaded.rss_kib), "<= 16 MiB", loaded.rss_kib <= 16 * 1024);
    row("RSS peak over the whole run (VmHWM)", mib(loaded.hwm_kib), "", true);
    let database = file_size(&server.data_dir.join("hearth.db"));
    let wal = file_size(&server.data_dir.join("hearth.db-wal"));
    let total = database + wal;
    row(
        "database + WAL after the load",
        format!("{:.2} MB", total as f64 / 1e6),
        "<= 8 MB",
        total <= 8_000_000,
    );
    println!(
        "  (database {:.2} MB, WAL {:.2} MB; {} events sent in all)",
        database as f64 / 1e6,
        wal as f64 / 1e6,
        SENDS + concurrent_sends + REPEATS + WAKEUPS
    );
    drop(server);

    many_rooms_and_invites(&binary, true, arguments.rounds);

    // Unread counts at depth, on a third server (also `--bench unread`).
    println!();
    println!("unread counts at depth");
    support::unread::run(&binary);
}

/// The rows of scale, on a server of their own (so the application service
/// they register with touches none of the figures above): the initial
/// /sync of a user in [`MANY_ROOMS`] rooms (when `many_rooms`), and
/// `rounds` `createRoom`s inviting [`INVITES`] users each.
fn many_rooms_and_invites(binary: &str, many_rooms: bool, rounds: usize) {
    let registration =
        std::env::temp_dir().join(format!("hearth-bench-{}-appservice.yaml", std::process::id()));
    std::fs::write(&registration, app_service_registration("bench_")).unwrap();
    let config = format!("app_service_config_files = [{:?}]\n", registration.to_str().unwrap());
    let server = Server::start_with_config(binary, &config);
    println!();
    println!("server pid {} (many rooms, many invites)", server.pid());

    let user = server.register("many");
    if many_rooms {
        initial_sync_in_many_rooms(&server, &user);
    }
    many_invites(&server, &user, rounds);
    let _ = std::fs::remove_file(&registration);
}

/// The initial /sync (default filter) of `user` once it is in
/// [`MANY_ROOMS`] rooms with a few messages each.
fn initial_sync_in_many_rooms(server: &Server, user: &Client) {
    let setup_started = Instant::now();
    for index in 0..MANY_ROOMS {
        let (status, body) = user.post(
            "/_matrix/client/v3/createRoom",
            &json!({"preset": "private_chat", "name": format!("many {index}")}),
        );
        assert_eq!(status, 200, "createRoom: {body}");
        let room = body["room_id"].as_str().unwrap().to_string();
        for message in 0..MESSAGES_PER_ROOM {
            send(user, &room, &format!("many{index}-{message}"));
        }
    }
    println!(
        "setup: 1 user in {MANY_ROOMS} rooms, {MESSAGES_PER_ROOM} messages each, in {:.1} s",
        setup_started.elapsed().as_secs_f64()
    );
    // The first one (nothing cached for this user), then the median of more.
    let mut size = 0;
    let mut cpu = Vec::new();
    let mut times: Vec<Duration> = (0..=REPEATS)
        .map(|_| {
            let cpu_before = server.cpu_seconds();
            let started = Instant::now();
            let (status, body) = user.request_text("GET", "/_matrix/client/v3/sync", None);
            let elapsed = started.elapsed();
            cpu.push(Duration::from_secs_f64(server.cpu_seconds() - cpu_before));
            assert_eq!(status, 200, "sync: {body}");
            size = body.len();
            elapsed
        })
        .collect();
    let (first, first_cpu) = (times.remove(0), cpu.remove(0));
    let (initial, initial_cpu) = (median(times), median(cpu));
    println!("{:<44} {:>14}   target", "figure", "measured");
    let name = format!("initial /sync, {MANY_ROOMS} rooms");
    row(&format!("{name}, first"), ms(first), "<= 50 ms", within_ms(first, 50.0));
    row("  its server CPU", ms(first_cpu), "", true);
    row(&format!("{name}, median of {REPEATS}"), ms(initial), "<= 50 ms", within_ms(initial, 50.0));
    row("  its server CPU", ms(initial_cpu), "", true);
    row("  its body", format!("{:.2} MB", size as f64 / 1e6), "", true);
}

/// `rounds` `createRoom`s by `user`, each inviting the same [`INVITES`]
/// local users (registered by the application service: no password
/// hashing), while another connection asks `/versions` over and over.
fn many_invites(server: &Server, user: &Client, rounds: usize) {
    let setup_started = Instant::now();
    let invitees = register_many_by_app_service(server, INVITES);
    println!("setup: {INVITES} users, in {:.1} s", setup_started.elapsed().as_secs_f64());
    println!("{:<44} {:>14}   target", "figure", "measured");
    let creator = user.with_timeout(Duration::from_secs(120));
    for _ in 0..rounds {
        let (stalls, stop) = watch_stalls(user);
        let cpu_before = server.cpu_seconds();
        let started = Instant::now();
        let (status, body) = creator
            .post("/_matrix/client/v3/createRoom", &json!({"preset": "private_chat", "invite": invitees}));
        let elapsed = started.elapsed();
        let cpu = server.cpu_seconds() - cpu_before;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let longest_wait = stalls.join().unwrap();
        assert_eq!(status, 200, "createRoom: {body}");
        let room = body["room_id"].as_str().unwrap();
        let (status, members) =
            user.get(&format!("/_matrix/client/v3/rooms/{room}/members?membership=invite"));
        assert_eq!(status, 200, "members: {members}");
        assert_eq!(members["chunk"].as_array().map_or(0, Vec::len), INVITES, "every invitee is invited");
        let secs = |duration: Duration| format!("{:.3} s", duration.as_secs_f64());
        row(
            &format!("createRoom with {INVITES} invites"),
            secs(elapsed),
            "<= 0.5 s",
            elapsed <= Duration::from_millis(500),
        );
        row("  its server CPU", format!("{cpu:.3} s"), "", true);
        row("  longest /versions wait meanwhile", ms(longest_wait), "", true);
    }
}

/// Registers `count` users in the application service's namespace on a few
/// connections at once; returns their user IDs.
fn register_many_by_app_service(server: &Server, count: usize) -> Vec<String> {
    let threads = 4;
    let workers: Vec<_> = (0..threads)
        .map(|worker| {
            let service = app_service_client(&server.http);
            thread::spawn(move || {
                (worker..count)
                    .step_by(threads)
                    .map(|index| register_by_app_service(&service, &format!("bench_{index}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    workers.into_iter().flat_map(|worker| worker.join().unwrap()).collect()
}

/// Asks `/versions` over and over on a connection of its own until told to
/// stop; answers the longest wait (how long the one thread was held).
fn watch_stalls(client: &Client) -> (thread::JoinHandle<Duration>, Arc<std::sync::atomic::AtomicBool>) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = client.fresh_connection();
    let stopped = stop.clone();
    let watcher = thread::spawn(move || {
        let mut longest = Duration::ZERO;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let started = Instant::now();
            let (status, _) = client.get("/_matrix/client/versions");
            assert_eq!(status, 200);
            longest = longest.max(started.elapsed());
            thread::sleep(Duration::from_millis(1));
        }
        longest
    });
    (watcher, stop)
}

/// Sends `count` text messages round-robin over `rooms`, returning each latency.
fn send_batch(client: &Client, rooms: &[String], tag: &str, count: usize) -> Vec<Duration> {
    (0..count)
        .map(|index| {
            let started = Instant::now();
            send(client, &rooms[index % rooms.len()], &format!("{tag}-{index}"));
            started.elapsed()
        })
        .collect()
}

fn send(client: &Client, room: &str, txn: &str) {
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    let (status, body) = client.put(&path, &json!({"msgtype": "m.text", "body": format!("hello {txn}")}));
    assert_eq!(status, 200, "send: {body}");
}

/// Times `WAKEUPS` long-poll wake-ups; returns the medians measured from just
/// before the send request and from its response (negative when the /sync
/// answer arrives first).
fn long_poll_wakeups(poller: &Client, sender: &Client, room: &str, mut since: String) -> (Duration, f64) {
    let mut from_request = Vec::new();
    let mut from_response = Vec::new();
    for index in 0..WAKEUPS {
        let poller = poller.clone();
        let path = format!("/_matrix/client/v3/sync?since={since}&timeout=30000");
        let waiting = thread::spawn(move || {
            let (status, body) = poller.get(&path);
            assert_eq!(status, 200, "sync: {body}");
            (Instant::now(), body["next_batch"].as_str().unwrap().to_string())
        });
        thread::sleep(PARK_DELAY);
        let before_send = Instant::now();
        send(sender, room, &format!("wake{index}"));
        let after_send = Instant::now();
        let (answered, next_batch) = waiting.join().unwrap();
        from_request.push(answered.duration_since(before_send));
        from_response.push(if answered >= after_send {
            answered.duration_since(after_send).as_secs_f64()
        } else {
            -after_send.duration_since(answered).as_secs_f64()
        });
        since = next_batch;
    }
    from_response.sort_by(f64::total_cmp);
    (median(from_request), from_response[from_response.len() / 2])
}

fn within_ms(duration: Duration, limit: f64) -> bool {
    duration.as_secs_f64() * 1000.0 <= limit
}

fn ms_signed(seconds: f64) -> String {
    format!("{:.3} ms", seconds * 1000.0)
}

fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort();
    durations[durations.len() / 2]
}
