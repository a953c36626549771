//! The failure matrix: Postern against a scripted upstream that speaks SMTP
//! over a socket. Every failure gets its documented reply; none gets a 250.

use std::time::Duration;

use crate::fake_smtp::{Auth, FakeSmtp, Script, TestPki, Tls};
use crate::harness::*;

/// Postern with one account `fk` pointing at the fake.
fn postern_for(fake: &FakeSmtp, pki: &TestPki, tls: &str, auth: &str, extra: &str) -> Postern {
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}upstream_timeout = \"2s\"\n{extra}\n[accounts.fk]\nemail = \"fk@example.test\"\nsmtp = {{ host = \"localhost\", port = {}, tls = \"{tls}\" }}\nca_file = \"{}\"\n{auth}\n",
        users_section("fk"),
        fake.addr.port(),
        pki.ca_pem_path.display()
    );
    Postern::start_with(&cfg, 1, &[("FK_PW", "app-pw-123")])
}

const PW: &str = "auth = \"password\"\npassword_env = \"FK_PW\"";

/// A logged-in local client.
fn client(p: &Postern) -> Raw {
    let mut c = Raw::connect(p.smtp());
    c.reply();
    c.cmd("EHLO test.client");
    let auth = b64(format!("\0app\0{APP_PASSWORD}").as_bytes());
    assert!(c.cmd(&format!("AUTH PLAIN {auth}")).starts_with("235"));
    c
}

/// One transaction: the replies to MAIL, each RCPT, DATA and the message
/// (stopping at the first failure of MAIL or DATA).
fn transact(c: &mut Raw, rcpts: &[&str]) -> Vec<String> {
    let mut out = vec![c.cmd("MAIL FROM:<fk@example.test>")];
    if !out[0].starts_with('2') {
        return out;
    }
    for r in rcpts {
        out.push(c.cmd(&format!("RCPT TO:<{r}>")));
    }
    let data = c.cmd("DATA");
    let go = data.starts_with("354");
    out.push(data);
    if go {
        c.send(b"Subject: matrix\r\n\r\nhello\r\n..dot\r\n");
        out.push(c.cmd("."));
    }
    out
}

fn no_250_at_end(replies: &[String]) {
    let last = replies.last().unwrap();
    assert!(
        !last.starts_with("250"),
        "got a 250 for a failed transaction: {replies:?}"
    );
}

fn fake(pki: &TestPki, script: Script) -> FakeSmtp {
    FakeSmtp::start(script, pki)
}

#[test]
fn happy_path_starttls_and_login_only_upstream() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::Starttls,
            ehlo_extensions: vec!["8BITMIME".into(), "AUTH LOGIN".into()],
            replies_multiline: true,
            ..Script::default()
        },
    );
    let p = postern_for(&f, &pki, "starttls", PW, "");
    let mut c = client(&p);
    let r = transact(&mut c, &["a@example.org"]);
    assert!(
        r.last().unwrap().starts_with("250 2.0.0") && r.last().unwrap().contains("(account fk)"),
        "{r:?}\n{}",
        p.logs()
    );
    let msgs = f.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].data, b"Subject: matrix\r\n\r\nhello\r\n.dot");
    let auths = f.auths();
    assert_eq!(
        (
            auths[0].mechanism.as_str(),
            auths[0].user.as_str(),
            auths[0].secret.as_str()
        ),
        ("LOGIN", "fk@example.test", "app-pw-123")
    );
    assert!(!p.logs().contains("app-pw-123"));
}

#[test]
fn auth_refused_gives_454_with_fix() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::Implicit,
            auth: Auth::Reject("535 5.7.8 Username and Password not accepted".into()),
            ..Script::default()
        },
    );
    let p = postern_for(&f, &pki, "implicit", PW, "");
    let r = transact(&mut client(&p), &["a@example.org"]);
    assert!(
        r[0].starts_with("454 4.7.0") && r[0].contains("app password"),
        "{r:?}"
    );
    assert!(f.messages().is_empty());
}

#[test]
fn xoauth2_error_challenge_is_acknowledged() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::Implicit,
            auth: Auth::BearerChallenge,
            ..Script::default()
        },
    );
    let auth = "auth = \"oauth2\"\ntoken_command = \"echo tok-abc\"";
    let p = postern_for(&f, &pki, "implicit", auth, "");
    let r = transact(&mut client(&p), &["a@example.org"]);
    assert!(
        r[0].starts_with("454 4.7.0") && r[0].contains("postern auth fk"),
        "{r:?}"
    );
    let t = f.transcript();
    assert!(t.iter().any(|l| l.starts_with("c1 AUTH XOAUTH2 ")), "{t:?}");
    assert!(
        t.iter().any(|l| l == "c1 "),
        "empty answer to the challenge missing: {t:?}"
    );
    assert!(!p.logs().contains("tok-abc"));
}

