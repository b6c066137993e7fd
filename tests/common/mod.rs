//! Test harness: starts the real `hearth` binary on free loopback ports with a
//! fresh data directory, waits until it is ready, and kills it on drop.
//!
//! Ports are never fixed: the node binds port 0 and the harness reads the
//! ports it got from its log.
//!
//! The benchmarks include this module too (`benches/support`), for the
//! temporary directories, the test CA and the start-up log reader.
#![allow(dead_code)]

pub mod appservice;
pub mod federation;
pub mod synapse;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The password [`Node::register`] gives every account.
pub const PASSWORD: &str = "secret-password";

/// Config lifting the login limits, for tests that log in more often than a
/// person would from one address (every test client is 127.0.0.1).
pub const NO_LOGIN_LIMITS: &str = "
[rc_login.address]
per_second = 1000.0
burst_count = 1000000
[rc_login.account]
per_second = 1000.0
burst_count = 1000000
[rc_login.failed_attempts]
per_second = 1000.0
burst_count = 1000000
";

/// How long a node may take to start.
const START_DEADLINE: Duration = Duration::from_secs(20);

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let unique = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "hearth-test-{name}-{}-{unique}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_hearth")
}

/// How long a one-shot command (`init`, `user`, a `serve` that must fail) may run.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// Where the test clients of other ecosystems are built or installed
/// (`$HEARTH_TEST_CLIENTS_TARGET`, default `~/.cache/hearth/test-clients`):
/// outside the clone, kept between runs and fresh clones.
pub fn test_clients_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HEARTH_TEST_CLIENTS_TARGET").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    let home =
        std::env::var_os("HOME").expect("HOME is not set and HEARTH_TEST_CLIENTS_TARGET is not either");
    PathBuf::from(home).join(".cache/hearth/test-clients")
}

/// Runs the binary with `args` and `stdin`, and returns its exit code (`None`
/// if killed by a signal) and its stdout followed by its stderr. A command
/// still running at the deadline is killed and fails the test.
pub fn run(args: &[&str], stdin: Option<&str>) -> (Option<i32>, String) {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start hearth");
    if let Some(text) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + COMMAND_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hearth {args:?} still ran after {COMMAND_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = out.join().unwrap() + &err.join().unwrap();
    (status.code(), text)
}

/// What a node's start-up log says once it is ready.
pub struct Ready {
    /// `http://ADDR` of the first plain listener (empty if none).
    pub http: String,
    /// `https://ADDR` of the first TLS listener (empty if none).
    pub https: String,
    pub server_name: String,
}

/// Reads a node's log lines until ` ready in `, noting its listeners and
/// server name; `None` if the log ends or `within` passes first. The tests'
/// [`Node`] and the benchmarks' servers both start this way.
pub fn wait_ready(lines: &Receiver<String>, within: Duration) -> Option<Ready> {
    let deadline = Instant::now() + within;
    let mut plain = Vec::new();
    let mut tls = Vec::new();
    let mut server_name = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).ok()?;
        if let Some(rest) = line.split("listening on ").nth(1) {
            let address = rest.split_whitespace().next().unwrap().to_string();
            if rest.contains("(TLS)") { tls.push(address) } else { plain.push(address) }
        }
        if let Some(rest) = line.split("server name ").nth(1) {
            server_name = rest.trim_end_matches(')').to_string();
        }
        if line.contains(" ready in ") {
            break;
        }
    }
    Some(Ready {
        http: plain.first().map(|address| format!("http://{address}")).unwrap_or_default(),
        https: tls.first().map(|address| format!("https://{address}")).unwrap_or_default(),
        server_name,
    })
}

