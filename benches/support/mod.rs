//! What the benchmarks share: the release server started on loopback, a
//! blocking Matrix client (ureq), readings of a server process from /proc
//! (CPU time, memory), and figure formatting. The tests' harness
//! (`tests/common`: temporary directories, the test CA, the federating
//! `serve` options, reading a node's start-up log) is included as
//! [`common`], so the two never drift apart.
//!
//! Each benchmark is its own crate and uses a part of this module.
#![allow(dead_code)]

pub mod unread;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

/// The tests' harness (temporary directories, the test CA, reading a node's
/// start-up log), shared with the benchmarks.
#[path = "../../tests/common/mod.rs"]
pub mod common;

/// How long the server may take to start.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long any one request of a registered client may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A blocking Matrix client on one keep-alive connection pool.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    pub base: String,
    pub token: String,
    timeout: Duration,
}

impl Client {
    pub fn new(base: &str, timeout: Duration) -> Client {
        let config =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build();
        Client { agent: config.into(), base: base.to_string(), token: String::new(), timeout }
    }

    /// The same user on a connection of its own.
    pub fn fresh_connection(&self) -> Client {
        Client { token: self.token.clone(), ..Client::new(&self.base, self.timeout) }
    }

    /// The same user on a connection of its own, with another request timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client { token: self.token.clone(), ..Client::new(&self.base, timeout) }
    }

    pub fn request(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        let (status, text) = self.request_text(method, path, body);
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// [`Client::request`] answering the body as it came, unparsed.
    pub fn request_text(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, String) {
        let url = format!("{}{}", self.base, path);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if !self.token.is_empty() {
            builder = builder.header("authorization", format!("Bearer {}", self.token));
        }
        let response = match body {
            Some(bytes) => {
                self.agent.run(builder.header("content-type", "application/json").body(bytes).unwrap())
            }
            None => self.agent.run(builder.body(()).unwrap()),
        };
        let mut response = response.unwrap_or_else(|error| panic!("{method} {url}: {error}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, text)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, Some(body.to_string().into_bytes()))
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("PUT", path, Some(body.to_string().into_bytes()))
    }
}

/// Memory of a server process, from /proc/PID/status and /proc/PID/smaps.
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// Resident pages of shared libraries (`*.so*` mappings), which a
    /// statically linked build does not have.
    pub shared_libraries_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            shared_libraries_kib: shared_libraries_kib(pid),
        }
    }
}

fn shared_libraries_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_library = false;
    let mut total = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            in_library = line.split_whitespace().nth(5).is_some_and(|path| path.contains(".so"));
        } else if in_library {
            if let Some(rest) = line.strip_prefix("Rss:") {
                total += rest.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// CPU time a process's threads have run, in seconds: the scheduler's
/// nanosecond count (`/proc/PID/task/*/schedstat`), finer than the 10 ms
/// ticks of `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let nanoseconds: u64 = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|schedstat| schedstat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanoseconds as f64 / 1e9
}

pub fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

/// The `percent`th percentile of sorted latencies.
pub fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    sorted[(sorted.len() * percent / 100).min(sorted.len() - 1)]
}

pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

/// The binary a benchmark measures (`HEARTH_BENCH_BIN`, else this
/// package's own build), after printing the benchmark's title, the binary
/// and the machine's CPUs and load, which the figures depend on.
pub fn announce(title: &str) -> String {
    let binary =
        std::env::var("HEARTH_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hearth").to_string());
    println!("hearth {title} benchmark: {binary}");
    println!(
        "machine: {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    binary
}

/// The first three fields of /proc/loadavg: the figures are noisy on a busy machine.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Starts `binary serve --data-dir DATA_DIR ARGS` logging at `level`, with a
/// thread that keeps draining its log (so it never blocks on a full pipe),
/// showing each line to `keep` and then sending it on the returned channel
/// (a send to a dropped receiver is ignored).
pub fn spawn_serve(
    binary: &str,
    data_dir: &Path,
    args: &[String],
    level: &str,
    mut keep: impl FnMut(&str) + Send + 'static,
) -> (Child, Receiver<String>) {
    let mut child = Command::new(binary)
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("HEARTH_LOG", level)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {binary}: {error}"));
    let stderr = child.stderr.take().unwrap();
    let (lines, receiver) = channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            keep(&line);
            let _ = lines.send(line);
        }
    });
    (child, receiver)
}

