//! Link previews (`preview_url`) against the real binary, with a loopback
//! HTTP server started by the test as the linked site: Open Graph metadata,
//! the image copied into the content repository, the hour-long cache, and
//! clean errors for pages too large, too slow, redirected to an address we
//! may not reach, or not HTML; and the "not supported" answer when the
//! config leaves previews off.
//!
//! Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1mediapreview_url

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::federation::TestCa;
use common::rooms::enc;
use common::{Client, Node, assert_error};
use serde_json::{Value, json};

/// A valid 1x1 PNG.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\
    \x00\x00\x00\x0aIDATx\x9cc\x00\x01\x00\x00\x05\x00\x01\x0d\x0a\x2d\xb4\x00\x00\x00\x00IEND\xaeB`\x82";

const PAGE: &str = r#"<!doctype html><html><head>
<title>Fallback title</title>
<meta property="og:title" content="Hearth &amp; home">
<meta property="og:description" content="A page about
   small servers.">
<meta property="og:image" content="/image.png">
<meta property="og:image:width" content="640">
<meta property="og:image:height" content="480">
</head><body><p>Hello</p></body></html>"#;

/// The linked site: one thread per connection, answering by path. Counts
/// the requests for `/page`.
struct Site {
    base: String,
    page_requests: Arc<AtomicUsize>,
}

impl Site {
    fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let page_requests = Arc::new(AtomicUsize::new(0));
        let counter = page_requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    serve(&mut stream, &counter);
                });
            }
        });
        Site { base, page_requests }
    }

    /// The same site over TLS, with a certificate `ca` issued.
    fn start_tls(ca: &TestCa) -> Site {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (certificate, key) = ca.issue("site");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&certificate).unwrap().map(Result::unwrap).collect();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, PrivateKeyDer::from_pem_file(&key).unwrap())
                .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let page_requests = Arc::new(AtomicUsize::new(0));
        let counter = page_requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (counter, config) = (counter.clone(), config.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    let connection = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(connection, stream);
                    serve(&mut tls, &counter);
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        Site { base, page_requests }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn serve<S: Read + Write>(stream: &mut S, page_requests: &AtomicUsize) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    // Answered by path; a query only makes another URL of the same thing.
    let target = head.split(' ').nth(1).unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let respond = |stream: &mut S, status: &str, headers: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    };
    match path.as_str() {
        "/page" => {
            page_requests.fetch_add(1, Ordering::SeqCst);
            respond(stream, "200 OK", "Content-Type: text/html; charset=utf-8\r\n", PAGE.as_bytes());
        }
        "/plain-title" => {
            let body = b"<html><title>Only a title</title><p>x</p></html>";
            respond(stream, "200 OK", "Content-Type: text/html\r\n", body);
        }
        "/image.png" => respond(stream, "200 OK", "Content-Type: image/png\r\n", PNG),
        "/huge" => {
            let mut body = b"<html><title>huge</title>".to_vec();
            body.resize(2 << 20, b' ');
            respond(stream, "200 OK", "Content-Type: text/html\r\n", &body);
        }
        "/slow" => {
            std::thread::sleep(Duration::from_secs(15));
            respond(stream, "200 OK", "Content-Type: text/html\r\n", b"<title>late</title>");
        }
        "/to-private" => {
            let location = "Location: http://169.254.169.254/latest/meta-data/\r\n";
            respond(stream, "302 Found", location, b"");
        }
        "/to-page" => respond(stream, "301 Moved Permanently", "Location: /page\r\n", b""),
        "/binary" => respond(stream, "200 OK", "Content-Type: application/octet-stream\r\n", b"\x00\x01\x02"),
        _ => respond(stream, "404 Not Found", "Content-Type: text/plain\r\n", b"no"),
    }
}

fn preview(client: &Client, url: &str) -> (u16, Value) {
    client.get(&format!("/_matrix/client/v1/media/preview_url?url={}", enc(url)))
}

/// A node with previews on that may reach loopback (the test's site).
fn node_with_previews() -> Node {
    Node::start_with_config("url_preview_enabled = true\n[federation]\nallow_ips = [\"127.0.0.0/8\"]")
}

/// Spec: the answer is the page's Open Graph data, with `og:image` as an
/// `mxc://` URI of our content repository and `matrix:image:size` its size.
#[test]
fn a_page_is_previewed_with_its_image_copied_and_cached() {
    let site = Site::start();
    let node = node_with_previews();
    let alice = node.register("alice");
    let (status, og) = preview(&alice, &site.url("/page"));
    assert_eq!(status, 200, "{og}");
    assert_eq!(og["og:title"], "Hearth & home");
    assert_eq!(og["og:description"], "A page about small servers.");
    // The image's own header wins over what the page says of it.
    assert_eq!(og["og:image:width"], 1);
    assert_eq!(og["og:image:height"], 1);
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!(og["matrix:image:size"], PNG.len());
    let mxc = og["og:image"].as_str().unwrap();
    let (server, media_id) = mxc.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    assert_eq!(server, node.server_name);
    let download = format!("/_matrix/client/v1/media/download/{server}/{media_id}");
    let (status, _, bytes) = alice.request_bytes("GET", &download, None, None);
    assert_eq!((status, bytes.as_slice()), (200, PNG));

    // Cached for an hour: the same URL, from anyone, is not fetched again;
    // nor is it for a `ts` within the hour.
    let bob = node.register("bob");
    assert_eq!(preview(&bob, &site.url("/page")), (200, og.clone()));
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let at_ts =
        format!("/_matrix/client/v1/media/preview_url?url={}&ts={}", enc(&site.url("/page")), ts + 1000);
    assert_eq!(bob.get(&at_ts), (200, og.clone()));
    // Nor for a `ts` before it was fetched: the first preview after `ts`
    // is the one current then (as Synapse picks), and it is fresh at `ts`.
    let before =
        format!("/_matrix/client/v1/media/preview_url?url={}&ts={}", enc(&site.url("/page")), ts - 7_200_000);
    assert_eq!(bob.get(&before), (200, og.clone()));
    assert_eq!(site.page_requests.load(Ordering::SeqCst), 1);
    // At a `ts` past the hour, the cached answer is stale: fetched again.
    let later =
        format!("/_matrix/client/v1/media/preview_url?url={}&ts={}", enc(&site.url("/page")), ts + 7_200_000);
    let (status, again) = bob.get(&later);
    assert_eq!((status, &again["og:title"]), (200, &og["og:title"]), "{again}");
    assert_eq!(site.page_requests.load(Ordering::SeqCst), 2);
    assert_error(&bob.get(&format!("{later}x")), 400, "M_INVALID_PARAM");
    // The legacy endpoint answers the same: now, the latest preview.
    let legacy = format!("/_matrix/media/v3/preview_url?url={}", enc(&site.url("/page")));
    assert_eq!(alice.get(&legacy), (200, again));
    assert_eq!(site.page_requests.load(Ordering::SeqCst), 2);

    // A redirect within what may be reached is followed; `<title>` stands
    // in for a missing og:title.
    let (status, redirected) = preview(&alice, &site.url("/to-page"));
    assert_eq!((status, &redirected["og:title"]), (200, &json!("Hearth & home")), "{redirected}");
    let (status, titled) = preview(&alice, &site.url("/plain-title"));
    assert_eq!((status, titled), (200, json!({"og:title": "Only a title"})));
    // An image linked to directly is its own preview.
    let (status, image) = preview(&alice, &site.url("/image.png"));
    assert_eq!((status, &image["og:image:type"]), (200, &json!("image/png")), "{image}");
    assert_eq!((&image["og:image:width"], &image["matrix:image:size"]), (&json!(1), &json!(PNG.len())));
}

