//! End-to-end encryption support: key upload, query and claim (with fallback
//! keys), to-device delivery and acknowledgement (in bounded pages, into
//! bounded inboxes, only to devices that exist), `device_lists` in /sync
//! and /keys/changes, cross-signing, device deletion, and the same across
//! two federating nodes. The server relays keys; the test plays the clients
//! and signs with real ed25519 keys.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use common::federation::{TestCa, start_federating};
use common::rooms::{create_room, enc, join, public_room, sync};
use common::{Client, Node, PASSWORD, assert_error, eventually};
use ed25519_compact::{KeyPair, Seed};
use serde_json::{Value, json};

/// How long federation gets to deliver something on loopback.
const DELIVERY: Duration = Duration::from_secs(20);

fn b64(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// A deterministic key pair per label.
fn key_pair(label: &str) -> KeyPair {
    let mut seed = [0u8; 32];
    for (index, byte) in label.bytes().enumerate() {
        seed[index % 32] ^= byte;
    }
    KeyPair::from_seed(Seed::new(seed))
}

/// Signs `value` as `user_id` with `key_id`: canonical JSON is serde_json's
/// compact output with sorted keys (no floats here).
fn sign(value: &mut Value, user_id: &str, key_id: &str, pair: &KeyPair) {
    let mut stripped = value.clone();
    stripped.as_object_mut().unwrap().remove("signatures");
    stripped.as_object_mut().unwrap().remove("unsigned");
    let signature = pair.sk.sign(serde_json::to_string(&stripped).unwrap().as_bytes(), None);
    let signatures = value.as_object_mut().unwrap().entry("signatures").or_insert_with(|| json!({}));
    let by_user = signatures.as_object_mut().unwrap().entry(user_id).or_insert_with(|| json!({}));
    by_user[key_id] = json!(b64(signature.as_ref()));
}

/// The signed device keys of a client's device.
fn device_keys(client: &Client) -> Value {
    let pair = key_pair(&format!("{}{}", client.user_id, client.device_id));
    let ed_id = format!("ed25519:{}", client.device_id);
    let mut keys = json!({
        "user_id": client.user_id,
        "device_id": client.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", client.device_id): b64(&[7; 32]),
            ed_id.clone(): b64(pair.pk.as_ref()),
        },
    });
    sign(&mut keys, &client.user_id, &ed_id, &pair);
    keys
}

#[track_caller]
fn upload(client: &Client, body: Value) -> Value {
    let (status, answer) = client.post("/_matrix/client/v3/keys/upload", &body);
    assert_eq!(status, 200, "keys/upload {body}: {answer}");
    answer
}

fn query(client: &Client, user_id: &str) -> Value {
    let (status, answer) =
        client.post("/_matrix/client/v3/keys/query", &json!({ "device_keys": { user_id: [] } }));
    assert_eq!(status, 200, "{answer}");
    answer
}

fn claim(client: &Client, user_id: &str, device_id: &str) -> Value {
    let body = json!({ "one_time_keys": { user_id: { device_id: "signed_curve25519" } } });
    let (status, answer) = client.post("/_matrix/client/v3/keys/claim", &body);
    assert_eq!(status, 200, "{answer}");
    answer["one_time_keys"][user_id][device_id].clone()
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_string()
}

/// Synapse stores the key strings as given; only the JSON's shape is checked.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3keysupload>
/// (the key formats are the clients' business; a wrong shape is M_BAD_JSON).
#[test]
fn opaque_key_strings_are_stored_and_wrong_shapes_are_bad_json() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let opaque = json!({
        "user_id": alice.user_id,
        "device_id": alice.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {
            format!("curve25519:{}", alice.device_id): "curve25519+key",
            format!("ed25519:{}", alice.device_id): "anotherkey",
        },
        "signatures": { &alice.user_id: { format!("ed25519:{}", alice.device_id): "self_signature" } },
    });
    upload(&alice, json!({ "device_keys": opaque, "one_time_keys": { "curve25519:AAAA": "not base64!" } }));
    let found = query(&bob, &alice.user_id);
    let stored = &found["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(stored["keys"][format!("ed25519:{}", alice.device_id)], "anotherkey", "{found}");

    let path = "/_matrix/client/v3/keys/upload";
    let mut no_algorithms = opaque.clone();
    no_algorithms.as_object_mut().unwrap().remove("algorithms");
    let mut number_key = opaque.clone();
    number_key["keys"][format!("ed25519:{}", alice.device_id)] = json!(5);
    for bad in [
        json!({ "device_keys": null }),
        json!({ "device_keys": "keys" }),
        json!({ "device_keys": no_algorithms }),
        json!({ "device_keys": number_key }),
        json!({ "one_time_keys": { "no_colon": "key" } }),
        json!({ "one_time_keys": { "a:b:c": "key" } }),
        json!({ "one_time_keys": { "signed_curve25519:AAAB": { "key": 1 } } }),
        json!({ "one_time_keys": { "signed_curve25519:AAAB": 1 } }),
        json!({ "fallback_keys": { "signed_curve25519:AAAC": { "key": "k", "fallback": "yes" } } }),
    ] {
        assert_error(&alice.post(path, &bad), 400, "M_BAD_JSON");
    }
}

