//! TURN credentials for calls: `GET /voip/turnServer` hands out short-lived
//! credentials in the TURN REST scheme, and a real coturn started with the
//! same shared secret (`use-auth-secret`) accepts them while they are valid
//! and refuses them once they have expired.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3voipturnserver>.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Node, TempDir, assert_error, free_port, write_file};
use serde_json::Value;

const TURN_SERVER: &str = "/_matrix/client/v3/voip/turnServer";
const SECRET: &str = "a secret shared with coturn";

/// coturn on a loopback port, stopped (by its PID) on drop.
struct Coturn {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Coturn {
    fn start(secret: &str) -> Coturn {
        let dir = TempDir::new("coturn");
        let port = free_port();
        let relay_base = 40_000 + (port % 200) * 100;
        let child = Command::new("turnserver")
            .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .arg("--use-auth-secret")
            .arg(format!("--static-auth-secret={secret}"))
            .args(["--realm", "hearth.test", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers"])
            .arg(format!("--min-port={relay_base}"))
            .arg(format!("--max-port={}", relay_base + 99))
            .arg(format!("--pidfile={}", dir.0.join("turnserver.pid").display()))
            .arg(format!("--userdb={}", dir.0.join("turndb").display()))
            .args(["--log-file", "stdout", "--simple-log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coturn's turnserver is needed (apt-get install coturn; .ci/run installs it)");
        let coturn = Coturn { child, port, _dir: dir };
        // Ready once it answers on its port: an allocation with bad credentials is refused.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !coturn.answers() {
            assert!(std::time::Instant::now() < deadline, "coturn did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        coturn
    }

    fn answers(&self) -> bool {
        let output = self.client("nobody", "nothing");
        output.contains("Cannot complete Allocation") || output.contains("error 401")
    }

    /// Runs coturn's test client: allocates a relay and sends a message through it.
    fn client(&self, username: &str, password: &str) -> String {
        let output = Command::new("timeout")
            .args(["10", "turnutils_uclient", "-p", &self.port.to_string(), "-u", username, "-w", password])
            .args(["-n", "1", "-e", "127.0.0.1", "-y", "127.0.0.1"])
            .output()
            .expect("cannot run turnutils_uclient");
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
    }

    fn accepts(&self, credentials: &Value) -> (bool, String) {
        let output =
            self.client(credentials["username"].as_str().unwrap(), credentials["password"].as_str().unwrap());
        (output.contains("Total lost packets 0") && !output.contains("Cannot complete Allocation"), output)
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node configured with `config` (the directory holding the file lives as long as the node).
fn node_with(config: &str) -> (Node, TempDir) {
    let dir = TempDir::new("turn-config");
    let text = format!("server_name = \"localhost\"\nregistration = \"open\"\n{config}");
    let path = write_file(&dir.0, "hearth.toml", text.as_bytes());
    (Node::start_with(&["--config", path.to_str().unwrap()]), dir)
}

fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn without_turn_uris_the_answer_is_empty() {
    let node = Node::start();
    assert_error(&node.client().get(TURN_SERVER), 401, "M_MISSING_TOKEN");
    let alice = node.register("alice");
    let (status, body) = alice.get(TURN_SERVER);
    assert_eq!((status, body), (200, serde_json::json!({})));
}

#[test]
fn coturn_accepts_the_credentials_until_they_expire() {
    let coturn = Coturn::start(SECRET);
    let uri = format!("turn:127.0.0.1:{}?transport=udp", coturn.port);
    let (node, _config) = node_with(&format!(
        "turn_uris = [\"{uri}\"]\nturn_shared_secret = \"{SECRET}\"\nturn_user_lifetime = \"1h\"\n"
    ));
    let alice = node.register("alice");
    let (status, credentials) = alice.get(TURN_SERVER);
    assert_eq!(status, 200, "{credentials}");
    assert_eq!(credentials["uris"], serde_json::json!([uri]));
    assert_eq!(credentials["ttl"], 3600);
    let username = credentials["username"].as_str().unwrap();
    let (expiry, user_id) = username.split_once(':').unwrap();
    assert_eq!(user_id, "@alice:localhost");
    let expiry: u64 = expiry.parse().unwrap();
    assert!(expiry.abs_diff(now_seconds() + 3600) <= 5, "{username}");
    let (accepted, output) = coturn.accepts(&credentials);
    assert!(accepted, "coturn refused fresh credentials:\n{output}");

    // Credentials from a server with another secret are refused.
    let mut forged = credentials.clone();
    forged["password"] = "bm90IHRoZSByaWdodCBITUFD".into();
    assert!(!coturn.accepts(&forged).0);

    // A node whose credentials last one second: valid at once, refused once expired.
    let (short, _short_config) = node_with(&format!(
        "turn_uris = [\"{uri}\"]\nturn_shared_secret = \"{SECRET}\"\nturn_user_lifetime = \"1s\"\n"
    ));
    let bob = short.register("bob");
    let (_, brief) = bob.get(TURN_SERVER);
    assert_eq!(brief["ttl"], 1);
    std::thread::sleep(Duration::from_millis(2500));
    let (accepted, output) = coturn.accepts(&brief);
    assert!(!accepted, "coturn accepted expired credentials:\n{output}");
}

#[test]
fn fixed_credentials_are_handed_out_as_configured() {
    let (node, _config) = node_with(
        "turn_uris = [\"turns:turn.example.org:5349\"]\nturn_username = \"u\"\nturn_password = \"p\"\n",
    );
    let alice = node.register("alice");
    let (status, body) = alice.get(TURN_SERVER);
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["username"].as_str(), body["password"].as_str()), (Some("u"), Some("p")));
    assert_eq!(body["ttl"], 3600);
}
