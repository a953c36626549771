#!/usr/bin/env python3
"""A tiny loopback OAuth2 token endpoint for the email-oauth2-proxy benchmark peer.

Usage: token_server.py --user USER [--port 0] [--port-file FILE] [--tokens-dir DIR]
                       [--expires-in 3600] [--log FILE]

POST /token with grant_type=client_credentials (or refresh_token) answers
{"access_token": T, "token_type": "Bearer", "expires_in": N}, where T is a fresh
random token first minted in the tests' introspection store (TOKENS_DIR/<sha256
hex of T>.json = {"active": true, "username": USER}, written atomically, as
tests/peers/token does), so Dovecot accepts it. Other grants get HTTP 400.
Listens on 127.0.0.1; the bound port goes to stdout and, atomically, to --port-file.
Stdlib only.
"""

import argparse
import hashlib
import json
import os
import secrets
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GRANTS = ("client_credentials", "refresh_token")


def write_atomic(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--user", required=True, help="username the minted tokens are valid for")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--tokens-dir", default=os.environ.get("TOKENS_DIR"))
    ap.add_argument("--expires-in", type=int, default=3600)
    ap.add_argument("--log", help="append a line per request: time grant status token-file")
    args = ap.parse_args()
    if not args.tokens_dir:
        ap.error("--tokens-dir or $TOKENS_DIR is required")
    os.makedirs(args.tokens_dir, exist_ok=True)

    class Handler(BaseHTTPRequestHandler):
        def reply(self, status, body, grant, name="-"):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)
            if args.log:
                with open(args.log, "a", encoding="utf-8") as f:
                    f.write("%.3f %s %d %s\n" % (time.time(), grant, status, name))

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(n).decode("utf-8", "replace"))
            grant = form.get("grant_type", ["-"])[0]
            if urllib.parse.urlsplit(self.path).path != "/token":
                return self.reply(404, {"error": "not_found"}, grant)
            if grant not in GRANTS:
                return self.reply(400, {"error": "unsupported_grant_type"}, grant)
            token = "eop-" + secrets.token_urlsafe(32)
            name = hashlib.sha256(token.encode()).hexdigest() + ".json"
            write_atomic(os.path.join(args.tokens_dir, name),
                         json.dumps({"active": True, "username": args.user}) + "\n")
            self.reply(200, {"access_token": token, "token_type": "Bearer",
                             "expires_in": args.expires_in}, grant, name)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    if args.port_file:
        write_atomic(args.port_file, "%d\n" % port)
    print(port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