#[test]
fn keys_are_uploaded_queried_and_claimed_with_the_fallback_key_last() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let keys = device_keys(&alice);
    let answer = upload(
        &alice,
        json!({
            "device_keys": keys,
            "one_time_keys": {
                "signed_curve25519:AAAAAQ": {"key": "one"},
                "signed_curve25519:AAAAAg": {"key": "two"},
            },
            "fallback_keys": { "signed_curve25519:AAAAAw": {"key": "fallback", "fallback": true} },
        }),
    );
    assert_eq!(answer["one_time_key_counts"]["signed_curve25519"], 2, "{answer}");

    // Someone else's device and another user's ID are refused (M_BAD_JSON, as
    // Synapse answers); signatures are the clients' to check, not the server's.
    assert_error(
        &bob.post("/_matrix/client/v3/keys/upload", &json!({ "device_keys": keys })),
        400,
        "M_BAD_JSON",
    );

    let found = query(&bob, &alice.user_id);
    let stored = &found["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(stored["keys"], keys["keys"], "{found}");
    assert_eq!(stored["signatures"], keys["signatures"], "{found}");

    let mut claimed: Vec<Value> = (0..4).map(|_| claim(&bob, &alice.user_id, &alice.device_id)).collect();
    let ids: Vec<String> =
        claimed.iter().map(|key| key.as_object().unwrap().keys().next().unwrap().clone()).collect();
    assert_eq!(
        ids,
        [
            "signed_curve25519:AAAAAQ",
            "signed_curve25519:AAAAAg",
            "signed_curve25519:AAAAAw",
            "signed_curve25519:AAAAAw"
        ]
    );
    assert_eq!(claimed.remove(2)["signed_curve25519:AAAAAw"]["key"], "fallback");

    let state = sync(&alice, "");
    assert_eq!(state["device_one_time_keys_count"]["signed_curve25519"], 0, "{state}");
    assert_eq!(state["device_unused_fallback_key_types"], json!([]), "{state}");
    // A new fallback key is unused again.
    upload(
        &alice,
        json!({ "fallback_keys": { "signed_curve25519:AAAABA": {"key": "next", "fallback": true} } }),
    );
    let state = sync(&alice, "");
    assert_eq!(state["device_unused_fallback_key_types"], json!(["signed_curve25519"]), "{state}");
}

#[test]
fn to_device_messages_are_delivered_once_and_deleted_when_acknowledged() {
    let node = Node::start();
    let alice = node.register("alice");
    let mut bob = node.register("bob");
    let first_device = bob.clone();
    bob.login("bob", PASSWORD);
    let start = next_batch(&sync(&first_device, ""));

    let body = json!({ "messages": { &first_device.user_id: { &first_device.device_id: { "n": 1 } } } });
    let (status, _) = alice.put("/_matrix/client/v3/sendToDevice/m.test/t1", &body);
    assert_eq!(status, 200);
    // The same transaction again is not delivered twice.
    let (status, _) = alice.put("/_matrix/client/v3/sendToDevice/m.test/t1", &body);
    assert_eq!(status, 200);
    let everyone = json!({ "messages": { &bob.user_id: { "*": { "n": 2 } } } });
    assert_eq!(alice.put("/_matrix/client/v3/sendToDevice/m.test/t2", &everyone).0, 200);

    let seen = sync(&first_device, &format!("since={start}"));
    let events = seen["to_device"]["events"].as_array().unwrap();
    let numbers: Vec<&Value> = events.iter().map(|event| &event["content"]["n"]).collect();
    assert_eq!(numbers, [&json!(1), &json!(2)], "{seen}");
    assert_eq!(events[0]["sender"], alice.user_id);
    assert_eq!(events[0]["type"], "m.test");
    // Not yet acknowledged: the same window shows them again.
    let again = sync(&first_device, &format!("since={start}"));
    assert_eq!(again["to_device"]["events"].as_array().unwrap().len(), 2, "{again}");
    // Syncing past them acknowledges them; after that they are gone for good.
    let after = sync(&first_device, &format!("since={}", next_batch(&seen)));
    assert_eq!(after["to_device"]["events"], json!([]), "{after}");
    let old = sync(&first_device, &format!("since={start}"));
    assert_eq!(old["to_device"]["events"], json!([]), "{old}");

    // The other device got the `*` message only.
    let other = sync(&bob, "");
    let numbers: Vec<&Value> =
        other["to_device"]["events"].as_array().unwrap().iter().map(|event| &event["content"]["n"]).collect();
    assert_eq!(numbers, [&json!(2)], "{other}");
}

