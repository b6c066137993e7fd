//! A real Synapse (installed from PyPI) as a federation peer on loopback:
//! writes its config, signing key and log config into a temp dir, starts
//! `python3 -m synapse.app.homeserver`, waits until its client API answers,
//! and kills it by PID on drop.
//!
//! Its server name carries the federation port (`localhost:PORT`), so
//! neither side needs `.well-known` or SRV. The federation listener speaks
//! TLS with a certificate from the test CA, and Synapse trusts that CA for
//! its outbound requests; see README.md ("Interoperability with Synapse")
//! for why each setting is there.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;

use super::federation::{TestCa, free_port};
use super::{Client, PASSWORD, TempDir};

/// The Synapse release the tests are written against (also pinned in .ci/run).
pub const SYNAPSE_VERSION: &str = "1.163.2";

/// Synapse imports a lot of Python before it listens: a few seconds here,
/// more on a loaded two-core machine.
const START_DEADLINE: Duration = Duration::from_secs(90);

/// How much of its log a failure prints.
const LOG_TAIL_LINES: usize = 600;

/// How long a SIGTERM may take before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(20);

/// A running (or stopped) Synapse.
pub struct Synapse {
    child: Option<Child>,
    pub dir: TempDir,
    /// `localhost:PORT` (PORT is the TLS federation listener).
    pub server_name: String,
    /// `http://127.0.0.1:PORT` of the plain client listener.
    pub client_base: String,
    config_file: PathBuf,
}

/// Panics with the install command if Synapse is not importable: these tests
/// must fail, not skip, on a machine without it.
fn require_installed() {
    let found = Command::new("python3")
        .args(["-c", "import synapse; print(synapse.__version__)"])
        .output()
        .map(|output| (output.status.success(), String::from_utf8_lossy(&output.stdout).trim().to_string()));
    match found {
        Ok((true, version)) => {
            if !version.starts_with(SYNAPSE_VERSION) {
                eprintln!("note: Synapse {version} installed, tests are written for {SYNAPSE_VERSION}");
            }
        }
        _ => panic!(
            "Synapse is not installed; install it with: python3 -m pip install 'matrix-synapse=={SYNAPSE_VERSION}'"
        ),
    }
}

/// A Synapse signing key file: `ed25519 KEY_ID SEED` (unpadded base64).
fn signing_key() -> String {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).unwrap();
    format!("ed25519 a_test {}\n", base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed))
}

impl Synapse {
    /// Writes a config and starts Synapse; panics (with its log) if it does
    /// not answer within the deadline.
    pub fn start(ca: &TestCa) -> Synapse {
        require_installed();
        let dir = TempDir::new("synapse");
        let federation_port = free_port();
        let client_port = free_port();
        let server_name = format!("localhost:{federation_port}");
        let (certificate, key) = ca.issue(&format!("synapse-{federation_port}"));
        let path = |name: &str| dir.0.join(name).to_str().unwrap().to_string();
        std::fs::write(path("signing.key"), signing_key()).unwrap();
        let log_config = json!({
            "version": 1,
            "formatters": {"precise": {"format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise", "filename": path("homeserver.log"), "encoding": "utf8"}},
            "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": false,
        });
        std::fs::write(path("log.yaml"), log_config.to_string()).unwrap();
        // JSON is YAML, so the config is written with serde_json.
        let unlimited = json!({"per_second": 10_000, "burst_count": 100_000});
        let config = json!({
            "server_name": server_name,
            "pid_file": path("homeserver.pid"),
            "listeners": [
                {"port": federation_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": true,
                 "resources": [{"names": ["federation"], "compress": false}]},
                {"port": client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": false,
                 "resources": [{"names": ["client", "media"], "compress": false}]},
            ],
            "tls_certificate_path": certificate.to_str().unwrap(),
            "tls_private_key_path": key.to_str().unwrap(),
            "federation_custom_ca_list": [ca.certificate_file.to_str().unwrap()],
            "ip_range_blacklist": [],
            "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
            "trusted_key_servers": [],
            "suppress_key_server_warning": true,
            "database": {"name": "sqlite3", "args": {"database": path("homeserver.db")}},
            "log_config": path("log.yaml"),
            "media_store_path": path("media"),
            "signing_key_path": path("signing.key"),
            "report_stats": false,
            "macaroon_secret_key": "hearth-test-macaroon-secret",
            "form_secret": "hearth-test-form-secret",
            "enable_registration": true,
            "enable_registration_without_verification": true,
            "use_presence": false,
            "caches": {"sync_response_cache_duration": 0},
            "rc_message": unlimited,
            "rc_registration": unlimited,
            "rc_login": {"address": unlimited, "account": unlimited, "failed_attempts": unlimited},
            "rc_joins": {"local": unlimited, "remote": unlimited},
            "rc_joins_per_room": unlimited,
            "rc_invites": {"per_room": unlimited, "per_user": unlimited, "per_issuer": unlimited},
            "rc_room_creation": unlimited,
            "rc_profile": unlimited,
            "rc_federation": {"window_size": 1000, "sleep_limit": 10_000, "sleep_delay": 1,
                              "reject_limit": 100_000, "concurrent": 100},
            "federation": {
                "destination_min_retry_interval": 500,
                "destination_max_retry_interval": 2000,
                "max_short_retry_delay": 500,
                "max_long_retry_delay": 2000,
            },
        });
        let config_file = dir.0.join("homeserver.yaml");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let mut synapse = Synapse {
            child: None,
            dir,
            server_name,
            client_base: format!("http://127.0.0.1:{client_port}"),
            config_file,
        };
        synapse.launch();
        synapse
    }

    fn launch(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join("stderr.log"))
            .unwrap();
        let child = Command::new("python3")
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&self.config_file)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().unwrap())
            .stderr(stderr)
            .spawn()
            .expect("cannot start python3");
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        let client = self.client();
        loop {
            if let Ok((200, _)) = client.try_request("GET", "/_matrix/client/versions", None) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("Synapse exited ({status}) while starting; log:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                panic!("Synapse did not answer within {START_DEADLINE:?}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its stderr and log file (the tail: the log can be long).
    pub fn log_text(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.0.join(name)).unwrap_or_default();
        let log = read("homeserver.log");
        // The test's own client requests (polling) would crowd out the rest.
        let client_access = format!("synapse.access.http.{}", self.client_base.rsplit(':').next().unwrap());
        let interesting =
            log.lines().filter(|line| !line.contains(&client_access) && !line.contains("Attaching"));
        let tail: Vec<&str> = interesting.rev().take(LOG_TAIL_LINES).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("--- stderr ---\n{}\n--- homeserver.log (tail) ---\n{}", read("stderr.log"), tail.join("\n"))
    }

    /// Stops it with SIGTERM (SIGKILL after a deadline) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + STOP_DEADLINE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same config, database and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// A client for the plain client listener.
    pub fn client(&self) -> Client {
        Client::new(&self.client_base)
    }

    /// `@localpart:localhost:PORT`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// Registers a user (open registration, dummy auth) and returns a logged-in client.
    pub fn register(&self, localpart: &str) -> Client {
        let mut client = self.client();
        let body = json!({"username": localpart, "password": PASSWORD, "auth": {"type": "m.login.dummy"},
                          "inhibit_login": false});
        let (status, answer) = client.post("/_matrix/client/v3/register", &body);
        assert_eq!(status, 200, "register {localpart} on Synapse: {answer}");
        client.token = Some(answer["access_token"].as_str().unwrap().to_string());
        client.user_id = answer["user_id"].as_str().unwrap().to_string();
        client.device_id = answer["device_id"].as_str().unwrap().to_string();
        client
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
