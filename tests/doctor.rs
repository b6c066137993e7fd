//! `hearth doctor`: the node as other servers and clients reach it, with
//! hearth's own resolver, on two loopback nodes with a test CA: a healthy
//! node, the same node once its certificate has expired, and a node whose
//! client well-known names a plain-HTTP base URL.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#resolving-server-names>,
//! <https://spec.matrix.org/latest/server-server-api/#tls> (a valid certificate
//! for the name), <https://spec.matrix.org/latest/server-server-api/#retrieving-server-keys>,
//! <https://spec.matrix.org/latest/client-server-api/#well-known-uri>
//! (`m.homeserver.base_url`, and CORS on it).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::federation::{TestCa, start_federating};
use common::{Node, TempDir, eventually, write_file};

/// Runs `hearth doctor` as the node's operator would, trusting the test CA
/// and reaching loopback.
fn doctor(node: &Node, ca: &TestCa) -> (bool, String) {
    let ca_file = ca.certificate_file.to_str().unwrap();
    node.cli(&["doctor", "--federation-ca", ca_file, "--federation-allow-ip", "127.0.0.0/8"], None)
}

/// The line of one check.
fn line<'a>(output: &'a str, subject: &str) -> &'a str {
    output
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(subject))
        .unwrap_or_else(|| panic!("no {subject} line in:\n{output}"))
}

/// The certificate and key files `start_federating` issued for `node`.
fn certificate_files(ca: &TestCa, node: &Node) -> (PathBuf, PathBuf) {
    let port = node.server_name.rsplit(':').next().unwrap();
    (ca.dir.0.join(format!("node-{port}.pem")), ca.dir.0.join(format!("node-{port}.key")))
}

#[test]
fn a_healthy_node_passes_and_an_expired_certificate_fails() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let (ok, output) = doctor(&a, &ca);
    assert!(ok, "{output}");
    assert!(line(&output, "well-known").starts_with("note"), "{output}");
    assert!(line(&output, "resolve").starts_with("ok"), "{output}");
    assert!(line(&output, "tls").starts_with("ok") && line(&output, "tls").contains("trusted"), "{output}");
    assert!(
        line(&output, "keys").starts_with("ok") && line(&output, "keys").contains("ed25519:"),
        "{output}"
    );
    assert!(line(&output, "client").starts_with("note"), "{output}");
    assert!(line(&output, "versions").starts_with("ok"), "{output}");
    assert!(output.contains("all checks passed"), "{output}");

    // The certificate expires (a renewal forgotten): the node reloads it on SIGHUP.
    let (certificate, key) = certificate_files(&ca, &a);
    ca.reissue_expired(&certificate, &key);
    a.signal("HUP");
    eventually(Duration::from_secs(10), || a.log_text().contains("TLS certificate reloaded").then_some(()));
    let (ok, output) = doctor(&a, &ca);
    assert!(!ok, "{output}");
    let tls = line(&output, "tls");
    assert!(tls.starts_with("FAIL") && tls.contains("expired") && tls.contains("renew it"), "{output}");
    assert!(line(&output, "keys").starts_with("FAIL"), "{output}");
    assert!(output.contains("check(s) failed"), "{output}");
}

#[test]
fn a_client_well_known_with_a_plain_http_base_url_fails() {
    let ca = TestCa::new();
    let config_dir = TempDir::new("doctor-config");
    let config =
        write_file(&config_dir.0, "hearth.toml", b"[well_known]\nclient = \"http://localhost:8008\"\n");
    let b = start_federating(&ca, &["--config", config.to_str().unwrap()]);
    let (ok, output) = doctor(&b, &ca);
    assert!(!ok, "{output}");
    let client = line(&output, "client");
    assert!(client.starts_with("FAIL") && client.contains("not an https:// URL"), "{output}");
    // Everything else about the node is fine.
    assert!(line(&output, "tls").starts_with("ok"), "{output}");
    assert!(line(&output, "keys").starts_with("ok"), "{output}");
    assert!(output.contains("1 check(s) failed"), "{output}");
}
