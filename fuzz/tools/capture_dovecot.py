# Captures raw bytes of real sessions with the test Dovecot (tests/peers) into
# a folder, for fuzz/tools/make_seeds.py. Usage, from the repo root:
#   tests/peers/start && source tests/peers/run/env
#   python3 fuzz/tools/capture_dovecot.py DIR
import os, socket, ssl, base64, sys
OUT = sys.argv[1] if len(sys.argv) > 1 else "fuzz-raw"
os.makedirs(OUT, exist_ok=True)
host = "127.0.0.1"
ctx = ssl.create_default_context(cafile=os.environ["PEERS_CA"])
ctx.check_hostname = False

def rd(s, until_pred, t=3.0):
    s.settimeout(t)
    buf = b""
    while not until_pred(buf):
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        buf += d
    return buf

def smtp_done(buf):
    lines = buf.split(b"\r\n")
    return len(lines) >= 2 and any(len(l) >= 4 and l[3:4] == b" " for l in lines[:-1])

def save(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)

# ---- SMTP submission with STARTTLS
s = socket.create_connection((host, int(os.environ["DOVECOT_SUBMISSION_PORT"])))
replies = []; cmds = []
def smtp(sock, line):
    if line is not None:
        cmds.append(line); sock.sendall(line)
    r = rd(sock, smtp_done); replies.append(r); return r
smtp(s, None)
smtp(s, b"EHLO client.example\r\n")
smtp(s, b"STARTTLS\r\n")
s = ctx.wrap_socket(s, server_hostname="localhost")
smtp(s, b"EHLO client.example\r\n")
smtp(s, b"AUTH PLAIN " + base64.b64encode(b"\0u30@example.test\0wrong") + b"\r\n")
smtp(s, b"AUTH LOGIN\r\n")
smtp(s, base64.b64encode(b"u30@example.test") + b"\r\n")
smtp(s, base64.b64encode(b"pw-u30") + b"\r\n")
smtp(s, b"MAIL FROM:<u30@example.test> SIZE=300 BODY=8BITMIME\r\n")
smtp(s, b"RCPT TO:<x@example.org>\r\n")
smtp(s, b"RCPT TO:<bad address>\r\n")
smtp(s, b"DATA\r\n")
msg = (b"From: u30@example.test\r\nTo: x@example.org\r\nSubject: fuzz seed\r\n\r\n"
       b"Hello.\r\n..a line that starts with a dot\r\n.\r\n")
smtp(s, msg)
smtp(s, b"NOOP\r\n")
smtp(s, b"VRFY u30\r\n")
smtp(s, b"FOO bar\r\n")
smtp(s, b"RSET\r\n")
smtp(s, b"QUIT\r\n")
s.close()
save("smtp-replies", b"".join(replies))
for i, r in enumerate(replies):
    save("smtp-reply-%02d" % i, r)
save("smtp-commands", b"".join(c for c in cmds if not c.startswith(b"From:")))
save("smtp-data", msg)

# ---- XOAUTH2 failure on submission (implicit TLS)
s = ctx.wrap_socket(socket.create_connection((host, int(os.environ["DOVECOT_SUBMISSIONS_PORT"]))), server_hostname="localhost")
replies = []
smtp(s, None)
smtp(s, b"EHLO client.example\r\n")
xo = b"user=u30@example.test\x01auth=Bearer not-a-valid-token\x01\x01"
r = smtp(s, b"AUTH XOAUTH2 " + base64.b64encode(xo) + b"\r\n")
smtp(s, b"\r\n")
ob = b"n,a=u30@example.test,\x01host=localhost\x01port=465\x01auth=Bearer bad.token\x01\x01"
smtp(s, b"AUTH OAUTHBEARER " + base64.b64encode(ob) + b"\r\n")
smtp(s, b"AQ==\r\n")
smtp(s, b"QUIT\r\n")
s.close()
save("smtp-oauth-replies", b"".join(replies))
save("sasl-xoauth2", xo); save("sasl-oauthbearer", ob)

# ---- IMAP (implicit TLS)
def imap_done_tag(tag):
    return lambda b: (b"\n" + tag + b" ") in (b"\n" + b)
s = ctx.wrap_socket(socket.create_connection((host, int(os.environ["DOVECOT_IMAPS_PORT"]))), server_hostname="localhost")
resp = []; cmds = []
def imap(line, tag):
    cmds.append(line); s.sendall(line)
    r = rd(s, imap_done_tag(tag)); resp.append(r); return r
g = rd(s, lambda b: b.endswith(b"\r\n")); resp.append(g); save("imap-greeting", g)
imap(b"a1 CAPABILITY\r\n", b"a1")
imap(b'a2 ID ("name" "postern-fuzz" "version" "0.1")\r\n', b"a2")
imap(b"a3 NOOP\r\n", b"a3")
# XOAUTH2 with a bad token: error challenge, then the empty answer
s.sendall(b"a4 AUTHENTICATE XOAUTH2 " + base64.b64encode(xo) + b"\r\n"); cmds.append(b"a4 AUTHENTICATE XOAUTH2 " + base64.b64encode(xo) + b"\r\n")
ch = rd(s, lambda b: b.startswith(b"+") and b.endswith(b"\r\n") or b"a4 " in b)
resp.append(ch); save("imap-xoauth2-challenge", ch)
s.sendall(b"\r\n"); cmds.append(b"\r\n")
resp.append(rd(s, imap_done_tag(b"a4")))
# LOGIN with a wrong password, then a literal password
imap(b'a5 LOGIN "u30@example.test" "wrong"\r\n', b"a5")
s.sendall(b"a6 LOGIN u30@example.test {6}\r\n"); cmds.append(b"a6 LOGIN u30@example.test {6}\r\n")
c = rd(s, lambda b: b.endswith(b"\r\n")); resp.append(c)
imap(b"pw-u30\r\n", b"a6")
cmds[-1] = cmds[-2] + cmds[-1]; del cmds[-2]
imap(b"a7 LOGOUT\r\n", b"a7")
s.close()
save("imap-responses", b"".join(resp))
for i, r in enumerate(resp):
    save("imap-resp-%02d" % i, r)
for i, c in enumerate(cmds):
    save("imap-cmd-%02d" % i, c)

# ---- IMAP STARTTLS + AUTHENTICATE PLAIN (no SASL-IR) + LOGIN literal+
s = socket.create_connection((host, int(os.environ["DOVECOT_IMAP_PORT"])))
resp = []
g = rd(s, lambda b: b.endswith(b"\r\n")); resp.append(g); save("imap-greeting-plain", g)
s.sendall(b"s1 STARTTLS\r\n"); resp.append(rd(s, imap_done_tag(b"s1")))
s = ctx.wrap_socket(s, server_hostname="localhost")
s.sendall(b"s2 AUTHENTICATE PLAIN\r\n"); resp.append(rd(s, lambda b: b.endswith(b"\r\n")))
s.sendall(base64.b64encode(b"\0u30@example.test\0pw-u30") + b"\r\n"); resp.append(rd(s, imap_done_tag(b"s2")))
s.sendall(b"s3 LOGOUT\r\n"); resp.append(rd(s, imap_done_tag(b"s3")))
s.close()
save("imap-responses-starttls", b"".join(resp))
