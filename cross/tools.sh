#!/usr/bin/env bash
# Install everything the cross builds, the qemu smoke test and the
# measurements need, on a Debian (12, bookworm) x86_64 machine, as root.
# Each step is skipped when its tool is already there.
#
#   Debian:  qemu-user (qemu-aarch64, qemu-arm), wrk, file, curl
#            (qemu-user-static is the fallback for qemu-*-static)
#   PyPI:    ziglang   (zig, run by cargo-zigbuild as `python3 -m ziglang`)
#   crates:  cargo-zigbuild (cargo install --locked)
#   rustup:  aarch64-unknown-linux-musl std; rust-src (armv7's std is built
#            from it where rustup cannot download it, see build.sh)
set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }

need_apt=()
if ! { command -v qemu-aarch64 || command -v qemu-aarch64-static; } >/dev/null \
    || ! { command -v qemu-arm || command -v qemu-arm-static; } >/dev/null; then
    need_apt+=(qemu-user)
fi
command -v wrk >/dev/null || need_apt+=(wrk)
command -v file >/dev/null || need_apt+=(file)
command -v curl >/dev/null || need_apt+=(curl)
if [ "${#need_apt[@]}" -gt 0 ]; then
    say "apt-get install -y ${need_apt[*]}"
    apt-get update
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}"; then
        # qemu-user-static provides qemu-aarch64-static instead.
        mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sed 's/^qemu-user$/qemu-user-static/')
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}"
    fi
fi

if ! python3 -m ziglang version >/dev/null 2>&1 && ! command -v zig >/dev/null; then
    say "python3 -m pip install ziglang"
    python3 -m pip install ziglang
fi

if ! cargo zigbuild --help >/dev/null 2>&1; then
    say "cargo install --locked cargo-zigbuild"
    cargo install --locked cargo-zigbuild
fi

if ! rustup target list --installed | grep -qx aarch64-unknown-linux-musl; then
    say "rustup target add aarch64-unknown-linux-musl"
    rustup target add aarch64-unknown-linux-musl
fi

if ! rustup component list --installed | grep -qx rust-src; then
    say "rustup component add rust-src"
    rustup component add rust-src
fi

say "tools ready: $(command -v qemu-aarch64 || command -v qemu-aarch64-static), $(command -v qemu-arm || command -v qemu-arm-static), $(command -v wrk), zig $(python3 -m ziglang version 2>/dev/null || zig version)"
