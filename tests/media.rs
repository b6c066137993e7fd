//! The content repository against the real binary: uploads (direct and
//! asynchronous), downloads with their headers, thumbnails, limits, restarts,
//! and remote content fetched over federation and cached.

mod common;

use std::time::Duration;

use common::federation::{TestCa, start_federating};
use common::synapse::Synapse;
use common::{Client, Node, TempDir, assert_error, write_file};
use serde_json::{Value, json};

/// A valid 1x1 PNG (IHDR, IDAT, IEND).
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\
    \x00\x00\x00\x0aIDATx\x9cc\x00\x01\x00\x00\x05\x00\x01\x0d\x0a\x2d\xb4\x00\x00\x00\x00IEND\xaeB`\x82";

/// A 1x1 GIF that loops (NETSCAPE2.0): animated.
const ANIMATED_GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00\
    \x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00;";

/// Uploads `bytes`; returns the `mxc://` URI's server and media ID.
fn upload(client: &Client, content_type: &str, file_name: Option<&str>, bytes: &[u8]) -> (String, String) {
    let path = match file_name {
        Some(name) => format!("/_matrix/media/v3/upload?filename={}", encode(name)),
        None => "/_matrix/media/v3/upload".to_string(),
    };
    let (status, _, body) = client.request_bytes("POST", &path, Some(content_type), Some(bytes));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    split_mxc(body["content_uri"].as_str().unwrap())
}

fn split_mxc(uri: &str) -> (String, String) {
    let (server, media_id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    (server.to_string(), media_id.to_string())
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(
            |byte| {
                if byte.is_ascii_alphanumeric() { (byte as char).to_string() } else { format!("%{byte:02X}") }
            },
        )
        .collect()
}

fn get(client: &Client, path: &str) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    client.request_bytes("GET", path, None, None)
}

fn header<'a>(headers: &'a ureq::http::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|value| value.to_str().unwrap()).unwrap_or_default()
}

fn json_of(answer: (u16, ureq::http::HeaderMap, Vec<u8>)) -> (u16, Value) {
    (answer.0, serde_json::from_slice(&answer.2).unwrap_or(Value::Null))
}

/// Bytes that are not all alike, so a misplaced piece shows.
fn patterned(length: usize) -> Vec<u8> {
    (0..length).map(|index| (index * 7 % 251) as u8).collect()
}

#[test]
fn uploads_download_with_their_type_name_and_safety_headers() {
    let node = Node::start();
    let alice = node.register("alice");
    let (server, media_id) = upload(&alice, "image/png", Some("cat picture.png"), PNG);
    assert_eq!(server, node.server_name);
    assert_eq!(media_id.len(), 24, "{media_id}");
    assert!(media_id.chars().all(|c| c.is_ascii_alphanumeric()), "{media_id}");

    let download = format!("/_matrix/client/v1/media/download/{server}/{media_id}");
    let (status, headers, body) = get(&alice, &download);
    assert_eq!(status, 200);
    assert_eq!(body, PNG);
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_eq!(header(&headers, "content-disposition"), "inline; filename*=utf-8''cat%20picture.png");
    assert!(header(&headers, "content-security-policy").starts_with("sandbox;"), "{headers:?}");
    assert_eq!(header(&headers, "cross-origin-resource-policy"), "cross-origin");

    // A file name in the path replaces the uploaded one.
    let (status, headers, body) = get(&alice, &format!("{download}/other.png"));
    assert_eq!((status, body.as_slice()), (200, PNG));
    assert_eq!(header(&headers, "content-disposition"), "inline; filename=other.png");

    // Unsafe types are attachments; text gets a charset.
    let (server, page) = upload(&alice, "text/html", Some("page.html"), b"<script>alert(1)</script>");
    let (status, headers, _) = get(&alice, &format!("/_matrix/client/v1/media/download/{server}/{page}"));
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-disposition"), "attachment; filename=page.html");
    let (server, note) = upload(&alice, "text/plain", None, b"hello");
    let (status, headers, body) = get(&alice, &format!("/_matrix/client/v1/media/download/{server}/{note}"));
    assert_eq!((status, body.as_slice()), (200, b"hello".as_slice()));
    assert_eq!(header(&headers, "content-type"), "text/plain; charset=UTF-8");
    assert_eq!(header(&headers, "content-disposition"), "inline");

    // Large content is streamed from the database: every byte arrives in order.
    let large = patterned(3 << 20);
    let (server, big) = upload(&alice, "application/octet-stream", Some("big.bin"), &large);
    let (status, headers, body) = get(&alice, &format!("/_matrix/client/v1/media/download/{server}/{big}"));
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-length"), large.len().to_string());
    assert!(body == large, "the streamed content differs");

    // The deprecated unauthenticated endpoints serve local content.
    let anonymous = node.client();
    let (status, _, body) = get(&anonymous, &format!("/_matrix/media/v3/download/{server}/{media_id}"));
    assert_eq!((status, body.as_slice()), (200, PNG));
    let (status, _, body) = get(&anonymous, &format!("/_matrix/media/r0/download/{server}/{big}/big.bin"));
    assert_eq!(status, 200);
    assert!(body == large);
}

