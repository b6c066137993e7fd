//! The opt-in metrics listener (`--metrics ADDR:PORT`) and the systemd
//! notifications (`READY=1`, watchdog pings).

mod common;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::federation::free_port;
use common::{Client, Node, TempDir};
use serde_json::json;

/// One sample line: its metric name, its labels and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(label, _)| label == name).map(|(_, value)| value.as_str())
    }
}

/// Parses a page of the text exposition format, checking it as it goes.
/// Format: <https://github.com/prometheus/docs/blob/main/content/docs/instrumenting/exposition_formats.md#text-based-format>:
/// every sample follows its family's `# TYPE` line, counters are named
/// `_total`, a histogram's buckets are cumulative and end with `le="+Inf"`,
/// which equals its `_count`.
fn parse(text: &str) -> Vec<Sample> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("a TYPE line names a metric and a type");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} is not named _total");
            }
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "two TYPE lines for {name}");
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Vec::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("labels end with }");
                let labels = inner
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (label, value) = pair.split_once("=\"").expect("label=\"value\"");
                        (label.to_string(), value.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|kind| kind == "histogram"))
            })
            .unwrap_or(&name);
        assert!(types.contains_key(family), "sample {line:?} has no TYPE line before it");
        samples.push(Sample { name, labels, value });
    }
    for (family, kind) in &types {
        if kind == "histogram" {
            check_histogram(family, &samples);
        }
    }
    samples
}

/// Labels of a sample, in order.
type Labels = Vec<(String, String)>;

/// Buckets of each series of a histogram are cumulative and end with `+Inf` = `_count`.
fn check_histogram(family: &str, samples: &[Sample]) {
    let bucket = format!("{family}_bucket");
    let mut series: HashMap<Labels, Vec<(String, f64)>> = HashMap::new();
    for sample in samples.iter().filter(|sample| sample.name == bucket) {
        let others: Vec<_> = sample.labels.iter().filter(|(label, _)| label != "le").cloned().collect();
        let le = sample.label("le").expect("a bucket has le").to_string();
        series.entry(others).or_default().push((le, sample.value));
    }
    assert!(!series.is_empty(), "histogram {family} has no buckets");
    for (labels, buckets) in series {
        assert!(buckets.windows(2).all(|pair| pair[0].1 <= pair[1].1), "{family} {labels:?} not cumulative");
        let bounds: Vec<f64> =
            buckets.iter().map(|(le, _)| le.parse::<f64>().unwrap_or(f64::INFINITY)).collect();
        assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]), "{family} {labels:?} bounds not increasing");
        let (last_le, last) = buckets.last().unwrap();
        assert_eq!(last_le, "+Inf", "{family} {labels:?} does not end with +Inf");
        let count = samples
            .iter()
            .find(|sample| sample.name == format!("{family}_count") && sample.labels == labels)
            .unwrap_or_else(|| panic!("{family} {labels:?} has no _count"));
        assert_eq!(*last, count.value, "{family} {labels:?}: +Inf bucket is not _count");
        assert!(
            samples.iter().any(|sample| sample.name == format!("{family}_sum") && sample.labels == labels),
            "{family} {labels:?} has no _sum"
        );
    }
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|sample| {
            sample.name == name && labels.iter().all(|(label, value)| sample.label(label) == Some(value))
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
        .value
}

fn scrape(metrics: &Client) -> Vec<Sample> {
    let (status, headers, text) = metrics.get_with_headers("/metrics");
    assert_eq!(status, 200, "{text}");
    let content_type = headers.get("content-type").unwrap().to_str().unwrap();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    parse(&text)
}