#[test]
fn a_to_device_message_wakes_a_waiting_sync() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let start = next_batch(&sync(&bob, ""));
    let waiting = {
        let bob = bob.clone();
        std::thread::spawn(move || sync(&bob, &format!("since={start}&timeout=30000")))
    };
    std::thread::sleep(Duration::from_millis(300));
    let body = json!({ "messages": { &bob.user_id: { &bob.device_id: { "wake": true } } } });
    let began = std::time::Instant::now();
    assert_eq!(alice.put("/_matrix/client/v3/sendToDevice/m.test/w", &body).0, 200);
    let seen = waiting.join().unwrap();
    assert!(began.elapsed() < Duration::from_secs(10));
    assert_eq!(seen["to_device"]["events"][0]["content"]["wake"], true, "{seen}");
}

#[test]
fn device_list_changes_reach_room_members_and_deleted_devices_lose_their_keys() {
    let node = Node::start();
    let mut alice = node.register("alice");
    let bob = node.register("bob");
    let stranger = node.register("stranger");
    let room_id = public_room(&alice, &[&bob]);
    let start = next_batch(&sync(&bob, ""));
    let stranger_start = next_batch(&sync(&stranger, ""));

    upload(&alice, json!({ "device_keys": device_keys(&alice) }));
    let seen = sync(&bob, &format!("since={start}"));
    assert_eq!(seen["device_lists"]["changed"], json!([alice.user_id]), "{seen}");
    let (status, changes) =
        bob.get(&format!("/_matrix/client/v3/keys/changes?from={start}&to={}", next_batch(&seen)));
    assert_eq!(status, 200);
    assert_eq!(changes["changed"], json!([alice.user_id]), "{changes}");
    // Someone who shares no room hears nothing.
    let unrelated = sync(&stranger, &format!("since={stranger_start}"));
    assert_eq!(unrelated["device_lists"]["changed"], json!([]), "{unrelated}");

    // A second device with keys, then deleted: its keys go, and bob hears of it.
    let first = alice.clone();
    alice.login("alice", PASSWORD);
    upload(
        &alice,
        json!({ "device_keys": device_keys(&alice), "one_time_keys": { "signed_curve25519:X": {"key": "x"} } }),
    );
    assert_eq!(query(&bob, &alice.user_id)["device_keys"][&alice.user_id].as_object().unwrap().len(), 2);
    let before_delete = next_batch(&sync(&bob, ""));
    let path = format!("/_matrix/client/v3/devices/{}", enc(&alice.device_id));
    let auth = json!({ "auth": { "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD } });
    let (status, answer) = first.delete(&path, &auth);
    assert_eq!(status, 200, "{answer}");
    let seen = sync(&bob, &format!("since={before_delete}"));
    assert_eq!(seen["device_lists"]["changed"], json!([alice.user_id]), "{seen}");
    let devices = query(&bob, &alice.user_id)["device_keys"][&alice.user_id].clone();
    assert_eq!(devices.as_object().unwrap().keys().collect::<Vec<_>>(), [&first.device_id], "{devices}");
    assert_eq!(claim(&bob, &alice.user_id, &alice.device_id), Value::Null);

    // A newcomer to the room counts as changed; someone who left, as left.
    let before_moves = next_batch(&sync(&bob, ""));
    join(&stranger, &room_id);
    let (status, _) = first.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)), &json!({}));
    assert_eq!(status, 200);
    let seen = sync(&bob, &format!("since={before_moves}"));
    assert_eq!(seen["device_lists"]["changed"], json!([stranger.user_id]), "{seen}");
    assert_eq!(seen["device_lists"]["left"], json!([first.user_id]), "{seen}");
}

