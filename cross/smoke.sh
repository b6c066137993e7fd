#!/usr/bin/env bash
# Smoke-test a static hearth binary for a Raspberry Pi on this x86_64 machine
# under qemu-user: check it is a statically linked ELF for the triple's CPU,
# start `hearth serve` on loopback ports, wait for GET
# /_matrix/client/versions to answer, add an account with the CLI, log in,
# create a room and send a message, run `hearth doctor` against it (TLS,
# server keys), stop the node by PID.
#
# Usage: cross/smoke.sh [TRIPLE [BINARY]]
#   TRIPLE  aarch64-unknown-linux-musl (default, qemu-aarch64) or
#           armv7-unknown-linux-musleabihf (qemu-arm)
#   BINARY  defaults to ${CARGO_TARGET_DIR:-<repo>/target}/cross/TRIPLE/hearth
#           (what cross/build.sh produces).
# Environment:
#   SMOKE_DEADLINE  seconds to wait for the first answer (default 60)
#   QEMU            emulator to use (default: qemu-ARCH, else qemu-ARCH-static)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TRIPLE="${1:-aarch64-unknown-linux-musl}"
BIN="${2:-${HEARTH_CROSS_OUT:-$TARGET_DIR/cross}/$TRIPLE/hearth}"
DEADLINE="${SMOKE_DEADLINE:-60}"

# shellcheck source=cross/lib.sh
. "$ROOT/cross/lib.sh"

triple_arch "$TRIPLE"
[ -f "$BIN" ] || die "no binary at $BIN (run cross/build.sh $TRIPLE first)"

# --- tools ------------------------------------------------------------------

command -v curl >/dev/null || apt_install curl || die "curl is missing (apt-get install curl)"
command -v file >/dev/null || apt_install file || die "file is missing (apt-get install file)"
QEMU="${QEMU:-$(qemu_for "$TRIPLE")}"

# --- static linking ---------------------------------------------------------

description="$(file -b "$BIN")"
say "file: $description"
case "$description" in
    *$FILE_ARCH*) ;;
    *) die "$BIN is not an ELF for $TRIPLE" ;;
esac
case "$description" in
    *"dynamically linked"* | *"interpreter"*) die "$BIN is dynamically linked" ;;
    *"statically linked"* | *"static-pie linked"*) say "statically linked: yes" ;;
    *) die "cannot tell from 'file' that $BIN is statically linked" ;;
esac

# --- run --------------------------------------------------------------------

DATA="$(mktemp -d "${TMPDIR:-/tmp}/hearth-smoke.XXXXXX")"
LOG="$DATA/server.log"
HTTP_PORT="$(free_port)"
HTTPS_PORT="$(free_port)"
while [ "$HTTPS_PORT" = "$HTTP_PORT" ]; do HTTPS_PORT="$(free_port)"; done
PID=""

cleanup() {
    if [ -n "$PID" ]; then stop_pid "$PID" || true; fi
    if [ "${SMOKE_KEEP:-0}" = 1 ]; then
        say "kept $DATA"
    else
        rm -rf "$DATA"
    fi
}
trap cleanup EXIT

# The server name carries the TLS port, so that `hearth doctor` below finds
# the node the way another server would.
NAME="localhost:$HTTPS_PORT"
say "$QEMU $BIN serve --data-dir $DATA --server-name $NAME --http 127.0.0.1:$HTTP_PORT --https 127.0.0.1:$HTTPS_PORT"
start_ns=$(date +%s%N)
"$QEMU" "$BIN" serve --data-dir "$DATA" --server-name "$NAME" \
    --http "127.0.0.1:$HTTP_PORT" --https "127.0.0.1:$HTTPS_PORT" >"$LOG" 2>&1 &
PID=$!

body="$(wait_for_answer "http://127.0.0.1:$HTTP_PORT/_matrix/client/versions" "$PID" "$LOG" "$DEADLINE")"
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))

case "$body" in
    *'"versions"'*) ;;
    *) die "unexpected /versions body: $body" ;;
esac
say "answered in ${elapsed_ms} ms under $QEMU: $body"

# A round trip through the parts that differ most between CPUs: an account
# (argon2id, SQLite) made by the CLI while the node runs, a password login,
# and a room with a message in it (ed25519 signatures, SHA-256 hashes).
BASE="http://127.0.0.1:$HTTP_PORT/_matrix/client/v3"
round_start_ns=$(date +%s%N)
printf 'smoke-password\n' | "$QEMU" "$BIN" user add smoke --password-stdin --data-dir "$DATA" >&2 \
    || die "hearth user add failed under $QEMU"
login="$(curl -fsS --max-time 60 -X POST "$BASE/login" -H 'Content-Type: application/json' \
    -d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"smoke"},"password":"smoke-password"}')" \
    || die "password login failed"
token="$(json_string access_token "$login")"
[ -n "$token" ] || die "no access_token in the login answer: $login"
room="$(curl -fsS --max-time 60 -X POST "$BASE/createRoom" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"name":"smoke"}')" || die "createRoom failed"
room_id="$(json_string room_id "$room")"
[ -n "$room_id" ] || die "no room_id in the createRoom answer: $room"
sent="$(curl -fsS --max-time 60 -X PUT "$BASE/rooms/$room_id/send/m.room.message/smoke1" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"msgtype":"m.text","body":"hello from '"$TRIPLE"'"}')" || die "sending a message failed"
case "$sent" in
    *'"event_id"'*) ;;
    *) die "no event_id in the send answer: $sent" ;;
esac
round_ms=$((($(date +%s%N) - round_start_ns) / 1000000))
say "user add, login, createRoom and a message in ${round_ms} ms under $QEMU"

# Outbound TLS (ring's assembly for this CPU) and server key verification:
# `hearth doctor`, itself under qemu, checks the node as other servers see it,
# trusting its self-signed certificate.
"$QEMU" "$BIN" tls --data-dir "$DATA" export-cert >"$DATA/ca.pem" || die "hearth tls export-cert failed"
"$QEMU" "$BIN" doctor --data-dir "$DATA" --server-name "$NAME" \
    --federation-ca "$DATA/ca.pem" --federation-allow-ip 127.0.0.0/8 >&2 \
    || die "hearth doctor found a problem (above)"

# Graceful stop, by PID.
if ! stop_pid "$PID" 100; then
    wait "$PID" 2>/dev/null || true
    PID=""
    die "server did not stop within 10 s of SIGTERM (sent SIGKILL)"
fi
wait "$PID" && status=0 || status=$?
PID=""
say "stopped on SIGTERM (exit status $status)"

size=$(stat -c %s "$BIN")
echo "SMOKE OK: $TRIPLE static binary $size bytes; /versions answered under qemu in ${elapsed_ms} ms; account, login, room and message in ${round_ms} ms"
