#!/usr/bin/env python3
"""Writes cross/layout/hot-text.ld: the functions a node runs, placed first in the code.

Usage: cross/layout/trace.py BINARY... [OUTPUT.ld]

Each BINARY is an x86_64 Linux release build linked WITHOUT this script
(valgrind does not name functions outside .text) and WITH symbols, which
cross/layout/build.rs gives (both only change the link, so the names are the release
build's):
    HEARTH_HOT_TEXT=0 HEARTH_KEEP_SYMBOLS=1 cargo build --release
    HEARTH_HOT_TEXT=0 HEARTH_KEEP_SYMBOLS=1 cargo zigbuild --release --locked \
        --target x86_64-unknown-linux-musl
Trace both: the C compilers (gcc, zig's clang) inline SQLite differently,
and musl's std differs from glibc's, so the functions each build keeps
differ; the script lists the union. For each, it runs `BINARY serve` on loopback under valgrind's callgrind with a fresh data
dir, notes every function that ran once the node is ready (start-up), then
drives a short client session over HTTP (register, log in, create a room,
join, send, /sync, /messages, receipts, typing) and notes the functions that
ran for it. OUTPUT (default hot-text.ld next to this script) gets a
linker script that puts those functions' sections first in .text: start-up
ones, then per-request ones, each group in the order the binaries had them.

Why: the kernel maps a program's code in page-cache folios (64 KiB or more), so
the resident size of an idle node is roughly 64 KiB for every folio of code
it touched; spread over the whole binary, the ~1 MB of code a start runs
touched almost every folio. Grouped, it touches as few as it fills.

Names are written as globs without the hashes rustc puts in symbol names
(`17h<hash>E`, v0 crate disambiguators), which differ per target and
profile, so one script serves every target; a function renamed since the
trace is simply placed in the usual order.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import bisect
import json
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def callgrind_addresses(path, binary):
    """Addresses (as nm shows them) of the instructions that ran in `binary`, from a
    callgrind dump with --dump-instr=yes (positions are compressed: absolute
    `0x...`, relative `+n`/`-n`, or `*` for the same as the line before)."""
    names = {}
    found = set()
    current_object = None
    last = 0

    def name(text):
        match = re.match(r"\((\d+)\)(?: (.*))?$", text)
        if not match:
            return text
        if match.group(2) is not None:
            names[match.group(1)] = match.group(2)
        return names.get(match.group(1), "")

    ours = os.path.realpath(binary)
    for line in open(path, errors="replace"):
        if line.startswith("ob="):
            current_object = os.path.realpath(name(line[3:].rstrip("\n")))
        elif line.startswith("cob="):
            name(line[4:].rstrip("\n"))
        elif line[:1] in "0123456789+-*":
            position = line.split()[0]
            if position.startswith("0x"):
                last = int(position, 16)
            elif position[0] in "+-":
                step = int(position[1:], 0)
                last = last + step if position[0] == "+" else last - step
            elif position != "*":
                continue
            if current_object == ours:
                found.add(last)
    return found


def glob(symbol):
    """The symbol's name with build-dependent hashes replaced by `*`."""
    symbol = re.sub(r"17h[0-9a-f]{16}E$", "17h*E", symbol)
    symbol = re.sub(r"Cs[0-9A-Za-z]{1,20}_(?=\d)", "Cs*_", symbol)
    # v0: the crate a generic was instantiated in (`Cs<hash>_<length><name>`
    # at the end); which crate's copy of an instance survives LTO changes
    # from build to build.
    match = re.search(r"Cs\*_(\d+)([0-9A-Za-z_]+)$", symbol)
    if match and len(match.group(2)) == int(match.group(1)):
        symbol = symbol[:match.start()] + "Cs*"
    symbol = re.sub(r"\.llvm\.\d+$", ".llvm.*", symbol)
    return symbol


def functions(binary):
    """The functions of `binary` by address: (start, end, names) sorted by
    start; identical functions merged into one have several names, and the
    section is named after any one of them."""
    output = subprocess.run(["nm", "--defined-only", "-S", binary],
                            capture_output=True, text=True, check=True).stdout
    by_start = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tTwW":
            start, size = int(fields[0], 16), int(fields[1], 16)
            end, names = by_start.get(start, (start, []))
            by_start[start] = (max(end, start + size), names + [fields[3]])
    return sorted((start, end, names) for start, (end, names) in by_start.items())


def ran(table, addresses):
    """The entries of `table` (from `functions`) holding one of `addresses`."""
    starts = [start for start, _, _ in table]
    found = {}
    for address in addresses:
        index = bisect.bisect_right(starts, address) - 1
        if 0 <= index and address < table[index][1]:
            found[table[index][0]] = table[index]
    return found


def request(base, method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=600) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return json.loads(error.read() or b"{}")


