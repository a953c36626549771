//! The sandbox web UI in a real headless Chromium (DevTools protocol): the
//! list newest first with hostile text shown as text, the message view with
//! the HTML body in a sandboxed frame and remote content blocked until asked
//! for, attachments, live updates over server-sent events, search, paging,
//! the inbox switcher, delete one and all by clicking, release through the
//! real Dovecot, cross-site writes refused, and messages that are broken or
//! huge still shown.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::browser::Browser;
use crate::harness::*;
use crate::relay::sink_messages;
use crate::sandbox::{api, get, sandbox_config, send, send_as, simple};

/// A 1×1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/// An HTTP server that answers every request with a 1×1 GIF and records
/// the paths asked for: a stand-in for a sender's tracking pixel.
fn tracker() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            if let Some(path) = head.split(' ').nth(1) {
                s.lock().unwrap().push(path.to_owned());
            }
            let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
            let _ = c.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: image/gif\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    gif.len()
                )
                .as_bytes(),
            );
            let _ = c.write_all(gif);
        }
    });
    (port, seen)
}

fn html_message(subject: &str, track: u16) -> Vec<u8> {
    format!(
        "From: \"Shop\" <noreply@shop.example>\r\nTo: Jane <jane@example.test>, bob@example.test, carol@example.test\r\n\
         Subject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: multipart/related; boundary=\"b2\"\r\n\r\n\
         --b2\r\nContent-Type: multipart/alternative; boundary=\"b3\"\r\n\r\n\
         --b3\r\nContent-Type: text/plain\r\n\r\nYour order shipped (text part).\r\n\
         --b3\r\nContent-Type: text/html\r\n\r\n<h2 id=\"hello\">Your order shipped</h2>\
         <img id=\"logo\" src=\"cid:logo@shop\"><img id=\"pixel\" src=\"http://127.0.0.1:{track}/remote.png\">\
         <script>fetch('http://127.0.0.1:{track}/script'); parent.document.title = 'owned';</script>\r\n\
         --b3--\r\n--b2\r\nContent-Type: image/png\r\nContent-ID: <logo@shop>\r\n\
         Content-Disposition: inline; filename=\"logo.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{PNG}\r\n\
         --b2--\r\n--b1\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         JVBERi0xLjQK\r\n--b1--\r\n"
    )
    .into_bytes()
}

fn base(p: &Postern) -> String {
    format!("http://{}", api(p))
}

/// The list's rows as the browser shows them: `[id, subject, from, to]`.
const ROWS: &str = "Array.from(document.querySelectorAll('#messages tr.message')).map(tr => \
     [tr.dataset.id, tr.querySelector('.subject a').textContent, \
      tr.querySelector('.from').textContent, tr.querySelector('.to').textContent])";

fn rows(b: &mut Browser) -> Vec<Vec<String>> {
    serde_json::from_value(b.eval(ROWS)).unwrap()
}