#[test]
fn cross_signing_keys_need_the_password_to_be_replaced_and_sign_devices() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    upload(&alice, json!({ "device_keys": device_keys(&alice) }));
    let user = alice.user_id.clone();
    let master = key_pair("master");
    let self_signing = key_pair("self");
    let master_id = format!("ed25519:{}", b64(master.pk.as_ref()));
    let self_id = format!("ed25519:{}", b64(self_signing.pk.as_ref()));
    let master_key =
        json!({ "user_id": user, "usage": ["master"], "keys": { &master_id: b64(master.pk.as_ref()) } });
    let mut self_key = json!({ "user_id": user, "usage": ["self_signing"], "keys": { &self_id: b64(self_signing.pk.as_ref()) } });
    sign(&mut self_key, &user, &master_id, &master);
    let body = json!({ "master_key": master_key, "self_signing_key": self_key });
    // The first upload needs no password; the same keys again neither.
    let path = "/_matrix/client/v3/keys/device_signing/upload";
    assert_eq!(alice.post(path, &body).0, 200);
    assert_eq!(alice.post(path, &body).0, 200);
    // New keys do.
    let other = key_pair("other master");
    let other_id = format!("ed25519:{}", b64(other.pk.as_ref()));
    let replacement = json!({ "master_key": { "user_id": user, "usage": ["master"], "keys": { &other_id: b64(other.pk.as_ref()) } } });
    let (status, challenge) = alice.post(path, &replacement);
    assert_eq!(status, 401, "{challenge}");
    // A self-signing key the master did not sign is refused.
    let mut unsigned_self = self_key.clone();
    unsigned_self.as_object_mut().unwrap().remove("signatures");
    assert_error(
        &alice.post(path, &json!({ "self_signing_key": unsigned_self })),
        400,
        "M_INVALID_SIGNATURE",
    );

    // The self-signing key signs the device; bob sees the signature and the keys.
    let mut signed_device = device_keys(&alice);
    signed_device.as_object_mut().unwrap().remove("signatures");
    sign(&mut signed_device, &user, &self_id, &self_signing);
    let (status, answer) = alice.post(
        "/_matrix/client/v3/keys/signatures/upload",
        &json!({ &user: { &alice.device_id: signed_device } }),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["failures"], json!({}), "{answer}");
    let found = query(&bob, &user);
    let signatures = &found["device_keys"][&user][&alice.device_id]["signatures"][&user];
    assert!(signatures.get(&self_id).is_some(), "{found}");
    assert!(signatures.get(format!("ed25519:{}", alice.device_id)).is_some(), "{found}");
    assert_eq!(found["master_keys"][&user]["keys"], master_key["keys"], "{found}");
    assert_eq!(found["self_signing_keys"][&user]["keys"], self_key["keys"], "{found}");
    // A signature by a key alice does not own is a failure, not a success.
    let mut bogus = device_keys(&alice);
    sign(&mut bogus, &user, "ed25519:NOTAKEY", &other);
    let (_, answer) = alice
        .post("/_matrix/client/v3/keys/signatures/upload", &json!({ &user: { &alice.device_id: bogus } }));
    assert!(answer["failures"][&user][&alice.device_id]["errcode"].is_string(), "{answer}");
}

#[test]
fn keys_and_to_device_messages_cross_federation() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = b.register("bob");
    let room_id = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "vault"}));
    let alias = format!("#vault:{}", a.server_name);
    let (status, answer) = bob.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &json!({}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["room_id"], room_id);
    let start = next_batch(&sync(&bob, ""));

    let keys = device_keys(&alice);
    upload(
        &alice,
        json!({ "device_keys": keys, "one_time_keys": { "signed_curve25519:R1": {"key": "r1"} } }),
    );
    // Bob's server hears of the change and tells bob.
    eventually(DELIVERY, || {
        let seen = sync(&bob, &format!("since={start}"));
        (seen["device_lists"]["changed"] == json!([alice.user_id])).then_some(())
    });
    let found = query(&bob, &alice.user_id);
    assert_eq!(found["device_keys"][&alice.user_id][&alice.device_id]["keys"], keys["keys"], "{found}");
    assert_eq!(found["failures"], json!({}), "{found}");
    let claimed = claim(&bob, &alice.user_id, &alice.device_id);
    assert_eq!(claimed["signed_curve25519:R1"]["key"], "r1", "{claimed}");

    let alice_start = next_batch(&sync(&alice, ""));
    let body = json!({ "messages": { &alice.user_id: { &alice.device_id: { "secret": "olm" } } } });
    assert_eq!(bob.put("/_matrix/client/v3/sendToDevice/m.room.encrypted/f1", &body).0, 200);
    let event = eventually(DELIVERY, || {
        let seen = sync(&alice, &format!("since={alice_start}"));
        seen["to_device"]["events"].as_array().and_then(|events| events.first().cloned())
    });
    assert_eq!(event["sender"], bob.user_id);
    assert_eq!(event["type"], "m.room.encrypted");
    assert_eq!(event["content"]["secret"], "olm");
}

