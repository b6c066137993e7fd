//! Application services for the tests (tests/appservice.rs and
//! tests/appservice_bad_input.rs): registration files, and services run as
//! child processes whose output lines are collected as they come: the
//! mautrix-python one (tests/clients/mautrix_appservice.py) and the plain
//! http.server one that misbehaves on purpose (tests/clients/plain_appservice.py).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::{Client, Node, TempDir, eventually, write_file};

pub const AS_TOKEN: &str = "as_token_for_the_test_bridge";
pub const HS_TOKEN: &str = "hs_token_for_the_test_bridge";
pub const WAIT: Duration = Duration::from_secs(30);

/// The registration file a bridge would generate: ghosts `@ghost_*` claimed
/// exclusively, the bot `@bridgebot`.
pub fn registration(as_port: u16) -> String {
    format!(
        r#"id: mautrix-test
url: http://127.0.0.1:{as_port}
as_token: {AS_TOKEN}
hs_token: {HS_TOKEN}
sender_localpart: bridgebot
namespaces:
  users:
    - exclusive: true
      regex: '@ghost_.*'
  aliases:
    - exclusive: true
      regex: '#bridged_.*'
  rooms: []
rate_limited: false
receive_ephemeral: true
protocols: [testnet]
"#
    )
}

/// A service run as a child process, its output lines collected as they come.
pub struct Service {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Service {
    pub fn start(node: &Node, as_port: u16, mode: &str) -> Service {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mautrix_appservice.py");
        let mut command = Command::new("python3");
        command.arg(script).args([
            &node.http,
            &as_port.to_string(),
            AS_TOKEN,
            HS_TOKEN,
            &node.server_name,
            mode,
        ]);
        Service::spawn(command)
    }

    /// A service on Python's http.server (tests/clients/plain_appservice.py)
    /// that expects `hs_token` and answers transactions as `mode` says.
    pub fn plain(as_port: u16, hs_token: &str, mode: &str) -> Service {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/plain_appservice.py");
        let mut command = Command::new("python3");
        command.arg(script).args([&as_port.to_string(), hs_token, mode]);
        Service::spawn(command)
    }

    /// Runs the service and waits for its `ready` line.
    pub fn spawn(mut command: Command) -> Service {
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("cannot run python3");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let service = Service { child, lines };
        service.wait_for(|line| line == "ready");
        service.assert_no_error();
        service
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a line `matches`, and returns it.
    pub fn wait_for(&self, matches: impl Fn(&str) -> bool) -> String {
        let end = std::time::Instant::now() + WAIT;
        loop {
            let lines = self.lines();
            assert!(!lines.iter().any(|line| line.starts_with("error ")), "{lines:#?}");
            if let Some(line) = lines.iter().find(|line| matches(line)) {
                return line.clone();
            }
            assert!(std::time::Instant::now() < end, "not seen within {WAIT:?}; the service saw {lines:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn assert_no_error(&self) {
        let lines = self.lines();
        assert!(!lines.iter().any(|line| line.starts_with("error ")), "{lines:#?}");
    }

    /// The transactions a plain service received (each attempt), in order.
    pub fn transactions(&self) -> Vec<Received> {
        let lines = self.lines();
        let transactions = lines.iter().filter(|line| line.starts_with("{\"txn\""));
        let parsed = transactions.map(|line| serde_json::from_str(line));
        parsed.collect::<Result<_, _>>().unwrap_or_else(|error| panic!("{error}: {lines:#?}"))
    }

    /// Waits until the received transactions satisfy `done`.
    pub fn wait_for_transactions(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        eventually(WAIT, || Some(self.transactions()).filter(|received| done(received)))
    }

    /// The message bodies the service received, in order.
    pub fn messages(&self) -> Vec<String> {
        self.lines().iter().filter_map(|line| line.strip_prefix("message ").map(str::to_owned)).collect()
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One transaction as a plain service received it.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct Received {
    pub txn: String,
    pub events: Vec<String>,
    pub bodies: Vec<String>,
    /// What the service answered; `None`: nothing.
    pub answer: Option<u16>,
}

impl Received {
    pub fn accepted(&self) -> bool {
        self.answer == Some(200)
    }
}

/// The bodies of every transaction the service accepted, in order.
pub fn accepted_bodies(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .filter(|received| received.accepted())
        .flat_map(|received| received.bodies.clone())
        .collect()
}

pub fn check_python() {
    let python = Command::new("python3").args(["-c", "import mautrix.appservice"]).output();
    match python {
        Err(error) => panic!("python3 is needed for this test and cannot be run: {error}"),
        Ok(output) if !output.status.success() => panic!(
            "mautrix is needed for this test: python3 -m pip install 'mautrix==0.21.1'\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Ok(_) => {}
    }
}

/// A node with the registration in place; the directory holding it.
pub fn node_with_service(as_port: u16) -> (Node, TempDir) {
    node_with_registrations(&[("registration.yaml", registration(as_port))])
}

/// A node with these registration files (name, text) in its config.
pub fn node_with_registrations(files: &[(&str, String)]) -> (Node, TempDir) {
    let dir = TempDir::new("appservice");
    let paths: Vec<String> = files
        .iter()
        .map(|(name, text)| format!("{:?}", write_file(&dir.0, name, text.as_bytes()).to_str().unwrap()))
        .collect();
    let node = Node::start_with_config(&format!("app_service_config_files = [{}]", paths.join(", ")));
    (node, dir)
}

pub fn as_client(node: &Node) -> Client {
    let mut client = node.client();
    client.token = Some(AS_TOKEN.into());
    client
}

pub fn send_text(client: &Client, room_id: &str, body: &str) -> String {
    let txn = body.replace(' ', "-");
    let (status, answer) = client.put(
        &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}"),
        &json!({"msgtype": "m.text", "body": body}),
    );
    assert_eq!(status, 200, "{answer}");
    answer["event_id"].as_str().unwrap().to_owned()
}

/// The second service's user: made up at random in mixed case, as
/// mautrix-python bridges write it (`secrets.token_urlsafe`).
pub const SECOND_SENDER: &str = "Sx7-Qk_2bZ";

/// A second service's registration: its own ID, tokens and namespace.
pub fn second_registration(url: &str) -> String {
    format!(
        r#"id: second-bot
url: {url}
as_token: second_as_token
hs_token: second_hs_token
sender_localpart: {SECOND_SENDER}
namespaces:
  users:
    - exclusive: true
      regex: '@second_.*'
"#
    )
}

/// The service's own user makes a room and says `bodies` in it, one by one.
pub fn bot_speaks(bot: &Client, bodies: &[&str]) -> String {
    let (status, room) = bot.post("/_matrix/client/v3/createRoom", &json!({}));
    assert_eq!(status, 200, "{room}");
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    for body in bodies {
        send_text(bot, &room_id, body);
    }
    room_id
}