fn ids_in_api(p: &Postern, query: &str) -> Vec<String> {
    get(p, &format!("/api/v1/messages{query}")).json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ID"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn list_and_message_view_in_chromium() {
    let p = Postern::start(&sandbox_config(""), 2);
    let (track, seen) = tracker();
    let m = marker("ui");
    let hostile = format!("<img src=x onerror=alert(1)> {m} & \"quotes\"");
    assert!(send(&p, &simple(&hostile)).starts_with("sent"));
    assert!(send(&p, &simple(&format!("{m}-plain"))).starts_with("sent"));
    let shop = format!("{m}-shop");
    assert!(send(&p, &html_message(&shop, track)).starts_with("sent"));

    let mut b = Browser::start();
    let title = b.goto(&format!("{}/", base(&p)));
    assert_eq!(title, "(3) Postern sandbox");
    let shown = rows(&mut b);
    let ids: Vec<&str> = shown.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ids, ids_in_api(&p, ""), "newest first, as the API lists");
    assert_eq!(shown[0][1], shop);
    assert_eq!(shown[0][2], "Shop");
    assert_eq!(shown[0][3], "Jane, bob@example.test, +1");
    assert_eq!(shown[2][1], hostile, "hostile text is shown as text");
    assert_eq!(
        b.eval("document.querySelectorAll('#messages img').length"),
        0
    );
    assert_eq!(b.dialogs, 0, "no script from a message ran");
    let cells = b.eval(
        "Array.from(document.querySelectorAll('#messages tr.message')[0].cells).map(c => c.textContent)",
    );
    assert!(
        cells[3].as_str().unwrap().ends_with(" B") || cells[3].as_str().unwrap().ends_with("KiB")
    );
    assert!(cells[4].as_str().unwrap().starts_with("20"), "{cells}");
    assert_eq!(
        b.eval("document.getElementById('count').textContent"),
        "3 messages, 3 unread"
    );
    let shot = p.dir.path().join("list.png");
    assert!(b.screenshot(&shot) > 5_000);
    assert_eq!(&std::fs::read(&shot).unwrap()[..8], b"\x89PNG\r\n\x1a\n");

    // The message view: envelope, sandboxed HTML, text, headers, source,
    // attachments; the pixel is not fetched.
    let id = shown[0][0].clone();
    let title = b.goto(&format!("{}/view/{id}", base(&p)));
    assert_eq!(title, shop);
    assert_eq!(
        b.eval("document.getElementById('body-html').getAttribute('sandbox')"),
        "allow-popups allow-popups-to-escape-sandbox"
    );
    assert_eq!(
        b.eval("document.getElementById('body-html').getAttribute('src')"),
        format!("/view/{id}/html")
    );
    let meta = b.eval("document.getElementById('meta').textContent");
    let meta = meta.as_str().unwrap();
    assert!(meta.contains("Shop <noreply@shop.example>"), "{meta}");
    assert!(meta.contains("Envelope to<you@example.test>"), "{meta}");
    assert_eq!(
        b.eval("document.getElementById('body-text').textContent.trim()"),
        "Your order shipped (text part)."
    );
    let files = b.eval(
        "Array.from(document.querySelectorAll('#files a')).map(a => [a.textContent, a.getAttribute('href')])",
    );
    assert_eq!(files[0][0], "invoice.pdf");
    let pdf = get(&p, files[0][1].as_str().unwrap());
    assert_eq!(pdf.status, 200);
    assert_eq!(pdf.body, b"%PDF-1.4\n");
    assert_eq!(files[1][0], "logo.png");
    assert!(b
        .eval("document.getElementById('header-table').textContent")
        .as_str()
        .unwrap()
        .contains(&shop));
    assert!(b
        .eval("document.getElementById('raw').textContent")
        .as_str()
        .unwrap()
        .contains("Content-Type: multipart/mixed"));
    assert_eq!(
        b.eval("document.title"),
        shop,
        "the frame's script did not run"
    );
    assert_eq!(b.dialogs, 0);
    let shot = p.dir.path().join("view.png");
    assert!(b.screenshot(&shot) > 5_000);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        seen.lock().unwrap().is_empty(),
        "remote content fetched: {:?}",
        seen.lock().unwrap()
    );
    // Viewing it marked it read.
    assert_eq!(get(&p, "/api/v1/messages").json()["unread"], 2);

    // The body alone: the cid: image is served from the message, the script
    // is blocked by the policy.
    b.goto(&format!("{}/view/{id}/html", base(&p)));
    assert_eq!(
        b.eval("document.getElementById('hello').textContent"),
        "Your order shipped"
    );
    assert_eq!(
        b.wait(
            "document.getElementById('logo').complete && document.getElementById('logo').naturalWidth",
            10
        ),
        1
    );
    assert!(b
        .eval("document.getElementById('logo').getAttribute('src')")
        .as_str()
        .unwrap()
        .starts_with(&format!("/api/v1/message/{id}/part/")));
    assert_eq!(b.eval("document.getElementById('pixel').naturalWidth"), 0);

    // Asked for: remote images load; scripts still never run.
    b.goto(&format!("{}/view/{id}", base(&p)));
    let href = b.eval("document.getElementById('show-remote').getAttribute('href')");
    assert_eq!(href, format!("/view/{id}?remote=1#html"));
    b.goto(&format!("{}{}", base(&p), href.as_str().unwrap()));
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(*seen.lock().unwrap(), ["/remote.png"]);
    assert_eq!(b.eval("document.title"), shop);
}

