//! Hostile HTTP/1.1 through the real binary, in both directions: header
//! bytes that are not visible ASCII, heads over their bounds, bodies that
//! end early or stall, pipelining, HTTP/1.0, bare line feeds, ambiguous
//! framing and dot segments. The node must answer each at once (or drop the
//! connection) and keep answering `/versions`.
//!
//! Spec: <https://www.rfc-editor.org/rfc/rfc9112>.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::federation::{TestCa, start_federating};
use common::{Node, RawConnection, TempDir, eventually, write_file};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

const VERSIONS: &str = "/_matrix/client/versions";

/// Connects to `base` (`http://ADDR:PORT`) with a read timeout.
fn connect(base: &str, timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream
}

/// The status of the first response on `stream` (0 if the connection ended
/// without one).
fn status_of(stream: impl Read) -> u16 {
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Sends `bytes` on a new connection (write errors ignored: the node may
/// close early) and returns the first response's status.
fn status_for(base: &str, bytes: &[u8]) -> u16 {
    let mut stream = connect(base, Duration::from_secs(10));
    let _ = stream.write_all(bytes);
    status_of(stream)
}

fn assert_alive(node: &Node) {
    let started = Instant::now();
    assert_eq!(node.client().get(VERSIONS).0, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Open sockets of the node (listeners and connections; SQLite's files
/// are left out, as it may keep a closed file's descriptor for reuse).
fn open_sockets(node: &Node) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", node.pid()))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|link| link.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// Whether the node still holds its end of the connection `stream` (its
/// socket, found by ports in /proc/net/tcp, is among the node's files).
fn node_holds(node: &Node, stream: &TcpStream) -> bool {
    let client_port = stream.local_addr().unwrap().port();
    let node_port = stream.peer_addr().unwrap().port();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port_of =
        |address: &str| address.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok());
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| 9 < fields.len())
        .filter(|fields| port_of(fields[1]) == Some(node_port) && port_of(fields[2]) == Some(client_port))
        .map(|fields| format!("socket:[{}]", fields[9]))
        .collect();
    std::fs::read_dir(format!("/proc/{}/fd", node.pid()))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .any(|link| inodes.iter().any(|inode| link.to_string_lossy() == *inode))
}

/// The number of rows of a table in the node's database.
fn count_rows(node: &Node, table: &str) -> i64 {
    let path = node_database(node);
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    connection.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
}

fn node_database(node: &Node) -> std::path::PathBuf {
    node.data_dir.0.join("hearth.db")
}

/// A TLS client that accepts the node's self-signed certificate.
fn tls_status_for(node: &Node, bytes: &[u8]) -> u16 {
    let config = common::tls::accept_any();
    let socket = connect(&node.https.replace("https://", "http://"), Duration::from_secs(10));
    let connection =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, socket);
    stream.write_all(bytes).unwrap();
    status_of(stream)
}

#[test]
fn header_bytes_that_are_not_visible_ascii_get_400() {
    let node = Node::start();
    for request in [
        "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nUser-Agent: Café/1.0\r\n\r\n".to_string(),
        "GET /_matrix/client/versions HTTP/1.1\r\nHost: café\r\n\r\n".to_string(),
        "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\n\r\n".to_string(),
        format!(
            "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nUser-Agent: é\r\nContent-Length: 2\r\n\r\n{}",
            "{}"
        ),
    ] {
        assert_eq!(status_for(&node.http, request.as_bytes()), 400, "{request:?}");
        assert_alive(&node);
    }
    // X-Matrix on the TLS (federation) listener.
    let signed = "GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: x\r\n\
                  Authorization: X-Matrix origin=\"é.org\",key=\"ed25519:a\",sig=\"x\"\r\n\r\n";
    assert_eq!(tls_status_for(&node, signed.as_bytes()), 400);
    assert_eq!(tls_status_for(&node, b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    assert_alive(&node);
}

#[test]
fn heads_over_their_bounds_are_refused_at_once() {
    let node = Node::start();
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    assert_eq!(status_for(&node.http, long_target.as_bytes()), 414);
    let long_line = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(status_for(&node.http, long_line.as_bytes()), 431);
    let many: String = (0..70).map(|index| format!("X-{index}: a\r\n")).collect();
    assert_eq!(status_for(&node.http, format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()), 431);
    let big: String = (0..20).map(|index| format!("X-{index}: {}\r\n", "a".repeat(1000))).collect();
    assert_eq!(status_for(&node.http, format!("GET / HTTP/1.1\r\n{big}\r\n").as_bytes()), 431);

    // A header line that never ends: answered while the client is still
    // sending, and the node does not grow with what it is sent.
    let rss_before = node.rss_kib();
    let mut stream = connect(&node.http, Duration::from_secs(10));
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX: ").unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let sent_by_writer = sent.clone();
    let sender = std::thread::spawn(move || {
        let piece = vec![b'a'; 64 * 1024];
        // Up to 256 MiB; the node closes long before.
        for _ in 0..4096 {
            if writer.write_all(&piece).is_err() {
                break;
            }
            sent_by_writer.fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
    });
    assert_eq!(status_of(&stream), 431);
    sender.join().unwrap();
    let grown = node.rss_kib().saturating_sub(rss_before);
    eprintln!("endless request header: {} bytes sent, RSS grew by {grown} KiB", sent.load(Ordering::Relaxed));
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
    assert!(sent.load(Ordering::Relaxed) < 64 << 20, "{} bytes sent", sent.load(Ordering::Relaxed));
    assert_alive(&node);
}

/// Bodies are read before their sender is known, and a federation
/// transaction may be up to 4 MiB (the spec's 50 PDUs of 64 KiB), over the
/// 1 MiB of other bodies. The node holds 8 MiB of bodies at once, on all
/// connections together, so connections that each send most of one and
/// stall hold a few MiB of the node, not a body each, and small bodies go
/// on meanwhile. A transaction over 4 MiB is refused at once.
#[test]
fn stalled_bodies_hold_a_bounded_share_of_the_node() {
    let node = Node::start();
    let head = |path: &str, length: usize| {
        format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    let transaction = "/_matrix/federation/v1/send/t1";
    assert_eq!(tls_status_for(&node, head(transaction, 5 << 20).as_bytes()), 413);

    // Twelve 3 MiB pieces of 4 MiB transactions over TLS, then forty
    // 900 KiB pieces of 1 MiB client bodies, each from a thread of its own
    // (the node reads only a few; the others' writes wait in the kernel).
    // Each takes a whole number of MiB of the budget, which they fill.
    let config = common::tls::accept_any();
    let rss_before = node.rss_kib();
    let mut writers = Vec::new();
    for _ in 0..12 {
        let socket = connect(&node.https.replace("https://", "http://"), Duration::from_secs(30));
        let connection =
            rustls::ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap())
                .unwrap();
        let mut stream = rustls::StreamOwned::new(connection, socket);
        let bytes = [head(transaction, (4 << 20) - 1).into_bytes(), vec![b' '; 3 << 20]].concat();
        writers.push(std::thread::spawn(move || {
            let _ = stream.write_all(&bytes);
            let _ = stream.flush();
            std::thread::sleep(Duration::from_secs(5));
        }));
    }
    let send = "/_matrix/client/v3/rooms/!r:x/send/m.room.message/t1";
    for _ in 0..40 {
        let mut stream = connect(&node.http, Duration::from_secs(30));
        let bytes = [head(send, (1 << 20) - 1).into_bytes(), vec![b' '; 900 << 10]].concat();
        writers.push(std::thread::spawn(move || {
            let _ = stream.write_all(&bytes);
            std::thread::sleep(Duration::from_secs(5));
        }));
    }
    std::thread::sleep(Duration::from_secs(2));
    let grown = node.rss_kib().saturating_sub(rss_before);
    eprintln!("12 stalled 4 MiB transactions and 40 stalled 1 MiB bodies: RSS grew by {grown} KiB");
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
    assert_alive(&node);
    // Small bodies need no share: a registration goes through at once
    // while the large ones wait.
    let started = Instant::now();
    node.register("late");
    assert!(started.elapsed() < Duration::from_secs(2), "registering took {:?}", started.elapsed());
    drop(writers);
}

#[test]
fn ambiguous_framing_and_dot_segments_are_refused() {
    let node = Node::start();
    let cases: [(&str, u16); 8] = [
        (
            "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            400,
        ),
        ("POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (
            "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            400,
        ),
        ("GET /_matrix/client/../client/versions HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /_matrix/client/./versions HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /_matrix/client/%2e%2E/client/versions HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (
            "PUT /_matrix/client/v3/rooms/!a:x/state/m.room.name/.. HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
            400,
        ),
        ("GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    ];
    for (request, status) in cases {
        assert_eq!(status_for(&node.http, request.as_bytes()), status, "{request:?}");
    }
    assert_alive(&node);
}

#[test]
fn pipelined_posts_are_each_answered_in_order() {
    let node = Node::start();
    let mut connection = RawConnection::connect(&node.http);
    let post = |body: &str| {
        format!(
            "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let chunked = "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   1\r\n{\r\n0\r\n\r\n";
    connection.send(format!("{}{}{chunked}{}", post("{\"type\": 5}"), post("{"), post("[]")).as_bytes());
    let errcodes: Vec<Value> = (0..4).map(|_| connection.read_response().json()["errcode"].clone()).collect();
    assert_eq!(
        errcodes,
        [json!("M_BAD_JSON"), json!("M_NOT_JSON"), json!("M_NOT_JSON"), json!("M_BAD_JSON")]
    );
    connection.send(format!("GET {VERSIONS} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert_eq!(connection.read_response().status, 200);
}

#[test]
fn http_1_0_and_bare_line_feeds_are_answered_at_once() {
    let node = Node::start();
    let mut stream = connect(&node.http, Duration::from_secs(5));
    stream.write_all(format!("GET {VERSIONS} HTTP/1.0\r\n\r\n").as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("\"versions\""), "{answer}");

    // Keep-alive when asked for.
    let mut connection = RawConnection::connect(&node.http);
    for _ in 0..2 {
        connection.send(format!("GET {VERSIONS} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes());
        let response = connection.read_response();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }

    let started = Instant::now();
    assert_eq!(status_for(&node.http, format!("GET {VERSIONS} HTTP/1.1\nHost: x\n\n").as_bytes()), 200);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn bodies_shorter_than_their_length_are_refused() {
    let node = Node::start();
    let alice = node.register("alice");
    let token = alice.token.clone().unwrap();
    let media_before = count_rows(&node, "media");
    let mut stream = connect(&node.http, Duration::from_secs(10));
    stream
        .write_all(
            format!(
                "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n0123456789"
            )
            .as_bytes(),
        )
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(status_of(&stream), 400);
    assert_eq!(count_rows(&node, "media"), media_before);

    // A message send cut short stores no event.
    let (_, room) = alice.post("/_matrix/client/v3/createRoom", &json!({}));
    let room_id = room["room_id"].as_str().unwrap();
    let events_before = count_rows(&node, "events");
    let body = json!({"msgtype": "m.text", "body": "cut short"}).to_string();
    let mut stream = connect(&node.http, Duration::from_secs(10));
    stream
        .write_all(
            format!(
                "PUT /_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1 HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len() + 10
            )
            .as_bytes(),
        )
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(status_of(&stream), 400);
    assert_eq!(count_rows(&node, "events"), events_before);
    assert_alive(&node);
}

#[test]
fn partial_chunked_trailers_do_not_leak_connections() {
    let node = Node::start();
    assert_alive(&node);
    let baseline = open_sockets(&node);
    for round in 0..300 {
        let mut stream = connect(&node.http, Duration::from_secs(10));
        stream
            .write_all(
                b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                  2\r\n{}\r\n0\r\nX",
            )
            .unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        if round % 2 == 0 {
            // Half of them wait for the answer, half just go.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        }
    }
    assert_alive(&node);
    // Every one of those connections is closed on the node's side too.
    eventually(Duration::from_secs(10), || (open_sockets(&node) <= baseline).then_some(()));
}

/// A node whose transfers stall out after 2 s instead of 30.
fn node_with_short_stall_timeout() -> Node {
    let dir = TempDir::new("stall-config");
    let config = write_file(&dir.0, "hearth.toml", b"[limits]\nstall_timeout_secs = 2\n");
    let node = Node::start_with(&["--config", config.to_str().unwrap(), "--registration", "open"]);
    drop(dir);
    node
}

#[test]
fn stalled_bodies_and_stalled_readers_are_cut_off() {
    let node = node_with_short_stall_timeout();
    // A body that stops arriving: 408 after the stall timeout.
    let started = Instant::now();
    let mut stream = connect(&node.http, Duration::from_secs(30));
    stream
        .write_all(
            b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"type\":",
        )
        .unwrap();
    assert_eq!(status_of(&stream), 408);
    let waited = started.elapsed();
    assert!(Duration::from_millis(1500) < waited && waited < Duration::from_secs(20), "{waited:?}");

    // A client that asks for a large download and reads none of it is
    // dropped after the stall timeout.
    let alice = node.register("alice");
    let content = vec![b'x'; 24 << 20];
    let (status, _, body) = alice.request_bytes(
        "POST",
        "/_matrix/media/v3/upload",
        Some("application/octet-stream"),
        Some(&content),
    );
    assert_eq!(status, 200);
    let uri: Value = serde_json::from_slice(&body).unwrap();
    let media_id = uri["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    assert_alive(&node);
    let mut stalled = connect(&node.http, Duration::from_secs(30));
    stalled
        .write_all(
            format!(
                "GET /_matrix/media/v3/download/{}/{media_id} HTTP/1.1\r\nHost: x\r\n\r\n",
                node.server_name
            )
            .as_bytes(),
        )
        .unwrap();
    eventually(Duration::from_secs(5), || node_holds(&node, &stalled).then_some(()));
    eventually(Duration::from_secs(20), || (!node_holds(&node, &stalled)).then_some(()));
    assert_alive(&node);
}

/// A TLS server on loopback with a certificate of `ca`, answering each
/// connection's request with `answer` (write errors end the connection).
fn fake_server(ca: &TestCa, answer: fn(&mut dyn Write)) -> u16 {
    let (certificate, key) = ca.issue("fake");
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&certificate).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(socket) = socket else { return };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
                let connection = rustls::ServerConnection::new(config).unwrap();
                let mut stream = rustls::StreamOwned::new(connection, socket);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                answer(&mut stream);
                let _ = stream.flush();
            });
        }
    });
    port
}

#[test]
fn hostile_answers_from_servers_we_call_fail_that_request_only() {
    let ca = TestCa::new();
    let node = start_federating(&ca, &[]);
    let evil = fake_server(&ca, |stream| {
        let _ = stream.write_all("HTTP/1.1 200 OK\r\nX-Evil: é\r\nContent-Length: 2\r\n\r\n{}".as_bytes());
    });
    let endless = fake_server(&ca, |stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Endless: ");
        let piece = vec![b'a'; 64 * 1024];
        // Up to 256 MiB; the node hangs up long before.
        for _ in 0..4096 {
            if stream.write_all(&piece).is_err() {
                return;
            }
        }
    });
    let rss_before = node.rss_kib();
    for port in [evil, endless] {
        // A profile lookup makes the node ask the user's server.
        let (status, body) = node.client().get(&format!("/_matrix/client/v3/profile/@bob:localhost:{port}"));
        assert!((400..600).contains(&status), "{status} {body}");
        assert_alive(&node);
    }
    let grown = node.rss_kib().saturating_sub(rss_before);
    eprintln!("hostile answers (non-ASCII header, endless header): RSS grew by {grown} KiB");
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
}
