//! A small logger to standard error (systemd's journal adds timestamps).

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        // Only our own crate's debug output; dependencies stay at warn.
        let ours = record.target().starts_with("hearth");
        if self.enabled(record.metadata()) && (ours || record.level() <= log::Level::Warn) {
            eprintln!("{:<5} {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger; `HEARTH_LOG` picks the level, `verbose` means debug.
pub fn init(verbose: bool) {
    let level = std::env::var("HEARTH_LOG")
        .ok()
        .and_then(|text| text.parse::<LevelFilter>().ok())
        .unwrap_or(if verbose {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    if log::set_logger(&StderrLogger).is_ok() {
        log::set_max_level(level);
    }
}
