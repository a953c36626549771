#!/usr/bin/python3
"""OAuth2 token introspection endpoint for the Postern tests (stdlib only).

Usage: python3 introspect.py HOST PORT TOKENS_DIR LOG_FILE

Dovecot's oauth2 passdb (introspection_mode = post) sends
`POST /introspect` with the form body `token=<url-escaped token>`.
Also understood: `GET /introspect?token=...` and `Authorization: Bearer ...`.

A token T is known when TOKENS_DIR/<sha256 hex of T>.json exists. The file is
read on every request (no caching), so tests mint, revoke and delete tokens by
writing files:
    {"active": true, "username": "u01@example.test"}   -> 200 with that JSON
    {"active": false}                                  -> 200, token rejected
    {"http_status": 503}                               -> 503 (Dovecot: temporary failure)
Unknown token (no file) -> 200 {"active": false}.
Unreadable / invalid JSON file -> 500.

Every request (except GET /health) is appended to LOG_FILE as one JSON line:
{"time", "method", "path", "token_sha256", "found", "status", "active", "username"}.
GET /health -> 200 "ok" (readiness probe, not logged).
"""

import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TOKENS_DIR = None
LOG_FILE = None
LOG_LOCK = threading.Lock()


def log_request(entry):
    line = json.dumps(entry) + "\n"
    with LOG_LOCK:
        with open(LOG_FILE, "a") as f:
            f.write(line)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "postern-test-introspect/1"

    def log_message(self, fmt, *args):  # keep stderr quiet; LOG_FILE has the facts
        pass

    def _reply(self, status, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _token(self, body):
        url = urlsplit(self.path)
        params = parse_qs(url.query, keep_blank_values=True)
        if body:
            params.update(parse_qs(body.decode("utf-8", "surrogateescape"), keep_blank_values=True))
        if "token" in params:
            return params["token"][0]
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return None

    def _handle(self, body):
        if self.command == "GET" and urlsplit(self.path).path == "/health":
            return self._reply(200, "ok\n", "text/plain")
        token = self._token(body)
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest() if token is not None else None
        entry = {"time": time.time(), "method": self.command, "path": self.path,
                 "token_sha256": digest, "found": False}
        status, answer = 200, {"active": False}
        path = os.path.join(TOKENS_DIR, digest + ".json") if digest else None
        if path and os.path.exists(path):
            entry["found"] = True
            try:
                with open(path, "rb") as f:
                    answer = json.loads(f.read())
                if not isinstance(answer, dict):
                    raise ValueError("token file is not a JSON object")
                status = int(answer.pop("http_status", 200))
            except Exception as e:  # noqa: BLE001 - a broken file is a server error
                status, answer = 500, {"error": str(e)}
        entry.update(status=status, active=answer.get("active"), username=answer.get("username"))
        log_request(entry)
        self._reply(status, json.dumps(answer))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self._handle(self.rfile.read(length) if length else b"")

    def do_GET(self):
        self._handle(b"")


def main():
    global TOKENS_DIR, LOG_FILE
    host, port, TOKENS_DIR, LOG_FILE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.makedirs(TOKENS_DIR, exist_ok=True)
    open(LOG_FILE, "a").close()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((host, port), Handler)
    print("introspection listening on %s:%d, tokens in %s" % (host, port, TOKENS_DIR), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