/// A running node.
pub struct Node {
    child: Option<Child>,
    pub data_dir: TempDir,
    /// Extra `serve` arguments, kept for restarts.
    pub args: Vec<String>,
    /// `http://127.0.0.1:PORT` of the plain listener.
    pub http: String,
    /// `https://127.0.0.1:PORT` of the TLS listener.
    pub https: String,
    pub server_name: String,
    /// Log at hearth's default level instead of debug.
    pub default_log_level: bool,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts a node with open registration, one plain and one TLS listener.
    pub fn start() -> Node {
        Node::start_with(&["--registration", "open"])
    }

    /// Starts a node with extra `serve` arguments.
    pub fn start_with(args: &[&str]) -> Node {
        Node::start_in(TempDir::new("node"), args)
    }

    /// Starts a node with open registration and a config file (kept in its
    /// data directory, so restarts read it too) ending with `extra` TOML.
    pub fn start_with_config(extra: &str) -> Node {
        let data_dir = TempDir::new("node");
        let text = format!("server_name = \"localhost\"\nregistration = \"open\"\n{extra}\n");
        let path = write_file(&data_dir.0, "hearth.toml", text.as_bytes());
        Node::start_in(data_dir, &["--config", path.to_str().unwrap()])
    }

    /// Starts a node on an existing data directory (e.g. one holding a backup).
    pub fn start_in(data_dir: TempDir, args: &[&str]) -> Node {
        Node::start_on(data_dir, args, "127.0.0.1:0", "127.0.0.1:0")
    }

    /// Starts a node with its plain and TLS listeners at the given addresses.
    pub fn start_on(data_dir: TempDir, args: &[&str], http: &str, https: &str) -> Node {
        Node::launched(data_dir, args, false, http, https)
    }

    /// Starts a node with open registration logging at hearth's default
    /// level (the other nodes log at debug, for failing tests to show).
    pub fn start_at_default_log_level() -> Node {
        Node::launched(TempDir::new("node"), &["--registration", "open"], true, "127.0.0.1:0", "127.0.0.1:0")
    }

    /// Starts a node on an existing data dir with its TLS listener on
    /// `https` (`ADDR:PORT`) and a plain listener on a free port.
    pub fn start_on_https(data_dir: TempDir, https: &str, args: &[&str]) -> Node {
        Node::launched(data_dir, args, false, "127.0.0.1:0", https)
    }