/// A remote user's device list is cached on our server and kept current by
/// their server's `m.device_list_update` and `m.signing_key_update` EDUs:
/// every change on A (keys uploaded, a device added, renamed, deleted, a
/// master key) reaches bob on B in `device_lists.changed`, and
/// `/keys/query` on B answers from the cache, with no request to A (A is
/// stopped for the last query).
/// Spec: <https://spec.matrix.org/latest/server-server-api/#device-management>
/// ("servers must keep a copy of the device list of remote users they share
/// a room with, updated by `m.device_list_update`"),
/// <https://spec.matrix.org/latest/server-server-api/#msigning_key_update>,
/// <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3keysquery>.
#[test]
fn remote_device_lists_are_cached_and_kept_current_by_edus() {
    let ca = TestCa::new();
    let mut a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = b.register("bob");
    let room_id = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "cache"}));
    let alias = format!("#cache:{}", a.server_name);
    let (status, answer) = bob.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &json!({}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["room_id"], room_id);

    // The first query fetches alice's list (one device, no keys yet) into B's cache.
    let first = query(&bob, &alice.user_id);
    assert_eq!(first["device_keys"][&alice.user_id], json!({}), "{first}");
    assert_eq!(first["failures"], json!({}), "{first}");

    // Each change on A is an update on top of the cached list, seen by bob.
    let mut seen_up_to = next_batch(&sync(&bob, ""));
    let first_token = seen_up_to.clone();
    let mut wait_for_change = || {
        let since = seen_up_to.clone();
        let seen = eventually(DELIVERY, || {
            let seen = sync(&bob, &format!("since={since}&timeout=1000"));
            let changed = seen["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
            changed.contains(&json!(alice.user_id)).then_some(seen)
        });
        seen_up_to = next_batch(&seen);
    };
    let keys = device_keys(&alice);
    upload(&alice, json!({ "device_keys": keys }));
    wait_for_change(); // alice's device keys
    let mut phone = a.client();
    assert_eq!(phone.login("alice", PASSWORD).0, 200);
    wait_for_change(); // alice's new device
    let phone_keys = device_keys(&phone);
    upload(&phone, json!({ "device_keys": phone_keys }));
    wait_for_change(); // the new device's keys
    assert_eq!(
        phone
            .put(
                &format!("/_matrix/client/v3/devices/{}", phone.device_id),
                &json!({"display_name": "phone"})
            )
            .0,
        200
    );
    wait_for_change(); // the new device's name
    let mut tablet = a.client();
    assert_eq!(tablet.login("alice", PASSWORD).0, 200);
    upload(&tablet, json!({ "device_keys": device_keys(&tablet) }));
    wait_for_change(); // a third device with keys
    assert_eq!(tablet.post("/_matrix/client/v3/logout", &json!({})).0, 200);
    wait_for_change(); // the third device is deleted
    let master = key_pair("remote master");
    let master_id = format!("ed25519:{}", b64(master.pk.as_ref()));
    let master_key = json!({ "user_id": alice.user_id, "usage": ["master"], "keys": { &master_id: b64(master.pk.as_ref()) } });
    let (status, answer) =
        alice.post("/_matrix/client/v3/keys/device_signing/upload", &json!({ "master_key": master_key }));
    assert_eq!(status, 200, "{answer}");
    wait_for_change(); // alice's master key

    let check = |found: &Value| {
        assert_eq!(found["failures"], json!({}), "{found}");
        let devices = &found["device_keys"][&alice.user_id];
        assert_eq!(devices[&alice.device_id]["keys"], keys["keys"], "{found}");
        assert_eq!(devices[&phone.device_id]["keys"], phone_keys["keys"], "{found}");
        // Device names stay on their server by default (privacy.device_names_over_federation).
        assert_eq!(devices[&phone.device_id]["unsigned"].get("device_display_name"), None, "{found}");
        assert_eq!(found["master_keys"][&alice.user_id]["keys"], master_key["keys"], "{found}");
        assert_eq!(devices.as_object().unwrap().len(), 2, "the deleted device is gone: {found}");
    };
    // `/keys/changes` over the same span names alice too.
    let (status, changes) =
        bob.get(&format!("/_matrix/client/v3/keys/changes?from={first_token}&to={seen_up_to}"));
    assert_eq!(status, 200, "{changes}");
    assert_eq!(changes["changed"], json!([alice.user_id]), "{changes}");

    // With A down, B answers from its cache, which the EDUs kept current:
    // nothing was fetched since the first query.
    a.stop();
    check(&query(&bob, &alice.user_id));
    // A list that was never cached cannot be: the failure is reported.
    let (status, answer) =
        bob.post("/_matrix/client/v3/keys/query", &json!({ "device_keys": { a.user_id("nobody"): [] } }));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["failures"][&a.server_name]["errcode"], "M_UNAVAILABLE", "{answer}");
}

