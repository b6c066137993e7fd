"""A misbehaving application service, on Python's http.server (real HTTP on
loopback), for tests/appservice_bad_input.rs: it answers transactions as its mode says
and prints one JSON line per transaction it receives, before answering:
{"txn": ID, "events": [event IDs], "bodies": [message bodies], "answer": STATUS}.

Usage: plain_appservice.py PORT HS_TOKEN MODE
  ok        answer 200
  fail:N    answer the first N transactions 500, then 200
  silent    never answer (hold the connection open)
  deaf      answer transactions 200, never answer user queries
A user query (GET .../users/{userId}) is printed as {"query": USER_ID}.
A request without `Authorization: Bearer HS_TOKEN` is answered 403
M_FORBIDDEN, as mautrix answers a homeserver token it does not know.
Spec: https://spec.matrix.org/latest/application-service-api/#put_matrixappv1transactionstxnid
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

PORT = int(sys.argv[1])
HS_TOKEN = sys.argv[2]
MODE = sys.argv[3]
TRANSACTIONS = "/_matrix/app/v1/transactions/"

lock = threading.Lock()
failures_left = int(MODE.split(":", 1)[1]) if MODE.startswith("fail:") else 0


def say(line):
    with lock:
        print(json.dumps(line), flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        users = "/_matrix/app/v1/users/"
        if self.path.startswith(users):
            say({"query": unquote(self.path[len(users) :])})
        if MODE in ("silent", "deaf"):
            time.sleep(3600)
            return
        # User and alias queries: nothing is known here.
        self.answer(404, {"errcode": "M_NOT_FOUND", "error": "not here"})

    def do_PUT(self):
        global failures_left
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.startswith(TRANSACTIONS):
            self.answer(404, {"errcode": "M_UNRECOGNIZED", "error": "unknown path"})
            return
        events = body.get("events", [])
        if self.headers.get("Authorization") != f"Bearer {HS_TOKEN}":
            status = 403
        elif MODE == "silent":
            status = None
        else:
            with lock:
                status = 500 if 0 < failures_left else 200
                failures_left = max(0, failures_left - 1)
        say(
            {
                "txn": self.path[len(TRANSACTIONS) :],
                "events": [event.get("event_id") for event in events],
                "bodies": [event.get("content", {}).get("body") for event in events if event.get("type") == "m.room.message"],
                "answer": status,
            }
        )
        if status is None:
            # Never answer: the homeserver must give up on its own.
            time.sleep(3600)
        elif status == 403:
            self.answer(403, {"errcode": "M_FORBIDDEN", "error": "Invalid hs_token"})
        elif status == 500:
            self.answer(500, {"errcode": "M_UNKNOWN", "error": "the service failed"})
        else:
            self.answer(200, {})


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()
