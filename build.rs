//! Build script: in optimised Linux builds, has the linker put the functions
//! a node runs (at start-up, then per request) first in the code, from
//! `layout/hot-text.ld` (written by `layout/trace.py`, which says why).
//! `HEARTH_HOT_TEXT=0` links in the usual order (the build to trace).

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=layout/hot-text.ld");
    println!("cargo:rerun-if-env-changed=HEARTH_HOT_TEXT");
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let optimised = env::var("OPT_LEVEL").is_ok_and(|level| level != "0");
    let wanted = env::var("HEARTH_HOT_TEXT").map_or(true, |value| value != "0");
    if linux && optimised && wanted {
        let manifest = env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{manifest}/layout/hot-text.ld");
    }
}