/// A cached list is refetched when our server starts sharing a room with
/// its user again: while bob (on B) was out of alice's only room, A sent B
/// no updates, so the keys alice uploaded meanwhile must not be answered
/// from the copy B cached before.
/// Spec: <https://spec.matrix.org/latest/server-server-api/#device-management>
/// (servers keep a copy of the device lists of remote users they share a
/// room with; only those receive `m.device_list_update`).
#[test]
fn a_device_list_cached_before_a_leave_is_refetched_after_a_rejoin() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = b.register("bob");
    let room_id = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "again"}));
    let join_path = format!("/_matrix/client/v3/join/{}", enc(&format!("#again:{}", a.server_name)));
    let (status, answer) = bob.post(&join_path, &json!({}));
    assert_eq!(status, 200, "{answer}");
    let before = device_keys(&alice);
    upload(&alice, json!({ "device_keys": before }));
    let cached = eventually(DELIVERY, || {
        let found = query(&bob, &alice.user_id);
        let keys = found["device_keys"][&alice.user_id][&alice.device_id]["keys"].clone();
        (keys == before["keys"]).then_some(found)
    });
    assert_eq!(cached["failures"], json!({}), "{cached}");

    let (status, answer) = bob.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)), &json!({}));
    assert_eq!(status, 200, "{answer}");
    eventually(DELIVERY, || {
        (common::rooms::membership_of(&alice, &room_id, &bob.user_id).as_deref() == Some("leave"))
            .then_some(())
    });
    // New keys while B shares no room with alice: A tells B nothing.
    let mut after = before.clone();
    after["keys"][format!("curve25519:{}", alice.device_id)] = json!(b64(&[9; 32]));
    let pair = key_pair(&format!("{}{}", alice.user_id, alice.device_id));
    after.as_object_mut().unwrap().remove("signatures");
    sign(&mut after, &alice.user_id, &format!("ed25519:{}", alice.device_id), &pair);
    upload(&alice, json!({ "device_keys": after }));

    let (status, answer) = bob.post(&join_path, &json!({}));
    assert_eq!(status, 200, "{answer}");
    let found = query(&bob, &alice.user_id);
    assert_eq!(found["device_keys"][&alice.user_id][&alice.device_id]["keys"], after["keys"], "{found}");
}

/// A local user joining a room where another local user is joined already
/// keeps the device lists cached for its members: our server shared the
/// room before, so their servers kept sending it their updates, and nothing
/// needs fetching again (so a join costs no pass over a big room's members).
/// Here B answers from its cache with A down after carol's join.
/// Spec: <https://spec.matrix.org/latest/server-server-api/#device-management>
/// (servers keep a copy of the device lists of remote users they share a
/// room with; those users' servers send them `m.device_list_update`).
#[test]
fn a_second_local_member_joining_keeps_the_cached_device_lists() {
    let ca = TestCa::new();
    let mut a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = b.register("bob");
    let carol = b.register("carol");
    create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "shared"}));
    let join_path = format!("/_matrix/client/v3/join/{}", enc(&format!("#shared:{}", a.server_name)));
    let (status, answer) = bob.post(&join_path, &json!({}));
    assert_eq!(status, 200, "{answer}");
    let keys = device_keys(&alice);
    upload(&alice, json!({ "device_keys": keys }));
    eventually(DELIVERY, || {
        let found = query(&bob, &alice.user_id);
        (found["device_keys"][&alice.user_id][&alice.device_id]["keys"] == keys["keys"]).then_some(())
    });

    let (status, answer) = carol.post(&join_path, &json!({}));
    assert_eq!(status, 200, "{answer}");
    a.stop();
    let found = query(&carol, &alice.user_id);
    assert_eq!(found["failures"], json!({}), "answered from the cache: {found}");
    assert_eq!(found["device_keys"][&alice.user_id][&alice.device_id]["keys"], keys["keys"], "{found}");
}

/// Sends one to-device message of type `m.test` from `from` to a device.
fn send_to_device(from: &Client, user_id: &str, device_id: &str, content: &Value) -> (u16, Value) {
    let body = json!({ "messages": { user_id: { device_id: content } } });
    from.put(&format!("/_matrix/client/v3/sendToDevice/m.test/{}", common::rooms::txn()), &body)
}

/// A message numbered `n` padded to `pad` more bytes (`n` has a fixed width,
/// so that every message has the same size).
fn padded(n: usize, pad: usize) -> Value {
    json!({ "n": format!("{n:05}"), "pad": "x".repeat(pad) })
}

/// A /sync answer and its size in bytes.
fn sync_measured(client: &Client, query: &str) -> (Value, usize) {
    let (status, _, bytes) =
        client.request_bytes("GET", &format!("/_matrix/client/v3/sync?{query}"), None, None);
    assert_eq!(status, 200, "sync {query}");
    (serde_json::from_slice(&bytes).unwrap(), bytes.len())
}