/// Every hostile case answers a clean Matrix error, and the node goes on.
#[test]
fn pages_too_large_too_slow_redirected_away_or_not_html_answer_errors() {
    let site = Site::start();
    let node = node_with_previews();
    let alice = node.register("alice");
    // Over the 1 MiB cap.
    assert_error(&preview(&alice, &site.url("/huge")), 502, "M_TOO_LARGE");
    // A redirect to a link-local address (a cloud metadata service) is
    // checked like the first URL and refused.
    assert_error(&preview(&alice, &site.url("/to-private")), 502, "M_UNKNOWN");
    // Not HTML and not an image.
    assert_error(&preview(&alice, &site.url("/binary")), 502, "M_UNKNOWN");
    // Not http or https, or no URL at all.
    assert_error(&preview(&alice, "file:///etc/passwd"), 400, "M_INVALID_PARAM");
    assert_error(&alice.get("/_matrix/client/v1/media/preview_url"), 400, "M_MISSING_PARAM");
    assert_error(&preview(&alice, "http://127.0.0.1:1/x y"), 502, "M_UNKNOWN");
    // Slower than the 10 s cap.
    let started = std::time::Instant::now();
    assert_error(&preview(&alice, &site.url("/slow")), 504, "M_UNKNOWN");
    assert!(started.elapsed() < Duration::from_secs(14), "{:?}", started.elapsed());
    // Without a token: 401, before anything is fetched.
    let anonymous = node.client();
    assert_error(&preview(&anonymous, &site.url("/page")), 401, "M_MISSING_TOKEN");
    assert_eq!(site.page_requests.load(Ordering::SeqCst), 0);
    let (status, _) = preview(&alice, &site.url("/page"));
    assert_eq!(status, 200);
}