#[test]
fn downloads_need_a_token_and_an_existing_valid_id() {
    let node = Node::start();
    let alice = node.register("alice");
    let (server, media_id) = upload(&alice, "image/png", None, PNG);
    let anonymous = node.client();
    let download = format!("/_matrix/client/v1/media/download/{server}/{media_id}");
    assert_error(&json_of(get(&anonymous, &download)), 401, "M_MISSING_TOKEN");
    let mut stranger = node.client();
    stranger.token = Some("not-a-token".into());
    assert_error(&json_of(get(&stranger, &download)), 401, "M_UNKNOWN_TOKEN");
    let thumbnail = format!("/_matrix/client/v1/media/thumbnail/{server}/{media_id}?width=32&height=32");
    assert_error(&json_of(get(&anonymous, &thumbnail)), 401, "M_MISSING_TOKEN");
    assert_error(&json_of(get(&anonymous, "/_matrix/client/v1/media/config")), 401, "M_MISSING_TOKEN");
    assert_error(&json_of(get(&anonymous, "/_matrix/media/v3/upload")), 404, "M_UNRECOGNIZED");

    let unknown = format!("/_matrix/client/v1/media/download/{server}/AAAAAAAAAAAAAAAAAAAAAAAA");
    assert_error(&json_of(get(&alice, &unknown)), 404, "M_NOT_FOUND");
    let traversal = format!("/_matrix/client/v1/media/download/{server}/..%2F..%2Fetc%2Fpasswd");
    assert_error(&json_of(get(&alice, &traversal)), 400, "M_INVALID_PARAM");
    assert_error(
        &json_of(get(&alice, "/_matrix/client/v1/media/download/bad%20server/abc")),
        400,
        "M_INVALID_PARAM",
    );
    // Remote content is never fetched for an unauthenticated request.
    assert_error(&json_of(get(&anonymous, "/_matrix/media/v3/download/example.org/abc")), 404, "M_NOT_FOUND");
    // URL previews are not supported.
    let preview = "/_matrix/client/v1/media/preview_url?url=https%3A%2F%2Fexample.org";
    assert_error(&json_of(get(&alice, preview)), 404, "M_UNRECOGNIZED");
}

