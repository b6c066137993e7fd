//! The federation transport between two real nodes on loopback: key
//! publication, notary queries, signed requests (`X-Matrix`) and their
//! checks, certificate verification, the address filter and key rotation.
//!
//! Each node has a self-signed certificate; `hearth tls export-cert` prints
//! it before the node starts, and the other node trusts it through
//! `--federation-ca`. Server names are `127.0.0.1:PORT` (IP literals: no DNS).

mod common;

use common::{Client, Node, TempDir, assert_error, free_port, write_file};
use serde_json::Value;

/// A node's pieces before and after it starts.
struct Peer {
    name: String,
    node: Node,
}

/// The PEM block of `hearth tls export-cert`'s output.
fn export_cert(data_dir: &TempDir, server_name: &str) -> String {
    let output = std::process::Command::new(common::binary())
        .args(["tls", "--data-dir"])
        .arg(&data_dir.0)
        .args(["--server-name", server_name, "export-cert"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
    text
}

/// Two nodes that trust each other's certificate and may reach loopback.
fn pair(certs: &TempDir) -> (Peer, Peer) {
    let ports = [free_port(), free_port()];
    let names: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    let dirs = [TempDir::new("fed-a"), TempDir::new("fed-b")];
    let cert_files: Vec<_> = (0..2)
        .map(|index| {
            let pem = export_cert(&dirs[index], &names[index]);
            write_file(&certs.0, &format!("node{index}.pem"), pem.as_bytes())
        })
        .collect();
    let mut peers = Vec::new();
    for (index, dir) in dirs.into_iter().enumerate() {
        let other_cert = cert_files[1 - index].to_str().unwrap().to_string();
        let args = [
            "--server-name",
            &names[index],
            "--registration",
            "open",
            "--federation-ca",
            &other_cert,
            "--federation-allow-ip",
            "127.0.0.0/8",
        ];
        let node = Node::start_on_https(dir, &names[index], &args);
        peers.push(Peer { name: names[index].clone(), node });
    }
    let b = peers.pop().unwrap();
    (peers.pop().unwrap(), b)
}

/// Runs `hearth federation request` as node `from`, with extra options.
fn federation_request(from: &Peer, options: &[&str], destination: &str, path: &str) -> (bool, String) {
    let mut args = vec!["federation", "--server-name", &from.name];
    args.extend_from_slice(options);
    args.extend_from_slice(&["request", destination, path]);
    from.node.cli(&args, None)
}

/// The status and JSON the request command printed (its last two lines).
fn printed_answer(output: &str) -> (u16, Value) {
    let lines: Vec<&str> = output.lines().collect();
    let status = lines[lines.len() - 2].parse().unwrap();
    (status, serde_json::from_str(lines[lines.len() - 1]).unwrap())
}

#[test]
fn keys_version_notary_and_signed_requests_between_two_nodes() {
    let certs = TempDir::new("fed-certs");
    let (a, b) = pair(&certs);
    let b_https = Client::new(&b.node.https);
    let threads_at_start = (a.node.thread_count(), b.node.thread_count());

    // Version and keys need no signature.
    let (status, version) = b_https.get("/_matrix/federation/v1/version");
    assert_eq!(status, 200, "{version}");
    assert_eq!(version["server"]["name"], "hearth");
    let (status, keys) = b_https.get("/_matrix/key/v2/server");
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["server_name"], b.name.as_str());
    let key_id = keys["verify_keys"].as_object().unwrap().keys().next().unwrap().clone();
    assert!(keys["signatures"][b.name.as_str()][key_id.as_str()].is_string(), "{keys}");
    assert!(keys["valid_until_ts"].as_i64().unwrap() > 0);

    // A as a notary fetches B's keys over verified TLS and countersigns them.
    let a_https = Client::new(&a.node.https);
    let (status, notary) = a_https.get(&format!("/_matrix/key/v2/query/{}", b.name));
    assert_eq!(status, 200, "{notary}");
    let answer = &notary["server_keys"][0];
    assert_eq!(answer["server_name"], b.name.as_str(), "{notary}");
    assert_eq!(answer["verify_keys"], keys["verify_keys"]);
    assert!(answer["signatures"][b.name.as_str()].is_object(), "{notary}");
    assert!(answer["signatures"][a.name.as_str()].is_object(), "{notary}");
    // The deprecated form naming a key ID answers the same keys.
    // Spec: https://spec.matrix.org/latest/server-server-api/#get_matrixkeyv2queryservername
    let (status, by_key) = a_https.get(&format!("/_matrix/key/v2/query/{}/{key_id}", b.name));
    assert_eq!(status, 200, "{by_key}");
    assert_eq!(by_key["server_keys"][0]["verify_keys"], keys["verify_keys"], "{by_key}");
    let (status, batch) = a_https.post(
        "/_matrix/key/v2/query",
        &serde_json::json!({"server_keys": {b.name.as_str(): {}, a.name.as_str(): {}}}),
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["server_keys"].as_array().unwrap().len(), 2, "{batch}");

    // A signed request from A: B fetches A's key and checks the signature.
    let b_cert = certs.0.join("node1.pem");
    let options = ["--federation-ca", b_cert.to_str().unwrap(), "--federation-allow-ip", "127.0.0.0/8"];
    let (ok, output) = federation_request(&a, &options, &b.name, "/_matrix/federation/v1/version");
    assert!(ok, "{output}");
    assert_eq!(printed_answer(&output).0, 200, "{output}");
    let (ok, output) = federation_request(
        &a,
        &options,
        &b.name,
        "/_matrix/federation/v1/query/directory?room_alias=%23x%3Ay",
    );
    assert!(ok, "{output}");
    let (status, body) = printed_answer(&output);
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{output}\n{}",
        b.node.log_text()
    );
    // An endpoint this server does not offer answers M_UNRECOGNIZED to a signed request.
    let (ok, output) = federation_request(&a, &options, &b.name, "/_matrix/federation/v1/no_such_endpoint");
    assert!(ok, "{output}");
    let (status, body) = printed_answer(&output);
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")), "{output}");
    // The devices of a user who is not ours are not found.
    let (ok, output) =
        federation_request(&a, &options, &b.name, "/_matrix/federation/v1/user/devices/%40x%3Ay");
    assert!(ok, "{output}");
    let (status, body) = printed_answer(&output);
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{output}");

    // Unsigned, forged, or meant for someone else: 401.
    let path = "/_matrix/federation/v1/query/directory?room_alias=%23x%3Ay";
    assert_error(&b_https.get(path), 401, "M_UNAUTHORIZED");
    let forged =
        format!(r#"X-Matrix origin="{}",destination="{}",key="{key_id}",sig="AAAA""#, a.name, b.name);
    assert_error(&signed_get(&b.node.https, path, &forged), 401, "M_UNAUTHORIZED");
    let elsewhere =
        format!(r#"X-Matrix origin="{}",destination="other.example",key="{key_id}",sig="AAAA""#, a.name);
    assert_error(&signed_get(&b.node.https, path, &elsewhere), 401, "M_UNAUTHORIZED");
    assert_error(&signed_get(&b.node.https, path, "X-Matrix origin"), 401, "M_UNAUTHORIZED");

    // Outbound requests (TLS, HTTP, timers) ran on the node's event loop: no
    // resolver pool, timer or executor thread appeared.
    assert_eq!((a.node.thread_count(), b.node.thread_count()), threads_at_start);

    // Verification is never off: without B's certificate the handshake fails.
    let (ok, output) = federation_request(
        &a,
        &["--federation-allow-ip", "127.0.0.0/8"],
        &b.name,
        "/_matrix/federation/v1/version",
    );
    assert!(!ok && output.contains("TLS"), "{output}");
    // And loopback is refused unless allowed.
    let (ok, output) = federation_request(&a, &options[..2], &b.name, "/_matrix/federation/v1/version");
    assert!(!ok && output.contains("not a public address"), "{output}");
}

/// A GET with a hand-made Authorization header.
fn signed_get(base: &str, path: &str, authorization: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(ureq::tls::TlsConfig::builder().disable_verification(true).build())
        .build()
        .into();
    let mut response =
        agent.get(format!("{base}{path}")).header("authorization", authorization).call().unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[test]
fn rotated_keys_stay_published_as_old_keys() {
    let mut node = Node::start();
    let https = Client::new(&node.https);
    let (_, before) = https.get("/_matrix/key/v2/server");
    let old_id = before["verify_keys"].as_object().unwrap().keys().next().unwrap().clone();
    let (ok, output) = node.cli(&["key", "rotate"], None);
    assert!(ok && output.contains(&old_id), "{output}");
    node.restart();
    let https = Client::new(&node.https);
    let (status, after) = https.get("/_matrix/key/v2/server");
    assert_eq!(status, 200, "{after}");
    assert!(after["verify_keys"].get(&old_id).is_none(), "{after}");
    assert_eq!(after["old_verify_keys"][&old_id]["key"], before["verify_keys"][&old_id]["key"], "{after}");
    assert!(after["old_verify_keys"][&old_id]["expired_ts"].as_i64().unwrap() > 0);
    // The plain listener does not serve federation.
    assert_error(&node.client().get("/_matrix/key/v2/server"), 404, "M_UNRECOGNIZED");
}