/// The `n` of each to-device message of a sync answer.
fn numbers(sync: &Value) -> Vec<String> {
    sync["to_device"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["content"]["n"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Logs in as `localpart` on a device with the given ID.
fn login_on_device(node: &Node, localpart: &str, device_id: &str) -> Client {
    let mut client = node.client();
    let (status, answer) = client.post(
        "/_matrix/client/v3/login",
        &json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": localpart },
            "password": PASSWORD,
            "device_id": device_id,
        }),
    );
    assert_eq!(status, 200, "{answer}");
    client.token = answer["access_token"].as_str().map(str::to_owned);
    client.user_id = answer["user_id"].as_str().unwrap().to_string();
    client.device_id = device_id.to_string();
    client
}

/// The largest sync answer that carries to-device messages: their 1 MiB
/// page and room for the rest of the answer.
const MAX_ANSWER_BYTES: usize = (1 << 20) + (64 << 10);

#[test]
fn a_flooded_inbox_is_delivered_in_bounded_pages_exactly_once_and_in_order() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let start = next_batch(&sync(&bob, ""));
    // 200 messages of 60 KB (a message may have 64 KiB): 12 MB that were
    // once one answer.
    for n in 0..200 {
        let (status, answer) = send_to_device(&alice, &bob.user_id, &bob.device_id, &padded(n, 60_000));
        assert_eq!(status, 200, "{answer}");
    }
    let peak_before = peak_rss_kib(node.pid());

    let mut token = start.clone();
    let mut seen: Vec<String> = Vec::new();
    let mut answers = 0;
    let mut largest = 0;
    while seen.len() < 203 {
        // Messages wait, so a long poll answers at once.
        let began = std::time::Instant::now();
        let (answer, bytes) = sync_measured(&bob, &format!("since={}&timeout=20000", enc(&token)));
        assert!(began.elapsed() < Duration::from_secs(10), "a sync with messages waiting long-polled");
        let page = numbers(&answer);
        assert!(!page.is_empty(), "an empty page with {} of 203 seen", seen.len());
        if answers == 1 {
            // The same token again (an answer lost on the way) gives the same
            // page: nothing is acknowledged before the client moves on.
            assert_eq!(numbers(&sync_measured(&bob, &format!("since={}", enc(&token))).0), page);
        }
        largest = largest.max(bytes);
        answers += 1;
        seen.extend(page);
        token = next_batch(&answer);
        if answers == 1 {
            // Messages sent while the inbox drains come after it.
            for n in 200..203 {
                assert_eq!(send_to_device(&alice, &bob.user_id, &bob.device_id, &padded(n, 10)).0, 200);
            }
        }
    }
    let peak_after = peak_rss_kib(node.pid());
    println!("{answers} answers, largest {largest} bytes, peak RSS {peak_before} -> {peak_after} KiB");
    let expected: Vec<String> = (0..203).map(|n| format!("{n:05}")).collect();
    assert_eq!(seen, expected, "every message exactly once, in order");
    assert!(answers >= 12, "{answers} answers carried 12 MB");
    assert!(largest <= MAX_ANSWER_BYTES, "an answer of {largest} bytes");
    assert!(peak_after < peak_before + 16 * 1024, "peak RSS grew from {peak_before} to {peak_after} KiB");

    // Nothing more, and syncing past the last page deleted everything.
    let (last, _) = sync_measured(&bob, &format!("since={}", enc(&token)));
    assert!(numbers(&last).is_empty(), "{last}");
    let (old, _) = sync_measured(&bob, &format!("since={}", enc(&start)));
    assert!(numbers(&old).is_empty(), "acknowledged messages came back");
}

#[test]
fn messages_for_unknown_or_deleted_devices_are_not_kept() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let nobody = node.user_id("nobody");
    assert_eq!(send_to_device(&alice, &bob.user_id, "GHOST", &json!({ "n": "ghost" })).0, 200);
    assert_eq!(send_to_device(&alice, &nobody, "ANY", &json!({ "n": "nobody" })).0, 200);
    // A device that appears later with that ID finds nothing waiting.
    let ghost = login_on_device(&node, "bob", "GHOST");
    assert_eq!(numbers(&sync(&ghost, "")), Vec::<String>::new());

    // `*` is the devices the user has when the message is sent.
    assert_eq!(send_to_device(&alice, &bob.user_id, "*", &json!({ "n": "all" })).0, 200);
    let late = login_on_device(&node, "bob", "LATE");
    assert_eq!(numbers(&sync(&late, "")), Vec::<String>::new());
    assert_eq!(numbers(&sync(&ghost, "")), ["all"]);

    // A deleted device's inbox goes with it.
    assert_eq!(numbers(&sync(&bob, "")), ["all"]);
    assert_eq!(bob.post("/_matrix/client/v3/logout", &json!({})).0, 200);
    let again = login_on_device(&node, "bob", &bob.device_id);
    assert_eq!(numbers(&sync(&again, "")), Vec::<String>::new());
}

