//! Notifications reaching push gateways: a gateway started here on loopback
//! receives exactly what the default push rules call for, in the Push
//! Gateway API's shape, across a restart of the server with the gateway
//! down; a gateway's `rejected` removes the pusher.
//! Spec: <https://spec.matrix.org/latest/push-gateway-api/>.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, Node, eventually};
use serde_json::{Value, json};

const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// A push gateway on loopback: records every request body, answers with
/// `answer`.
struct Gateway {
    port: u16,
    received: Arc<Mutex<Vec<Value>>>,
    answer: Arc<Mutex<Value>>,
}

impl Gateway {
    fn start() -> Gateway {
        Gateway::start_on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn start_on(listener: TcpListener) -> Gateway {
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new(json!({"rejected": []})));
        let (log, reply) = (received.clone(), answer.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some((path, body)) = read_request(&stream) {
                    assert_eq!(path, NOTIFY_PATH);
                    log.lock().unwrap().push(body);
                }
                let text = reply.lock().unwrap().to_string();
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        Gateway { port, received, answer }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}{NOTIFY_PATH}", self.port)
    }

    /// The notifications received so far but invites (every invite of a
    /// user with a pusher notifies, `createRoom`'s too: the tests of other
    /// events count those apart, with [`Gateway::invites`]).
    fn notifications(&self) -> Vec<Value> {
        self.all().into_iter().filter(|notification| !is_invite(notification)).collect()
    }

    /// The invite notifications received so far.
    fn invites(&self) -> Vec<Value> {
        self.all().into_iter().filter(is_invite).collect()
    }

    fn all(&self) -> Vec<Value> {
        self.received.lock().unwrap().iter().map(|body| body["notification"].clone()).collect()
    }

    /// Waits until `count` notifications (but invites) arrived; returns them.
    fn wait_for(&self, count: usize) -> Vec<Value> {
        eventually(Duration::from_secs(20), || {
            let seen = self.notifications();
            (seen.len() >= count).then_some(seen)
        })
    }

    /// Waits until `count` invite notifications arrived; returns them.
    fn wait_for_invites(&self, count: usize) -> Vec<Value> {
        eventually(Duration::from_secs(20), || {
            let seen = self.invites();
            (seen.len() >= count).then_some(seen)
        })
    }
}

fn is_invite(notification: &Value) -> bool {
    notification["type"] == "m.room.member" && notification["content"]["membership"] == "invite"
}

/// Reads one request: (path, JSON body).
fn read_request(mut stream: &TcpStream) -> Option<(String, Value)> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut bytes = Vec::new();
    let mut buffer = [0; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut buffer).ok()?;
        if read == 0 {
            return None;
        }
        bytes.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
    let path = head.split(' ').nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
        })?
        .parse()
        .ok()?;
    while bytes.len() < head_end + length {
        let read = stream.read(&mut buffer).ok()?;
        if read == 0 {
            return None;
        }
        bytes.extend_from_slice(&buffer[..read]);
    }
    Some((path, serde_json::from_slice(&bytes[head_end..head_end + length]).ok()?))
}

fn start_node() -> Node {
    Node::start_with(&["--registration", "open", "--federation-allow-ip", "127.0.0.0/8"])
}

fn set_pusher(client: &Client, pushkey: &str, data: Value) {
    let (status, body) = client.post(
        "/_matrix/client/v3/pushers/set",
        &json!({
            "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
            "app_display_name": "Example", "device_display_name": "phone", "lang": "en",
            "data": data,
        }),
    );
    assert_eq!(status, 200, "{body}");
}

/// A gateway, alice, and bob with the pusher `bob-phone` sending there
/// (`data` with the gateway's `url`).
fn bob_pushed_by_alice(node: &Node, mut data: Value) -> (Gateway, Client, Client) {
    let gateway = Gateway::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    data["url"] = json!(gateway.url());
    set_pusher(&bob, "bob-phone", data);
    (gateway, alice, bob)
}

