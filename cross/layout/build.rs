//! Build script: in optimised Linux builds, has the linker put the functions
//! a node runs (at start-up, then per request) first in the code, from
//! `cross/layout/hot-text.ld` (written by `cross/layout/trace.py`, which says why), and,
//! in size-optimised ones (the release profile), strip the symbols.
//! `HEARTH_HOT_TEXT=0` links in the usual order and `HEARTH_KEEP_SYMBOLS=1`
//! keeps the symbols: the build to trace, with the release build's names.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=cross/layout/hot-text.ld");
    println!("cargo:rerun-if-env-changed=HEARTH_HOT_TEXT");
    println!("cargo:rerun-if-env-changed=HEARTH_KEEP_SYMBOLS");
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let level = env::var("OPT_LEVEL").unwrap_or_default();
    let hot_text = env::var("HEARTH_HOT_TEXT").map_or(true, |value| value != "0");
    if linux && level != "0" && hot_text {
        let manifest = env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{manifest}/cross/layout/hot-text.ld");
    }
    let keep_symbols = env::var("HEARTH_KEEP_SYMBOLS").is_ok_and(|value| value == "1");
    if linux && (level == "z" || level == "s") && !keep_symbols {
        println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    }
}
