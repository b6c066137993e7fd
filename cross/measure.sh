#!/usr/bin/env bash
# Measure a native hearth build on this machine: binary size, time from spawn
# to the first 200 from /_matrix/client/versions, idle RSS, and /versions
# requests per second under wrk. Loopback only; every server it starts is
# stopped by PID.
#
# Usage: cross/measure.sh [BINARY]
#   BINARY defaults to ${CARGO_TARGET_DIR:-<repo>/target}/release/hearth
#   (build it first: cargo build --release).
# Environment:
#   RUNS        start-up timing runs (default 5)
#   WRK_ARGS    default "-t2 -c50 -d10s"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${1:-$TARGET_DIR/release/hearth}"
RUNS="${RUNS:-5}"
WRK_ARGS="${WRK_ARGS:--t2 -c50 -d10s}"

die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
[ -x "$BIN" ] || die "no binary at $BIN (cargo build --release)"
command -v curl >/dev/null || die "curl missing (apt-get install curl)"
command -v wrk >/dev/null || die "wrk missing (apt-get install wrk)"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# The login measurement logs in far more often than the login limits allow
# one address ([rc_login] in the config); this config lifts them.
CONFIG="$(mktemp "${TMPDIR:-/tmp}/hearth-measure-config.XXXXXX")"
cat >"$CONFIG" <<'TOML'
[rc_login.address]
per_second = 1000.0
burst_count = 1000000
[rc_login.account]
per_second = 1000.0
burst_count = 1000000
[rc_login.failed_attempts]
per_second = 1000.0
burst_count = 1000000
TOML

PID=""
DATA=""
stop() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    PID=""
    [ -n "$DATA" ] && rm -rf "$DATA"
    DATA=""
}
trap 'stop; rm -f "$CONFIG"' EXIT

# start [DIR]: spawns the server on fresh ports, in DIR or a fresh data dir;
# sets PID, URL, STARTUP_MS.
start() {
    DATA="${1:-$(mktemp -d "${TMPDIR:-/tmp}/hearth-measure.XXXXXX")}"
    local http https t0
    http="$(free_port)"; https="$(free_port)"
    while [ "$https" = "$http" ]; do https="$(free_port)"; done
    URL="http://127.0.0.1:$http/_matrix/client/versions"
    t0=$(date +%s%N)
    "$BIN" serve --config "$CONFIG" --data-dir "$DATA" --http "127.0.0.1:$http" --https "127.0.0.1:$https" \
        >"$DATA.log" 2>&1 &
    PID=$!
    until curl -fsS -o /dev/null --max-time 1 "$URL" 2>/dev/null; do
        kill -0 "$PID" 2>/dev/null || { cat "$DATA.log" >&2; die "server exited"; }
        [ $(( $(date +%s%N) - t0 )) -lt 60000000000 ] || die "no answer within 60 s"
        sleep 0.005
    done
    STARTUP_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
    rm -f "$DATA.log"
}

size=$(stat -c %s "$BIN")
echo "binary: $BIN"
echo "size: $size bytes ($((size / 1024)) KiB)"

# Start-up: the first run creates the database (and the self-signed
# certificate); every run uses a fresh data dir, so each is a first start.
times=()
for i in $(seq 1 "$RUNS"); do
    start
    times+=("$STARTUP_MS")
    if [ "$i" -lt "$RUNS" ]; then stop; fi
done
echo "startup to first 200 (ms, fresh data dir each): ${times[*]}"

# Warm starts: the same data dir again (database and keys exist).
warm=()
for _ in $(seq 1 "$RUNS"); do
    dir="$DATA"
    kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    start "$dir"
    warm+=("$STARTUP_MS")
done
echo "startup to first 200 (ms, existing data dir): ${warm[*]}"

# Idle RSS of the last instance, after it has answered once and settled.
sleep 2
rss=$(awk '/^VmRSS/ {print $2, $3}' "/proc/$PID/status")
hwm=$(awk '/^VmHWM/ {print $2, $3}' "/proc/$PID/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$PID/status")
echo "idle RSS: $rss (peak $hwm, threads $threads)"

# Throughput on loopback.
# shellcheck disable=SC2086
wrk $WRK_ARGS "$URL" | tee "${TMPDIR:-/tmp}/hearth-wrk.txt"
rps=$(awk '/^Requests\/sec/ {print $2}' "${TMPDIR:-/tmp}/hearth-wrk.txt")
rss_after=$(awk '/^VmRSS/ {print $2, $3}' "/proc/$PID/status")
echo "RSS after wrk: $rss_after"

# Logins: one account, LOGINS password logins in a row (argon2id each).
LOGINS="${LOGINS:-1000}"
base="${URL%/versions}/v3"
"$BIN" user --data-dir "$DATA" add measurer --password-stdin <<<"measure-password" >/dev/null
login_body='{"type":"m.login.password","identifier":{"type":"m.id.user","user":"measurer"},"password":"measure-password"}'
t0=$(date +%s%N)
for _ in $(seq 1 "$LOGINS"); do
    curl -fsS -o /dev/null -X POST -H 'content-type: application/json' -d "$login_body" "$base/login" \
        || die "a login failed"
done
login_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
rss_logins=$(awk '/^VmRSS/ {print $2, $3}' "/proc/$PID/status")
hwm_logins=$(awk '/^VmHWM/ {print $2, $3}' "/proc/$PID/status")
echo "RSS after $LOGINS logins: $rss_logins (peak $hwm_logins; $login_ms ms in all)"
echo "SUMMARY size=${size}B startup_fresh_ms='${times[*]}' startup_warm_ms='${warm[*]}' idle_rss='$rss' rss_after_wrk='$rss_after' versions_rps=$rps rss_after_${LOGINS}_logins='$rss_logins'"
