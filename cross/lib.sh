# shellcheck shell=bash
# Shell functions shared by cross/smoke.sh and cross/federate.sh (sourced,
# not run): messages, Debian packages, the qemu-user emulator for a triple,
# free loopback ports, waiting for a node's answer, stopping a process by
# PID, reading a JSON string.

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

apt_install() {
    # Installs Debian packages when we are root and apt-get exists.
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    else
        return 1
    fi
}

# Sets QEMU_ARCH (qemu-user's name for the CPU) and FILE_ARCH (a `case`
# pattern for what `file` says about the binary) for a triple.
triple_arch() {
    case "$1" in
        aarch64-unknown-linux-musl)
            QEMU_ARCH=aarch64
            # shellcheck disable=SC2034 # read by cross/smoke.sh
            FILE_ARCH="ARM aarch64"
            ;;
        armv7-unknown-linux-musleabihf)
            QEMU_ARCH=arm
            # shellcheck disable=SC2034 # read by cross/smoke.sh
            FILE_ARCH="32-bit LSB*ARM, EABI5"
            ;;
        *) die "unknown triple $1 (aarch64-unknown-linux-musl or armv7-unknown-linux-musleabihf)" ;;
    esac
}

# Prints the emulator for a triple: qemu-ARCH, else qemu-ARCH-static,
# installing qemu-user (or qemu-user-static) when neither is there.
qemu_for() {
    triple_arch "$1"
    local candidate
    for attempt in 1 2; do
        for candidate in "qemu-$QEMU_ARCH" "qemu-$QEMU_ARCH-static"; do
            if command -v "$candidate" >/dev/null; then
                echo "$candidate"
                return 0
            fi
        done
        [ "$attempt" = 1 ] || break
        say "installing qemu-user"
        apt_install qemu-user >&2 || apt_install qemu-user-static >&2 || true
    done
    die "no qemu-$QEMU_ARCH (apt-get install qemu-user)"
}

free_port() {
    # Ask the kernel for a free loopback port.
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    else
        local port
        while :; do
            port=$((20000 + RANDOM % 20000))
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                echo "$port"
                return
            fi
        done
    fi
}

# Polls URL until it answers 2xx and prints the answer; fails, with the
# server's log, if process PID exits first or DEADLINE seconds pass.
wait_for_answer() {
    local url="$1" pid="$2" log="$3" deadline_ns body
    deadline_ns=$(($(date +%s%N) + $4 * 1000000000))
    while :; do
        if body="$(curl -fsS --max-time 2 "$url" 2>/dev/null)"; then
            printf '%s' "$body"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "--- server log ---" >&2
            cat "$log" >&2 || true
            die "server exited before answering $url"
        fi
        if [ "$(date +%s%N)" -gt "$deadline_ns" ]; then
            echo "--- server log ---" >&2
            cat "$log" >&2 || true
            die "no answer from $url within $4 s"
        fi
        sleep 0.2
    done
}

# SIGTERM to a process we started, then SIGKILL if it is still there after
# $2 tenths of a second (default 50). Fails if SIGKILL was needed.
stop_pid() {
    local pid="$1" tenths="${2:-50}"
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 "$tenths"); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    return 1
}

# The value of a top-level string field in a compact JSON answer
# (`json_string access_token "$answer"`); empty when it is absent.
json_string() {
    printf '%s' "$2" | sed -n 's/.*"'"$1"'":"\([^"]*\)".*/\1/p'
}
