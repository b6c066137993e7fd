//! Simplified Sliding Sync (MSC4186) timings against the real release
//! binary: a user in 20 rooms asks for the first answer of a connection as
//! Element X does (one list of 20 rooms, one timeline event each, the
//! required state the room list shows, account data, receipts and typing),
//! then an incremental answer after one new message, then long polls woken
//! by a send. It measures and prints beside the targets; it asserts nothing.
//!
//! Run it with `cargo bench --bench sliding_sync` (`HEARTH_BENCH_BIN` measures
//! another build, as in the rooms benchmark). Times are taken at the client
//! on loopback, so they include the HTTP exchange.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Client, Server, load_average, ms};

mod support;

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
/// Rooms the timed user is in.
const ROOMS: usize = 20;
/// Messages sent in each room before timing.
const MESSAGES_PER_ROOM: usize = 5;
/// Repetitions of each timing (the median is printed).
const REPEATS: usize = 21;
/// How long the long-poll thread waits before the send, so the request is parked.
const PARK_DELAY: Duration = Duration::from_millis(30);

fn main() {
    let binary =
        std::env::var("HEARTH_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hearth").to_string());
    println!("hearth sliding sync benchmark: {binary}");
    println!(
        "machine: {} CPUs, load average {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    let server = Server::start(&binary);
    let alice = server.register("alice");
    let bob = server.register("bob");
    let mut rooms = Vec::new();
    for index in 0..ROOMS {
        let (status, body) = alice.post(
            "/_matrix/client/v3/createRoom",
            &json!({"preset": "public_chat", "name": format!("room {index}")}),
        );
        assert_eq!(status, 200, "createRoom: {body}");
        let room = body["room_id"].as_str().unwrap().to_string();
        let (status, body) = bob.post(&format!("/_matrix/client/v3/join/{room}"), &json!({}));
        assert_eq!(status, 200, "join: {body}");
        for message in 0..MESSAGES_PER_ROOM {
            send(&bob, &room, &format!("setup{index}_{message}"));
        }
        rooms.push(room);
    }

    let body = element_x_body();
    let first = median(
        (0..REPEATS)
            .map(|_| {
                let started = Instant::now();
                let answer = sliding(&alice, None, &body);
                let took = started.elapsed();
                assert_eq!(answer["rooms"].as_object().map_or(0, |rooms| rooms.len()), ROOMS, "{answer}");
                took
            })
            .collect(),
    );
    println!("{:<48} {:>10}   target", "figure", "measured");
    row("first answer, 20 rooms", first, 5.0);

    let mut pos = sliding(&alice, None, &body)["pos"].as_str().unwrap().to_string();
    let mut incremental = Vec::new();
    for index in 0..REPEATS {
        send(&bob, &rooms[index % ROOMS], &format!("inc{index}"));
        let started = Instant::now();
        let answer = sliding(&alice, Some(&pos), &body);
        incremental.push(started.elapsed());
        assert_eq!(answer["rooms"].as_object().map_or(0, |rooms| rooms.len()), 1, "{answer}");
        pos = answer["pos"].as_str().unwrap().to_string();
    }
    row("incremental answer, 1 new message", median(incremental), 1.0);

    let mut wakeups = Vec::new();
    for index in 0..REPEATS {
        let poller = alice.clone();
        let (body, from) = (body.clone(), pos.clone());
        let waiting = thread::spawn(move || {
            let answer = sliding_waiting(&poller, &from, &body);
            (Instant::now(), answer["pos"].as_str().unwrap().to_string())
        });
        thread::sleep(PARK_DELAY);
        let before_send = Instant::now();
        send(&bob, &rooms[index % ROOMS], &format!("wake{index}"));
        let (answered, next) = waiting.join().unwrap();
        wakeups.push(answered.duration_since(before_send));
        pos = next;
    }
    row("long-poll wake-up (from send request)", median(wakeups), 2.0);

    // The same wake-up through /v3/sync, measured the same way on the same
    // machine, to tell the endpoint's cost from the machine's load.
    let (_, answer) = alice.get("/_matrix/client/v3/sync?timeout=0");
    let mut since = answer["next_batch"].as_str().unwrap().to_string();
    let mut wakeups = Vec::new();
    for index in 0..REPEATS {
        let poller = alice.clone();
        let path = format!("/_matrix/client/v3/sync?since={since}&timeout=30000");
        let waiting = thread::spawn(move || {
            let (status, answer) = poller.get(&path);
            assert_eq!(status, 200, "sync: {answer}");
            (Instant::now(), answer["next_batch"].as_str().unwrap().to_string())
        });
        thread::sleep(PARK_DELAY);
        let before_send = Instant::now();
        send(&bob, &rooms[index % ROOMS], &format!("v3wake{index}"));
        let (answered, next) = waiting.join().unwrap();
        wakeups.push(answered.duration_since(before_send));
        since = next;
    }
    println!(
        "{:<48} {:>10}   (for comparison)",
        "/v3/sync long-poll wake-up (from send request)",
        ms(median(wakeups))
    );
}

/// The room list request Element X sends (matrix-rust-sdk's room list service).
fn element_x_body() -> Value {
    json!({
        "conn_id": "room-list",
        "lists": { "all_rooms": {
            "ranges": [[0, ROOMS - 1]],
            "timeline_limit": 1,
            "required_state": [
                ["m.room.encryption", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
                ["m.room.name", ""], ["m.room.topic", ""], ["m.room.avatar", ""],
                ["m.room.canonical_alias", ""], ["m.room.power_levels", ""], ["m.room.join_rules", ""],
                ["m.room.create", ""], ["m.room.history_visibility", ""], ["m.room.pinned_events", ""],
                ["m.call.member", "*"], ["m.room.tombstone", ""],
            ],
            "filters": { "not_room_types": ["m.space"] },
        } },
        "extensions": {
            "account_data": { "enabled": true },
            "receipts": { "enabled": true, "rooms": ["*"] },
            "typing": { "enabled": true },
        },
    })
}

fn sliding(client: &Client, pos: Option<&str>, body: &Value) -> Value {
    let path = match pos {
        Some(pos) => format!("{PATH}?pos={pos}&timeout=0"),
        None => format!("{PATH}?timeout=0"),
    };
    let (status, answer) = client.post(&path, body);
    assert_eq!(status, 200, "sliding sync: {answer}");
    answer
}

fn sliding_waiting(client: &Client, pos: &str, body: &Value) -> Value {
    let (status, answer) = client.post(&format!("{PATH}?pos={pos}&timeout=30000"), body);
    assert_eq!(status, 200, "sliding sync: {answer}");
    answer
}

fn send(client: &Client, room: &str, txn: &str) {
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    let (status, body) = client.put(&path, &json!({"msgtype": "m.text", "body": format!("hello {txn}")}));
    assert_eq!(status, 200, "send: {body}");
}

fn row(name: &str, measured: Duration, target_ms: f64) {
    let verdict = if measured.as_secs_f64() * 1000.0 <= target_ms { "ok" } else { "MISSED" };
    println!("{name:<48} {:>10}   <= {target_ms} ms  {verdict}", ms(measured));
}

fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort();
    durations[durations.len() / 2]
}
