//! One connection to the fake server: the ESMTP dialogue as the script says.

use super::*;

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    Gone,
}

impl Stream {
    pub(super) fn sock(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(t) => Some(&t.sock),
            Stream::Gone => None,
        }
    }
}

pub(super) fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection gone")
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
            Stream::Gone => Err(gone()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
            Stream::Gone => Err(gone()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
            Stream::Gone => Err(gone()),
        }
    }
}

pub(super) enum Flow {
    Continue,
    Close,
}

pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) id: usize,
    pub(super) stream: Stream,
    /// Bytes read but not consumed yet.
    pub(super) buf: Vec<u8>,
    pub(super) tls_active: bool,
    pub(super) authed: bool,
    pub(super) mail_from: Option<String>,
    pub(super) rcpts: Vec<String>,
    /// BDAT chunks of the message in progress.
    pub(super) chunks: Vec<u8>,
}

pub(super) fn bad_data(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Lines of a reply, expanded to two lines when `multiline` (see `Script`).
pub(super) fn reply_lines(reply: &str, multiline: bool) -> Vec<String> {
    if reply.contains('\n') {
        return reply
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.is_empty())
            .collect();
    }
    let b = reply.as_bytes();
    let coded = b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ';
    if !(multiline && coded) {
        return vec![reply.to_string()];
    }
    let (code, text) = (&reply[..3], &reply[4..]);
    let enh = text
        .split_whitespace()
        .next()
        .filter(|w| w.split('.').count() == 3 && w.split('.').all(|p| p.parse::<u16>().is_ok()));
    let last = match enh {
        Some(e) => format!("{code} {e} (end of multi-line reply)"),
        None => format!("{code} (end of multi-line reply)"),
    };
    vec![format!("{code}-{text}"), last]
}

/// Parses the address of "FROM:<a@b> ..." / "TO:<a@b> ...".
pub(super) fn parse_path(rest: &str, prefix: &str) -> Option<String> {
    let head = rest.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let arg = rest[prefix.len()..].trim_start();
    if let Some(inner) = arg.strip_prefix('<') {
        let end = inner.find('>')?;
        Some(inner[..end].to_string())
    } else {
        let addr = arg.split_whitespace().next()?;
        Some(addr.to_string())
    }
}

/// Removes one leading dot from every line of `data` (CRLF-separated).
pub(super) fn unstuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut at_line_start = true;
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if !(at_line_start && b == b'.') {
            out.push(b);
        }
        at_line_start = b == b'\n' && i > 0 && data[i - 1] == b'\r';
        i += 1;
    }
    out
}

pub(super) fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The (user, token) of an XOAUTH2 or OAUTHBEARER initial response.
pub(super) fn parse_bearer(mech: &str, decoded: &str) -> Option<(String, String)> {
    let mut fields = decoded.split('\x01');
    let user = if mech == "XOAUTH2" {
        fields.next()?.strip_prefix("user=")?.to_string()
    } else {
        // gs2 header: "n,a=user," (or "y,..."), then key=value pairs.
        let gs2 = fields.next()?;
        let mut parts = gs2.split(',');
        let flag = parts.next()?;
        if !matches!(flag, "n" | "y") && !flag.starts_with("p=") {
            return None;
        }
        parts
            .next()
            .and_then(|a| a.strip_prefix("a="))
            .unwrap_or("")
            .to_string()
    };
    let auth = fields.find_map(|f| f.strip_prefix("auth="))?;
    let (scheme, token) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Bearer") || token.is_empty() {
        return None;
    }
    Some((user, token.to_string()))
}

impl Session {
    pub(super) fn close(&mut self) {
        if let Some(s) = self.stream.sock() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.stream = Stream::Gone;
    }