    fn launched(data_dir: TempDir, args: &[&str], default_log_level: bool, http: &str, https: &str) -> Node {
        let mut node = Node {
            child: None,
            data_dir,
            args: args.iter().map(|arg| arg.to_string()).collect(),
            http: String::new(),
            https: String::new(),
            server_name: String::new(),
            default_log_level,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        node.launch(&[http.to_string()], &[https.to_string()]);
        node
    }

    fn launch(&mut self, http: &[String], https: &[String]) {
        let mut command = Command::new(binary());
        command.arg("serve").arg("--data-dir").arg(&self.data_dir.0);
        for address in http {
            command.arg("--http").arg(address);
        }
        for address in https {
            command.arg("--https").arg(address);
        }
        // The name from the config file, if any, wins over the harness default.
        if !self.args.iter().any(|arg| arg == "--server-name" || arg == "--config") {
            command.arg("--server-name").arg("localhost");
        }
        command.args(&self.args);
        if self.default_log_level {
            command.env_remove("HEARTH_LOG");
        } else {
            command.env("HEARTH_LOG", "debug");
        }
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("cannot start hearth");
        let stderr = child.stderr.take().unwrap();
        let (lines, receiver) = channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line.clone());
                let _ = lines.send(line);
            }
        });
        self.child = Some(child);
        self.wait_ready(receiver);
    }

    fn wait_ready(&mut self, lines: Receiver<String>) {
        let Some(ready) = wait_ready(&lines, START_DEADLINE) else {
            panic!("hearth did not become ready; log:\n{}", self.log_text());
        };
        self.server_name = ready.server_name;
        self.http = ready.http;
        self.https = ready.https;
    }

    /// Everything the node logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal with `kill -SIG PID`.
    pub fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Stops the node with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the node with SIGKILL (no chance to clean up).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running (false after [`Node::kill9`] or
    /// [`Node::stop`], or if it died by itself).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Starts the node again on the same data dir and the same ports; after
    /// [`Node::kill9`] this is a restart after a crash.
    pub fn restart(&mut self) {
        self.stop();
        let http = vec![self.http.trim_start_matches("http://").to_string()];
        let https = vec![self.https.trim_start_matches("https://").to_string()];
        self.launch(&http, &https);
    }

    /// Runs an operator subcommand against this node's data dir (and its
    /// `--config`, if it was started with one).
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        // The subcommand group (user, token, ...) takes its options before its action.
        let mut full: Vec<String> = vec![args[0].to_string(), "--data-dir".to_string()];
        full.push(self.data_dir.0.to_str().unwrap().to_string());
        if let Some(at) = self.args.iter().position(|arg| arg == "--config") {
            full.push("--config".to_string());
            full.push(self.args[at + 1].clone());
        }
        full.extend(args[1..].iter().map(|arg| arg.to_string()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let (code, text) = run(&full, stdin);
        (code == Some(0), text)
    }

    /// Threads of the node process.
    pub fn thread_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap().count()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Peak resident memory in KiB (`VmHWM`: the most the process has held
    /// at once since it started).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Starts [`Node::peak_rss_kib`] over from the current resident memory.
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").unwrap();
    }

    /// A client for the plain listener.
    pub fn client(&self) -> Client {
        Client::new(&self.http)
    }

    /// A `@local:server` ID on this node.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// Registers a user with open registration and returns a logged-in client.
    pub fn register(&self, localpart: &str) -> Client {
        let mut client = self.client();
        let (status, body) = client.post(
            "/_matrix/client/v3/register",
            &json!({"username": localpart, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
        );
        assert_eq!(status, 200, "register {localpart}: {body}");
        client.token = Some(body["access_token"].as_str().unwrap().to_string());
        client.user_id = body["user_id"].as_str().unwrap().to_string();
        client.device_id = body["device_id"].as_str().unwrap().to_string();
        client
    }

    /// Registers each of `localparts`, in order.
    pub fn register_each<const N: usize>(&self, localparts: [&str; N]) -> [Client; N] {
        localparts.map(|localpart| self.register(localpart))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A small Matrix client over HTTP.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    pub base: String,
    pub token: Option<String>,
    pub user_id: String,
    pub device_id: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .tls_config(ureq::tls::TlsConfig::builder().disable_verification(true).build())
            .build();
        Client {
            agent: config.into(),
            base: base.to_string(),
            token: None,
            user_id: String::new(),
            device_id: String::new(),
        }
    }

    /// A raw request; returns the status and the body parsed as JSON (or a string).
    /// Panics if there is no HTTP answer at all.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        self.try_request(method, path, body)
            .unwrap_or_else(|error| panic!("{method} {}{path}: {error}", self.base))
    }

    /// Like [`Client::request`], but a connection failure is an `Err`.
    pub fn try_request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, Value), String> {
        let url = format!("{}{}", self.base, path);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let response = match body {
            Some(bytes) => {
                let request =
                    builder.header("content-type", "application/json").body(bytes.to_vec()).unwrap();
                self.agent.run(request)
            }
            None => self.agent.run(builder.body(()).unwrap()),
        };
        let mut response = response.map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|error| error.to_string())?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// A GET returning the status, the headers and the body text.
    pub fn get_with_headers(&self, path: &str) -> (u16, ureq::http::HeaderMap, String) {
        let url = format!("{}{}", self.base, path);
        let mut response = self.agent.get(&url).call().unwrap_or_else(|error| panic!("GET {url}: {error}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, headers, text)
    }

    /// A request with a raw body of any content type (media); returns the
    /// status, the headers and the body's bytes.
    pub fn request_bytes(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
        let url = format!("{}{}", self.base, path);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        let response = match body {
            Some(bytes) => self.agent.run(builder.body(bytes.to_vec()).unwrap()),
            None => self.agent.run(builder.body(()).unwrap()),
        };
        let mut response = response.unwrap_or_else(|error| panic!("{method} {url}: {error}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.body_mut().with_config().limit(256 << 20).read_to_vec().unwrap();
        (status, headers, bytes)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, Some(body.to_string().as_bytes()))
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("PUT", path, Some(body.to_string().as_bytes()))
    }

    pub fn delete(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("DELETE", path, Some(body.to_string().as_bytes()))
    }

    /// Logs in with a password; on success the client holds the new token.
    pub fn login(&mut self, user: &str, password: &str) -> (u16, Value) {
        let (status, body) = self.post(
            "/_matrix/client/v3/login",
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}),
        );
        if status == 200 {
            self.token = body["access_token"].as_str().map(str::to_owned);
            self.user_id = body["user_id"].as_str().unwrap_or_default().to_string();
            self.device_id = body["device_id"].as_str().unwrap_or_default().to_string();
        }
        (status, body)
    }
}

/// Registers `localpart` with open registration on `node`, or returns why not.
pub fn try_register(client: &Client, localpart: &str, password: &str) -> Result<u16, String> {
    let body = json!({"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}});
    client
        .try_request("POST", "/_matrix/client/v3/register", Some(body.to_string().as_bytes()))
        .map(|(status, _)| status)
}

/// A loopback port that was free a moment ago (bound, then released), for a
/// node whose server name must carry its port before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub fn eventually<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < end, "condition not met within {deadline:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts an error answer's status and errcode.
#[track_caller]
pub fn assert_error(answer: &(u16, Value), status: u16, errcode: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["errcode"], errcode, "{}", answer.1);
}

/// Writes a file inside `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// One HTTP/1.1 connection driven by hand, for what a client library hides
/// (interim responses, keep-alive).
pub struct RawConnection {
    reader: BufReader<std::net::TcpStream>,
}

/// A response read off a [`RawConnection`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl RawConnection {
    /// Sends one request's raw bytes on a new connection and reads the response.
    pub fn exchange(base: &str, bytes: &[u8]) -> RawResponse {
        let mut connection = RawConnection::connect(base);
        connection.send(bytes);
        connection.read_response()
    }

    /// Connects to `http://ADDR:PORT`.
    pub fn connect(base: &str) -> RawConnection {
        let address = base.trim_start_matches("http://");
        let stream = std::net::TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        RawConnection { reader: BufReader::new(stream) }
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.reader.get_mut().write_all(bytes).unwrap();
        self.reader.get_mut().flush().unwrap();
    }

    /// Reads one response head and its body (by `content-length`; interim
    /// 1xx responses have none).
    pub fn read_response(&mut self) -> RawResponse {
        use std::io::Read;
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "not a status line: {status_line:?}");
        let status: u16 = status_line[9..12].parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut response = RawResponse { status, headers, body: Vec::new() };
        if status >= 200 {
            let length: usize =
                response.header("content-length").map(|length| length.parse().unwrap()).unwrap_or(0);
            response.body = vec![0; length];
            self.reader.read_exact(&mut response.body).unwrap();
        }
        response
    }

    /// Closes the sending half (the server reads end of stream).
    pub fn shutdown_write(&mut self) {
        self.reader.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// Reads whatever comes until the server closes the connection (or an
    /// error cuts it).
    pub fn read_to_close(&mut self) -> Vec<u8> {
        use std::io::Read;
        let mut bytes = Vec::new();
        let _ = self.reader.read_to_end(&mut bytes);
        bytes
    }

    /// Whether the server closed the connection (reads end of stream).
    pub fn is_closed(&mut self) -> bool {
        use std::io::Read;
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
    }
}

pub mod rooms;
