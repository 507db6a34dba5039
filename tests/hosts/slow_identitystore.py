"""A minimal Identity Store endpoint (JSON 1.1 over HTTP, standard library only) whose speed a test
controls while it runs: for the booted-container tests of the daemon, where moto is not installed.

It answers ListUsers, ListGroups and ListGroupMemberships from a JSON directory document, paginated
at `page_size` records. Before each answer it reads the control file, a JSON object:

    {"delay": 2.5}        wait this many seconds before answering each request
    {"hang": true}        accept the request and never answer it
    {"status": 500}       answer every request with an InternalServerException

Usage: python3 slow_identitystore.py PORT DIRECTORY_JSON CONTROL_JSON [PAGE_SIZE]
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LISTS = {"ListUsers": "Users", "ListGroups": "Groups", "ListGroupMemberships": "GroupMemberships"}


def make_handler(directory_path: str, control_path: str, page_size: int):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # keep the journal quiet
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            try:
                with open(control_path) as handle:
                    control = json.load(handle)
            except (OSError, ValueError):
                control = {}
            if control.get("hang"):
                threading.Event().wait()  # never answers; the client's read times out or it hangs
            time.sleep(float(control.get("delay", 0)))
            if control.get("status"):
                return self._send(int(control["status"]), {"__type": "InternalServerException", "Message": "injected"})
            operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
            if operation not in LISTS:
                return self._send(400, {"__type": "ValidationException", "Message": f"unsupported {operation}"})
            with open(directory_path) as handle:
                document = json.load(handle)
            key = LISTS[operation]
            records = document.get(key, [])
            if operation == "ListGroupMemberships":
                records = [m for m in records if m.get("GroupId") == body.get("GroupId")]
            start = int(body.get("NextToken") or 0)
            page = {key: records[start:start + page_size]}
            if start + page_size < len(records):
                page["NextToken"] = str(start + page_size)
            self._send(200, page)

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main(argv: list[str]) -> None:
    port, directory_path, control_path = int(argv[0]), argv[1], argv[2]
    page_size = int(argv[3]) if len(argv) > 3 else 100
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(directory_path, control_path, page_size))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