#[test]
fn live_updates_over_server_sent_events() {
    let p = Postern::start(&sandbox_config(""), 2);
    let m = marker("live");
    assert!(send(&p, &simple(&format!("{m}-before"))).starts_with("sent"));
    let mut b = Browser::start();
    b.goto(&format!("{}/", base(&p)));
    b.wait("document.body.dataset.live === 'on'", 15);
    assert_eq!(rows(&mut b).len(), 1);

    let late = format!("{m}-arrived <b>bold</b>");
    assert!(send(&p, &simple(&late)).starts_with("sent"));
    b.wait(
        "document.querySelectorAll('#messages tr.message').length === 2",
        15,
    );
    let shown = rows(&mut b);
    assert_eq!(shown[0][1], late, "new mail on top, as text");
    assert_eq!(shown[0][0], ids_in_api(&p, "")[0]);
    assert_eq!(
        b.eval("document.querySelector('#messages tr.message').dataset.live"),
        "1"
    );
    assert_eq!(
        b.eval("document.getElementById('count').textContent"),
        "2 messages, 2 unread"
    );
    assert_eq!(b.eval("document.title"), "(2) Postern sandbox");
    // A row made live looks like one rendered by the server.
    let live = b.eval("document.querySelector('#messages tr.message').cells[4].textContent");
    b.goto(&format!("{}/", base(&p)));
    assert_eq!(
        b.eval("document.querySelector('#messages tr.message').cells[4].textContent"),
        live
    );
    b.wait("document.body.dataset.live === 'on'", 15);

    // Deleted elsewhere (the API): the row goes.
    let body = format!("{{\"IDs\": [\"{}\"]}}", shown[0][0]);
    assert_eq!(
        http("DELETE", api(&p), "/api/v1/messages", body.as_bytes()).status,
        200
    );
    b.wait(
        "document.querySelectorAll('#messages tr.message').length === 1",
        15,
    );
    assert_eq!(
        b.eval("document.getElementById('count').textContent"),
        "1 message, 1 unread"
    );
    // A mail for another inbox leaves a filtered list alone.
    b.goto(&format!("{}/?inbox=app", base(&p)));
    b.wait("document.body.dataset.live === 'on'", 15);
    assert!(send_as(
        &p,
        "app2",
        &simple(&format!("{m}-other")),
        "me@example.test",
        &["x@example.test"]
    )
    .starts_with("sent"));
    assert!(send(&p, &simple(&format!("{m}-mine"))).starts_with("sent"));
    b.wait(
        "document.querySelectorAll('#messages tr.message').length === 2",
        15,
    );
    let shown = rows(&mut b);
    assert_eq!(shown[0][1], format!("{m}-mine"));
}

