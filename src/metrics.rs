//! The counters behind `GET /metrics` and the Prometheus text exposition
//! format (version 0.0.4) they are written in.
//!
//! Counters are plain `Cell`s: everything runs on the one event-loop thread.
//! Requests are counted by a small fixed set of endpoint groups and by status
//! class, so the number of series is bounded whatever paths clients send.
//! This module gathers nothing itself: `scrape.rs` reads the node's state and
//! writes it with [`Exposition`].
//! Format: <https://github.com/prometheus/docs/blob/main/content/docs/instrumenting/exposition_formats.md>.

use std::cell::Cell;
use std::fmt::Write;
use std::time::Duration;

/// Which part of the API a request went to: the label of the request
/// counters and latency histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    ClientSync,
    ClientSend,
    ClientMedia,
    ClientOther,
    FederationSend,
    FederationOther,
    Admin,
    Other,
}

/// Every group, in the order the counters keep them.
pub const GROUPS: [Group; 8] = [
    Group::ClientSync,
    Group::ClientSend,
    Group::ClientMedia,
    Group::ClientOther,
    Group::FederationSend,
    Group::FederationOther,
    Group::Admin,
    Group::Other,
];

impl Group {
    /// The group of a request path (percent-encoded, without the query).
    pub fn of(path: &str) -> Group {
        if let Some(rest) = path.strip_prefix("/_matrix/client/") {
            if rest.starts_with("v1/media/") {
                Group::ClientMedia
            } else if rest.ends_with("/sync") {
                // `/v3/sync` and the sliding sync versions.
                Group::ClientSync
            } else if rest.contains("/rooms/") && rest.contains("/send/") {
                Group::ClientSend
            } else {
                Group::ClientOther
            }
        } else if path.starts_with("/_matrix/media/") {
            Group::ClientMedia
        } else if path.starts_with("/_matrix/federation/v1/send/") {
            Group::FederationSend
        } else if path.starts_with("/_matrix/federation/") || path.starts_with("/_matrix/key/") {
            Group::FederationOther
        } else if path.starts_with("/_hearth/") {
            Group::Admin
        } else {
            Group::Other
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Group::ClientSync => "client_sync",
            Group::ClientSend => "client_send",
            Group::ClientMedia => "client_media",
            Group::ClientOther => "client_other",
            Group::FederationSend => "federation_send",
            Group::FederationOther => "federation_other",
            Group::Admin => "admin",
            Group::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Status classes of final answers: `2xx` to `5xx` (a status out of range
/// counts in the nearest class).
pub const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

fn status_class(status: u16) -> usize {
    usize::from((status / 100).clamp(2, 5) - 2)
}

/// Upper bounds (seconds) of the request latency buckets: a long-polling
/// sync waits up to 30 s by design.
const LATENCY_BOUNDS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Upper bounds (seconds) of the event-loop lag buckets.
const LAG_BOUNDS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// A histogram with fixed bucket bounds; counts are per bucket (made
/// cumulative when written).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<Cell<u64>>,
    sum: Cell<f64>,
    count: Cell<u64>,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..bounds.len()).map(|_| Cell::new(0)).collect(),
            sum: Cell::new(0.0),
            count: Cell::new(0),
        }
    }

    /// Counts one observation of `seconds`.
    pub fn observe(&self, seconds: f64) {
        if let Some(bucket) = self.bounds.iter().position(|bound| seconds <= *bound) {
            self.counts[bucket].set(self.counts[bucket].get() + 1);
        }
        self.sum.set(self.sum.get() + seconds);
        self.count.set(self.count.get() + 1);
    }
}

/// What the node counts as it runs.
pub struct Metrics {
    /// Requests answered, by group and status class.
    requests: Vec<[Cell<u64>; 4]>,
    /// Time to the response head, by group.
    latency: Vec<Histogram>,
    /// Long-polling syncs waiting for news now.
    waiting_syncs: Cell<u64>,
    /// How late the event loop's 100 ms ticks wake.
    pub loop_lag: Histogram,
    /// The largest lag since the previous scrape.
    loop_lag_max: Cell<f64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: GROUPS.iter().map(|_| Default::default()).collect(),
            latency: GROUPS.iter().map(|_| Histogram::new(LATENCY_BOUNDS)).collect(),
            waiting_syncs: Cell::new(0),
            loop_lag: Histogram::new(LAG_BOUNDS),
            loop_lag_max: Cell::new(0.0),
        }
    }
}

/// Counts a waiting sync while it lives.
pub struct WaitingSync<'a>(&'a Cell<u64>);

impl Drop for WaitingSync<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl Metrics {
    /// Counts an answered request.
    pub fn request_done(&self, group: Group, status: u16, elapsed: Duration) {
        let cell = &self.requests[group.index()][status_class(status)];
        cell.set(cell.get() + 1);
        self.latency[group.index()].observe(elapsed.as_secs_f64());
    }

