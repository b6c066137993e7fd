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
# aarch64 is required: any failure there is fatal. Other triples are
# best-effort: if rustup cannot install their std, or the build fails, the
# script says so and goes on (exit status stays 0).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT_DIR="${HEARTH_CROSS_OUT:-$TARGET_DIR/cross}"
REQUIRED_TRIPLE="aarch64-unknown-linux-musl"

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

ensure_target() {
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

built=()
skipped=()

for triple in "${TRIPLES[@]}"; do
    if ! ensure_target "$triple"; then
        if [ "$triple" = "$REQUIRED_TRIPLE" ]; then
            die "cannot install the Rust standard library for $triple"
        fi
        warn "SKIPPING $triple: 'rustup target add $triple' failed, so its standard library is not available on this machine (no prebuilt std could be downloaded). Nothing is built for it."
        skipped+=("$triple (no std)")
        continue
    fi

    say "cargo zigbuild --release --target $triple"
    if ! (cd "$ROOT" && cargo zigbuild --release --locked --target "$triple"); then
        if [ "$triple" = "$REQUIRED_TRIPLE" ]; then
            die "build failed for $triple"
        fi
        warn "SKIPPING $triple: the build failed (see above)"
        skipped+=("$triple (build failed)")
        continue
    fi

    mkdir -p "$OUT_DIR/$triple"
    cp "$TARGET_DIR/$triple/release/hearth" "$OUT_DIR/$triple/hearth"
    built+=("$triple")
done

# --- report -----------------------------------------------------------------

echo
echo "Static binaries (in $OUT_DIR):"
for triple in "${built[@]}"; do
    bin="$OUT_DIR/$triple/hearth"
    size=$(stat -c %s "$bin")
    printf '  %-36s %10d bytes (%s KiB)  %s\n' "$triple" "$size" "$((size / 1024))" "$bin"
    if command -v file >/dev/null; then
        printf '      %s\n' "$(file -b "$bin")"
    fi
done
if [ "${#skipped[@]}" -gt 0 ]; then
    echo "Skipped:"
    for entry in "${skipped[@]}"; do
        printf '  %s\n' "$entry"
    done
fi