def session(base):
    """A short client session: what a node does for its users."""
    auth = {"type": "m.login.dummy"}
    alice = request(base, "POST", "/_matrix/client/v3/register",
                    {"username": "alice", "password": "trace-password", "auth": auth})["access_token"]
    bob = request(base, "POST", "/_matrix/client/v3/register",
                  {"username": "bob", "password": "trace-password", "auth": auth})["access_token"]
    request(base, "POST", "/_matrix/client/v3/login",
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
             "password": "trace-password"})
    request(base, "GET", "/_matrix/client/versions")
    request(base, "GET", "/_matrix/client/v3/capabilities", token=alice)
    request(base, "PUT", "/_matrix/client/v3/profile/@alice:localhost/displayname", {"displayname": "Alice"}, alice)
    room = request(base, "POST", "/_matrix/client/v3/createRoom",
                   {"preset": "public_chat", "name": "trace"}, alice)["room_id"]
    request(base, "POST", f"/_matrix/client/v3/join/{room}", {}, bob)
    first = request(base, "GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
    since = first.get("next_batch", "")
    event_id = ""
    for index in range(20):
        sender = alice if index % 2 == 0 else bob
        event_id = request(base, "PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t{index}",
                           {"msgtype": "m.text", "body": f"message {index}"}, sender).get("event_id", "")
        if index % 5 == 4:
            since = request(base, "GET", f"/_matrix/client/v3/sync?timeout=0&since={since}",
                            token=bob).get("next_batch", since)
    request(base, "PUT", f"/_matrix/client/v3/rooms/{room}/typing/@bob:localhost",
            {"typing": True, "timeout": 3000}, bob)
    request(base, "POST", f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{event_id}", {}, bob)
    request(base, "GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10", token=alice)
    request(base, "GET", f"/_matrix/client/v3/rooms/{room}/state", token=alice)
    request(base, "GET", f"/_matrix/client/v3/rooms/{room}/members", token=alice)
    request(base, "GET", f"/_matrix/client/v3/sync?timeout=0&since={since}", token=alice)


def trace(binary):
    """The functions of `binary` that ran at start-up, and the others that ran
    for the client session: two lists of names (several for merged
    functions), each in the binary's address order."""
    work = tempfile.mkdtemp(prefix="hearth-trace-")
    config = os.path.join(work, "hearth.toml")
    open(config, "w").close()
    environment = dict(os.environ, HEARTH_LOG="info",
                       # what `hearth serve` would otherwise re-execute itself to set (malloc.rs)
                       MALLOC_MMAP_THRESHOLD_="1048576", MALLOC_TRIM_THRESHOLD_="2097152")
    node = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--dump-instr=yes",
         f"--callgrind-out-file={work}/callgrind.%p", binary, "serve", "--data-dir", work,
         "--config", config, "--server-name", "localhost", "--registration", "open",
         "--http", "127.0.0.1:0", "--https", "127.0.0.1:0"],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = None
        for line in node.stderr:
            match = re.search(r"listening on (\S+)", line)
            if match and "(TLS)" not in line:
                base = "http://" + match.group(1)
            if " ready in " in line:
                break
        if not base:
            sys.exit(f"{binary}: the node did not start")
        threading.Thread(target=lambda: [None for _ in node.stderr], daemon=True).start()
        time.sleep(3)  # the tasks started after the ready line
        subprocess.run(["callgrind_control", "--dump=start", str(node.pid)], check=True, capture_output=True)
        session(base)
        subprocess.run(["callgrind_control", "--dump=session", str(node.pid)], check=True, capture_output=True)
        time.sleep(1)
    finally:
        node.send_signal(signal.SIGKILL)
        node.wait()
    dumps = [path for path in os.listdir(work) if path.startswith("callgrind.") and path.count(".") > 1]
    dumps = [os.path.join(work, path) for path in sorted(dumps, key=lambda path: int(path.rsplit(".", 1)[-1]))]
    if len(dumps) < 2:
        sys.exit(f"{binary}: expected two callgrind dumps, found {dumps}")
    table = functions(binary)
    start = ran(table, callgrind_addresses(dumps[0], binary))
    requests = ran(table, callgrind_addresses(dumps[1], binary))
    requests = {key: value for key, value in requests.items() if key not in start}
    shutil.rmtree(work, ignore_errors=True)
    return [names for _, _, names in sorted(start.values())], [names for _, _, names in sorted(requests.values())]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binaries = [os.path.abspath(path) for path in sys.argv[1:] if not path.endswith(".ld")]
    outputs = [path for path in sys.argv[1:] if path.endswith(".ld")]
    output = outputs[0] if outputs else os.path.join(HERE, "hot-text.ld")
    traces = [trace(binary) for binary in binaries]
    # The C start-up files' code (`_start`), which runs first of all.
    lines = ["    *crt1.o(.text .text.*)"]
    seen = set()
    counts = []
    for group in (0, 1):
        count = 0
        for traced in traces:
            for names in traced[group]:
                added = False
                for name in names:
                    pattern = glob(name)
                    if pattern not in seen:
                        seen.add(pattern)
                        added = True
                        # LLVM puts cold functions (`#[cold]`) in .text.unlikely.NAME
                        lines.append(f"    *(.text.{pattern} .text.unlikely.{pattern})")
                count += added
        counts.append(count)
    with open(output, "w") as script:
        script.write(
            "/* Generated by cross/layout/trace.py: the functions a node ran at start-up, then\n"
            f"   for a client session ({counts[0]} and {counts[1]} functions), first in the code.\n"
            "   cross/layout/build.rs passes this to the linker in optimised Linux builds; see trace.py. */\n"
            "SECTIONS\n{\n  .text.hot : {\n" + "\n".join(lines) + "\n  }\n}\nINSERT BEFORE .text;\n")
    print(f"{output}: {counts[0]} start-up functions, {counts[1]} more for requests, {len(lines)} patterns")


if __name__ == "__main__":
    main()
