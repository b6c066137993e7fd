//! Several nodes that federate on loopback: a test CA issues each node's TLS
//! certificate, every node trusts the CA (`--federation-ca`) and may reach
//! loopback (`--federation-allow-ip 127.0.0.0/8`). Server names carry the
//! TLS port (`localhost:PORT`), so no discovery beyond the name is needed.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::{Value, json};

pub use super::free_port;
use super::{Node, TempDir};

/// The test CA: its certificate file and what it needs to sign more.
pub struct TestCa {
    pub dir: TempDir,
    pub certificate_file: PathBuf,
    certificate: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = TempDir::new("ca");
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "hearth test CA");
        let certificate = params.self_signed(&key).unwrap();
        let certificate_file = dir.0.join("ca.pem");
        std::fs::write(&certificate_file, certificate.pem()).unwrap();
        TestCa { dir, certificate_file, certificate, key }
    }

    /// Issues a certificate for `localhost` and 127.0.0.1; returns (cert file, key file).
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let certificate = params.signed_by(&key, &self.certificate, &self.key).unwrap();
        let certificate_file = self.dir.0.join(format!("{name}.pem"));
        let key_file = self.dir.0.join(format!("{name}.key"));
        std::fs::write(&certificate_file, certificate.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (certificate_file, key_file)
    }
}

impl TestCa {
    /// Writes a certificate for `localhost` and 127.0.0.1 that expired in
    /// 2021 over `certificate_file` and `key_file`.
    pub fn reissue_expired(&self, certificate_file: &std::path::Path, key_file: &std::path::Path) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let certificate = params.signed_by(&key, &self.certificate, &self.key).unwrap();
        std::fs::write(certificate_file, certificate.pem()).unwrap();
        std::fs::write(key_file, key.serialize_pem()).unwrap();
    }
}

/// Starts a node named `localhost:PORT` that federates with others of the same CA.
pub fn start_federating(ca: &TestCa, extra: &[&str]) -> Node {
    let port = free_port();
    let mut args = federating_serve_args(ca, port, &format!("node-{port}"));
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start_on(TempDir::new("fed"), &args, "127.0.0.1:0", &format!("127.0.0.1:{port}"))
}

/// A test CA and two nodes it issued, federating with each other.
pub fn federating_pair() -> (TestCa, Node, Node) {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    (ca, a, b)
}

/// The `serve` options of a node named `localhost:PORT` with TLS on `port`
/// (a certificate named `name` issued by `ca`) that trusts `ca` and may
/// reach loopback; the listener addresses are the caller's.
pub fn federating_serve_args(ca: &TestCa, port: u16, name: &str) -> Vec<String> {
    let (certificate, key) = ca.issue(name);
    vec![
        "--server-name".into(),
        format!("localhost:{port}"),
        "--registration".into(),
        "open".into(),
        "--tls-cert".into(),
        certificate.to_str().unwrap().into(),
        "--tls-key".into(),
        key.to_str().unwrap().into(),
        "--federation-ca".into(),
        ca.certificate_file.to_str().unwrap().into(),
        "--federation-allow-ip".into(),
        "127.0.0.0/8".into(),
    ]
}

/// The `hearth federation` options that make `from` a federating peer of
/// nodes issued by `ca`.
pub fn federation_args(ca: &TestCa, from: &Node) -> Vec<String> {
    vec![
        "federation".into(),
        "--server-name".into(),
        from.server_name.clone(),
        "--federation-ca".into(),
        ca.certificate_file.to_str().unwrap().into(),
        "--federation-allow-ip".into(),
        "127.0.0.0/8".into(),
    ]
}

/// Sends one request from `from` to `to`, signed with `from`'s key
/// (`hearth federation request`); returns the status and the JSON answer.
pub fn signed_request(
    ca: &TestCa,
    from: &Node,
    to: &Node,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut args = federation_args(ca, from);
    args.extend(["request".into(), to.server_name.clone(), path.into(), "--method".into(), method.into()]);
    if let Some(body) = body {
        args.extend(["--body".into(), body.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, output) = from.cli(&args, None);
    let mut lines = output.lines();
    let status = lines.next().and_then(|line| line.trim().parse().ok()).unwrap_or(0);
    let answer = lines.next().and_then(|line| serde_json::from_str(line).ok()).unwrap_or(Value::Null);
    (status, answer)
}

/// Signs an event of a room of `room_version` as `from` (`hearth federation
/// sign-event`); returns (event ID, signed event).
pub fn sign_event(ca: &TestCa, from: &Node, room_version: &str, event: &Value) -> (String, Value) {
    let mut args = federation_args(ca, from);
    args.extend(["sign-event".into(), "--room-version".into(), room_version.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, output) = from.cli(&args, Some(&event.to_string()));
    assert!(ok, "{output}");
    let answer: Value = serde_json::from_str(output.lines().next().unwrap()).unwrap();
    (answer["event_id"].as_str().unwrap().to_string(), answer["event"].clone())
}

/// `from`'s user asks `to` for a membership template (`make_{kind}`) of a
/// room of `room_version` and signs it; returns (event ID, signed event).
pub fn make_membership(
    ca: &TestCa,
    from: &Node,
    to: &Node,
    room_version: &str,
    kind: &str,
    room_id: &str,
    user_id: &str,
) -> (String, Value) {
    use super::rooms::enc;
    let path =
        format!("/_matrix/federation/v1/make_{kind}/{}/{}?ver={room_version}", enc(room_id), enc(user_id));
    let (status, answer) = signed_request(ca, from, to, "GET", &path, None);
    assert_eq!(status, 200, "make_{kind}: {answer}");
    let mut event = answer["event"].clone();
    event["origin_server_ts"] = json!(1_700_000_000_000_i64);
    sign_event(ca, from, room_version, &event)
}