    /// Counts a long-polling sync as waiting until the guard drops.
    pub fn sync_waiting(&self) -> WaitingSync<'_> {
        self.waiting_syncs.set(self.waiting_syncs.get() + 1);
        WaitingSync(&self.waiting_syncs)
    }

    /// Records how late an event-loop tick woke.
    pub fn loop_lagged(&self, lag: Duration) {
        let seconds = lag.as_secs_f64();
        self.loop_lag.observe(seconds);
        self.loop_lag_max.set(self.loop_lag_max.get().max(seconds));
    }

    /// Writes the request counters, latencies, waiting syncs and loop lag;
    /// the lag maximum starts again from zero.
    pub fn write(&self, out: &mut Exposition) {
        out.family(
            "hearth_http_requests_total",
            "Requests answered, by endpoint group and status class.",
            "counter",
        );
        for group in GROUPS {
            for (class, label) in STATUS_CLASSES.iter().enumerate() {
                let value = self.requests[group.index()][class].get();
                out.sample(
                    "hearth_http_requests_total",
                    &[("group", group.label()), ("status", label)],
                    value as f64,
                );
            }
        }
        out.family(
            "hearth_http_request_duration_seconds",
            "Time from a request's head to its response head, by endpoint group.",
            "histogram",
        );
        for group in GROUPS {
            out.histogram(
                "hearth_http_request_duration_seconds",
                ("group", group.label()),
                &self.latency[group.index()],
            );
        }
        out.family("hearth_sync_waiting", "Long-polling syncs waiting for news.", "gauge");
        out.sample("hearth_sync_waiting", &[], self.waiting_syncs.get() as f64);
        out.family(
            "hearth_event_loop_lag_seconds",
            "How late the event loop's 100 ms ticks wake.",
            "histogram",
        );
        out.histogram("hearth_event_loop_lag_seconds", ("", ""), &self.loop_lag);
        out.family(
            "hearth_event_loop_lag_max_seconds",
            "The largest event loop lag since the previous scrape.",
            "gauge",
        );
        out.sample("hearth_event_loop_lag_max_seconds", &[], self.loop_lag_max.replace(0.0));
    }
}

/// A page in the text exposition format, written a family at a time: a
/// family's `# HELP` and `# TYPE` lines, then its samples.
#[derive(Default)]
pub struct Exposition {
    pub text: String,
}

impl Exposition {
    /// Starts a metric family (`kind`: counter, gauge or histogram).
    pub fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                escape_label_value(&mut self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }

    /// A histogram's cumulative `_bucket` lines (ending with `+Inf`),
    /// `_sum` and `_count`; `label` is an extra label (none if its name is empty).
    pub fn histogram(&mut self, name: &str, label: (&str, &str), histogram: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
            cumulative += count.get();
            let le = format_value(*bound);
            self.sample(&bucket, &with_label(label, ("le", &le)), cumulative as f64);
        }
        let total = histogram.count.get();
        self.sample(&bucket, &with_label(label, ("le", "+Inf")), total as f64);
        let single: &[(&str, &str)] = if label.0.is_empty() { &[] } else { std::slice::from_ref(&label) };
        self.sample(&format!("{name}_sum"), single, histogram.sum.get());
        self.sample(&format!("{name}_count"), single, total as f64);
    }
}

fn with_label<'a>(label: (&'a str, &'a str), le: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
    if label.0.is_empty() { vec![le] } else { vec![label, le] }
}

/// Label values escape `\`, `"` and line feeds.
fn escape_label_value(out: &mut String, value: &str) {
    for character in value.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

/// A sample value as Go's `ParseFloat` reads it.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_into_their_groups() {
        for (path, group) in [
            ("/_matrix/client/v3/sync", Group::ClientSync),
            ("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", Group::ClientSync),
            ("/_matrix/client/v3/rooms/!a:b/send/m.room.message/1", Group::ClientSend),
            ("/_matrix/client/v1/media/download/a/b", Group::ClientMedia),
            ("/_matrix/media/v3/upload", Group::ClientMedia),
            ("/_matrix/client/v3/login", Group::ClientOther),
            ("/_matrix/federation/v1/send/123", Group::FederationSend),
            ("/_matrix/federation/v1/version", Group::FederationOther),
            ("/_matrix/key/v2/server", Group::FederationOther),
            ("/_hearth/admin/v1/resilience", Group::Admin),
            ("/.well-known/matrix/client", Group::Other),
            ("/anything", Group::Other),
        ] {
            assert_eq!(Group::of(path), group, "{path}");
        }
        assert!(GROUPS.iter().enumerate().all(|(index, group)| group.index() == index));
    }

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let histogram = Histogram::new(&[0.1, 1.0]);
        for seconds in [0.0625, 0.5, 0.75, 3.0] {
            histogram.observe(seconds);
        }
        let mut out = Exposition::default();
        out.histogram("x", ("group", "a\"b"), &histogram);
        assert_eq!(
            out.text,
            "x_bucket{group=\"a\\\"b\",le=\"0.1\"} 1\nx_bucket{group=\"a\\\"b\",le=\"1\"} 3\n\
             x_bucket{group=\"a\\\"b\",le=\"+Inf\"} 4\nx_sum{group=\"a\\\"b\"} 4.3125\nx_count{group=\"a\\\"b\"} 4\n"
        );
    }

    #[test]
    fn status_classes_are_bounded() {
        assert_eq!(status_class(200), 0);
        assert_eq!(status_class(404), 2);
        assert_eq!(status_class(100), 0);
        assert_eq!(status_class(999), 3);
    }
}
