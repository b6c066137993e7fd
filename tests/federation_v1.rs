//! The deprecated v1 membership endpoints older servers still use:
//! `send_join`, `send_leave` and `invite` answer `[200, {...}]`.
//!
//! Inbound, node A plays the older server: `hearth federation sign-event`
//! signs its events and `hearth federation request` sends them to node B.
//! Outbound, node B sits behind a TLS proxy that answers `M_UNRECOGNIZED`
//! to the v2 endpoints, as a server without them does, and node A falls
//! back to v1.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::federation::{TestCa, free_port, make_membership, sign_event, signed_request, start_federating};
use common::rooms::{create_room, enc, invite, membership_of, room_path, sync};
use common::{Node, TempDir, assert_error, eventually};
use serde_json::{Value, json};

const DELIVERY: Duration = Duration::from_secs(20);
const ROOM_VERSION: &str = "11";

/// Signs an event as `from`; returns (event_id, event).
fn sign(ca: &TestCa, from: &Node, event: &Value) -> (String, Value) {
    sign_event(ca, from, ROOM_VERSION, event)
}

/// A's user asks B for a membership template and signs it.
fn make(ca: &TestCa, a: &Node, b: &Node, kind: &str, room_id: &str, user_id: &str) -> (String, Value) {
    make_membership(ca, a, b, ROOM_VERSION, kind, room_id, user_id)
}

/// Spec: https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1send_joinroomideventid,
/// https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1send_leaveroomideventid and
/// https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1inviteroomideventid
/// (deprecated, but servers still serve them; the answers are `[200, {...}]`).
#[test]
fn the_deprecated_v1_membership_endpoints_answer_in_their_shape() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let bob = b.register("bob");
    let dave = b.register("dave");
    let room_id = create_room(&bob, json!({"preset": "public_chat", "room_version": ROOM_VERSION}));
    let carol = a.user_id("carol");

    // v1 send_join: [200, {origin, auth_chain, state}].
    let (join_id, join) = make(&ca, &a, &b, "join", &room_id, &carol);
    let path = format!("/_matrix/federation/v1/send_join/{}/{}", enc(&room_id), enc(&join_id));
    let (status, answer) = signed_request(&ca, &a, &b, "PUT", &path, Some(&join));
    assert_eq!(status, 200, "{answer}\n{}", b.log_text());
    assert_eq!(answer[0], 200, "{answer}");
    assert_eq!(answer[1]["origin"], b.server_name.as_str(), "{answer}");
    assert!(answer[1]["state"].as_array().is_some_and(|state| !state.is_empty()), "{answer}");
    assert!(answer[1]["auth_chain"].is_array(), "{answer}");
    assert_eq!(membership_of(&bob, &room_id, &carol).as_deref(), Some("join"));

    // v1 invite: the body is the event, its stripped state in `unsigned`;
    // the answer is [200, {"event": countersigned}].
    let (_, state) = bob.get(&room_path(&room_id, "/state"));
    let id_of = |kind: &str, key: &str| -> String {
        let state = state.as_array().unwrap();
        let event = state.iter().find(|event| event["type"] == kind && event["state_key"] == key).unwrap();
        event["event_id"].as_str().unwrap().to_string()
    };
    let invite = json!({
        "type": "m.room.member",
        "state_key": dave.user_id,
        "room_id": room_id,
        "sender": carol,
        "content": {"membership": "invite"},
        "depth": 100,
        "origin_server_ts": 1_700_000_000_001_i64,
        "prev_events": [join_id],
        "auth_events": [id_of("m.room.create", ""), id_of("m.room.power_levels", ""),
            id_of("m.room.join_rules", ""), join_id],
    });
    let (invite_id, mut invite) = sign(&ca, &a, &invite);
    invite["unsigned"] = json!({"invite_room_state": [
        {"type": "m.room.join_rules", "state_key": "", "sender": bob.user_id, "content": {"join_rule": "public"}}
    ]});
    let path = format!("/_matrix/federation/v1/invite/{}/{}", enc(&room_id), enc(&invite_id));
    let (status, answer) = signed_request(&ca, &a, &b, "PUT", &path, Some(&invite));
    assert_eq!(status, 200, "{answer}\n{}", b.log_text());
    assert_eq!(answer[0], 200, "{answer}");
    assert_eq!(answer[1]["event"]["event_id"].as_str().or(Some(&invite_id)), Some(invite_id.as_str()));
    assert!(answer[1]["event"]["signatures"][b.server_name.as_str()].is_object(), "{answer}");
    // The invite then reaches the room as any event does.
    let transaction = json!({"origin": a.server_name, "origin_server_ts": 0, "pdus": [answer[1]["event"]]});
    let path = format!("/_matrix/federation/v1/send/v1-{}", common::rooms::txn());
    let (status, answer) = signed_request(&ca, &a, &b, "PUT", &path, Some(&transaction));
    assert_eq!(status, 200, "{answer}");
    eventually(DELIVERY, || sync(&dave, "timeout=0")["rooms"]["invite"].get(&room_id).map(|_| ()));

    // v1 send_leave: [200, {}].
    let (leave_id, leave) = make(&ca, &a, &b, "leave", &room_id, &carol);
    let path = format!("/_matrix/federation/v1/send_leave/{}/{}", enc(&room_id), enc(&leave_id));
    let (status, answer) = signed_request(&ca, &a, &b, "PUT", &path, Some(&leave));
    assert_eq!(status, 200, "{answer}\n{}", b.log_text());
    assert_eq!(answer, json!([200, {}]));
    assert_eq!(membership_of(&bob, &room_id, &carol).as_deref(), Some("leave"));
}

