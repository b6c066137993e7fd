//! `hearth doctor`: the node as other servers and clients reach it, with
//! hearth's own resolver, on two loopback nodes with a test CA: a healthy
//! node, the same node once its certificate has expired, a node whose
//! client well-known names a plain-HTTP base URL, and a node named without a
//! port whose server well-known (on port 443) delegates to it, then to a port
//! where nothing answers.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#resolving-server-names>,
//! <https://spec.matrix.org/latest/server-server-api/#tls> (a valid certificate
//! for the name), <https://spec.matrix.org/latest/server-server-api/#retrieving-server-keys>,
//! <https://spec.matrix.org/latest/client-server-api/#well-known-uri>
//! (`m.homeserver.base_url`, and CORS on it).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::federation::{TestCa, federating_serve_args, start_federating};
use common::{Node, TempDir, eventually, free_port, write_file};

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

/// Starts a node named `localhost` (no port: other servers ask
/// `https://localhost/.well-known/matrix/server`, on port 443) with TLS on
/// 443 and on `port`, whose server well-known says `delegation`.
fn start_without_port(ca: &TestCa, port: u16, delegation: &str, dir: &TempDir) -> Node {
    let mut args = federating_serve_args(ca, port, &format!("portless-{port}"));
    let at = args.iter().position(|arg| arg == "--server-name").unwrap();
    args[at + 1] = "localhost".into();
    let config =
        write_file(&dir.0, "hearth.toml", format!("[well_known]\nserver = \"{delegation}\"\n").as_bytes());
    args.extend([
        "--config".into(),
        config.to_str().unwrap().into(),
        "--https".into(),
        "127.0.0.1:443".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start_on(TempDir::new("doctor-portless"), &args, "127.0.0.1:0", &format!("127.0.0.1:{port}"))
}

/// A server name without a port is looked up through
/// `/.well-known/matrix/server` on port 443 first
/// (<https://spec.matrix.org/latest/server-server-api/#resolving-server-names>):
/// a delegation there to a port that serves the node passes every check; one
/// to a port where nothing answers fails, with what to change. Both nodes
/// need port 443 on loopback, so they run one after the other; where this
/// user may not bind it (not root), the test says so and checks nothing.
#[test]
fn a_server_well_known_delegation_is_followed_and_a_broken_one_fails() {
    match std::net::TcpListener::bind("127.0.0.1:443") {
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("SKIPPED: this user may not listen on port 443 (run as root, as CI does)");
            return;
        }
        other => drop(other),
    }
    let ca = TestCa::new();
    let port = free_port();
    let config_dir = TempDir::new("doctor-delegation");
    let a = start_without_port(&ca, port, &format!("localhost:{port}"), &config_dir);
    let (ok, output) = doctor(&a, &ca);
    assert!(ok, "{output}");
    let well_known = line(&output, "well-known");
    assert!(well_known.starts_with("ok") && well_known.contains(&format!("localhost:{port}")), "{output}");
    assert!(
        well_known.contains("Cache-Control: max-age=3600"),
        "hearth's own answer says how long to keep it: {output}"
    );
    assert!(line(&output, "resolve").contains(&format!("127.0.0.1:{port}")), "{output}");
    assert!(line(&output, "tls").starts_with("ok"), "{output}");
    assert!(line(&output, "keys").starts_with("ok"), "{output}");
    drop(a);

    // The delegation names a port where nothing listens.
    let dead = free_port();
    let b = start_without_port(&ca, free_port(), &format!("localhost:{dead}"), &config_dir);
    let (ok, output) = doctor(&b, &ca);
    assert!(!ok, "{output}");
    assert!(line(&output, "well-known").contains(&format!("localhost:{dead}")), "{output}");
    assert!(line(&output, "tls").starts_with("FAIL"), "{output}");
    assert!(line(&output, "keys").starts_with("FAIL"), "{output}");
}

/// The doctor reads the database read-only beside the node: an application
/// service added since the node last loaded its registrations (its own user
/// not made yet) must not make it try to write.
#[test]
fn the_doctor_runs_beside_a_service_the_node_has_not_loaded_yet() {
    let ca = TestCa::new();
    let node = start_federating(&ca, &[]);
    let dir = TempDir::new("doctor-appservice");
    let registration = "id: bridge\nurl: null\nas_token: doctor-as-token\nhs_token: doctor-hs-token\n\
                        sender_localpart: doctorbridge\nnamespaces:\n  users:\n    - exclusive: true\n      \
                        regex: \"@doctorghost_.*\"\n";
    let file = write_file(&dir.0, "registration.yaml", registration.as_bytes());
    let (ok, output) = node.cli(&["appservice", "add", file.to_str().unwrap()], None);
    assert!(ok, "{output}");
    let (ok, output) = doctor(&node, &ca);
    assert!(ok, "{output}");
    assert!(!output.contains("readonly"), "{output}");
}
