//! Unread counts at depth, against the real release binary on loopback (see
//! `support/unread.rs`, which `cargo bench --bench rooms` runs too).
//!
//! ```text
//! cargo bench --bench unread
//! ```
//!
//! `HEARTH_BENCH_BIN=/path/to/hearth` measures another build (see
//! `benches/rooms.rs`).

mod support;

fn main() {
    let binary = support::announce("unread");
    support::unread::run(&binary);
}
