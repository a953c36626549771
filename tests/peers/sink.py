#!/usr/bin/python3
"""SMTP sink for the Postern tests (Dovecot's submission relays into it).

Usage: /usr/bin/python3 sink.py HOST PORT SINK_DIR
(Debian's /usr/bin/python3: that is the one with python3-aiosmtpd.)

Accepts every message and stores it as SINK_DIR/<timestamp>-<counter>.eml with
the exact DATA bytes (CRLF as received, dot-unstuffed), plus a sidecar
SINK_DIR/<timestamp>-<counter>.json = {"mail_from", "rcpt_tos", "peer"}.
The sidecar is in place before the .eml appears (both are written to a
temporary name and renamed), so a reader that sees the .eml finds the sidecar.
Files starting with "." are temporary; ignore them.

Rejecting on demand: a recipient whose local part is `reject-4xx` gets
`450`, `reject-5xx` gets `550` (e.g. reject-5xx@example.org).
"""

import asyncio
import itertools
import json
import os
import signal
import sys
import time

from aiosmtpd.smtp import SMTP


class LenientSMTP(SMTP):
    # "Accept everything": also lines beyond RFC 5321's 1000 octets.
    # (The StreamReader limit is taken from this class attribute.)
    line_length_limit = 1 << 20


class Sink:
    def __init__(self, directory):
        self.dir = directory
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local == "reject-4xx":
            return "450 Sink told to defer this recipient"
        if local == "reject-5xx":
            return "550 Sink told to reject this recipient"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        now = time.time_ns()
        # e.g. 20250101T120000.123456Z-000001: sorts in arrival order.
        base = "%s.%06dZ-%06d" % (
            time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9)), now // 1000 % 10**6, n)
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "peer": list(session.peer) if isinstance(session.peer, tuple) else session.peer,
        }
        self._write(base + ".json", json.dumps(meta).encode())
        self._write(base + ".eml", envelope.original_content)
        return "250 OK queued as %s" % base

    def _write(self, name, data):
        tmp = os.path.join(self.dir, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(self.dir, name))


def main():
    host, port, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(directory, exist_ok=True)
    handler = Sink(directory)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        return LenientSMTP(
            handler,
            hostname="sink.postern.test",
            decode_data=False,
            enable_SMTPUTF8=True,
            data_size_limit=200 * 1024 * 1024,
            loop=loop,
        )

    server = loop.run_until_complete(loop.create_server(factory, host, port, reuse_address=True))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    print("sink listening on %s:%d, storing in %s" % (host, port, directory), flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