#[test]
fn search_paging_inboxes_and_delete_by_clicking() {
    let p = Postern::start(&sandbox_config(""), 2);
    let m = marker("pages");
    // 53 messages for `app` in one SMTP session, two for `app2`.
    let script = r#"
import smtplib, sys
port, pw, m = sys.argv[1:4]
s = smtplib.SMTP('127.0.0.1', int(port), timeout=60)
s.login('app', pw)
for i in range(53):
    s.sendmail('me@example.test', ['you@example.test'],
               'Subject: %s number %02d\r\nFrom: me@example.test\r\n\r\nbody %02d\r\n' % (m, i, i))
s.quit()
"#;
    let port = p.smtp().port().to_string();
    let (ok, out, err) = python(script, &[&port, APP_PASSWORD, &m]);
    assert!(ok, "{out}{err}");
    for i in 0..2 {
        assert!(send_as(
            &p,
            "app2",
            &simple(&format!("{m}-other-{i}")),
            "me@example.test",
            &["x@example.test"]
        )
        .starts_with("sent"));
    }
    let mut b = Browser::start();
    b.goto(&format!("{}/?inbox=app", base(&p)));
    let first = rows(&mut b);
    assert_eq!(first.len(), 50);
    assert_eq!(first[0][1], format!("{m} number 52"));
    assert_eq!(
        b.eval("document.getElementById('inbox').value"),
        "app",
        "the switcher shows the inbox"
    );
    let next = b.eval("document.querySelector('a[rel=next]').getAttribute('href')");
    b.goto(&format!("{}{}", base(&p), next.as_str().unwrap()));
    let second = rows(&mut b);
    assert_eq!(second.len(), 3);
    assert_eq!(second[2][1], format!("{m} number 00"));
    assert_eq!(
        b.eval("document.querySelector('.pager span').textContent"),
        "51–53 of 53"
    );
    assert!(b.eval("document.querySelector('a[rel=prev]') !== null") == true);

    // Search, typed into the box and submitted as a user would.
    b.goto(&format!("{}/", base(&p)));
    b.eval(&format!(
        "document.getElementById('q').value = 'subject:\"number 07\" {m}'; \
         document.querySelector('form.search').requestSubmit(); true"
    ));
    b.wait(
        "location.search.includes('q=') && document.readyState === 'complete'",
        15,
    );
    b.wait("document.getElementById('count') !== null", 15);
    let found = rows(&mut b);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0][1], format!("{m} number 07"));
    assert_eq!(
        b.eval("document.getElementById('count').textContent"),
        "1 message found, 1 unread"
    );

    // The switcher: another inbox.
    b.goto(&format!("{}/", base(&p)));
    b.eval(
        "const s = document.getElementById('inbox'); s.value = 'other'; \
         s.dispatchEvent(new Event('change')); true",
    );
    b.wait(
        "location.search.includes('inbox=other') && document.readyState === 'complete'",
        15,
    );
    b.wait("document.getElementById('count') !== null", 15);
    let other = rows(&mut b);
    assert_eq!(other.len(), 2);
    assert!(other.iter().all(|r| r[1].contains("-other-")));

    // Delete one by clicking (the confirmation is accepted). Six list pages
    // were open before this one: each let its event stream go when left
    // (else the browser's six connections per host would stall this page).
    let victim = found[0][0].clone();
    b.goto(&format!("{}/view/{victim}", base(&p)));
    b.eval("document.getElementById('delete').click(); true");
    b.wait(
        "location.pathname === '/' && document.readyState === 'complete'",
        15,
    );
    assert_eq!(b.dialogs, 1);
    assert_eq!(get(&p, &format!("/api/v1/message/{victim}")).status, 404);
    assert_eq!(
        b.wait(
            "document.getElementById('inbox') && document.getElementById('inbox').value",
            15
        ),
        "app",
        "back to the message's inbox"
    );

    // Delete all in one inbox by clicking; the other inbox keeps its mail.
    b.goto(&format!("{}/?inbox=other", base(&p)));
    b.eval("document.getElementById('delete-all').click(); true");
    b.wait("!location.search.includes('q=') && document.readyState === 'complete' && document.getElementById('count') && document.getElementById('count').dataset.total === '0'", 15);
    assert_eq!(b.dialogs, 2);
    assert_eq!(get(&p, "/api/v1/messages?inbox=other").json()["total"], 0);
    assert_eq!(get(&p, "/api/v1/messages?inbox=app").json()["total"], 52);
    assert_eq!(
        b.eval("document.getElementById('delete-all').disabled"),
        true
    );

    // Another site cannot make the browser delete or release.
    let one = ids_in_api(&p, "?inbox=app")[0].clone();
    for h in [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Origin", "null"),
    ] {
        let r = http_with(
            "POST",
            api(&p),
            &format!("/view/{one}/delete"),
            b"",
            &[h, ("Content-Type", "application/x-www-form-urlencoded")],
        );
        assert_eq!(r.status, 403, "{h:?}");
        let r = http_with("DELETE", api(&p), "/api/v1/messages", b"", &[h]);
        assert_eq!(r.status, 403, "{h:?}");
    }
    assert_eq!(get(&p, &format!("/api/v1/message/{one}")).status, 200);
    // Its own pages (same origin) and non-browser clients may.
    let same = format!("http://{}", api(&p));
    let r = http_with(
        "POST",
        api(&p),
        &format!("/view/{one}/delete"),
        b"",
        &[("Origin", &same), ("Sec-Fetch-Site", "same-origin")],
    );
    assert_eq!(r.status, 303);
    assert_eq!(get(&p, &format!("/api/v1/message/{one}")).status, 404);
}