/// Registers `localpart` on the server at `base` (open registration).
pub fn register(base: &str, localpart: &str) -> Client {
    let mut client = Client::new(base, REQUEST_TIMEOUT);
    let (status, body) = client.post(
        "/_matrix/client/v3/register",
        &json!({"username": localpart, "password": "bench-password", "auth": {"type": "m.login.dummy"}}),
    );
    assert_eq!(status, 200, "register {localpart}: {body}");
    client.token = body["access_token"].as_str().unwrap().to_string();
    client
}

/// The access token of the benches' application service.
pub const APP_SERVICE_TOKEN: &str = "bench-as-token";

/// The registration file of an application service with no URL (nothing is
/// pushed to it), not rate limited, owning the users whose localpart starts
/// with `user_prefix`: through it a bench makes thousands of users without
/// hashing a password for each.
pub fn app_service_registration(user_prefix: &str) -> String {
    format!(
        "id: bench\nurl: null\nas_token: {APP_SERVICE_TOKEN}\nhs_token: bench-hs-token\n\
         sender_localpart: benchbot\nrate_limited: false\nnamespaces:\n  users:\n    \
         - exclusive: true\n      regex: '@{user_prefix}.*'\n  aliases: []\n  rooms: []\n"
    )
}

/// A client of the server at `base` acting as the application service.
pub fn app_service_client(base: &str) -> Client {
    let mut client = Client::new(base, Duration::from_secs(60));
    client.token = APP_SERVICE_TOKEN.to_string();
    client
}

/// Registers `localpart` through the application service (`service`, from
/// [`app_service_client`]); answers the new user's ID.
pub fn register_by_app_service(service: &Client, localpart: &str) -> String {
    let (status, body) = service.post(
        "/_matrix/client/v3/register",
        &json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true}),
    );
    assert_eq!(status, 200, "register {localpart}: {body}");
    body["user_id"].as_str().unwrap().to_string()
}

/// The server under measurement; killed on drop, its data dir removed.
pub struct Server {
    child: Child,
    /// Where `hearth.db` lives.
    pub data_dir: PathBuf,
    /// `http://ADDR` of the plain listener.
    pub http: String,
}

impl Server {
    pub fn start(binary: &str) -> Server {
        Server::start_with_config(binary, "")
    }

    /// [`Server::start`] with more lines of TOML config (in a file in the
    /// data dir, read with `--config`); the command-line flags still apply.
    pub fn start_with_config(binary: &str, config: &str) -> Server {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data_dir = std::env::temp_dir().join(format!("hearth-bench-{}-{nth}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).unwrap();
        let config_file = data_dir.join("hearth.toml");
        std::fs::write(&config_file, config).unwrap();
        let args = ["--config", config_file.to_str().expect("a UTF-8 temporary directory")]
            .into_iter()
            .chain(["--server-name", "localhost", "--registration", "open"])
            .chain(["--http", "127.0.0.1:0", "--https", "127.0.0.1:0"])
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let (child, receiver) = spawn_serve(binary, &data_dir, &args, "info", |_| {});
        let http = common::wait_ready(&receiver, START_DEADLINE).expect("hearth did not become ready").http;
        thread::spawn(move || receiver.into_iter().for_each(|line| eprintln!("server: {line}")));
        Server { child, data_dir, http }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    pub fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }

    pub fn register(&self, localpart: &str) -> Client {
        register(&self.http, localpart)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Prints one figure with its target and a verdict when it has one.
pub fn row_with_target(name: &str, measured: String, target: &str, met: bool) {
    let verdict = match (target.is_empty(), met) {
        (true, _) => "",
        (false, true) => "  ok",
        (false, false) => "  MISSED",
    };
    println!("{name:<44} {measured:>14}   {target}{verdict}");
}
