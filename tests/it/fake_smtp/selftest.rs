//! Self-tests of the fake server, with a tiny blocking SMTP client.

use super::*;

enum ClientStream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<rustls::ClientConnection, TcpStream>>),
    Gone,
}

/// Minimal blocking SMTP client for the self-tests.
struct Client {
    stream: ClientStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream: ClientStream::Plain(sock),
            buf: Vec::new(),
        }
    }

    fn connect_tls(addr: SocketAddr, pki: &TestPki, name: &str) -> io::Result<Client> {
        let mut c = Client::connect(addr);
        c.upgrade(pki, name)?;
        Ok(c)
    }

    fn upgrade(&mut self, pki: &TestPki, name: &str) -> io::Result<()> {
        let ClientStream::Plain(sock) = std::mem::replace(&mut self.stream, ClientStream::Gone)
        else {
            panic!("already TLS");
        };
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        self.stream = ClientStream::Tls(Box::new(tls));
        Ok(())
    }

    fn io(&mut self) -> &mut dyn ReadWrite {
        match &mut self.stream {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(t) => t.as_mut(),
            ClientStream::Gone => panic!("gone"),
        }
    }

    fn send(&mut self, raw: &str) {
        let io = self.io();
        io.write_all(raw.as_bytes()).unwrap();
        io.flush().unwrap();
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(String::from_utf8(line[..i].to_vec()).unwrap());
            }
            let mut chunk = [0u8; 4096];
            let n = self.io().read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// (code, text of each line)
    fn try_reply(&mut self) -> io::Result<(u16, Vec<String>)> {
        let mut texts = Vec::new();
        loop {
            let line = self.read_line()?;
            let code: u16 = line[..3].parse().unwrap();
            texts.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, texts));
            }
        }
    }

    fn reply(&mut self) -> (u16, Vec<String>) {
        self.try_reply().unwrap()
    }

    fn cmd(&mut self, line: &str) -> (u16, Vec<String>) {
        self.send(&format!("{line}\r\n"));
        self.reply()
    }

    fn code(&mut self, line: &str) -> u16 {
        self.cmd(line).0
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn b64(s: &str) -> String {
    B64.encode(s)
}

#[test]
fn fake_smtp_plaintext_auth_plain_and_dot_stuffed_message() {
    let pki = TestPki::new();
    let fake = FakeSmtp::start(Script::default(), &pki);
    let mut c = Client::connect(fake.addr);
    assert_eq!(c.reply(), (220, vec!["fake.test ESMTP".to_string()]));
    let (code, ehlo) = c.cmd("EHLO client.test");
    assert_eq!(code, 250);
    assert!(ehlo.contains(&"AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER".to_string()));
    assert!(!ehlo.contains(&"STARTTLS".to_string()));
    assert_eq!(c.code("MAIL FROM:<a@example.com>"), 530);
    assert_eq!(
        c.code(&format!("AUTH PLAIN {}", b64("\0user@example.com\0secret"))),
        235
    );
    assert_eq!(c.code("MAIL FROM:<a@example.com> BODY=8BITMIME"), 250);
    assert_eq!(c.code("RCPT TO:<b@example.com>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send("Subject: hi\r\n\r\n..leading dot\r\n..\r\nbody\r\n.\r\n");
    assert_eq!(c.reply().0, 250);
    assert_eq!(c.code("NOOP"), 250);
    assert_eq!(c.code("FROB"), 500);
    assert_eq!(c.code("QUIT"), 221);

    assert_eq!(
        fake.messages(),
        vec![Received {
            mail_from: "a@example.com".into(),
            rcpts: vec!["b@example.com".into()],
            data: b"Subject: hi\r\n\r\n.leading dot\r\n.\r\nbody".to_vec(),
        }]
    );
    let t = fake.transcript();
    assert_eq!(t[0], "c1 EHLO client.test");
    assert!(t.contains(&"c1 MAIL FROM:<a@example.com> BODY=8BITMIME".to_string()));
    assert!(t.contains(&"c1 DATA".to_string()));
    assert!(!t
        .iter()
        .any(|l| l.contains("Subject") || l.contains("body")));
    assert_eq!(t.last().unwrap(), "c1 QUIT");
    assert_eq!(fake.connections(), 1);
    assert_eq!(fake.auth_attempts(), 1);
    assert_eq!(fake.auths()[0].user, "user@example.com");
    assert_eq!(fake.auths()[0].secret, "secret");
}

#[test]
fn fake_smtp_rcpt_rejection_and_failed_end_reply() {
    let pki = TestPki::new();
    let script = Script {
        rcpt_replies: vec![("nobody".into(), "550 5.1.1 No such user".into())],
        ..Script::default()
    };
    let fake = FakeSmtp::start(script.clone(), &pki);
    let mut c = Client::connect(fake.addr);
    c.reply();
    c.cmd("EHLO x");
    // AUTH LOGIN with continuations.
    assert_eq!(c.cmd("AUTH LOGIN"), (334, vec!["VXNlcm5hbWU6".to_string()]));
    assert_eq!(c.cmd(&b64("u")).0, 334);
    assert_eq!(c.code(&b64("p")), 235);
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(
        c.cmd("RCPT TO:<nobody@x.test>"),
        (550, vec!["5.1.1 No such user".to_string()])
    );
    assert_eq!(c.code("RCPT TO:<somebody@x.test>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send("one\r\n.\r\n");
    assert_eq!(c.reply().0, 250);
    assert_eq!(
        fake.messages()[0].rcpts,
        vec!["somebody@x.test".to_string()]
    );
    assert_eq!(fake.messages()[0].data, b"one");

    // Switch mid-test to a quota failure at end of data: not recorded.
    fake.set_script(Script {
        end_reply: "452 4.2.2 Mailbox full".into(),
        ..script
    });
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(c.code("RCPT TO:<somebody@x.test>"), 250);
    assert_eq!(c.code("RSET"), 250);
    assert_eq!(c.code("DATA"), 503);
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(c.code("RCPT TO:<somebody@x.test>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send("two\r\n.\r\nQUIT\r\n"); // pipelined QUIT after the data
    assert_eq!(c.reply().0, 452);
    assert_eq!(c.reply().0, 221);
    assert_eq!(fake.messages().len(), 1);
}

#[test]
fn fake_smtp_bearer_challenge_dance() {
    let pki = TestPki::new();
    let fake = FakeSmtp::start(
        Script {
            auth: Auth::BearerChallenge,
            ..Script::default()
        },
        &pki,
    );
    let mut c = Client::connect(fake.addr);
    c.reply();
    c.cmd("EHLO x");
    let ir = b64("user=me@gmail.com\x01auth=Bearer ya29.tok\x01\x01");
    let (code, text) = c.cmd(&format!("AUTH XOAUTH2 {ir}"));
    assert_eq!(code, 334);
    assert_eq!(
        B64.decode(&text[0]).unwrap(),
        BEARER_CHALLENGE_JSON.as_bytes()
    );
    assert_eq!(
        c.cmd(""),
        (
            535,
            vec!["5.7.8 Username and Password not accepted".to_string()]
        )
    );
    assert_eq!(c.code("MAIL FROM:<me@gmail.com>"), 530);
    assert_eq!(fake.auth_attempts(), 1);
    assert_eq!(
        fake.auths(),
        vec![AuthRecord {
            mechanism: "XOAUTH2".into(),
            user: "me@gmail.com".into(),
            secret: "ya29.tok".into()
        }]
    );
    assert_eq!(fake.transcript()[2], "c1 "); // the empty answer to the challenge

    // AcceptToken with OAUTHBEARER: a wrong token gets the dance, the right one 235.
    fake.set_script(Script {
        auth: Auth::AcceptToken("good".into()),
        ..Script::default()
    });
    let bad = b64("n,a=me@gmail.com,\x01host=127.0.0.1\x01port=587\x01auth=Bearer bad\x01\x01");
    assert_eq!(c.code(&format!("AUTH OAUTHBEARER {bad}")), 334);
    assert_eq!(c.code("AQ=="), 535);
    assert_eq!(c.code("AUTH OAUTHBEARER"), 334); // no initial response
    let good = b64("n,a=me@gmail.com,\x01host=127.0.0.1\x01port=587\x01auth=Bearer good\x01\x01");
    assert_eq!(c.code(&good), 235);
    assert_eq!(c.code("MAIL FROM:<me@gmail.com>"), 250);
    assert_eq!(fake.auth_attempts(), 3);
}

#[test]
fn fake_smtp_starttls_not_offered() {
    let pki = TestPki::new();
    let fake = FakeSmtp::start(
        Script {
            tls: Tls::StarttlsNotOffered,
            ..Script::default()
        },
        &pki,
    );
    let mut c = Client::connect(fake.addr);
    c.reply();
    let (_, ehlo) = c.cmd("EHLO x");
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")));
    assert_eq!(c.code("STARTTLS"), 502);
    assert_eq!(c.code("QUIT"), 221);
}

#[test]
fn fake_smtp_starttls_discards_pipelined_plaintext() {
    let pki = TestPki::new();
    let fake = FakeSmtp::start(
        Script {
            tls: Tls::Starttls,
            ..Script::default()
        },
        &pki,
    );
    let mut c = Client::connect(fake.addr);
    c.reply();
    let (_, ehlo) = c.cmd("EHLO x");
    assert_eq!(ehlo.last().unwrap(), "STARTTLS");
    assert_eq!(c.code(&format!("AUTH PLAIN {}", b64("\0u\0p"))), 530);
    c.send("STARTTLS\r\nNOOP\r\n");
    assert_eq!(c.reply().0, 220);
    c.upgrade(&pki, "localhost").unwrap();
    let (_, ehlo) = c.cmd("EHLO x");
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")));
    assert_eq!(c.code(&format!("AUTH PLAIN {}", b64("\0u\0p"))), 235);
    assert_eq!(c.code("QUIT"), 221);
    let t = fake.transcript();
    assert!(!t.contains(&"c1 NOOP".to_string()), "{t:?}");
    assert_eq!(t.iter().filter(|l| *l == "c1 EHLO x").count(), 2);
}

#[test]
fn fake_smtp_implicit_tls_and_name_mismatch() {
    let pki = TestPki::new();
    let fake = FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            ..Script::default()
        },
        &pki,
    );
    for name in ["localhost", "127.0.0.1"] {
        let mut c = Client::connect_tls(fake.addr, &pki, name).unwrap();
        assert_eq!(c.reply().0, 220);
        let (_, ehlo) = c.cmd("EHLO x");
        assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")));
        assert_eq!(c.code(&format!("AUTH PLAIN {}", b64("\0u\0p"))), 235);
        assert_eq!(c.code("MAIL FROM:<a@b.test>"), 250);
        assert_eq!(c.code("RCPT TO:<c@d.test>"), 250);
        assert_eq!(c.code("DATA"), 354);
        c.send("x\r\n.\r\n");
        assert_eq!(c.reply().0, 250);
        assert_eq!(c.code("QUIT"), 221);
    }
    assert_eq!(fake.messages().len(), 2);
    assert_eq!(fake.connections(), 2);

    fake.set_script(Script {
        tls: Tls::Implicit,
        cert_names: vec!["wrong.example".into()],
        ..Script::default()
    });
    let err = Client::connect_tls(fake.addr, &pki, "localhost")
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(fake.transcript().len(), 12);
}

#[test]
fn fake_smtp_drop_after_data_bytes() {
    let pki = TestPki::new();
    let script = Script {
        drop_after_data_bytes: Some(10),
        ..Script::default()
    };
    let fake = FakeSmtp::start(script, &pki);
    let mut c = Client::connect(fake.addr);
    c.reply();
    c.cmd("EHLO x");
    c.cmd(&format!("AUTH PLAIN {}", b64("\0u\0p")));
    c.cmd("MAIL FROM:<a@b.test>");
    c.cmd("RCPT TO:<c@d.test>");
    assert_eq!(c.code("DATA"), 354);
    c.send("0123456789012345678901234567890123456789\r\n.\r\n");
    assert!(c.try_reply().is_err());
    assert!(fake.messages().is_empty());
}

#[test]
fn fake_smtp_multiline_replies() {
    let pki = TestPki::new();
    let script = Script {
        replies_multiline: true,
        auth: Auth::Reject(
            "535-5.7.8 Username and Password not accepted.\n535 5.7.8 https://x".into(),
        ),
        ..Script::default()
    };
    let fake = FakeSmtp::start(script, &pki);
    let mut c = Client::connect(fake.addr);
    let (code, g) = c.reply();
    assert_eq!((code, g.len(), g[0].as_str()), (220, 2, "fake.test ESMTP"));
    assert_eq!(c.cmd("EHLO x").1.len(), 6);
    let (code, lines) = c.cmd(&format!("AUTH PLAIN {}", b64("\0u\0p")));
    assert_eq!((code, lines.len()), (535, 2));
    fake.set_script(Script {
        replies_multiline: true,
        ..Script::default()
    });
    assert_eq!(c.code(&format!("AUTH PLAIN {}", b64("\0u\0p"))), 235);
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").1.len(), 2);
    c.cmd("RCPT TO:<c@d.test>");
    assert_eq!(c.code("DATA"), 354);
    c.send(".\r\n");
    let (code, end) = c.reply();
    assert_eq!(code, 250);
    assert_eq!(end[0], "2.0.0 OK queued as 1");
    assert_eq!(end[1], "2.0.0 (end of multi-line reply)");
    assert_eq!(fake.messages()[0].data, b"");
}

#[test]
fn fake_smtp_silent_greeting_and_drop_closes_connections() {
    let pki = TestPki::new();
    let fake = FakeSmtp::start(
        Script {
            greeting: None,
            ..Script::default()
        },
        &pki,
    );
    let mut c = Client::connect(fake.addr);
    if let ClientStream::Plain(s) = &c.stream {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    let err = c.try_reply().unwrap_err();
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    drop(fake);
    if let ClientStream::Plain(s) = &c.stream {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let err = c.try_reply().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}
