#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/ from real session transcripts
(captured from the test Dovecot by capture_dovecot.py) and a few hand-made edge
cases, with the header bytes each target's input layout needs (see the
`//!` comment of each target and fuzz/src/lib.rs).

Usage, from the repo root:  python3 fuzz/tools/make_seeds.py RAW_DIR
Files are named after what they hold; existing files are overwritten, others
(e.g. minimised finds from long runs) are left alone.
"""
import base64
import glob
import os
import shutil
import sys

RAW = sys.argv[1]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CORPUS = os.path.join(ROOT, "corpus")


def raw(name):
    with open(os.path.join(RAW, name), "rb") as f:
        return f.read()


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def reads(sizes):
    """fuzz::Reads header: count, then each size - 1."""
    assert len(sizes) < 16 and all(1 <= s <= 256 for s in sizes)
    return bytes([len(sizes)] + [s - 1 for s in sizes])


SPLITS = {"whole": [], "bytewise": [1], "odd": [3, 1, 7], "mixed": [2, 5, 64, 1, 13]}

# ---- SMTP -----------------------------------------------------------------
commands = raw("smtp-commands")
put("smtp_command", "dovecot-session", b"\x00" + commands)
for i, line in enumerate(commands.split(b"\r\n")):
    if line:
        put("smtp_command", "dovecot-cmd-%02d" % i, bytes([i % 4]) + line + b"\r\n")
hand_commands = [
    b"EHLO [127.0.0.1]",
    b"EHLO [IPv6:::1] extra words",
    b"HELO client.example",
    b"MAIL FROM:<> SIZE=0",
    b"MAIL FROM:<\"a b\\\"c\"@example.test> BODY=7BIT SMTPUTF8 AUTH=<>",
    b"mail from: <@relay.example,@b.example:u@example.test>",
    b"RCPT TO:<Postmaster@example.test>",
    b"RCPT TO:<j\xc3\xb6ran@ex\xc3\xa4mple.se>",
    b"RCPT TO:<u@[192.0.2.1]> NOTIFY=NEVER",
    b"AUTH PLAIN =",
    b"AUTH LOGIN dTMwQGV4YW1wbGUudGVzdA==",
    b"AUTH XOAUTH2 " + base64.b64encode(raw("sasl-xoauth2")),
    b"STARTTLS",
    b"DATA x",
    b"NOOP\x00",
    b"QUIT \xff",
]
for i, line in enumerate(hand_commands):
    put("smtp_command", "edge-%02d" % i, bytes([i % 4]) + line + b"\r\n")
put("smtp_command", "long-line", b"\x00MAIL FROM:<" + b"a" * 600 + b"@b.c>\r\nNOOP\r\n")
put("smtp_command", "tiny-cap", bytes([2 + 4 * 5]) + b"NOOP\r\nRSET\n")

put("smtp_reply", "dovecot-session", raw("smtp-replies"))
put("smtp_reply", "dovecot-oauth-session", raw("smtp-oauth-replies"))
for name in sorted(glob.glob(os.path.join(RAW, "smtp-reply-*"))):
    put("smtp_reply", "dovecot-" + os.path.basename(name)[len("smtp-"):], raw(os.path.basename(name)))
put("smtp_reply", "bare-lf", b"250-a\n250-b\n250 c\n")
put("smtp_reply", "no-text", b"250\r\n221-\r\n221 \r\n")
put("smtp_reply", "code-mismatch", b"250-a\r\n251 b\r\n")
put("smtp_reply", "gmail-ehlo",
    b"250-smtp.gmail.com at your service, [192.0.2.7]\r\n250-SIZE 35882577\r\n"
    b"250-8BITMIME\r\n250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n")

message = raw("smtp-data")  # ends with CRLF . CRLF
swaks = (b"Date: Thu, 26 Nov 2026 22:33:13 +0000\r\nTo: x@example.org\r\n"
         b"From: u30@example.test\r\nSubject: test\r\n"
         b"X-Mailer: swaks v20201014.0 jetmore.org/john/code/swaks/\r\n\r\n"
         b"This is a test mailing\r\n\r\n\r\n.\r\nQUIT\r\n")
data_cases = {
    "dovecot-message": message,
    "swaks-message-pipelined-quit": swaks,
    "terminator-only": b".\r\n",
    "stuffed-dots": b"..\r\n...x\r\n.\r\n",
    "bare-lf-smuggling": b"a\n.\nb\r\n.\n.\r\nc\r\n.\r\n",
    "bare-cr": b"a\rb\r\n.\rx\r\n.\r\r\n.\r\n",
    "held-back-cr": b"text\r\n.\r",
    "no-end": b"no end of data\r\n.x",
}
for name, payload in data_cases.items():
    for split, sizes in SPLITS.items():
        cap = 64 if split != "odd" else 40  # 64/64: exactly the size; 40: over the cap
        put("smtp_data", "%s-%s" % (name, split), reads(sizes) + bytes([cap]) + payload)

# ---- IMAP -----------------------------------------------------------------
cmds = [raw(os.path.basename(n)) for n in sorted(glob.glob(os.path.join(RAW, "imap-cmd-*")))]
responses = raw("imap-responses")
responses_tls = raw("imap-responses-starttls")
hand_cmds = [
    b'a LOGIN "u30@example.test" {6+}\r\npw-u30\r\n',
    b"a LOGIN {16}\r\nu30@example.test {6}\r\npw-u30\r\n",
    b"a AUTHENTICATE PLAIN =\r\n",
    b"a AUTHENTICATE PLAIN\r\n" + base64.b64encode(b"\0u30@example.test\0pw-u30") + b"\r\n",
    b"a AUTHENTICATE XOAUTH2\r\n*\r\n",
    b"a ID NIL\r\na ID ()\r\n",
    b'a ID ("name" {5}\r\nmutt\xc3\xa9 "x" NIL)\r\n',
    b"a SELECT INBOX\r\n",
    b"a LOGIN u {4294967295}\r\n",
    b"a LOGIN u {99999999999999999999+}\r\n",
    b"a LOGIN u {5-}\r\n",
    b"+tag NOOP\r\n",
]
for i, c in enumerate(cmds):
    put("imap_command", "dovecot-cmd-%02d" % i, c)
put("imap_command", "dovecot-session", b"".join(cmds))
for i, c in enumerate(hand_cmds):
    put("imap_command", "edge-%02d" % i, c)

for name in sorted(glob.glob(os.path.join(RAW, "imap-resp-*"))):
    put("imap_response", "dovecot-" + os.path.basename(name)[len("imap-"):], raw(os.path.basename(name)))
put("imap_response", "dovecot-session", responses)
put("imap_response", "dovecot-starttls-session", responses_tls)
put("imap_response", "dovecot-greeting", raw("imap-greeting"))
put("imap_response", "dovecot-greeting-starttls", raw("imap-greeting-plain"))
put("imap_response", "dovecot-xoauth2-challenge", raw("imap-xoauth2-challenge"))
hand_resp = [
    b"* PREAUTH [CAPABILITY IMAP4rev2] ready\r\n",
    b"* BYE [UNAVAILABLE] going away\r\n",
    b"+\r\n",
    b"* OK\r\n",
    b"* ID NIL\r\n",
    b'* ID ("name" {7}\r\nDovecot)\r\n',
    b"a1 NO [AUTHENTICATIONFAILED] Authentication failed. {5}\r\n",
    b"* CAPABILITY  IMAP4rev1  LITERAL-\r\n",
    b"* 5 EXISTS\r\n",
    b"* OK [x]\r\n",
]
for i, r in enumerate(hand_resp):
    put("imap_response", "edge-%02d" % i, r)

# imap_framing: Reads header, then [mode, max_line, max_literal, max_nonsync, max_frame/4].
PRE_AUTH = bytes([0, 0, 0, 0, 0])
streams = {
    "dovecot-commands": (0, b"".join(cmds)),
    "dovecot-responses": (1, responses),
    "dovecot-starttls-responses": (1, responses_tls),
    "literals": (0, b"".join(hand_cmds)),
    "response-literal": (1, b'* ID ("name" {7}\r\nDovecot)\r\na OK done\r\n'),
}
for name, (mode, stream) in streams.items():
    for split, sizes in SPLITS.items():
        put("imap_framing", "%s-%s" % (name, split), reads(sizes) + bytes([mode]) + PRE_AUTH[1:] + stream)
    # Small limits: 40-byte lines, 16-byte literals, 8-byte LITERAL-, 96-byte frames.
    put("imap_framing", "%s-small" % name, reads([3, 1, 7]) + bytes([mode | 2, 40, 16, 8, 24]) + stream)
put("imap_framing", "overlong-then-nonsync-literal",
    reads([5]) + bytes([2, 16, 16, 16, 64]) + b"a LOGIN " + b"x" * 40 + b" {4+}\r\nabcd\r\nb NOOP\r\n")
put("imap_framing", "overlong-then-sync-literal",
    reads([1]) + bytes([2, 16, 16, 16, 64]) + b"a LOGIN " + b"x" * 40 + b" {4}\r\nb NOOP\r\n")

# ---- SASL -----------------------------------------------------------------
xo = raw("sasl-xoauth2")
ob = raw("sasl-oauthbearer")
plain = b"\0u30@example.test\0pw-u30"
challenge = raw("imap-xoauth2-challenge")[2:].strip()  # "+ base64\r\n"
sasl = {
    "plain": plain,
    "plain-authzid": b"admin\0u30@example.test\0pw-u30",
    "login-user": b"u30@example.test",
    "xoauth2": xo,
    "oauthbearer": ob,
    "oauthbearer-escaped": b"n,a=a=2Cb=3Dc,\x01auth=Bearer abc.def-_~+/==\x01\x01",
    "oauthbearer-nonstd": b"F,y,,\x01host=imap.example.org\x01port=993\x01auth=BEARER  tok\x01\x01",
    "dovecot-xoauth2-error": base64.b64decode(challenge),
    "google-xoauth2-error": b'{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}',
    "rfc7628-error": b'{"status":"invalid_token","scope":"example_scope",'
                     b'"openid-configuration":"https://example.com/.well-known/openid-configuration"}',
    "numeric-status-error": b'{"status":401}',
    "kvsep-ack": b"\x01",
}
for name, value in sasl.items():
    put("sasl", name + "-raw", value)
    put("sasl", name + "-b64", base64.b64encode(value))
put("sasl", "dovecot-xoauth2-challenge", challenge)
put("sasl", "cancel", b"*")
put("sasl", "empty-initial-response", b"=")
put("sasl", "login-prompt", b"VXNlcm5hbWU6")

# ---- config ---------------------------------------------------------------
config_dir = os.path.join(ROOT, "..", "config")
for path in sorted(glob.glob(os.path.join(config_dir, "*.toml")) +
                   glob.glob(os.path.join(config_dir, "examples", "*.toml"))):
    with open(path, "rb") as f:
        put("config", os.path.relpath(path, config_dir).replace(os.sep, "-"), f.read())
put("config", "limits-and-oauth",
    b'data_dir = "var"\nhostname = "gw.example"\nquota_store = "redis://127.0.0.1:6379"\ntrace_header = true\n'
    b'[smtp]\nlisten = "127.0.0.1:2525"\ntls = "starttls"\n'
    b'[tls]\ncert = "c.pem"\nkey = "k.pem"\n'
    b'[limits]\nmax_connections = 500\nidle_timeout = "5m"\ndata_timeout = "10m"\n'
    b'max_message_size = 35000000\nmax_recipients = 100\nmax_bad_commands = 10\n'
    b'auth_failure_delay = "1s"\nauth_backoff_max = "30s"\n'
    b'[users.u]\npassword_hash = "$argon2id$v=19$m=19456,t=2,p=1$jtjte1sjA6VjHO6XRY7TGA$VSF/br51eDECkd7XSn4u+Us04AOeBmtmP3PB0T9dnUA"\n'
    b'send_via = "o"\n'
    b'[accounts.o]\nprovider = "office365"\nemail = "o@example.org"\nauth = "oauth2"\n'
    b'oauth = { client_id = "id", tenant = "common", grant = "device", refresh_margin = "2m" }\n'
    b'daily_limit = 300\nwindow = "calendar-day"\ntime_zone = "Europe/Berlin"\n')
print("corpus written to", os.path.normpath(CORPUS))