#[test]
fn oauthbearer_when_only_that_is_offered() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::Implicit,
            ehlo_extensions: vec!["AUTH OAUTHBEARER".into(), "PIPELINING".into()],
            auth: Auth::AcceptToken("tok-xyz".into()),
            ..Script::default()
        },
    );
    let p = postern_for(
        &f,
        &pki,
        "implicit",
        "auth = \"oauth2\"\ntoken_command = \"echo tok-xyz\"",
        "",
    );
    let r = transact(&mut client(&p), &["a@example.org"]);
    assert!(r.last().unwrap().starts_with("250"), "{r:?}\n{}", p.logs());
    assert_eq!(f.auths()[0].mechanism, "OAUTHBEARER");
}

#[test]
fn mail_rcpt_and_data_verdicts_pass_through() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::Implicit,
            rcpt_replies: vec![
                ("busy".into(), "450 4.2.1 Mailbox busy".into()),
                ("nouser".into(), "550 5.1.1 No such user".into()),
            ],
            ..Script::default()
        },
    );
    let p = postern_for(&f, &pki, "implicit", PW, "");
    let mut c = client(&p);
    let r = transact(
        &mut c,
        &["ok@example.org", "busy@example.org", "nouser@example.org"],
    );
    assert!(r[1].starts_with("250 2.1.5"), "{r:?}");
    assert!(
        r[2].starts_with("450 4.2.1 Mailbox busy (account fk)"),
        "{r:?}"
    );
    assert!(
        r[3].starts_with("550 5.1.1 No such user (account fk)"),
        "{r:?}"
    );
    assert!(r[5].starts_with("250 2.0.0"), "{r:?}");
    assert_eq!(f.messages()[0].rcpts, vec!["ok@example.org"]);

    for (mail, end, want) in [
        (
            "451 4.3.0 Try later",
            None,
            "451 4.3.0 Try later (account fk)",
        ),
        (
            "550 5.1.8 Bad sender",
            None,
            "550 5.1.8 Bad sender (account fk)",
        ),
        (
            "250 2.1.0 OK",
            Some("451 4.3.0 Queue full"),
            "451 4.3.0 Queue full (account fk)",
        ),
        (
            "250 2.1.0 OK",
            Some("554 5.6.0 Content rejected"),
            "554 5.6.0 Content rejected (account fk)",
        ),
    ] {
        f.set_script(Script {
            tls: Tls::Implicit,
            mail_reply: mail.into(),
            end_reply: end.unwrap_or("250 2.0.0 OK").into(),
            ..Script::default()
        });
        let before = f.messages().len();
        let r = transact(&mut c, &["x@example.org"]);
        assert!(r.last().unwrap().starts_with(want), "{r:?}");
        no_250_at_end(&r);
        assert_eq!(f.messages().len(), before);
    }
}

#[test]
fn quota_replies_become_451_daily_quota() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::Implicit,
            end_reply: "550 5.4.5 Daily user sending limit exceeded.".into(),
            ..Script::default()
        },
    );
    let p = postern_for(&f, &pki, "implicit", PW, "");
    let mut c = client(&p);
    let r = transact(&mut c, &["a@example.org"]);
    assert!(
        r.last()
            .unwrap()
            .starts_with("451 4.4.5 Daily sending quota of account fk reached"),
        "{r:?}"
    );
    f.set_script(Script {
        tls: Tls::Implicit,
        mail_reply: "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message".into(),
        ..Script::default()
    });
    let r = transact(&mut c, &["a@example.org"]);
    assert!(r[0].starts_with("451 4.4.5"), "{r:?}");
}

#[test]
fn relay_denied_names_the_from_problem() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::Implicit,
            mail_reply: "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
                .into(),
            ..Script::default()
        },
    );
    let p = postern_for(&f, &pki, "implicit", PW, "");
    let r = transact(&mut client(&p), &["a@example.org"]);
    assert!(
        r[0].starts_with("550 5.7.1") && r[0].contains("may not send as this From"),
        "{r:?}"
    );
}