    /// Reads more bytes into `buf`; Ok(false) on EOF.
    pub(super) fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// One line without its line ending; None on EOF.
    pub(super) fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut scanned = 0;
        loop {
            if let Some(i) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=scanned + i).collect();
                let mut line = &line[..line.len() - 1];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                return Ok(Some(String::from_utf8_lossy(line).into_owned()));
            }
            scanned = self.buf.len();
            if scanned > MAX_COMMAND {
                let _ = self.send_raw("500 5.5.2 Line too long");
                return Err(bad_data("line too long"));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Reads an AUTH continuation line, logging it; None on EOF.
    pub(super) fn read_continuation(&mut self) -> io::Result<Option<String>> {
        let line = self.read_line()?;
        if let Some(l) = &line {
            self.shared.log(self.id, l);
        }
        Ok(line)
    }

    pub(super) fn write_lines(&mut self, lines: &[String], split: bool) -> io::Result<()> {
        if split && lines.len() > 1 {
            for l in lines {
                self.stream.write_all(format!("{l}\r\n").as_bytes())?;
                self.stream.flush()?;
                std::thread::sleep(Duration::from_millis(5));
            }
            return Ok(());
        }
        let mut out = String::new();
        for l in lines {
            out.push_str(l);
            out.push_str("\r\n");
        }
        self.stream.write_all(out.as_bytes())?;
        self.stream.flush()
    }

    /// Sends a fixed single reply line.
    pub(super) fn send_raw(&mut self, line: &str) -> io::Result<()> {
        self.write_lines(&[line.to_string()], false)
    }

    /// Sends a scripted reply, multi-line if the script says so.
    pub(super) fn reply(&mut self, reply: &str, script: &Script) -> io::Result<()> {
        let lines = reply_lines(reply, script.replies_multiline);
        self.write_lines(&lines, script.replies_multiline)
    }

    pub(super) fn start_tls(&mut self, script: &Script) -> io::Result<()> {
        let config = self
            .shared
            .server_config(&script.cert_names)
            .map_err(|e| bad_data(&e))?;
        let Stream::Plain(sock) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(bad_data("not a plaintext stream"));
        };
        let conn = ServerConnection::new(config).map_err(|e| bad_data(&e.to_string()))?;
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            let (r, w) = tls.conn.complete_io(&mut tls.sock)?;
            if r == 0 && w == 0 && tls.conn.is_handshaking() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.stream = Stream::Tls(Box::new(tls));
        self.tls_active = true;
        Ok(())
    }

    pub(super) fn run(&mut self) -> io::Result<()> {
        let script = self.shared.script();
        if script.tls == Tls::Implicit {
            self.start_tls(&script)?;
        }
        let Some(greeting) = script.greeting.clone() else {
            // Say nothing; swallow whatever comes until EOF/timeout/drop.
            while self.fill()? {
                self.buf.clear();
            }
            return Ok(());
        };
        self.reply(&greeting, &script)?;
        let serving = greeting.starts_with('2');
        loop {
            let Some(line) = self.read_line()? else {
                return Ok(());
            };
            self.shared.log(self.id, &line);
            let script = self.shared.script();
            match self.command(&line, &script, serving)? {
                Flow::Continue => {}
                Flow::Close => return Ok(()),
            }
        }
    }

    pub(super) fn reset_envelope(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
        self.chunks.clear();
    }

    pub(super) fn command(
        &mut self,
        line: &str,
        script: &Script,
        serving: bool,
    ) -> io::Result<Flow> {
        let (verb, rest) = match line.split_once(' ') {
            Some((v, r)) => (v.to_ascii_uppercase(), r.trim()),
            None => (line.trim().to_ascii_uppercase(), ""),
        };
        if verb == "QUIT" {
            self.send_raw("221 2.0.0 closing connection")?;
            if let Stream::Tls(t) = &mut self.stream {
                t.conn.send_close_notify();
                let _ = t.flush();
            }
            return Ok(Flow::Close);
        }
        if !serving {
            self.send_raw("503 5.5.1 No service")?;
            return Ok(Flow::Continue);
        }
        let needs_starttls = script.tls == Tls::Starttls && !self.tls_active;
        match verb.as_str() {
            "EHLO" => {
                self.reset_envelope();
                let mut lines = vec![format!("{SERVER_NAME} Hello {rest}")];
                lines.extend(script.ehlo_extensions.iter().cloned());
                if needs_starttls {
                    lines.push("STARTTLS".into());
                }
                let n = lines.len();
                let lines: Vec<String> = lines
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i + 1 == n { ' ' } else { '-' }))
                    .collect();
                self.write_lines(&lines, script.replies_multiline)?;
            }
            "HELO" => {
                self.reset_envelope();
                self.send_raw(&format!("250 {SERVER_NAME}"))?;
            }
            "STARTTLS" => {
                if self.tls_active {
                    self.send_raw("503 5.5.1 TLS already active")?;
                } else if script.tls != Tls::Starttls {
                    self.send_raw("502 5.5.1 STARTTLS not supported")?;
                } else if !rest.is_empty() {
                    self.send_raw("501 5.5.4 Syntax error (no parameters allowed)")?;
                } else {
                    self.send_raw("220 2.0.0 Ready to start TLS")?;
                    // Anything pipelined after STARTTLS in plaintext is discarded.
                    self.buf.clear();
                    self.start_tls(script)?;
                    self.authed = false;
                    self.reset_envelope();
                }
            }
            "AUTH" => return self.auth(rest, script, needs_starttls),
            "MAIL" => {
                if needs_starttls {
                    self.send_raw("530 5.7.0 Must issue a STARTTLS command first")?;
                } else if script.auth_mechanisms().is_some() && !self.authed {
                    self.send_raw("530 5.7.0 Authentication Required")?;
                } else if self.mail_from.is_some() {
                    self.send_raw("503 5.5.1 Nested MAIL command")?;
                } else if let Some(from) = parse_path(rest, "FROM:") {
                    self.reply(&script.mail_reply, script)?;
                    if script.mail_reply.starts_with('2') {
                        self.mail_from = Some(from);
                        self.rcpts.clear();
                    }
                } else {
                    self.send_raw("501 5.5.4 Syntax error in MAIL command")?;
                }
            }
            "RCPT" => {
                if self.mail_from.is_none() {
                    self.send_raw("503 5.5.1 MAIL first")?;
                } else if let Some(to) = parse_path(rest, "TO:") {
                    let reply = script
                        .rcpt_replies
                        .iter()
                        .find(|(pat, _)| to.contains(pat.as_str()))
                        .map(|(_, r)| r.clone())
                        .unwrap_or_else(|| "250 2.1.5 OK".into());
                    self.reply(&reply, script)?;
                    if reply.starts_with('2') {
                        self.rcpts.push(to);
                    }
                } else {
                    self.send_raw("501 5.5.4 Syntax error in RCPT command")?;
                }
            }
            "DATA" => {
                if self.mail_from.is_none() {
                    self.send_raw("503 5.5.1 MAIL first")?;
                } else if self.rcpts.is_empty() {
                    self.send_raw("503 5.5.1 RCPT first")?;
                } else if !script.data_reply.starts_with('3') {
                    self.reply(&script.data_reply, script)?;
                    self.reset_envelope();
                } else {
                    self.send_raw(&script.data_reply)?;
                    return self.data(script);
                }
            }
            "BDAT" if script.ehlo_extensions.iter().any(|e| e == "CHUNKING") => {
                return self.bdat(rest, script);
            }
            "RSET" => {
                self.reset_envelope();
                self.send_raw("250 2.0.0 OK")?;
            }
            "NOOP" => self.send_raw("250 2.0.0 OK")?,
            _ => self.send_raw("500 5.5.1 Unrecognized command")?,
        }
        Ok(Flow::Continue)
    }

    /// `BDAT n [LAST]` (RFC 3030): reads exactly n bytes; the last chunk
    /// ends the message (recorded as DATA would, without a final CRLF).
    pub(super) fn bdat(&mut self, rest: &str, script: &Script) -> io::Result<Flow> {
        let mut words = rest.split_whitespace();
        let size = words.next().and_then(|n| n.parse::<usize>().ok());
        let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
        let Some(size) = size.filter(|&n| n <= MAX_MESSAGE) else {
            self.send_raw("501 5.5.4 Syntax: BDAT size [LAST]")?;
            return Ok(Flow::Close);
        };
        if let Some(limit) = script.drop_after_data_bytes {
            if self.chunks.len() + size > limit {
                return Ok(Flow::Close);
            }
        }
        while self.buf.len() < size {
            if !self.fill()? {
                return Ok(Flow::Close);
            }
        }
        let rest_of_input = self.buf.split_off(size);
        let chunk = std::mem::replace(&mut self.buf, rest_of_input);
        self.chunks.extend_from_slice(&chunk);
        if self.mail_from.is_none() || self.rcpts.is_empty() {
            self.chunks.clear();
            self.send_raw("503 5.5.1 MAIL and RCPT first")?;
            return Ok(Flow::Continue);
        }
        if !last {
            self.send_raw(&format!("250 2.0.0 {size} octets received"))?;
            return Ok(Flow::Continue);
        }
        let mut data = std::mem::take(&mut self.chunks);
        if data.ends_with(b"\r\n") {
            data.truncate(data.len() - 2);
        }
        self.end_message(data, script)?;
        Ok(Flow::Continue)
    }

    /// The whole message is in: record it (when the end reply is 2xx, before
    /// the reply goes out, so a client that saw the 2xx always finds it in
    /// `messages()`), then reply.
    pub(super) fn end_message(&mut self, data: Vec<u8>, script: &Script) -> io::Result<()> {
        if script.freeze_after_data {
            if let Some(mail_from) = self.mail_from.take() {
                lock(&self.shared.messages).push(Received {
                    mail_from,
                    rcpts: std::mem::take(&mut self.rcpts),
                    data,
                });
            }
            // Silence until the client gives up (EOF) or IO_TIMEOUT passes.
            let mut sink = [0u8; 1024];
            while self.stream.read(&mut sink)? > 0 {}
            return Err(bad_data("frozen after the message"));
        }
        if script.end_reply.starts_with('2') {
            if let Some(mail_from) = self.mail_from.take() {
                lock(&self.shared.messages).push(Received {
                    mail_from,
                    rcpts: std::mem::take(&mut self.rcpts),
                    data,
                });
            }
        }
        self.reset_envelope();
        if let Some(d) = script.end_reply_delay {
            std::thread::sleep(d);
        }
        self.reply(&script.end_reply, script)
    }

    /// Reads the message after the 354.
    pub(super) fn data(&mut self, script: &Script) -> io::Result<Flow> {
        let mut raw = std::mem::take(&mut self.buf);
        let mut searched = 0;
        loop {
            if let Some(limit) = script.drop_after_data_bytes {
                if raw.len() >= limit {
                    return Ok(Flow::Close);
                }
            }
            let end = if raw.starts_with(b".\r\n") {
                Some((0, 3))
            } else {
                find(&raw, b"\r\n.\r\n", searched).map(|p| (p, p + 5))
            };
            if let Some((body_end, term_end)) = end {
                self.buf = raw.split_off(term_end);
                self.end_message(unstuff(&raw[..body_end]), script)?;
                return Ok(Flow::Continue);
            }
            if raw.len() > MAX_MESSAGE {
                self.send_raw("552 5.3.4 Message too big")?;
                return Ok(Flow::Close);
            }
            searched = raw.len().saturating_sub(4);
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(Flow::Close);
            }
            raw.extend_from_slice(&chunk[..n]);
        }
    }

    /// The initial response, or a 334 with `challenge` and the client's answer.
    /// Ok(None): EOF.
    pub(super) fn auth_response(
        &mut self,
        ir: Option<&str>,
        challenge: &str,
    ) -> io::Result<Option<String>> {
        match ir {
            Some(ir) => Ok(Some(ir.to_string())),
            None => {
                self.send_raw(&format!("334 {challenge}"))?;
                self.read_continuation()
            }
        }
    }

    pub(super) fn auth(
        &mut self,
        rest: &str,
        script: &Script,
        needs_starttls: bool,
    ) -> io::Result<Flow> {
        self.shared.auth_attempts.fetch_add(1, Ordering::SeqCst);
        let mut words = rest.split_whitespace();
        let mech = words.next().unwrap_or("").to_ascii_uppercase();
        let ir = words.next();
        let Some(mechs) = script.auth_mechanisms() else {
            self.send_raw("502 5.5.1 AUTH not available")?;
            return Ok(Flow::Continue);
        };
        if needs_starttls {
            self.send_raw("530 5.7.0 Must issue a STARTTLS command first")?;
            return Ok(Flow::Continue);
        }
        if self.authed {
            self.send_raw("503 5.5.1 Already authenticated")?;
            return Ok(Flow::Continue);
        }
        if self.mail_from.is_some() {
            self.send_raw("503 5.5.1 MAIL transaction in progress")?;
            return Ok(Flow::Continue);
        }
        if !mechs.contains(&mech) {
            self.send_raw("504 5.5.4 Unrecognized authentication type")?;
            return Ok(Flow::Continue);
        }
        let decode = |s: &str| -> Option<String> {
            if s == "=" {
                return Some(String::new());
            }
            B64.decode(s.trim())
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let aborted = "501 5.7.0 Authentication aborted";
        let undecodable = "501 5.5.2 Cannot decode response";
        match mech.as_str() {
            "PLAIN" | "LOGIN" => {
                let creds = if mech == "PLAIN" {
                    let Some(resp) = self.auth_response(ir, "")? else {
                        return Ok(Flow::Close);
                    };
                    if resp == "*" {
                        self.send_raw(aborted)?;
                        return Ok(Flow::Continue);
                    }
                    decode(&resp).and_then(|d| {
                        let mut p = d.split('\0');
                        let (_authz, user, pass) = (p.next()?, p.next()?, p.next()?);
                        Some((user.to_string(), pass.to_string()))
                    })
                } else {
                    let Some(u) = self.auth_response(ir, "VXNlcm5hbWU6")? else {
                        return Ok(Flow::Close);
                    };
                    if u == "*" {
                        self.send_raw(aborted)?;
                        return Ok(Flow::Continue);
                    }
                    let Some(p) = self.auth_response(None, "UGFzc3dvcmQ6")? else {
                        return Ok(Flow::Close);
                    };
                    if p == "*" {
                        self.send_raw(aborted)?;
                        return Ok(Flow::Continue);
                    }
                    decode(&u).zip(decode(&p))
                };
                let Some((user, pass)) = creds else {
                    self.send_raw(undecodable)?;
                    return Ok(Flow::Continue);
                };
                self.record_auth(&mech, user, pass);
                match &script.auth {
                    Auth::Accept | Auth::AcceptToken(_) => self.accept_auth()?,
                    Auth::Reject(line) => self.reply(line, script)?,
                    Auth::BearerChallenge => self.reply(BEARER_FAILED, script)?,
                }
            }
            _ => {
                // XOAUTH2 / OAUTHBEARER
                let Some(resp) = self.auth_response(ir, "")? else {
                    return Ok(Flow::Close);
                };
                if resp == "*" {
                    self.send_raw(aborted)?;
                    return Ok(Flow::Continue);
                }
                let Some((user, token)) = decode(&resp).and_then(|d| parse_bearer(&mech, &d))
                else {
                    self.send_raw(&format!("501 5.5.2 Malformed {mech} response"))?;
                    return Ok(Flow::Continue);
                };
                self.record_auth(&mech, user, token.clone());
                let ok = match &script.auth {
                    Auth::Accept => true,
                    Auth::Reject(line) => {
                        self.reply(line, script)?;
                        return Ok(Flow::Continue);
                    }
                    Auth::BearerChallenge => false,
                    Auth::AcceptToken(t) => *t == token,
                };
                if ok {
                    self.accept_auth()?;
                    return Ok(Flow::Continue);
                }
                self.send_raw(&format!("334 {}", B64.encode(BEARER_CHALLENGE_JSON)))?;
                let Some(answer) = self.read_continuation()? else {
                    return Ok(Flow::Close);
                };
                let expected = if mech == "XOAUTH2" { "" } else { "AQ==" };
                if answer == expected {
                    self.reply(BEARER_FAILED, script)?;
                } else if answer == "*" {
                    self.send_raw(aborted)?;
                } else {
                    self.send_raw("501 5.5.2 Unexpected response to the 334 challenge")?;
                }
            }
        }
        Ok(Flow::Continue)
    }

    pub(super) fn record_auth(&self, mechanism: &str, user: String, secret: String) {
        let mechanism = mechanism.to_string();
        lock(&self.shared.auths).push(AuthRecord {
            mechanism,
            user,
            secret,
        });
    }

    pub(super) fn accept_auth(&mut self) -> io::Result<()> {
        let now_authed = self.shared.authed.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((max, line)) = self.shared.script().max_sessions {
            if now_authed > max {
                self.shared.authed.fetch_sub(1, Ordering::SeqCst);
                self.send_raw(&line)?;
                return Err(bad_data("too many sessions"));
            }
        }
        self.authed = true;
        self.send_raw("235 2.7.0 Accepted")
    }
}
