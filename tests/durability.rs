//! Durability: a clean restart keeps accounts, devices and sessions; a
//! `kill -9` in the middle of a registration burst loses no account whose
//! registration was acknowledged, and one in the middle of concurrent sends
//! (whose writes are committed in groups) loses no acknowledged event.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::rooms::{create_room, join};
use common::{Node, PASSWORD, eventually, try_register};
use serde_json::json;

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

#[test]
fn a_restart_keeps_every_account_and_session() {
    let mut node = Node::start();
    let clients: Vec<_> = (0..5).map(|index| node.register(&format!("user{index}"))).collect();
    let first = &clients[0];
    let (status, _) = first
        .put(&format!("/_matrix/client/v3/devices/{}", first.device_id), &json!({"display_name": "kept"}));
    assert_eq!(status, 200);
    let (status, _) = first.put(
        &format!("/_matrix/client/v3/profile/{}/displayname", first.user_id),
        &json!({"displayname": "First"}),
    );
    assert_eq!(status, 200);

    node.restart();

    for (index, client) in clients.iter().enumerate() {
        // Old access tokens still work ...
        let (status, whoami) = client.get(WHOAMI);
        assert_eq!(status, 200, "{whoami}");
        assert_eq!(whoami["device_id"], client.device_id.as_str());
        // ... and so do passwords.
        let mut again = node.client();
        assert_eq!(again.login(&format!("user{index}"), PASSWORD).0, 200);
    }
    let (_, device) = first.get(&format!("/_matrix/client/v3/devices/{}", first.device_id));
    assert_eq!(device["display_name"], "kept");
    let (_, profile) = node.client().get(&format!("/_matrix/client/v3/profile/{}", first.user_id));
    assert_eq!(profile["displayname"], "First");
}

/// Registration threads running against the node.
const LOAD_THREADS: usize = 3;
/// Each thread stops after this many registrations (the node is killed long before).
const MAX_PER_THREAD: usize = 100;
/// And after this long.
const MAX_LOAD_TIME: Duration = Duration::from_secs(10);
/// The node is killed once this many registrations were acknowledged.
const KILL_AFTER: usize = 30;

#[test]
fn kill_9_during_registrations_loses_no_acknowledged_account() {
    // Every acknowledged account logs in from 127.0.0.1 at the end: more than
    // the default login limit per address allows.
    let mut node = Node::start_with_config(common::NO_LOGIN_LIMITS);
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..LOAD_THREADS)
        .map(|thread| {
            let client = node.client();
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for index in 0..MAX_PER_THREAD {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > MAX_LOAD_TIME {
                        return;
                    }
                    let name = format!("load{thread}x{index}");
                    match try_register(&client, &name, PASSWORD) {
                        Ok(200) => acknowledged.lock().unwrap().push(name),
                        Ok(status) => panic!("registering {name}: status {status}"),
                        // The node was killed under us.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();

    eventually(MAX_LOAD_TIME, || (acknowledged.lock().unwrap().len() >= KILL_AFTER).then_some(()));
    node.kill9();
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() < LOAD_THREADS * MAX_PER_THREAD, "the load ended before the kill");

    node.restart();
    for name in &acknowledged {
        let mut client = node.client();
        let (status, body) = client.login(name, PASSWORD);
        assert_eq!(status, 200, "{name} was acknowledged but is gone: {body}");
    }
    // The node takes new registrations after the crash.
    node.register("after-crash");
}

/// Senders in the send burst, each its own user on its own connection.
const SEND_THREADS: usize = 4;
/// The node is killed once this many sends were acknowledged.
const KILL_AFTER_SENDS: usize = 100;

#[test]
fn kill_9_during_concurrent_sends_loses_no_acknowledged_event() {
    let mut node = Node::start();
    let owner = node.register("owner");
    let room_id = create_room(&owner, json!({"preset": "public_chat"}));
    let senders: Vec<_> = (0..SEND_THREADS)
        .map(|index| {
            let sender = node.register(&format!("sender{index}"));
            join(&sender, &room_id);
            sender
        })
        .collect();
    let acknowledged = Arc::new(Mutex::new(Vec::<(usize, String, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(thread, sender)| {
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            let room_id = room_id.clone();
            std::thread::spawn(move || {
                for index in 0.. {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > MAX_LOAD_TIME {
                        return sender;
                    }
                    let txn = format!("burst-{index}");
                    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}");
                    let body = json!({"msgtype": "m.text", "body": format!("{thread}/{index}")}).to_string();
                    match sender.try_request("PUT", &path, Some(body.as_bytes())) {
                        Ok((200, answer)) => {
                            let event_id = answer["event_id"].as_str().unwrap().to_string();
                            acknowledged.lock().unwrap().push((thread, txn, event_id));
                        }
                        Ok((status, answer)) => panic!("send {txn}: {status} {answer}"),
                        // The node was killed under us.
                        Err(_) => return sender,
                    }
                }
                sender
            })
        })
        .collect();

    eventually(MAX_LOAD_TIME, || (acknowledged.lock().unwrap().len() >= KILL_AFTER_SENDS).then_some(()));
    node.kill9();
    stop.store(true, Ordering::SeqCst);
    let senders: Vec<_> = workers.into_iter().map(|worker| worker.join().unwrap()).collect();
    let acknowledged = acknowledged.lock().unwrap().clone();

    node.restart();
    for (thread, txn, event_id) in &acknowledged {
        let sender = &senders[*thread];
        let (status, event) = sender.get(&format!("/_matrix/client/v3/rooms/{room_id}/event/{event_id}"));
        assert_eq!(status, 200, "{event_id} was acknowledged but is gone: {event}");
        // Retrying the transaction answers the same event.
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}");
        let (status, again) = sender.put(&path, &json!({"msgtype": "m.text", "body": "retry"}));
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["event_id"], event_id.as_str());
    }
    // The room takes new messages after the crash.
    let (status, _) = senders[0].put(
        &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/after-crash"),
        &json!({"msgtype": "m.text", "body": "still here"}),
    );
    assert_eq!(status, 200);
}

#[test]
fn the_wal_is_folded_into_the_database_once_writes_pause() {
    let node = Node::start();
    let alice = node.register("alice");
    let room_id = create_room(&alice, json!({"preset": "private_chat"}));
    for index in 0..20 {
        let (status, _) = alice.put(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/wal-{index}"),
            &json!({"msgtype": "m.text", "body": "filling the log"}),
        );
        assert_eq!(status, 200);
    }
    let wal = node.data_dir.0.join("hearth.db-wal");
    let wal_size = || std::fs::metadata(&wal).map(|metadata| metadata.len()).unwrap_or(0);
    assert!(wal_size() > 0, "the sends went to the WAL");
    eventually(Duration::from_secs(10), || (wal_size() == 0).then_some(()));
    // Everything is still there.
    let (status, page) = alice.get(&format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=30"));
    assert_eq!(status, 200);
    let messages = page["chunk"].as_array().unwrap().iter().filter(|event| event["type"] == "m.room.message");
    assert_eq!(messages.count(), 20, "{page}");
}