/// Sends a transaction of to-device EDUs from `from` to `to` (signed with
/// `from`'s key by the `federation request` command); returns its status.
fn send_edus(ca: &TestCa, from: &Node, to: &Node, edus: &[Value]) -> u16 {
    let body = json!({ "origin": from.server_name, "origin_server_ts": 0, "pdus": [], "edus": edus });
    let path = format!("/_matrix/federation/v1/send/{}", common::rooms::txn());
    let (_, output) = from.cli(
        &[
            "federation",
            "--server-name",
            &from.server_name,
            "--federation-ca",
            ca.certificate_file.to_str().unwrap(),
            "--federation-allow-ip",
            "127.0.0.0/8",
            "request",
            &to.server_name,
            &path,
            "--method",
            "PUT",
            "--body",
            &body.to_string(),
        ],
        None,
    );
    output.lines().next().and_then(|line| line.trim().parse().ok()).unwrap_or(0)
}

/// An `m.direct_to_device` EDU from `sender` with one message.
fn direct_to_device(sender: &str, user_id: &str, device_id: &str, content: Value) -> Value {
    json!({
        "edu_type": "m.direct_to_device",
        "content": {
            "sender": sender,
            "type": "m.test",
            "message_id": common::rooms::txn(),
            "messages": { user_id: { device_id: content } },
        },
    })
}

#[test]
fn a_full_inbox_drops_the_excess_and_oversized_messages_are_refused() {
    let ca = TestCa::new();
    let peer = start_federating(&ca, &[]);
    let node = start_federating(&ca, &[]);
    let alice = node.register("alice");
    let carol = node.register("carol");
    let mut bob = node.register("bob");
    let full = bob.clone();
    bob.login("bob", PASSWORD);
    let start = next_batch(&sync(&full, ""));

    // Over 64 KiB: refused whole, nothing of it delivered.
    let body = json!({ "messages": { &bob.user_id: {
        &full.device_id: padded(0, 70_000),
        &bob.device_id: { "n": "small" },
    } } });
    let refused = alice.put("/_matrix/client/v3/sendToDevice/m.test/big", &body);
    assert_error(&refused, 413, "M_TOO_LARGE");
    assert_eq!(numbers(&sync(&bob, "")), Vec::<String>::new());

    // The inbox takes 16 MiB; the rest is dropped, and the senders are
    // answered as usual.
    let size = padded(0, 63_000).to_string().len();
    let kept = (16 << 20) / size;
    for n in 0..kept + 8 {
        let (status, answer) = send_to_device(&alice, &full.user_id, &full.device_id, &padded(n, 63_000));
        assert_eq!(status, 200, "{answer}");
    }
    // Another sender's message of that size does not fit either.
    assert_eq!(send_to_device(&carol, &full.user_id, &full.device_id, &padded(99_999, 63_000)).0, 200);
    // The user's other device is not affected.
    assert_eq!(send_to_device(&carol, &bob.user_id, &bob.device_id, &json!({ "n": "carol" })).0, 200);
    assert_eq!(numbers(&sync(&bob, "")), ["carol"]);
    assert!(node.log_text().contains("for full inboxes"), "no log line for the dropped messages");

    // A peer's messages meet the same bounds: dropped with a log line, and
    // the transaction is accepted (a refusal would be retried forever).
    let mallory = format!("@mallory:{}", peer.server_name);
    let edus = [
        direct_to_device(&mallory, &full.user_id, &full.device_id, padded(99_998, 63_000)),
        direct_to_device(&mallory, &bob.user_id, &bob.device_id, json!({ "n": "peer" })),
    ];
    assert_eq!(send_edus(&ca, &peer, &node, &edus), 200);
    let oversized = [direct_to_device(&mallory, &bob.user_id, &bob.device_id, padded(99_997, 70_000))];
    assert_eq!(send_edus(&ca, &peer, &node, &oversized), 200);
    let log = node.log_text();
    assert!(log.contains(&format!("from {mallory}: dropped 0 too large and 1 for full inboxes")), "{log}");
    assert!(log.contains(&format!("from {mallory}: dropped 1 too large and 0 for full inboxes")), "{log}");
    let (answer, _) = sync_measured(&bob, "");
    assert_eq!(numbers(&answer), ["carol", "peer"]);

    let mut token = start;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let (answer, _) = sync_measured(&full, &format!("since={}", enc(&token)));
        let page = numbers(&answer);
        token = next_batch(&answer);
        if page.is_empty() {
            break;
        }
        seen.extend(page);
    }
    let expected: Vec<String> = (0..kept).map(|n| format!("{n:05}")).collect();
    assert_eq!(seen, expected);
    // Once acknowledged, there is room again.
    assert_eq!(send_to_device(&carol, &full.user_id, &full.device_id, &json!({ "n": "later" })).0, 200);
    let (answer, _) = sync_measured(&full, &format!("since={}", enc(&token)));
    assert_eq!(numbers(&answer), ["later"]);
}
