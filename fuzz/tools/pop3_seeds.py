#!/usr/bin/env python3
"""Writes the seed corpus fuzz/corpus/pop3/ from POP3 sessions with the test
Dovecot (tests/peers) plus hand-made edge cases, each with the header the
`pop3` target reads (fuzz/fuzz_targets/pop3.rs: a fuzz::Reads header, then a
cap byte and a total byte, then the bytes). Also writes the raw transcripts to
RAW_DIR (default fuzz-raw-pop3) for a look.

Usage, from the repo root:
    tests/peers/start && source tests/peers/run/env
    python3 fuzz/tools/pop3_seeds.py [RAW_DIR]
    tests/peers/stop
Files are named after what they hold; existing files are overwritten, others
(e.g. minimised finds) are left alone.
"""
import base64
import os
import socket
import ssl
import subprocess
import sys

RAW = sys.argv[1] if len(sys.argv) > 1 else "fuzz-raw-pop3"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CORPUS = os.path.join(ROOT, "corpus", "pop3")
HOST = "127.0.0.1"
PORT = int(os.environ["DOVECOT_POP3_PORT"])
IMAP_PORT = int(os.environ["DOVECOT_IMAP_PORT"])
USER, PW = "u39@example.test", "pw-u39"
TOKEN, BAD_TOKEN, DOWN_TOKEN = "pop3-seed-token", "pop3-seed-bad", "pop3-seed-503"
os.makedirs(RAW, exist_ok=True)
os.makedirs(CORPUS, exist_ok=True)


def token(*args):
    subprocess.run([os.path.join("tests", "peers", "token"), *args], check=True,
                   stdout=subprocess.DEVNULL)


def read_until(s, done, t=3.0):
    s.settimeout(t)
    buf = b""
    while not done(buf):
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        buf += d
    return buf


def one_line(buf):
    return buf.endswith(b"\r\n")


def multi(buf):
    return buf.startswith(b"-ERR") and buf.endswith(b"\r\n") or buf.endswith(b"\r\n.\r\n")


class Session:
    """One POP3 connection; records what each side sent."""

    def __init__(self):
        self.sock = socket.create_connection((HOST, PORT))
        self.client, self.server = b"", b""
        self.server += read_until(self.sock, one_line)

    def cmd(self, line, multiline=False):
        self.client += line
        self.sock.sendall(line)
        r = read_until(self.sock, multi if multiline else one_line)
        self.server += r
        return r

    def starttls(self):
        ctx = ssl.create_default_context(cafile=os.environ["PEERS_CA"])
        ctx.check_hostname = False
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def close(self):
        self.sock.close()


def b64(raw):
    return base64.b64encode(raw)


def xoauth2(tok):
    return b64(b"user=%s\x01auth=Bearer %s\x01\x01" % (USER.encode(), tok.encode()))


# Two messages in the INBOX, over IMAP (POP3 sees the same Maildir).
msgs = [b"From: a@example.test\r\nSubject: one\r\n\r\nhello\r\n.dot line\r\n",
        b"From: b@example.test\r\nSubject: two\r\n\r\n..\r\nbye\r\n"]
imap = socket.create_connection((HOST, IMAP_PORT))
read_until(imap, one_line)
imap.sendall(b'a LOGIN "%s" "%s"\r\n' % (USER.encode(), PW.encode()))
read_until(imap, lambda b: b"a OK" in b or b"a NO" in b)
for i, m in enumerate(msgs):
    imap.sendall(b"b%d APPEND INBOX {%d+}\r\n%s\r\n" % (i, len(m), m))
    read_until(imap, lambda b: b"b%d OK" % i in b)
imap.sendall(b"z LOGOUT\r\n")
imap.close()

token("mint", TOKEN, USER)
token("revoke", BAD_TOKEN)
token("fail", DOWN_TOKEN, "503")

sessions = {}

# USER/PASS in plaintext, then the transaction commands.
s = Session()
s.cmd(b"CAPA\r\n", True)
s.cmd(b"USER %s\r\n" % USER.encode())
s.cmd(b"PASS wrong\r\n")
s.cmd(b"USER %s\r\n" % USER.encode())
s.cmd(b"PASS %s\r\n" % PW.encode())
s.cmd(b"STAT\r\n")
s.cmd(b"LIST\r\n", True)
s.cmd(b"LIST 1\r\n")
s.cmd(b"UIDL\r\n", True)
s.cmd(b"TOP 1 0\r\n", True)
s.cmd(b"RETR 1\r\n", True)
s.cmd(b"RETR 2\r\n", True)
s.cmd(b"RETR 9\r\n")
s.cmd(b"DELE 1\r\n")
s.cmd(b"RSET\r\n")
s.cmd(b"NOOP\r\n")
s.cmd(b"XTND XMIT\r\n")
s.cmd(b"QUIT\r\n")
s.close()
sessions["user-pass"] = s

# STLS, then CAPA again (no STLS in it) and AUTH PLAIN with an initial response.
s = Session()
s.cmd(b"STLS\r\n")
s.starttls()
s.cmd(b"CAPA\r\n", True)
s.cmd(b"AUTH PLAIN %s\r\n" % b64(b"\0%s\0%s" % (USER.encode(), PW.encode())))
s.cmd(b"QUIT\r\n")
s.close()
sessions["stls-auth-plain"] = s

