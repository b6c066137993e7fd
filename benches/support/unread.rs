//! Unread counts at depth, against the real release binary on loopback: a
//! user with 10,000 unread messages in one room, then times an incremental
//! /sync with one new message, a send into that room, read receipts, and the
//! long-poll wake-up of a user in 21 rooms with ~2,000 unread in one. It
//! measures and prints; it asserts nothing but the counts being exact.
//!
//! Run by `cargo bench --bench unread` alone and at the end of
//! `cargo bench --bench rooms`.

use std::thread;
use std::time::{Duration, Instant};

use super::{Client, Server, ms};
use serde_json::{Value, json};

/// Unread messages in the deep room.
const DEEP: usize = 10_000;
/// Unread messages in the long-polling user's busy room.
const BUSY: usize = 2_000;
/// Rooms the long-polling user is in.
const POLLER_ROOMS: usize = 21;
/// Repetitions of each timing (the median is printed).
const REPEATS: usize = 21;
/// How long the long-poll thread waits before the send, so the /sync is parked.
const PARK_DELAY: Duration = Duration::from_millis(30);

/// Starts a server of `binary`, sets up the rooms and prints the figures.
pub fn run(binary: &str) {
    let server = Server::start(binary);
    let reader = server.register("reader");
    let sender = server.register("sender");
    let poller = server.register("poller");

    // The deep room: the sender's messages, all unread by the reader.
    let deep = create_room(&reader, "deep");
    join(&sender, &deep);
    let started = Instant::now();
    let mut sent = Vec::with_capacity(DEEP);
    for index in 0..DEEP {
        sent.push(send(&sender, &deep, &format!("deep{index}")));
    }
    println!("setup: {DEEP} messages in {:.1} s", started.elapsed().as_secs_f64());

    // The poller's 21 rooms, one with BUSY unread.
    let mut rooms = Vec::new();
    for index in 0..POLLER_ROOMS {
        let room = create_room(&poller, &format!("poller {index}"));
        join(&sender, &room);
        rooms.push(room);
    }
    let busy = rooms[0].clone();
    for index in 0..BUSY {
        send(&sender, &busy, &format!("busy{index}"));
    }
    println!();
    println!("{:<56} {:>12}   target", "figure", "measured");

    // Incremental /sync with one new message, at DEEP unread.
    let (_, body) = reader.get("/_matrix/client/v3/sync");
    assert_eq!(unread_in(&body, &deep), DEEP as u64, "counts are exact");
    let mut since = body["next_batch"].as_str().unwrap().to_string();
    let mut syncs = Vec::new();
    let mut sends = Vec::new();
    for index in 0..REPEATS {
        let started = Instant::now();
        send(&sender, &deep, &format!("inc{index}"));
        sends.push(started.elapsed());
        let started = Instant::now();
        let (status, body) = reader.get(&format!("/_matrix/client/v3/sync?since={since}&timeout=0"));
        syncs.push(started.elapsed());
        assert_eq!(status, 200, "sync: {body}");
        assert_eq!(unread_in(&body, &deep), (DEEP + index + 1) as u64, "counts are exact");
        since = body["next_batch"].as_str().unwrap().to_string();
    }
    row(&format!("incremental /sync, 1 new message, {DEEP} unread"), median(syncs), "<= 1 ms");
    row(&format!("send into that room ({DEEP} unread)"), median(sends), "<= 0.6 ms");

    // Long-poll wake-up of the poller (21 rooms, BUSY unread in one).
    let (_, body) = poller.get("/_matrix/client/v3/sync");
    assert_eq!(unread_in(&body, &busy), BUSY as u64, "counts are exact");
    let mut since = body["next_batch"].as_str().unwrap().to_string();
    let mut wakeups = Vec::new();
    for index in 0..REPEATS {
        let client = poller.clone();
        let path = format!("/_matrix/client/v3/sync?since={since}&timeout=30000");
        let waiting = thread::spawn(move || {
            let (status, body) = client.get(&path);
            assert_eq!(status, 200, "sync: {body}");
            (Instant::now(), body["next_batch"].as_str().unwrap().to_string())
        });
        thread::sleep(PARK_DELAY);
        let before_send = Instant::now();
        send(&sender, &busy, &format!("wake{index}"));
        let (answered, next_batch) = waiting.join().unwrap();
        wakeups.push(answered.duration_since(before_send));
        since = next_batch;
    }
    row(
        &format!("long-poll wake-up, {POLLER_ROOMS} rooms, {BUSY} unread in one"),
        median(wakeups),
        "<= 2 ms",
    );

    // Receipts: one in the middle of the deep room (half stays unread), then
    // one on its newest message (all read). Each deletes what it covers.
    let middle = &sent[DEEP / 2 - 1];
    let started = Instant::now();
    receipt(&reader, &deep, middle);
    let middle_receipt = started.elapsed();
    let (_, body) = reader.get("/_matrix/client/v3/sync");
    assert_eq!(unread_in(&body, &deep), (DEEP / 2 + REPEATS) as u64, "counts are exact");
    row(&format!("read receipt mid-room ({DEEP} -> {} unread)", DEEP / 2 + REPEATS), middle_receipt, "");
    let newest = body["rooms"]["join"][&deep]["timeline"]["events"]
        .as_array()
        .and_then(|events| events.last())
        .and_then(|event| event["event_id"].as_str())
        .unwrap()
        .to_string();
    let started = Instant::now();
    receipt(&reader, &deep, &newest);
    let last_receipt = started.elapsed();
    let (_, body) = reader.get("/_matrix/client/v3/sync");
    assert_eq!(unread_in(&body, &deep), 0, "counts are exact");
    row(&format!("read receipt on the newest ({} -> 0 unread)", DEEP / 2 + REPEATS), last_receipt, "");
}

fn create_room(client: &Client, name: &str) -> String {
    let (status, body) =
        client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat", "name": name}));
    assert_eq!(status, 200, "createRoom: {body}");
    body["room_id"].as_str().unwrap().to_string()
}

fn join(client: &Client, room: &str) {
    let (status, body) = client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({}));
    assert_eq!(status, 200, "join: {body}");
}

fn send(client: &Client, room: &str, txn: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    let (status, body) = client.put(&path, &json!({"msgtype": "m.text", "body": format!("hello {txn}")}));
    assert_eq!(status, 200, "send: {body}");
    body["event_id"].as_str().unwrap().to_string()
}

fn receipt(client: &Client, room: &str, event_id: &str) {
    let (status, body) =
        client.post(&format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event_id}"), &json!({}));
    assert_eq!(status, 200, "receipt: {body}");
}

/// A joined room's `notification_count` in a sync answer.
fn unread_in(sync: &Value, room: &str) -> u64 {
    sync["rooms"]["join"][room]["unread_notifications"]["notification_count"].as_u64().unwrap_or(0)
}

fn row(name: &str, measured: Duration, target: &str) {
    println!("{name:<56} {:>12}   {target}", ms(measured));
}

fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort();
    durations[durations.len() / 2]
}