#[test]
fn release_from_the_message_page_through_dovecot() {
    let account = format!(
        "[accounts.dv]\nemail = \"u52@example.test\"\nsmtp = {{ host = \"localhost\", port = {}, tls = \"starttls\" }}\nca_file = \"{}\"\nauth = \"password\"\npassword_env = \"U_PW\"\n",
        peer_env("DOVECOT_SUBMISSION_PORT"),
        peer_env("PEERS_CA")
    );
    let cfg = sandbox_config(&format!("[sandbox]\nrelease_via = \"dv\"\n{account}"));
    let p = Postern::start_with(&cfg, 2, &[("U_PW", "pw-u52")]);
    let m = marker("uirelease");
    assert!(send_as(
        &p,
        "app",
        &simple(&m),
        "u52@example.test",
        &["held@example.org"]
    )
    .starts_with("sent"));
    let id = ids_in_api(&p, "")[0].clone();
    let mut b = Browser::start();
    b.goto(&format!("{}/view/{id}", base(&p)));
    assert_eq!(b.eval("document.getElementById('release-via').value"), "dv");
    b.eval(
        "document.getElementById('release-to').value = 'team@example.org'; \
         document.getElementById('release').click(); true",
    );
    b.wait(
        "location.search.includes('notice=') && document.readyState === 'complete'",
        30,
    );
    assert_eq!(
        b.eval("document.getElementById('notice').textContent"),
        "Released."
    );
    let got = sink_messages(&m, 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, ["team@example.org"]);
    // A refused release says why, on the page.
    b.goto(&format!("{}/view/{id}", base(&p)));
    b.eval(
        "document.getElementById('release-to').value = 'not an address'; \
         document.getElementById('release').click(); true",
    );
    b.wait(
        "location.search.includes('error=') && document.readyState === 'complete'",
        30,
    );
    let e = b.eval("document.getElementById('notice').textContent");
    assert!(
        e.as_str()
            .unwrap()
            .starts_with("Not released: Invalid email address"),
        "{e}"
    );
}

#[test]
fn broken_and_huge_messages_still_render() {
    let mut p = Postern::start(&sandbox_config(""), 2);
    let m = marker("broken");
    let mut huge = format!(
        "Subject: {m}-huge\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--x\r\nContent-Type: application/octet-stream; name=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n";
    while huge.len() < 20 << 20 {
        huge.extend_from_slice(line);
    }
    huge.extend_from_slice(b"--x--\r\n");
    let cases: Vec<(String, Vec<u8>)> = vec![
        (
            format!("{m}-mime"),
            format!("Subject: {m}-mime\r\nContent-Type: multipart/mixed; boundary=\"never\"\r\n\r\n--wrong\r\nbroken").into_bytes(),
        ),
        (format!("{m}-huge"), huge),
        (
            format!("{m}-nothing"),
            format!("Subject: {m}-nothing\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n{PNG}\r\n").into_bytes(),
        ),
        (
            format!("{m}-utf8"),
            [
                format!("Subject: {m}-utf8 ").as_bytes(),
                b"\xff\xfe\xc3(\r\nFrom: \xe9t\xe9 <a@b.test>\r\n\r\nbody \xff\r\n",
            ]
            .concat(),
        ),
    ];
    for (_, raw) in &cases {
        assert!(send(&p, raw).starts_with("sent"));
    }
    let mut b = Browser::start();
    b.goto(&format!("{}/", base(&p)));
    assert_eq!(rows(&mut b).len(), 4);
    for (name, _) in &cases {
        let id = get(
            &p,
            &format!("/api/v1/search?query={}", name.replace(' ', "+")),
        )
        .json()["messages"][0]["ID"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = get(&p, &format!("/view/{id}"));
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let title = b.goto(&format!("{}/view/{id}", base(&p)));
        assert!(title.starts_with(&m), "{name}: {title}");
        assert!(b.eval("document.getElementById('raw') !== null") == true);
    }
    // The huge one: the first MiB of source inline, the rest a link away.
    let id = get(&p, &format!("/api/v1/search?query={m}-huge")).json()["messages"][0]["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    b.goto(&format!("{}/view/{id}", base(&p)));
    let shown = b.eval("document.getElementById('raw').textContent.length");
    assert!(shown.as_u64().unwrap() <= 1 << 20, "{shown}");
    assert!(b
        .eval("document.querySelector('#source .notice').textContent")
        .as_str()
        .unwrap()
        .contains("The first 1.0 MiB of 20.0 MiB"));
    assert!(p.is_running());
}