#[test]
fn asynchronous_uploads_fill_a_created_id_once() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let (status, created) = alice.post("/_matrix/media/v1/create", &json!({}));
    assert_eq!(status, 200, "{created}");
    let expires = created["unused_expires_at"].as_i64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(now < expires && expires <= now + 25 * 3600 * 1000, "{created}");
    let (server, media_id) = split_mxc(created["content_uri"].as_str().unwrap());
    let download = format!("/_matrix/client/v1/media/download/{server}/{media_id}");

    // Not uploaded yet: a short wait ends in 504, a longer one gets the content.
    assert_error(&json_of(get(&alice, &format!("{download}?timeout_ms=100"))), 504, "M_NOT_YET_UPLOADED");
    let waiting = {
        let alice = alice.clone();
        let download = download.clone();
        std::thread::spawn(move || get(&alice, &format!("{download}?timeout_ms=20000")))
    };
    std::thread::sleep(Duration::from_millis(300));

    let put = format!("/_matrix/media/v3/upload/{server}/{media_id}?filename=late.txt");
    let answer = bob.request_bytes("PUT", &put, Some("text/plain"), Some(b"hi"));
    assert_error(&json_of(answer), 403, "M_FORBIDDEN");
    let (status, _, body) = alice.request_bytes("PUT", &put, Some("text/plain"), Some(b"late content"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = alice.request_bytes("PUT", &put, Some("text/plain"), Some(b"again"));
    assert_error(&json_of(answer), 409, "M_CANNOT_OVERWRITE_MEDIA");

    let (status, headers, body) = waiting.join().unwrap();
    assert_eq!((status, body.as_slice()), (200, b"late content".as_slice()));
    assert_eq!(header(&headers, "content-disposition"), "inline; filename=late.txt");

    let unknown = format!("/_matrix/media/v3/upload/{server}/AAAAAAAAAAAAAAAAAAAAAAAA");
    assert_error(
        &json_of(alice.request_bytes("PUT", &unknown, Some("text/plain"), Some(b"x"))),
        404,
        "M_NOT_FOUND",
    );
    let elsewhere = format!("/_matrix/media/v3/upload/example.org/{media_id}");
    assert_error(
        &json_of(alice.request_bytes("PUT", &elsewhere, Some("text/plain"), Some(b"x"))),
        404,
        "M_NOT_FOUND",
    );

    // Pending uploads per user are limited.
    for _ in 0..5 {
        assert_eq!(bob.post("/_matrix/media/v1/create", &json!({})).0, 200);
    }
    let refused = bob.post("/_matrix/media/v1/create", &json!({}));
    assert_error(&refused, 429, "M_LIMIT_EXCEEDED");
    assert!(refused.1["retry_after_ms"].as_u64().unwrap() > 0, "{}", refused.1);
    assert_eq!(alice.post("/_matrix/media/v1/create", &json!({})).0, 200);
}

#[test]
fn config_names_the_upload_limit() {
    let node = Node::start();
    let alice = node.register("alice");
    for path in ["/_matrix/client/v1/media/config", "/_matrix/media/v3/config"] {
        let (status, body) = alice.get(path);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["m.upload.size"], 50 << 20, "{path}");
    }
}

#[test]
fn thumbnails_are_small_static_images_themselves_or_not_found() {
    let node = Node::start();
    let alice = node.register("alice");
    let (server, png) = upload(&alice, "image/png", Some("dot.png"), PNG);
    let thumbnail = |media_id: &str, query: &str| {
        get(&alice, &format!("/_matrix/client/v1/media/thumbnail/{server}/{media_id}?{query}"))
    };
    let (status, headers, body) = thumbnail(&png, "width=32&height=32&method=crop");
    assert_eq!((status, body.as_slice()), (200, PNG));
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_eq!(header(&headers, "cross-origin-resource-policy"), "cross-origin");
    let (status, _, body) =
        get(&node.client(), &format!("/_matrix/media/v3/thumbnail/{server}/{png}?width=8&height=8"));
    assert_eq!((status, body.as_slice()), (200, PNG));

    let (_, text) = upload(&alice, "text/plain", None, b"not an image");
    assert_error(&json_of(thumbnail(&text, "width=32&height=32")), 404, "M_NOT_FOUND");
    // An animated image only when animation is asked for.
    let (_, gif) = upload(&alice, "image/gif", None, ANIMATED_GIF);
    assert_error(&json_of(thumbnail(&gif, "width=32&height=32")), 404, "M_NOT_FOUND");
    assert_error(&json_of(thumbnail(&gif, "width=32&height=32&animated=false")), 404, "M_NOT_FOUND");
    let (status, _, body) = thumbnail(&gif, "width=32&height=32&animated=true");
    assert_eq!((status, body.as_slice()), (200, ANIMATED_GIF));

    assert_error(&json_of(thumbnail(&png, "height=32")), 400, "M_MISSING_PARAM");
    assert_error(&json_of(thumbnail(&png, "width=32&height=32&method=stretch")), 400, "M_INVALID_PARAM");
    assert_error(&json_of(thumbnail("AAAAAAAAAAAAAAAAAAAAAAAA", "width=32&height=32")), 404, "M_NOT_FOUND");
}

