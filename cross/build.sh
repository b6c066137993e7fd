#!/usr/bin/env bash
# Build fully static hearth binaries for Raspberry-Pi-class boards from an
# x86_64 Linux machine, with cargo-zigbuild (zig as the C compiler and linker
# for ring and bundled SQLite) and Rust's musl targets.
#
# Usage: cross/build.sh [TRIPLE...]
#   default triples: aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
#
# Output: $OUT_DIR/<triple>/hearth, where OUT_DIR defaults to
#   ${CARGO_TARGET_DIR:-<repo>/target}/cross
# (override with HEARTH_CROSS_OUT=/some/dir).
#
# The standard library: rustup's prebuilt one for the triple when rustup can
# install it; otherwise (armv7 on machines where rustup's download fails) it
# is built from source with the rust-src component and cargo's -Zbuild-std,
# which stable cargo accepts with RUSTC_BOOTSTRAP=1. HEARTH_BUILD_STD=1 builds
# it from source for every triple. Any failure, for any triple, is fatal.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT_DIR="${HEARTH_CROSS_OUT:-$TARGET_DIR/cross}"

if [ "$#" -gt 0 ]; then
    TRIPLES=("$@")
else
    TRIPLES=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
fi

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# --- tools ------------------------------------------------------------------

command -v cargo >/dev/null || die "cargo not found (install Rust with rustup first)"
command -v rustup >/dev/null || die "rustup not found: it is needed to add the musl targets"

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found: zig comes from the PyPI package ziglang"

# zig: cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on PATH.
if command -v zig >/dev/null; then
    say "zig $(zig version) (from PATH)"
elif "$PYTHON" -m ziglang version >/dev/null 2>&1; then
    say "zig $("$PYTHON" -m ziglang version) (python3 -m ziglang)"
else
    say "installing zig: $PYTHON -m pip install ziglang"
    "$PYTHON" -m pip install ziglang
    "$PYTHON" -m ziglang version >/dev/null || die "ziglang installed but '$PYTHON -m ziglang' does not run"
fi

if ! cargo zigbuild --help >/dev/null 2>&1; then
    say "installing cargo-zigbuild: cargo install --locked cargo-zigbuild"
    cargo install --locked cargo-zigbuild
fi
say "$(cargo-zigbuild --version 2>/dev/null || echo cargo-zigbuild)"

# --- builds -----------------------------------------------------------------

# Succeeds when rustup has (or can now install) the prebuilt std of $1.
prebuilt_std() {
    local triple="$1"
    if rustup target list --installed | grep -qx "$triple"; then
        return 0
    fi
    say "rustup target add $triple"
    local output
    if output="$(rustup target add "$triple" 2>&1)"; then
        return 0
    fi
    # rustup prints a long backtrace on a failed download: keep the gist.
    printf '%s\n' "$output" | sed '/^Stack backtrace/,$d' | head -n 8 >&2
    return 1
}

# The std sources -Zbuild-std compiles, from rustup's rust-src component.
ensure_rust_src() {
    if rustup component list --installed | grep -qx 'rust-src'; then
        return 0
    fi
    say "rustup component add rust-src"
    rustup component add rust-src || die "cannot install rust-src, which building std from source needs"
}

built=()

for triple in "${TRIPLES[@]}"; do
    build=(cargo zigbuild --release --locked --target "$triple")
    env=()
    if [ "${HEARTH_BUILD_STD:-0}" != 1 ] && prebuilt_std "$triple"; then
        how="prebuilt std"
    else
        ensure_rust_src
        # panic_abort: the release profile has panic = "abort", whose runtime
        # crate must be built alongside std.
        build+=("-Zbuild-std=std,panic_abort")
        # Without rustup's std there are none of the musl start files
        # (crt1.o, crti.o, ...) rustc links on its own ("self-contained"):
        # rustc would pass their bare names, which cargo-zigbuild does not
        # recognise and the link fails (failed to open object crt1.o). With
        # link-self-contained=no, zig links its own musl and start files.
        flags_var="CARGO_TARGET_$(printf '%s' "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
        env=(RUSTC_BOOTSTRAP=1 "$flags_var=${!flags_var:-}${!flags_var:+ }-Clink-self-contained=no")
        how="std built from source"
    fi

    say "${env[*]:+${env[*]} }${build[*]} ($how)"
    (cd "$ROOT" && env "${env[@]}" "${build[@]}") || die "build failed for $triple ($how)"

    mkdir -p "$OUT_DIR/$triple"
    cp "$TARGET_DIR/$triple/release/hearth" "$OUT_DIR/$triple/hearth"
    built+=("$triple ($how)")
done

# --- report -----------------------------------------------------------------

echo
echo "Static binaries (in $OUT_DIR):"
for entry in "${built[@]}"; do
    triple="${entry%% *}"
    bin="$OUT_DIR/$triple/hearth"
    size=$(stat -c %s "$bin")
    printf '  %-36s %10d bytes (%s KiB)  %s  %s\n' "$triple" "$size" "$((size / 1024))" "${entry#* }" "$bin"
    if command -v file >/dev/null; then
        printf '      %s\n' "$(file -b "$bin")"
    fi
done