#[test]
fn metrics_count_requests_and_report_the_node() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let node = Node::start_with(&["--registration", "open", "--metrics", &address]);
    let metrics = Client::new(&format!("http://{address}"));
    let before = scrape(&metrics);
    let sends_before =
        value(&before, "hearth_http_requests_total", &[("group", "client_send"), ("status", "2xx")]);
    assert_eq!(value(&before, "hearth_sync_waiting", &[]), 0.0);

    let alice = node.register("alice");
    let (status, body) = alice.post("/_matrix/client/v3/createRoom", &json!({}));
    assert_eq!(status, 200, "{body}");
    let room_id = body["room_id"].as_str().unwrap().to_string();
    for txn in 0..3 {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t{txn}");
        let (status, body) = alice.put(&path, &json!({ "msgtype": "m.text", "body": "hi" }));
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = alice.get("/_matrix/client/v3/nonsense");
    assert_eq!(status, 404);
    let (status, body) = alice.get("/_matrix/client/v3/sync");
    assert_eq!(status, 200, "{body}");
    let since = body["next_batch"].as_str().unwrap().to_string();

    // A long poll in flight is counted as a waiting sync.
    let mut waiter = Client::new(&alice.base);
    waiter.token = alice.token.clone();
    let long_poll = std::thread::spawn(move || {
        waiter.get(&format!("/_matrix/client/v3/sync?since={since}&timeout=3000"))
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    let during = loop {
        let samples = scrape(&metrics);
        if value(&samples, "hearth_sync_waiting", &[]) == 1.0 || Instant::now() > deadline {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(value(&during, "hearth_sync_waiting", &[]), 1.0);
    assert!(value(&during, "hearth_open_connections", &[]) >= 2.0, "the scrape and the long poll");
    assert_eq!(long_poll.join().unwrap().0, 200);

    let after = scrape(&metrics);
    let count = |group: &str, status: &str| {
        value(&after, "hearth_http_requests_total", &[("group", group), ("status", status)])
    };
    assert_eq!(count("client_send", "2xx") - sends_before, 3.0);
    assert!(count("client_sync", "2xx") >= 2.0);
    assert!(count("client_other", "2xx") >= 2.0, "register and createRoom");
    assert!(count("client_other", "4xx") >= 1.0, "the unknown endpoint");
    assert_eq!(value(&after, "hearth_sync_waiting", &[]), 0.0);
    let sends = value(&after, "hearth_http_request_duration_seconds_count", &[("group", "client_send")]);
    assert_eq!(sends - sends_before, 3.0);
    assert!(value(&after, "hearth_http_request_duration_seconds_sum", &[("group", "client_sync")]) >= 0.0);
    assert!(value(&after, "hearth_event_loop_lag_seconds_count", &[]) >= 1.0, "the lag task ticks");
    assert!(value(&after, "hearth_database_bytes", &[("file", "db")]) > 0.0);
    assert!(value(&after, "hearth_resident_memory_bytes", &[]) > 1e6);
    assert_eq!(value(&after, "hearth_push_queue_depth", &[]), 0.0);
    assert!(after.iter().all(|sample| sample.name != "hearth_federation_queue_depth"), "no destinations yet");
}

#[test]
fn the_metrics_listener_serves_only_metrics_and_only_when_asked() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let node = Node::start_with(&["--registration", "open", "--metrics", &address]);
    let metrics = Client::new(&format!("http://{address}"));
    assert_eq!(metrics.get_with_headers("/_matrix/client/versions").0, 404);
    assert_eq!(metrics.get_with_headers("/metrics/x").0, 404);
    assert_eq!(metrics.request("POST", "/metrics", Some(b"{}")).0, 405);
    // And the Matrix listeners do not serve metrics.
    assert_eq!(node.client().get("/metrics").0, 404);
    drop(node);

    let unused = free_port();
    let node = Node::start();
    assert!(std::net::TcpStream::connect(("127.0.0.1", unused)).is_err());
    let listening = node.log_text().matches("listening on ").count();
    assert_eq!(listening, 2, "only the HTTP and HTTPS listeners: {}", node.log_text());
}

/// A `hearth serve` started with extra environment, killed on drop.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_with_env(data_dir: &TempDir, http: &str, env: &[(&str, &std::ffi::OsStr)]) -> Served {
    let mut command = Command::new(common::binary());
    command
        .args(["serve", "--server-name", "localhost", "--http", http, "--data-dir"])
        .arg(&data_dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    Served(command.spawn().expect("cannot start hearth"))
}

/// sd_notify(3): `READY=1` once the node serves, then `WATCHDOG=1` every
/// half `WATCHDOG_USEC` (sd_watchdog_enabled(3)), from the event loop;
/// `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` on SIGTERM.
/// <https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html>
#[test]
fn systemd_hears_ready_then_watchdog_pings() {
    let dir = TempDir::new("notify");
    let socket_path = dir.0.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let data_dir = TempDir::new("node");
    let http = format!("127.0.0.1:{}", free_port());
    let node = serve_with_env(
        &data_dir,
        &http,
        &[("NOTIFY_SOCKET", socket_path.as_os_str()), ("WATCHDOG_USEC", "200000".as_ref())],
    );
    let mut buffer = [0u8; 256];
    let received = |buffer: &mut [u8; 256]| {
        let length = socket.recv(buffer).expect("a notification");
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    };
    assert_eq!(received(&mut buffer), "READY=1");
    // The node serves once it has said so.
    let (status, _) = Client::new(&format!("http://{http}")).get("/_matrix/client/versions");
    assert_eq!(status, 200);
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let start = Instant::now();
    let mut pings = 0;
    while pings < 10 {
        assert_eq!(received(&mut buffer), "WATCHDOG=1");
        pings += 1;
    }
    // Ten pings at one per 100 ms: about a second, never much faster.
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(800), "pings came too fast: {elapsed:?}");
    assert!(elapsed <= Duration::from_millis(3000), "pings came too slowly: {elapsed:?}");

    // A reload (SIGHUP) is framed by RELOADING=1 and READY=1, a stop by STOPPING=1.
    let pid = node.0.id().to_string();
    let mut after_pings = |signal: &str| {
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
        let mut seen = Vec::new();
        for _ in 0..20 {
            let message = received(&mut buffer);
            if message != "WATCHDOG=1" {
                seen.push(message);
            }
            if seen.last().is_some_and(|last| last != "RELOADING=1") {
                break;
            }
        }
        seen
    };
    assert_eq!(after_pings("-HUP"), ["RELOADING=1", "READY=1"]);
    assert_eq!(after_pings("-TERM"), ["STOPPING=1"]);
}

#[test]
fn a_notify_socket_that_leads_nowhere_does_not_stop_the_node() {
    let dir = TempDir::new("notify");
    let data_dir = TempDir::new("node");
    let http = format!("127.0.0.1:{}", free_port());
    let nowhere = dir.0.join("nobody-listens.sock");
    let mut node = serve_with_env(
        &data_dir,
        &http,
        &[("NOTIFY_SOCKET", nowhere.as_os_str()), ("WATCHDOG_USEC", "200000".as_ref())],
    );
    let client = Client::new(&format!("http://{http}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.try_request("GET", "/_matrix/client/versions", None).is_err() {
        assert!(Instant::now() < deadline, "the node never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Several failed pings later it still runs and serves.
    std::thread::sleep(Duration::from_millis(500));
    assert!(node.0.try_wait().unwrap().is_none(), "the node exited");
    assert_eq!(client.get("/_matrix/client/versions").0, 200);
}

#[test]
fn metrics_show_federation_queues_and_backoff_per_destination() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut node = Node::start_with(&["--registration", "open", "--metrics", &address]);
    node.stop();
    // Queued items for two servers nobody runs: sending fails, and each goes into backoff.
    let (deep, shallow) = (format!("localhost:{}", free_port()), format!("localhost:{}", free_port()));
    let database = rusqlite::Connection::open(node.data_dir.0.join("hearth.db")).unwrap();
    for destination in [&deep, &deep, &deep, &shallow] {
        database
            .execute(
                "INSERT INTO federation_outbox (destination, kind, payload, created_ts) VALUES (?1, 'edu', ?2, 0)",
                rusqlite::params![destination, r#"{"edu_type":"m.typing","content":{}}"#],
            )
            .unwrap();
    }
    drop(database);
    node.restart();
    let metrics = Client::new(&format!("http://{address}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let samples = loop {
        let samples = scrape(&metrics);
        let failing = samples.iter().filter(|sample| sample.name == "hearth_federation_failures").count();
        if failing == 2 || Instant::now() > deadline {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let depths: Vec<(&str, f64)> = samples
        .iter()
        .filter(|sample| sample.name == "hearth_federation_queue_depth")
        .map(|sample| (sample.label("destination").unwrap(), sample.value))
        .collect();
    assert_eq!(depths, vec![(deep.as_str(), 3.0), (shallow.as_str(), 1.0)], "deepest first");
    for destination in [&deep, &shallow] {
        let labels = [("destination", destination.as_str())];
        assert!(value(&samples, "hearth_federation_failures", &labels) >= 1.0);
        assert!(value(&samples, "hearth_federation_backoff_seconds", &labels) > 0.0);
    }
}