#[test]
fn connection_dropped_mid_data_is_not_acknowledged() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::Implicit,
            drop_after_data_bytes: Some(5),
            ..Script::default()
        },
    );
    let p = postern_for(&f, &pki, "implicit", PW, "");
    let mut c = client(&p);
    let r = transact(&mut c, &["a@example.org"]);
    assert!(r.last().unwrap().starts_with("451 4.4.2"), "{r:?}");
    // The session goes on: the next transaction uses a new connection.
    f.set_script(Script {
        tls: Tls::Implicit,
        ..Script::default()
    });
    let r = transact(&mut c, &["a@example.org"]);
    assert!(r.last().unwrap().starts_with("250"), "{r:?}");
}

#[test]
fn no_greeting_hints_at_implicit_tls() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            greeting: None,
            ..Script::default()
        },
    );
    let p = postern_for(&f, &pki, "starttls", PW, "");
    let r = transact(&mut client(&p), &["a@example.org"]);
    assert!(
        r[0].starts_with("451 4.4.2")
            && r[0].contains("sent no greeting")
            && r[0].contains("tls = \"implicit\""),
        "{r:?}"
    );
}

#[test]
fn starttls_not_offered_is_never_a_plaintext_fallback() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::StarttlsNotOffered,
            ..Script::default()
        },
    );
    let p = postern_for(&f, &pki, "starttls", PW, "");
    let r = transact(&mut client(&p), &["a@example.org"]);
    assert!(
        r[0].starts_with("454 4.7.0") && r[0].contains("does not offer STARTTLS"),
        "{r:?}"
    );
    assert_eq!(
        f.auth_attempts(),
        0,
        "credentials sent in plaintext: {:?}",
        f.transcript()
    );
}

#[test]
fn certificate_for_the_wrong_name() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::Implicit,
            cert_names: vec!["wrong.example".into()],
            ..Script::default()
        },
    );
    let p = postern_for(&f, &pki, "implicit", PW, "");
    let r = transact(&mut client(&p), &["a@example.org"]);
    assert!(
        r[0].starts_with("454 4.7.0") && r[0].contains("not valid for that name"),
        "{r:?}"
    );
    assert_eq!(f.auth_attempts(), 0);
}

#[test]
fn implicit_tls_against_a_starttls_port_and_the_reverse() {
    let pki = TestPki::new();
    let plain = fake(
        &pki,
        Script {
            tls: Tls::Starttls,
            ..Script::default()
        },
    );
    let p = postern_for(&plain, &pki, "implicit", PW, "");
    let r = transact(&mut client(&p), &["a@example.org"]);
    assert!(
        r[0].starts_with("454 4.7.0") && r[0].contains("looks like a STARTTLS port"),
        "{r:?}"
    );

    let tls = fake(
        &pki,
        Script {
            tls: Tls::Implicit,
            ..Script::default()
        },
    );
    let p = postern_for(&tls, &pki, "starttls", PW, "");
    let r = transact(&mut client(&p), &["a@example.org"]);
    assert!(
        r[0].starts_with("451 4.4.2") && r[0].contains("tls = \"implicit\""),
        "{r:?}"
    );
}

#[test]
fn unreachable_upstream() {
    let pki = TestPki::new();
    let f = fake(&pki, Script::default());
    let port = f.addr.port();
    drop(f);
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}[limits]\nupstream_timeout = \"2s\"\n[accounts.fk]\nemail = \"fk@example.test\"\nsmtp = {{ host = \"127.0.0.1\", port = {port}, tls = \"implicit\" }}\n{PW}\n",
        users_section("fk")
    );
    let p = Postern::start_with(&cfg, 1, &[("FK_PW", "x")]);
    let r = transact(&mut client(&p), &["a@example.org"]);
    assert!(
        r[0].starts_with("451 4.4.1") && r[0].contains("try 587 (STARTTLS) or 465"),
        "{r:?}"
    );
}

#[test]
fn connections_are_reused_within_and_across_sessions() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::Implicit,
            ..Script::default()
        },
    );
    let p = postern_for(&f, &pki, "implicit", PW, "");
    let mut c = client(&p);
    for _ in 0..3 {
        assert!(transact(&mut c, &["a@example.org"])
            .last()
            .unwrap()
            .starts_with("250"));
    }
    // An abandoned transaction: the connection gets an RSET before reuse.
    assert!(c.cmd("MAIL FROM:<fk@example.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.org>").starts_with("250"));
    assert!(c.cmd("RSET").starts_with("250"));
    assert!(c.cmd("QUIT").starts_with("221"));
    let mut c2 = client(&p);
    assert!(transact(&mut c2, &["c@example.org"])
        .last()
        .unwrap()
        .starts_with("250"));
    assert_eq!(f.connections(), 1, "{:?}", f.transcript());
    assert_eq!(f.auth_attempts(), 1);
    assert!(
        f.transcript().iter().any(|l| l == "c1 RSET"),
        "{:?}",
        f.transcript()
    );
    assert_eq!(f.messages().len(), 4);
}