/// `https://` pages are fetched over verified TLS (the test CA is trusted
/// through `[federation] ca_files`), and an untrusted certificate is an error.
#[test]
fn https_pages_are_previewed_over_verified_tls() {
    let ca = TestCa::new();
    let site = Site::start_tls(&ca);
    let ca_file = ca.certificate_file.to_str().unwrap();
    let node = Node::start_with_config(&format!(
        "url_preview_enabled = true\n[federation]\nallow_ips = [\"127.0.0.0/8\"]\nca_files = [\"{ca_file}\"]"
    ));
    let alice = node.register("alice");
    let (status, og) = preview(&alice, &site.url("/page"));
    assert_eq!((status, &og["og:title"]), (200, &json!("Hearth & home")), "{og}");
    assert_eq!(og["og:image:type"], "image/png", "{og}");
    // A node that does not trust the CA refuses the site.
    let other = node_with_previews();
    let bob = other.register("bob");
    assert_error(&preview(&bob, &site.url("/plain-title")), 502, "M_UNKNOWN");
}

/// A copied image is the asking user's content and counts against their
/// quota: past it, the page is previewed without its image, and an image
/// linked to directly answers 413 `M_TOO_LARGE`, as an upload would.
#[test]
fn copied_images_count_against_the_users_quota() {
    let site = Site::start();
    let node = Node::start_with_config(
        "url_preview_enabled = true\n[federation]\nallow_ips = [\"127.0.0.0/8\"]\n[limits]\nmedia_quota_per_user = 100",
    );
    let alice = node.register("alice");
    let (status, first) = preview(&alice, &site.url("/image.png"));
    assert_eq!((status, &first["matrix:image:size"]), (200, &json!(PNG.len())), "{first}");
    // 67 of 100 bytes used: the next copy does not fit.
    let (status, page) = preview(&alice, &site.url("/page"));
    assert_eq!((status, &page["og:title"]), (200, &json!("Hearth & home")), "{page}");
    assert!(page.get("og:image").is_none() && page.get("og:image:width").is_none(), "{page}");
    let (status, again) = preview(&alice, &format!("{}?again", site.url("/image.png")));
    assert_eq!((status, &again["errcode"]), (413, &json!("M_TOO_LARGE")), "{again}");
    // Another user has their own quota.
    let bob = node.register("bob");
    let (status, theirs) = preview(&bob, &format!("{}?bob", site.url("/image.png")));
    assert_eq!((status, &theirs["og:image:type"]), (200, &json!("image/png")), "{theirs}");
}

/// Private addresses the config does not allow are never fetched.
#[test]
fn loopback_is_refused_unless_allowed() {
    let site = Site::start();
    let node = Node::start_with_config("url_preview_enabled = true");
    let alice = node.register("alice");
    assert_error(&preview(&alice, &site.url("/page")), 502, "M_UNKNOWN");
    assert_error(&preview(&alice, "http://10.1.2.3/"), 502, "M_UNKNOWN");
    assert_eq!(site.page_requests.load(Ordering::SeqCst), 0);
}

/// Disabled (the default): 404 `M_UNRECOGNIZED`, as Synapse answers, on
/// both endpoints; nothing is fetched.
#[test]
fn previews_are_off_by_default() {
    let site = Site::start();
    let node = Node::start();
    let alice = node.register("alice");
    assert_error(&preview(&alice, &site.url("/page")), 404, "M_UNRECOGNIZED");
    let legacy = format!("/_matrix/media/v3/preview_url?url={}", enc(&site.url("/page")));
    assert_error(&alice.get(&legacy), 404, "M_UNRECOGNIZED");
    assert_eq!(site.page_requests.load(Ordering::SeqCst), 0);
}