# AUTH in its other forms.
s = Session()
s.cmd(b"AUTH\r\n", True)
s.cmd(b"AUTH PLAIN\r\n")
s.cmd(b"*\r\n")
s.cmd(b"AUTH PLAIN\r\n")
s.cmd(b"%s\r\n" % b64(b"\0%s\0wrong" % USER.encode()))
s.cmd(b"AUTH XOAUTH2 %s\r\n" % xoauth2(BAD_TOKEN))
s.cmd(b"\r\n")
s.cmd(b"AUTH XOAUTH2 %s\r\n" % xoauth2(DOWN_TOKEN))
s.cmd(b"APOP %s c4c9334bac560ecc979e58001b3e22fb\r\n" % USER.encode())
s.cmd(b"AUTH XOAUTH2\r\n")
s.cmd(b"%s\r\n" % xoauth2(TOKEN))
s.cmd(b"STAT\r\n")
s.cmd(b"QUIT\r\n")
s.close()
sessions["auth-forms"] = s

for t in (TOKEN, BAD_TOKEN, DOWN_TOKEN):
    token("delete", t)

for name, s in sessions.items():
    with open(os.path.join(RAW, name + "-client"), "wb") as f:
        f.write(s.client)
    with open(os.path.join(RAW, name + "-server"), "wb") as f:
        f.write(s.server)


def reads(sizes):
    """fuzz::Reads header: count, then each size - 1."""
    assert len(sizes) < 16 and all(1 <= x <= 256 for x in sizes)
    return bytes([len(sizes)] + [x - 1 for x in sizes])


def put(name, data):
    with open(os.path.join(CORPUS, name), "wb") as f:
        f.write(data)


# Cap byte: pick % 4 = 0 MAX_COMMAND, 1 MAX_AUTH_LINE, 2 tiny (pick / 4), 3 512.
# Total byte: take_multiline's max_total = 16 * byte (0: 64 KiB).
SPLITS = {"whole": [], "bytewise": [1], "odd": [3, 1, 7], "mixed": [2, 5, 64, 1, 13]}
for name, s in sessions.items():
    for split, sizes in SPLITS.items():
        put("dovecot-%s-client-%s" % (name, split), reads(sizes) + b"\x00\x00" + s.client)
        put("dovecot-%s-server-%s" % (name, split), reads(sizes) + b"\x03\x00" + s.server)
lines = []
for s in sessions.values():
    lines += s.client.split(b"\r\n")[:-1] + s.server.split(b"\r\n")[:-1]
seen = set()
for i, line in enumerate(lines):
    if line in seen or line.startswith((b"From:", b"Subject:")):
        continue
    seen.add(line)
    put("dovecot-line-%02d" % len(seen), bytes([0, i % 4, 0]) + line + b"\r\n")

hand = {
    "ms-xoauth2": b"AUTH XOAUTH2\r\n" + xoauth2("ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg") + b"\r\n",
    "ms-plus-alone": b"+\r\n+OK User successfully authenticated.\r\n",
    "in-use": b"-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n",
    "login-delay": b"-ERR [LOGIN-DELAY] Minimum time between logins is 900 seconds\r\n",
    "sys-perm": b"-ERR [SYS/PERM] Mailbox is corrupt\r\n-ERR [sys/temp] x\r\n",
    "not-codes": b"-ERR [] x\r\n-ERR [A B] x\r\n-ERR [SYS/] x\r\n-ERR [AUTH\r\n+OK [X]y\r\n",
    "apop-greeting": b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n",
    "capa-gmail": b"+OK Capability list follows\r\nUSER\r\nRESP-CODES\r\nEXPIRE 0\r\n"
                  b"LOGIN-DELAY 300\r\nTOP\r\nUIDL\r\nX-GOOGLE-RICO\r\n"
                  b"SASL PLAIN XOAUTH2 OAUTHBEARER\r\n.\r\n",
    "stuffed": b"+OK\r\n..\r\n...x\r\n.y\r\n. \r\n.\r\n+OK next\r\n",
    "bare-lf": b"+OK\nTOP\nSASL PLAIN\n.\nQUIT\n",
    "bare-cr": b"STAT\rRETR 1\r\n+OK a\rb\r\n",
    "nul-and-8bit": b"USER a\x00b\r\nPASS caf\xe9\r\n-ERR caf\xe9\r\n",
    "pass-spaces": b"PASS  two words \r\nUSER  a b \r\nAPOP a  b  c \r\n",
    "auth-empty": b"AUTH PLAIN =\r\nAUTH  LOGIN  x \r\n=\r\n*\r\n",
    "no-keyword": b"\r\n \r\n STAT\r\nuser\r\npass\r\n",
}
for i, (name, data) in enumerate(hand.items()):
    put("edge-" + name, bytes([0, i % 4, 0]) + data)
put("long-line", b"\x00\x00\x00PASS " + b"p" * 600 + b"\r\nNOOP\r\n")
put("long-auth", b"\x00\x01\x00AUTH XOAUTH2 " + b"A" * 9000 + b"\r\nNOOP\r\n")
put("tiny-cap", bytes([0, 2 + 4 * 5, 0]) + b"NOOP\r\nRSETX\r\n+OK\r\n")
put("tiny-total", bytes([0, 1, 2]) + b"+OK\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n")
print("wrote %d seeds to %s" % (len(os.listdir(CORPUS)), CORPUS))