#[test]
fn a_stale_warm_connection_is_replaced_transparently() {
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::Implicit,
            ..Script::default()
        },
    );
    let p = postern_for(&f, &pki, "implicit", PW, "");
    let mut c = client(&p);
    assert!(transact(&mut c, &["a@example.org"])
        .last()
        .unwrap()
        .starts_with("250"));
    // The upstream closes the idle connection Postern keeps warm.
    f.close_connections();
    std::thread::sleep(Duration::from_millis(100));
    let r = transact(&mut c, &["a@example.org"]);
    assert!(r.last().unwrap().starts_with("250"), "{r:?}\n{}", p.logs());
    assert_eq!(f.messages().len(), 2);
    assert_eq!(f.connections(), 2);
}

#[test]
fn chunking_upstream_gets_the_message_as_one_bdat_chunk() {
    // CHUNKING advertised (as Gmail and Dovecot do): the message goes as one
    // `BDAT n LAST` written with its bytes, unstuffed, and no DATA. A refusal
    // of the chunk reaches the client as a refusal after DATA's dot would; a
    // connection dropped instead of a reply is never acknowledged.
    let pki = TestPki::new();
    let chunking = || {
        let mut s = Script {
            tls: Tls::Implicit,
            ..Script::default()
        };
        s.ehlo_extensions.push("CHUNKING".into());
        s
    };
    let f = fake(&pki, chunking());
    let p = postern_for(&f, &pki, "implicit", PW, "");
    let mut c = client(&p);
    let r = transact(&mut c, &["a@example.org"]);
    assert!(r.last().unwrap().starts_with("250 2.0.0"), "{r:?}");
    assert_eq!(
        f.messages()[0].data,
        b"Subject: matrix\r\n\r\nhello\r\n.dot",
        "the chunk carries the message unstuffed"
    );
    let t = f.transcript();
    let size = "Subject: matrix\r\n\r\nhello\r\n.dot\r\n".len();
    assert!(
        t.iter().any(|l| l.ends_with(&format!(" BDAT {size} LAST"))),
        "{t:?}"
    );
    assert!(!t.iter().any(|l| l.ends_with(" DATA")), "{t:?}");

    f.set_script(Script {
        end_reply: "554 5.6.0 Content rejected".into(),
        ..chunking()
    });
    let r = transact(&mut c, &["x@example.org"]);
    assert!(
        r.last()
            .unwrap()
            .starts_with("554 5.6.0 Content rejected (account fk)"),
        "{r:?}"
    );

    f.set_script(Script {
        drop_after_data_bytes: Some(5),
        ..chunking()
    });
    let before = f.messages().len();
    let r = transact(&mut c, &["y@example.org"]);
    no_250_at_end(&r);
    assert!(r.last().unwrap().starts_with('4'), "{r:?}");
    assert_eq!(f.messages().len(), before);
}

#[test]
fn the_first_unit_reserved_at_mail_is_given_back_when_unused() {
    // The first recipient's unit is reserved while MAIL FROM goes upstream.
    // Transactions that end without using it (RSET, a refused recipient)
    // give it back: an account with a limit of 2 still sends 2 messages,
    // then the first RCPT of the third gets 452.
    let pki = TestPki::new();
    let f = fake(
        &pki,
        Script {
            tls: Tls::Implicit,
            rcpt_replies: vec![("nouser".into(), "550 5.1.1 No such user".into())],
            ..Script::default()
        },
    );
    let p = postern_for(&f, &pki, "implicit", &format!("{PW}\ndaily_limit = 2"), "");
    let mut c = client(&p);
    for _ in 0..3 {
        assert!(c.cmd("MAIL FROM:<fk@example.test>").starts_with("250"));
        assert!(c.cmd("RSET").starts_with("250"));
    }
    assert!(c.cmd("MAIL FROM:<fk@example.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<nouser@example.org>").starts_with("550"));
    assert!(c.cmd("RSET").starts_with("250"));
    for i in 0..2 {
        let r = transact(&mut c, &["a@example.org"]);
        assert!(r.last().unwrap().starts_with("250"), "message {i}: {r:?}");
    }
    let r = transact(&mut c, &["a@example.org"]);
    assert!(
        r[1].starts_with("452 4.5.3") && r[1].contains("no room"),
        "{r:?}"
    );
    assert_eq!(f.messages().len(), 2);
}