#[test]
fn uploads_past_the_configured_limit_are_too_large() {
    let dir = TempDir::new("media-limit");
    let config = write_file(
        &dir.0,
        "hearth.toml",
        b"server_name = \"localhost\"\nregistration = \"open\"\n[limits]\nmax_media_body = 4096\n",
    );
    let node = Node::start_with(&["--config", config.to_str().unwrap()]);
    let alice = node.register("alice");
    let answer =
        alice.request_bytes("POST", "/_matrix/media/v3/upload", Some("image/png"), Some(&patterned(5000)));
    assert_error(&json_of(answer), 413, "M_TOO_LARGE");
    let (server, _) = upload(&alice, "image/png", None, &patterned(4096));
    assert_eq!(server, "localhost");
    assert_eq!(alice.get("/_matrix/client/v1/media/config").1["m.upload.size"], 4096);
}

#[test]
fn media_survives_a_restart() {
    let mut node = Node::start();
    let alice = node.register("alice");
    let large = patterned(1_500_000);
    let (server, small) = upload(&alice, "image/png", Some("dot.png"), PNG);
    let (_, big) = upload(&alice, "video/mp4", Some("clip.mp4"), &large);
    node.restart();
    let (status, headers, body) = get(&alice, &format!("/_matrix/client/v1/media/download/{server}/{small}"));
    assert_eq!((status, body.as_slice()), (200, PNG));
    assert_eq!(header(&headers, "content-disposition"), "inline; filename=dot.png");
    let (status, headers, body) = get(&alice, &format!("/_matrix/client/v1/media/download/{server}/{big}"));
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "video/mp4");
    assert!(body == large);
}

#[test]
fn remote_media_comes_through_the_federation_endpoint_and_stays_cached() {
    let ca = TestCa::new();
    let mut a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = b.register("bob");
    let (server, png) = upload(&alice, "image/png", Some("dot on A.png"), PNG);
    assert_eq!(server, a.server_name);
    let large = patterned(2 << 20);
    let (_, big) = upload(&alice, "application/pdf", Some("report.pdf"), &large);

    let download =
        |media_id: &str| get(&bob, &format!("/_matrix/client/v1/media/download/{server}/{media_id}"));
    let (status, headers, body) = download(&png);
    assert_eq!((status, body.as_slice()), (200, PNG), "{}", b.log_text());
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_eq!(header(&headers, "content-disposition"), "inline; filename*=utf-8''dot%20on%20A.png");
    let (status, headers, body) = download(&big);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-disposition"), "attachment; filename=report.pdf");
    assert!(body == large, "the remote content differs");
    // A thumbnail A serves (its own PNG), cached by B as a thumbnail.
    let (_, text) = upload(&alice, "text/plain", None, b"words");
    let thumbnail = |media_id: &str| {
        get(
            &bob,
            &format!(
                "/_matrix/client/v1/media/thumbnail/{server}/{media_id}?width=64&height=64&method=scale"
            ),
        )
    };
    let (_, gif) = upload(&alice, "image/gif", None, ANIMATED_GIF);
    let (status, _, body) = get(
        &bob,
        &format!("/_matrix/client/v1/media/thumbnail/{server}/{gif}?width=64&height=64&animated=true"),
    );
    assert_eq!((status, body.as_slice()), (200, ANIMATED_GIF));
    assert_error(&json_of(thumbnail(&text)), 404, "M_NOT_FOUND");
    assert_error(&json_of(download("AAAAAAAAAAAAAAAAAAAAAAAA")), 404, "M_NOT_FOUND");
    assert!(
        !b.log_text().contains("no federation media endpoints"),
        "B fell back to the deprecated endpoints"
    );

    // A server with a smaller limit does not proxy content past it.
    let dir = TempDir::new("media-small");
    let config = write_file(&dir.0, "hearth.toml", b"[limits]\nmax_media_body = 1048576\n");
    let small = start_federating(&ca, &["--config", config.to_str().unwrap()]);
    let carol = small.register("carol");
    let answer = get(&carol, &format!("/_matrix/client/v1/media/download/{server}/{big}"));
    assert_error(&json_of(answer), 502, "M_TOO_LARGE");
    let (status, _, body) = get(&carol, &format!("/_matrix/client/v1/media/download/{server}/{png}"));
    assert_eq!((status, body.as_slice()), (200, PNG));

    // With A gone, B serves what it cached.
    a.stop();
    let (status, _, body) = download(&png);
    assert_eq!((status, body.as_slice()), (200, PNG));
    let (status, _, body) = download(&big);
    assert_eq!(status, 200);
    assert!(body == large);
    let (status, _, body) = thumbnail(&png);
    assert_eq!((status, body.as_slice()), (200, PNG));
    let (status, _, body) = get(
        &bob,
        &format!("/_matrix/client/v1/media/thumbnail/{server}/{gif}?width=64&height=64&animated=true"),
    );
    assert_eq!((status, body.as_slice()), (200, ANIMATED_GIF));
    // What B never fetched is out of reach.
    let (status, body) = json_of(download(&text));
    assert_eq!(status, 502, "{body}");
}

