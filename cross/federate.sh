#!/usr/bin/env bash
# Two static hearth binaries for different boards federate on this x86_64
# machine, each under its qemu-user: node A (default armv7) and node B
# (default aarch64) trust each other's self-signed certificate, alice on A
# makes a public room, bob on B joins it over federation, and a message
# goes each way. Loopback only; both nodes are stopped by PID.
#
# Usage: cross/federate.sh [TRIPLE_A [TRIPLE_B]]
#   defaults: armv7-unknown-linux-musleabihf aarch64-unknown-linux-musl;
#   binaries from ${HEARTH_CROSS_OUT:-${CARGO_TARGET_DIR:-<repo>/target}/cross}/TRIPLE/hearth
#   (what cross/build.sh produces).
# Environment:
#   FEDERATE_DEADLINE  seconds to wait for each step (default 60)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${HEARTH_CROSS_OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/cross}"
TRIPLE_A="${1:-armv7-unknown-linux-musleabihf}"
TRIPLE_B="${2:-aarch64-unknown-linux-musl}"
DEADLINE="${FEDERATE_DEADLINE:-60}"

# shellcheck source=cross/lib.sh
. "$ROOT/cross/lib.sh"

command -v curl >/dev/null || apt_install curl || die "curl is missing (apt-get install curl)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/hearth-federate.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do stop_pid "$pid" || true; done
    if [ "${FEDERATE_KEEP:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Per node N: its emulator, binary, ports, server name and data directory.
declare -A QEMU BIN TLS_PORT HTTP_PORT NAME
for node in a b; do
    if [ "$node" = a ]; then triple="$TRIPLE_A"; else triple="$TRIPLE_B"; fi
    QEMU[$node]="$(qemu_for "$triple")"
    BIN[$node]="$OUT_DIR/$triple/hearth"
    [ -f "${BIN[$node]}" ] || die "no binary at ${BIN[$node]} (run cross/build.sh $triple first)"
    TLS_PORT[$node]="$(free_port)"
    HTTP_PORT[$node]="$(free_port)"
    NAME[$node]="localhost:${TLS_PORT[$node]}"
    mkdir "$WORK/$node"
    # The certificate the node will serve, made now so the other can trust it.
    "${QEMU[$node]}" "${BIN[$node]}" tls --data-dir "$WORK/$node" --server-name "${NAME[$node]}" \
        export-cert >"$WORK/$node.pem"
    say "node $node: $triple, ${NAME[$node]}"
done

hearth() { local node="$1"; shift; "${QEMU[$node]}" "${BIN[$node]}" "$@"; }
other() { if [ "$1" = a ]; then echo b; else echo a; fi; }

for node in a b; do
    # Started directly (not through the function above) so that $! is the
    # emulator's PID, which stop_pid then stops.
    "${QEMU[$node]}" "${BIN[$node]}" serve --data-dir "$WORK/$node" --server-name "${NAME[$node]}" \
        --https "127.0.0.1:${TLS_PORT[$node]}" --http "127.0.0.1:${HTTP_PORT[$node]}" \
        --federation-ca "$WORK/$(other "$node").pem" --federation-allow-ip 127.0.0.0/8 \
        >"$WORK/$node.log" 2>&1 &
    PIDS+=("$!")
done
for index in 0 1; do
    node=$([ "$index" = 0 ] && echo a || echo b)
    wait_for_answer "http://127.0.0.1:${HTTP_PORT[$node]}/_matrix/client/versions" \
        "${PIDS[$index]}" "$WORK/$node.log" "$DEADLINE" >/dev/null
done

api() {
    # api NODE METHOD PATH TOKEN [BODY]: a client-server request, its JSON answer.
    local node="$1" method="$2" path="$3" token="$4" body="${5:-}"
    local args=(-fsS --max-time "$DEADLINE" -X "$method" -H 'Content-Type: application/json')
    [ -z "$token" ] || args+=(-H "Authorization: Bearer $token")
    [ -z "$body" ] || args+=(-d "$body")
    curl "${args[@]}" "http://127.0.0.1:${HTTP_PORT[$node]}/_matrix/client/v3$path"
}

account() {
    # account NODE NAME: makes the account with the CLI, prints an access token.
    local node="$1" name="$2" answer
    printf '%s-password\n' "$name" | hearth "$node" user add "$name" --password-stdin --data-dir "$WORK/$node" >&2
    answer="$(api "$node" POST /login "" \
        '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"'"$name"'"},"password":"'"$name"'-password"}')"
    json_string access_token "$answer"
}

# until_seen NODE TOKEN ROOM TEXT: waits until TEXT is in the room's recent
# messages as NODE sees them.
until_seen() {
    local deadline_ns=$(($(date +%s%N) + DEADLINE * 1000000000))
    while ! api "$1" GET "/rooms/$3/messages?dir=b&limit=10" "$2" | grep -q "$4"; do
        [ "$(date +%s%N)" -lt "$deadline_ns" ] || die "node $1 did not see \"$4\" within ${DEADLINE}s (logs in $WORK with FEDERATE_KEEP=1)"
        sleep 0.2
    done
}

alice="$(account a alice)"
bob="$(account b bob)"
if [ -z "$alice" ] || [ -z "$bob" ]; then die "could not log in"; fi

start_ns=$(date +%s%N)
room_id="$(json_string room_id "$(api a POST /createRoom "$alice" '{"preset":"public_chat","name":"federate"}')")"
[ -n "$room_id" ] || die "createRoom on node a failed"
api b POST "/join/$room_id?server_name=${NAME[a]}" "$bob" '{}' >/dev/null || die "bob on node b could not join $room_id"
join_ms=$((($(date +%s%N) - start_ns) / 1000000))
say "bob@${NAME[b]} joined alice's room on ${NAME[a]} in ${join_ms} ms (createRoom included)"

for sender in a b; do
    if [ "$sender" = a ]; then token="$alice"; reader_token="$bob"; else token="$bob"; reader_token="$alice"; fi
    text="hello from node $sender"
    start_ns=$(date +%s%N)
    api "$sender" PUT "/rooms/$room_id/send/m.room.message/federate-$sender" "$token" \
        '{"msgtype":"m.text","body":"'"$text"'"}' >/dev/null || die "node $sender could not send"
    until_seen "$(other "$sender")" "$reader_token" "$room_id" "$text"
    say "node $sender → node $(other "$sender"): $(( ($(date +%s%N) - start_ns) / 1000000 )) ms from send to seen"
done

# The room now lives on at node b too.
report="$(hearth a resilience --data-dir "$WORK/a")"
case "$report" in
    *"lives on at ${NAME[b]}"*) say "hearth resilience on node a: the room lives on at ${NAME[b]}" ;;
    *) die "hearth resilience on node a does not see the room living on at ${NAME[b]}: $report" ;;
esac

echo "FEDERATE OK: $TRIPLE_A and $TRIPLE_B nodes joined one room and exchanged messages under qemu (join ${join_ms} ms)"