/// The largest request or answer the proxy relays.
const MAX_PROXIED_BYTES: usize = 32 << 20;

/// Reads one HTTP/1.1 message (head and `Content-Length` body) from `stream`.
fn read_message(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut message = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = message.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut chunk).ok().filter(|read| *read > 0)?;
        message.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&message[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    assert!(length < MAX_PROXIED_BYTES);
    // A chunked body (a `send_join` answer, made while it is sent) ends with
    // its last, empty chunk (our nodes send no trailers).
    if head.lines().any(|line| line.trim() == "transfer-encoding: chunked") {
        while !message[head_end..].ends_with(b"0\r\n\r\n") {
            assert!(message.len() < MAX_PROXIED_BYTES);
            let read = stream.read(&mut chunk).ok().filter(|read| *read > 0)?;
            message.extend_from_slice(&chunk[..read]);
        }
        return Some(message);
    }
    while message.len() < head_end + length {
        let read = stream.read(&mut chunk).ok().filter(|read| *read > 0)?;
        message.extend_from_slice(&chunk[..read]);
    }
    Some(message)
}

/// A TLS proxy on `listener` in front of the node whose TLS listener is
/// `backend`: it refuses the v2 membership endpoints with 404
/// `M_UNRECOGNIZED` and relays everything else. Returns the request lines seen.
fn older_server_proxy(ca: &TestCa, listener: TcpListener, backend: u16) -> Arc<Mutex<Vec<String>>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (certificate, key) = ca.issue("proxy");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&certificate).unwrap().map(Result::unwrap).collect();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, PrivateKeyDer::from_pem_file(&key).unwrap())
        .unwrap();
    let server = Arc::new(server);
    let mut roots = rustls::RootCertStore::empty();
    for root in CertificateDer::pem_file_iter(&ca.certificate_file).unwrap() {
        roots.add(root.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = Arc::new(client);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_proxy = seen.clone();
    std::thread::spawn(move || {
        for incoming in listener.incoming() {
            let Ok(incoming) = incoming else { continue };
            let (server, client, seen) = (server.clone(), client.clone(), seen_by_proxy.clone());
            std::thread::spawn(move || {
                incoming.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let connection = rustls::ServerConnection::new(server).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, incoming);
                let Some(request) = read_message(&mut tls) else { return };
                let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_string();
                seen.lock().unwrap().push(line.clone());
                let path = line.split(' ').nth(1).unwrap_or_default();
                let refused = ["send_join", "send_leave", "invite"]
                    .iter()
                    .any(|endpoint| path.starts_with(&format!("/_matrix/federation/v2/{endpoint}/")));
                let answer = if refused {
                    let body = r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#;
                    format!(
                        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes()
                } else {
                    let name = ServerName::try_from("localhost").unwrap();
                    let connection = rustls::ClientConnection::new(client, name).unwrap();
                    let upstream = TcpStream::connect(("127.0.0.1", backend)).unwrap();
                    upstream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut upstream = rustls::StreamOwned::new(connection, upstream);
                    upstream.write_all(&request).unwrap();
                    upstream.flush().unwrap();
                    let Some(answer) = read_message(&mut upstream) else { return };
                    answer
                };
                let _ = tls.write_all(&answer);
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    seen
}

/// Spec: https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2send_joinroomideventid
/// "If this endpoint is not available, the sending server should retry with
/// the v1 API" (an `M_UNRECOGNIZED` answer; the same holds for
/// `send_leave` and `invite`, whose v1 forms carry no room version, so only
/// rooms of versions 1 and 2 can be invited to through them).
#[test]
fn a_server_without_the_v2_endpoints_is_reached_through_v1() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    // B's server name names the proxy's port; B listens behind it.
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = proxy.local_addr().unwrap().port();
    let backend = free_port();
    let (certificate, key) = ca.issue("older");
    let server_name = format!("localhost:{proxy_port}");
    let args = [
        "--server-name",
        &server_name,
        "--registration",
        "open",
        "--tls-cert",
        certificate.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--federation-ca",
        ca.certificate_file.to_str().unwrap(),
        "--federation-allow-ip",
        "127.0.0.0/8",
    ];
    let b = Node::start_on(TempDir::new("older"), &args, "127.0.0.1:0", &format!("127.0.0.1:{backend}"));
    let seen = older_server_proxy(&ca, proxy, backend);
    let saw = |prefix: &str| seen.lock().unwrap().iter().any(|line| line.starts_with(prefix));

    let alice = a.register("alice");
    let carol = a.register("carol");
    let bob = b.register("bob");

    // A join through B: v2 send_join refused, v1 used.
    let room_id = create_room(&bob, json!({"preset": "public_chat", "room_version": ROOM_VERSION}));
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room_id), enc(&b.server_name));
    let (status, answer) = alice.post(&path, &json!({}));
    assert_eq!(status, 200, "{answer}\n{}", a.log_text());
    assert!(saw("PUT /_matrix/federation/v2/send_join/") && saw("PUT /_matrix/federation/v1/send_join/"));
    eventually(DELIVERY, || {
        (membership_of(&bob, &room_id, &alice.user_id).as_deref() == Some("join")).then_some(())
    });

    // Rejecting B's invite: v2 send_leave refused, v1 used.
    let private = create_room(&bob, json!({"preset": "private_chat", "room_version": ROOM_VERSION}));
    invite(&bob, &private, &carol.user_id);
    eventually(DELIVERY, || sync(&carol, "timeout=0")["rooms"]["invite"].get(&private).map(|_| ()));
    let (status, answer) = carol.post(&room_path(&private, "/leave"), &json!({}));
    assert_eq!(status, 200, "{answer}\n{}", a.log_text());
    assert!(saw("PUT /_matrix/federation/v1/send_leave/"));
    assert_eq!(membership_of(&bob, &private, &carol.user_id).as_deref(), Some("leave"));

    // Inviting B's user into a version 2 room: v1 invite.
    let old_room = create_room(&alice, json!({"preset": "private_chat", "room_version": "2"}));
    invite(&alice, &old_room, &bob.user_id);
    assert!(saw("PUT /_matrix/federation/v1/invite/"));
    eventually(DELIVERY, || sync(&bob, "timeout=0")["rooms"]["invite"].get(&old_room).map(|_| ()));
    // A room of a later version cannot be invited to through v1.
    let new_room = create_room(&alice, json!({"preset": "private_chat", "room_version": ROOM_VERSION}));
    let (status, answer) = alice.post(&room_path(&new_room, "/invite"), &json!({"user_id": bob.user_id}));
    assert_error(&(status, answer), 400, "M_UNSUPPORTED_ROOM_VERSION");
}