#[test]
fn media_crosses_to_and_from_synapse() {
    let ca = TestCa::new();
    let synapse = Synapse::start(&ca);
    let node = start_federating(&ca, &[]);
    let alice = node.register("alice");
    let bob = synapse.register("bob");
    let large = patterned(2 << 20);
    let logs = || format!("=== hearth ===\n{}\n=== Synapse ===\n{}", node.log_text(), synapse.log_text());

    // Synapse's content through our node: its multipart answers parse.
    let (theirs, their_png) = upload(&bob, "image/png", Some("from synapse.png"), PNG);
    assert_eq!(theirs, synapse.server_name);
    let (_, their_big) = upload(&bob, "application/octet-stream", Some("big.bin"), &large);
    let (status, headers, body) =
        get(&alice, &format!("/_matrix/client/v1/media/download/{theirs}/{their_png}"));
    assert_eq!((status, body.as_slice()), (200, PNG), "{}", logs());
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_eq!(header(&headers, "content-disposition"), "inline; filename*=utf-8''from%20synapse.png");
    let (status, _, body) = get(&alice, &format!("/_matrix/client/v1/media/download/{theirs}/{their_big}"));
    assert_eq!(status, 200, "{}", logs());
    assert!(body == large, "Synapse's content differs");
    let thumbnail =
        format!("/_matrix/client/v1/media/thumbnail/{theirs}/{their_png}?width=32&height=32&method=crop");
    let (status, headers, _) = get(&alice, &thumbnail);
    assert_eq!(status, 200, "{}", logs());
    assert!(header(&headers, "content-type").starts_with("image/"), "{headers:?}");
    assert!(
        !node.log_text().contains("no federation media endpoints"),
        "we fell back to the deprecated endpoints"
    );

    // Our content through Synapse: ours parse there.
    let (ours, our_png) = upload(&alice, "image/png", Some("from hearth.png"), PNG);
    let (_, our_big) = upload(&alice, "application/octet-stream", Some("big.bin"), &large);
    let (status, headers, body) = get(&bob, &format!("/_matrix/client/v1/media/download/{ours}/{our_png}"));
    assert_eq!((status, body.as_slice()), (200, PNG), "{}", logs());
    assert!(header(&headers, "content-disposition").contains("from%20hearth.png"), "{headers:?}");
    let (status, _, body) = get(&bob, &format!("/_matrix/client/v1/media/download/{ours}/{our_big}"));
    assert_eq!(status, 200, "{}", logs());
    assert!(body == large, "our content differs on Synapse");
    let thumbnail =
        format!("/_matrix/client/v1/media/thumbnail/{ours}/{our_png}?width=32&height=32&method=crop");
    let (status, headers, _) = get(&bob, &thumbnail);
    assert_eq!(status, 200, "{}", logs());
    assert!(header(&headers, "content-type").starts_with("image/"), "{headers:?}");
}
