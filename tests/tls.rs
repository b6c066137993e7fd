//! TLS: the self-signed certificate made on first start (and kept), PEM files
//! given with `--tls-cert`/`--tls-key`, and their reload on SIGHUP.

mod common;

use std::time::Duration;

use common::{Client, Node, TempDir, eventually, write_file};

/// The DER of the end-entity certificate the node serves on a new connection.
fn served_certificate(node: &Node) -> Vec<u8> {
    let address = node.https.trim_start_matches("https://");
    common::tls::served_chain(address, "localhost", common::tls::accept_any()).unwrap()[0].clone()
}

/// A fresh self-signed certificate for localhost: (certificate PEM, key PEM, DER).
fn new_certificate() -> (String, String, Vec<u8>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    (certified.cert.pem(), certified.key_pair.serialize_pem(), certified.cert.der().to_vec())
}

#[test]
fn the_self_signed_certificate_is_kept_across_restarts() {
    let mut node = Node::start();
    let (status, _) = Client::new(&node.https).get("/_matrix/client/versions");
    assert_eq!(status, 200);
    let first = served_certificate(&node);
    node.restart();
    assert_eq!(served_certificate(&node), first);
    assert_eq!(Client::new(&node.https).get("/_matrix/client/versions").0, 200);
}

#[test]
fn pem_files_are_served_and_reloaded_on_sighup() {
    let dir = TempDir::new("tls");
    let (certificate, key, first_der) = new_certificate();
    let certificate_path = write_file(&dir.0, "cert.pem", certificate.as_bytes());
    let key_path = write_file(&dir.0, "key.pem", key.as_bytes());
    let node = Node::start_with(&[
        "--registration",
        "open",
        "--tls-cert",
        certificate_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    assert_eq!(served_certificate(&node), first_der);
    node.register("alice");
    let mut over_tls = Client::new(&node.https);
    assert_eq!(over_tls.login("alice", common::PASSWORD).0, 200);

    // A renewal: new files, then SIGHUP; new connections get the new certificate.
    let (certificate, key, second_der) = new_certificate();
    assert_ne!(first_der, second_der);
    write_file(&dir.0, "cert.pem", certificate.as_bytes());
    write_file(&dir.0, "key.pem", key.as_bytes());
    node.signal("HUP");
    eventually(Duration::from_secs(10), || (served_certificate(&node) == second_der).then_some(()));
    assert_eq!(over_tls.get("/_matrix/client/v3/account/whoami").0, 200, "the session survives the reload");

    // A broken renewal keeps the working certificate.
    write_file(&dir.0, "cert.pem", b"not a certificate");
    node.signal("HUP");
    eventually(Duration::from_secs(10), || node.log_text().contains("TLS reload failed").then_some(()));
    assert_eq!(served_certificate(&node), second_der);
    assert_eq!(Client::new(&node.https).get("/_matrix/client/versions").0, 200);
}

#[test]
fn a_certificate_without_its_key_is_refused() {
    let dir = TempDir::new("tls-half");
    let (certificate, _, _) = new_certificate();
    let certificate_path = write_file(&dir.0, "cert.pem", certificate.as_bytes());
    let data_dir = dir.0.join("data");
    let (code, output) = common::run(
        &[
            "serve",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--https",
            "127.0.0.1:0",
            "--tls-cert",
            certificate_path.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("go together"), "{output}");
}