/// Alice creates a room (a DM with bob if `direct`), invites and joins `others`.
fn room(alice: &Client, others: &[(&Client, &str)], direct: bool) -> String {
    let invite: Vec<&str> = others.iter().map(|(_, user_id)| *user_id).collect();
    let (status, body) = alice.post(
        "/_matrix/client/v3/createRoom",
        &json!({"preset": "trusted_private_chat", "is_direct": direct, "invite": invite}),
    );
    assert_eq!(status, 200, "{body}");
    let room_id = body["room_id"].as_str().unwrap().to_owned();
    for (client, _) in others {
        let (status, body) = client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({}));
        assert_eq!(status, 200, "{body}");
    }
    room_id
}

fn send(client: &Client, room_id: &str, content: Value) -> String {
    let txn = format!(
        "t{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    );
    let (status, body) =
        client.put(&format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}"), &content);
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

#[test]
fn the_gateway_gets_what_the_default_rules_call_for() {
    let node = start_node();
    let gateway = Gateway::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let carol = node.register("carol");
    let (bob_id, carol_id) = (node.user_id("bob"), node.user_id("carol"));
    set_pusher(&bob, "bob-phone", json!({"url": gateway.url(), "extra": "kept"}));
    let dm = room(&alice, &[(&bob, &bob_id)], true);
    let group = room(&alice, &[(&bob, &bob_id), (&carol, &carol_id)], false);
    let muted = room(&alice, &[(&bob, &bob_id), (&carol, &carol_id)], false);
    // Bob mutes a room: a room rule with no actions.
    let (status, body) =
        bob.put(&format!("/_matrix/client/v3/pushrules/global/room/{muted}"), &json!({"actions": []}));
    assert_eq!(status, 200, "{body}");

    // A DM message: notify with a sound, so high priority.
    let hello = send(&alice, &dm, text("hello bob"));
    let first = gateway.wait_for(1);
    let notification = &first[0];
    assert_eq!(notification["event_id"], hello.as_str());
    assert_eq!(notification["room_id"], dm.as_str());
    assert_eq!(notification["type"], "m.room.message");
    assert_eq!(notification["sender"], node.user_id("alice"));
    assert_eq!(notification["sender_display_name"], "alice");
    assert_eq!(notification["content"]["body"], "hello bob");
    assert_eq!(notification["prio"], "high");
    let unread = notification["counts"]["unread"].as_u64().unwrap();
    assert!(unread >= 1, "{notification}");
    let device = &notification["devices"][0];
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["pushkey"], "bob-phone");
    assert!(device["pushkey_ts"].as_u64().unwrap() > 1_600_000_000, "seconds: {device}");
    assert_eq!(device["data"], json!({"extra": "kept"}), "the URL is left out");
    assert_eq!(device["tweaks"]["sound"], "default");

    // Not for bob's own message, nor in the muted room; a plain group
    // message notifies at low priority, a mention at high with a highlight.
    send(&bob, &dm, text("my own"));
    send(&alice, &muted, text("shh"));
    let plain = send(&alice, &group, text("hi all"));
    let mention = send(
        &alice,
        &group,
        json!({"msgtype": "m.text", "body": "bob: look", "m.mentions": {"user_ids": [bob_id]}}),
    );
    let all = gateway.wait_for(3);
    std::thread::sleep(Duration::from_millis(500));
    let all_now = gateway.notifications();
    assert_eq!(all_now.len(), 3, "exactly three: {all_now:#?}");
    assert_eq!(all[1]["event_id"], plain.as_str());
    assert_eq!(all[1]["prio"], "low");
    assert_eq!(all[1]["devices"][0]["tweaks"], json!({}));
    assert_eq!(all[2]["event_id"], mention.as_str());
    assert_eq!(all[2]["prio"], "high");
    assert_eq!(all[2]["devices"][0]["tweaks"]["highlight"], true);
    // Carol has no pusher: nothing for her ever went out.
    assert!(all_now.iter().all(|n| n["devices"][0]["pushkey"] == "bob-phone"));
}

#[test]
fn event_id_only_sends_ids_and_counts() {
    let node = start_node();
    let (gateway, alice, bob) = bob_pushed_by_alice(&node, json!({"format": "event_id_only"}));
    let dm = room(&alice, &[(&bob, &node.user_id("bob"))], true);
    // Bob's invite came first; without the event's type, only its position
    // tells it from the message.
    gateway.wait_for(1);
    let hello = send(&alice, &dm, text("secret"));
    let notification = gateway.wait_for(2).remove(1);
    assert_eq!(notification["event_id"], hello.as_str());
    assert_eq!(notification["room_id"], dm.as_str());
    assert!(notification["counts"]["unread"].as_u64().unwrap() >= 1, "{notification}");
    for field in ["content", "type", "sender", "sender_display_name", "room_name"] {
        assert!(notification.get(field).is_none(), "{field} in {notification}");
    }
    assert_eq!(notification["devices"][0]["data"], json!({"format": "event_id_only"}));
}

#[test]
fn queued_notifications_survive_a_crash_with_the_gateway_down() {
    let mut node = start_node();
    // The gateway's port, with nothing listening on it yet.
    let port = common::free_port();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let url = format!("http://127.0.0.1:{port}{NOTIFY_PATH}");
    set_pusher(&bob, "bob-phone", json!({"url": url}));
    let dm = room(&alice, &[(&bob, &node.user_id("bob"))], true);
    let first = send(&alice, &dm, text("one"));
    let second = send(&alice, &dm, text("two"));
    // Let the sender fail at least once, then crash and restart the server.
    std::thread::sleep(Duration::from_millis(300));
    node.kill9();
    node.restart();
    let gateway = Gateway::start_on(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let received = gateway.wait_for(2);
    assert_eq!(received[0]["event_id"], first.as_str());
    assert_eq!(received[1]["event_id"], second.as_str());
    let unread = |n: &Value| n["counts"]["unread"].as_u64().unwrap();
    // Counts are those of the delivery, when both messages are unread.
    assert!(unread(&received[0]) >= 2 && unread(&received[1]) == unread(&received[0]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gateway.notifications().len(), 2, "each delivered once");
}

#[test]
fn a_rejected_pushkey_removes_its_pusher() {
    let node = start_node();
    let (gateway, alice, bob) = bob_pushed_by_alice(&node, json!({}));
    let dm = room(&alice, &[(&bob, &node.user_id("bob"))], true);
    gateway.wait_for_invites(1);
    *gateway.answer.lock().unwrap() = json!({"rejected": ["bob-phone"]});
    send(&alice, &dm, text("hello"));
    gateway.wait_for(1);
    eventually(Duration::from_secs(10), || {
        let (status, body) = bob.get("/_matrix/client/v3/pushers");
        assert_eq!(status, 200);
        body["pushers"].as_array().unwrap().is_empty().then_some(())
    });
    send(&alice, &dm, text("again"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(gateway.notifications().len(), 1, "nothing more for a removed pusher");
}

#[test]
fn an_invite_notifies_the_invited_user() {
    let node = start_node();
    let (gateway, alice, _bob) = bob_pushed_by_alice(&node, json!({}));
    let room_id = room(&alice, &[], false);
    let (status, body) = alice.post(
        &format!("/_matrix/client/v3/rooms/{room_id}/invite"),
        &json!({"user_id": node.user_id("bob")}),
    );
    assert_eq!(status, 200, "{body}");
    let notification = gateway.wait_for_invites(1).remove(0);
    assert_eq!(notification["type"], "m.room.member");
    assert_eq!(notification["room_id"], room_id.as_str());
    assert_eq!(notification["content"]["membership"], "invite");
}

/// `.m.rule.invite_for_me` matches an invite made by `createRoom`'s `invite`
/// as much as one made by `/invite`: a DM started with bob rings his phone
/// (https://spec.matrix.org/latest/client-server-api/#default-override-rules).
/// Carol, invited too, has no pusher: nothing goes out for her.
#[test]
fn an_invite_in_create_room_notifies_the_invited_user() {
    let node = start_node();
    let (gateway, alice, _bob) = bob_pushed_by_alice(&node, json!({}));
    let carol = node.register("carol");
    let (status, body) = alice.post(
        "/_matrix/client/v3/createRoom",
        &json!({"is_direct": true, "invite": [node.user_id("bob"), node.user_id("carol")]}),
    );
    assert_eq!(status, 200, "{body}");
    let room_id = body["room_id"].as_str().unwrap();
    let notification = gateway.wait_for_invites(1).remove(0);
    assert_eq!(notification["room_id"], room_id);
    assert_eq!(notification["user_is_target"], true, "{notification}");
    assert_eq!(notification["membership"], "invite");
    assert_eq!(notification["sender"], node.user_id("alice").as_str());
    assert_eq!(notification["prio"], "high", "{notification}");
    assert_eq!(notification["devices"][0]["pushkey"], "bob-phone");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(gateway.invites().len(), 1, "one invite, bob's: {:#?}", gateway.invites());
    drop(carol);
}

/// As Synapse does: a read receipt that lowers the unread count sends a
/// count-only notification, so the phone's badge follows.
#[test]
fn a_read_receipt_updates_the_badge() {
    let node = start_node();
    let (gateway, alice, bob) = bob_pushed_by_alice(&node, json!({}));
    let dm = room(&alice, &[(&bob, &node.user_id("bob"))], true);
    let hello = send(&alice, &dm, text("hello"));
    gateway.wait_for(1);
    let (status, body) =
        bob.post(&format!("/_matrix/client/v3/rooms/{dm}/receipt/m.read/{hello}"), &json!({}));
    assert_eq!(status, 200, "{body}");
    let badge = gateway.wait_for(2).remove(1);
    assert!(badge.get("event_id").is_none(), "{badge}");
    assert_eq!(badge["counts"]["unread"], 0);
    assert_eq!(badge["devices"][0]["pushkey"], "bob-phone");
    // Reading again changes nothing: no more notifications.
    let (status, _) = bob.post(&format!("/_matrix/client/v3/rooms/{dm}/receipt/m.read/{hello}"), &json!({}));
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gateway.notifications().len(), 2);
}

/// Each pusher is a request per notification: an account has a bounded
/// number of them (updating one it has still works), each with bounded `data`.
#[test]
fn pushers_per_account_are_bounded() {
    let node = start_node();
    let bob = node.register("bob");
    let url = "https://push.example.org/_matrix/push/v1/notify";
    for n in 0..32 {
        set_pusher(&bob, &format!("key{n}"), json!({"url": url}));
    }
    let body = |pushkey: &str, data: Value| {
        json!({
            "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
            "app_display_name": "Example", "device_display_name": "phone", "lang": "en", "data": data,
        })
    };
    let answer = bob.post("/_matrix/client/v3/pushers/set", &body("one-more", json!({"url": url})));
    common::assert_error(&answer, 400, "M_INVALID_PARAM");
    set_pusher(&bob, "key0", json!({"url": url, "format": "event_id_only"}));
    let big = "x".repeat(20_000);
    let answer = bob.post("/_matrix/client/v3/pushers/set", &body("key1", json!({"url": url, "big": big})));
    common::assert_error(&answer, 400, "M_INVALID_PARAM");
}

/// Plain HTTP goes only to addresses `allow_ips` names: without it, a
/// loopback gateway is never reached.
#[test]
fn plain_http_needs_an_allowed_address() {
    let node = Node::start();
    let (gateway, alice, bob) = bob_pushed_by_alice(&node, json!({}));
    let dm = room(&alice, &[(&bob, &node.user_id("bob"))], true);
    send(&alice, &dm, text("hello"));
    // The first attempt is immediate, the retry a second later.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(gateway.notifications().is_empty());
}
