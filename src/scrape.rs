//! The opt-in metrics listener (`--metrics ADDR:PORT`, config `metrics`):
//! plain HTTP serving only `GET /metrics`, in Prometheus's text format. A
//! scrape reads the counters `metrics.rs` keeps, the server's open
//! connections, a few bounded queries on the queues, file sizes and the
//! process's RSS: nothing that holds the event loop long.
//! The event-loop lag task lives here too: it runs only with the listener.

use std::borrow::Cow;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::http1::OutgoingBody;
use crate::metrics::Exposition;
use crate::server::{Handler, Response, Server};

/// At most this many destinations are listed per queue metric (the deepest
/// queues, the longest failing), so a scrape stays small.
const MAX_DESTINATIONS: usize = 50;

/// The lag task's tick.
const LAG_TICK: Duration = Duration::from_millis(100);

/// The handler of the metrics listener: `GET /metrics`, else 404 (405 for
/// another method on `/metrics`).
pub fn handler(app: Rc<App>, server: Rc<Server>) -> Handler {
    Rc::new(move |request, _peer| {
        let app = app.clone();
        let server = server.clone();
        Box::pin(async move {
            let path = request.head.target.split('?').next().unwrap_or_default();
            let (status, body) = if path != "/metrics" {
                (404, "only /metrics is served here\n".to_string())
            } else if request.head.method != "GET" && request.head.method != "HEAD" {
                (405, "GET /metrics\n".to_string())
            } else {
                (200, render(&app, &server))
            };
            let content_type =
                if status == 200 { "text/plain; version=0.0.4; charset=utf-8" } else { "text/plain" };
            Response {
                status,
                headers: vec![(Cow::Borrowed("content-type"), content_type.to_string())],
                body: OutgoingBody::Bytes(body.into_bytes()),
            }
        })
    })
}

/// The whole page.
fn render(app: &App, server: &Server) -> String {
    let mut out = Exposition::default();
    app.metrics.write(&mut out);
    out.family("hearth_open_connections", "Open client and federation connections.", "gauge");
    out.sample("hearth_open_connections", &[], server.active_connections() as f64);
    write_queues(app, &mut out);
    let database = app.config.database_path();
    out.family("hearth_database_bytes", "Size of the SQLite file and of its write-ahead log.", "gauge");
    out.sample("hearth_database_bytes", &[("file", "db")], file_size(&database));
    let mut wal = database.into_os_string();
    wal.push("-wal");
    out.sample("hearth_database_bytes", &[("file", "wal")], file_size(Path::new(&wal)));
    if let Some(bytes) = resident_bytes() {
        out.family("hearth_resident_memory_bytes", "Resident set size of the process.", "gauge");
        out.sample("hearth_resident_memory_bytes", &[], bytes as f64);
    }
    out.text
}

/// Federation queue depth and backoff per destination, and the push
/// queue's depth. A database error leaves them out (and is logged).
fn write_queues(app: &App, out: &mut Exposition) {
    let storage = app.storage();
    let queues = (|| {
        Ok::<_, crate::error::Error>((
            storage.deepest_queues(MAX_DESTINATIONS)?,
            storage.failing_destinations(MAX_DESTINATIONS)?,
            storage.push_queue_depth()?,
        ))
    })();
    let (deepest, failing, pushes) = match queues {
        Ok(queues) => queues,
        Err(error) => {
            log::warn!("metrics: cannot read the queues: {error}");
            return;
        }
    };
    out.family(
        "hearth_federation_queue_depth",
        "Items queued for a destination (the 50 deepest queues).",
        "gauge",
    );
    for (destination, depth) in &deepest {
        out.sample("hearth_federation_queue_depth", &[("destination", destination)], *depth as f64);
    }
    out.family(
        "hearth_federation_failures",
        "Failed attempts in a row to reach a destination (the 50 with the most).",
        "gauge",
    );
    for (destination, health) in &failing {
        out.sample("hearth_federation_failures", &[("destination", destination)], health.failures as f64);
    }
    out.family(
        "hearth_federation_backoff_seconds",
        "Seconds until a failing destination is tried again (the same 50).",
        "gauge",
    );
    let now = crate::storage::now_ms();
    for (destination, health) in &failing {
        let left_ms = health.retry_after_ts.map_or(0, |retry| retry.saturating_sub(now).max(0));
        out.sample(
            "hearth_federation_backoff_seconds",
            &[("destination", destination)],
            left_ms as f64 / 1000.0,
        );
    }
    out.family("hearth_push_queue_depth", "Notifications queued for push gateways.", "gauge");
    out.sample("hearth_push_queue_depth", &[], pushes as f64);
}

/// A file's size; 0 if it is not there (no WAL between checkpoints).
fn file_size(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |metadata| metadata.len() as f64)
}

/// The process's resident set size, from `VmRSS` in /proc/self/status (in
/// KiB there; /proc/self/statm counts pages, whose size we would have to ask).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Measures how late a 100 ms timer wakes, for as long as the loop runs it.
pub async fn measure_loop_lag(app: Rc<App>) {
    loop {
        let start = Instant::now();
        smol::Timer::after(LAG_TICK).await;
        app.metrics.loop_lagged(start.elapsed().saturating_sub(LAG_TICK));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resident_memory_is_read() {
        assert!(super::resident_bytes().is_some_and(|bytes| bytes > 0));
    }
}
