//! 3. Login latency (XOAUTH2 with a cached token, app password).

use crate::*;

pub async fn login_section(
    t: &Target,
    p: &postern::Postern,
    tls: &tlsutil::Material,
    s: &Settings,
    r: &mut Report,
) -> anyhow::Result<()> {
    let (_, via_imap) = via_endpoints(p, tls);
    let kinds = [
        (
            "app password",
            Login::Password(t.email.clone(), t.password.clone()),
            Login::Password("app".into(), postern::LOCAL_PASSWORD.into()),
        ),
        (
            "XOAUTH2, cached token",
            Login::XOAuth2(t.email.clone(), t.token.clone()),
            Login::Password("tok".into(), postern::LOCAL_PASSWORD.into()),
        ),
    ];
    for (kind, direct_how, via_how) in kinds {
        let mut direct = Vec::new();
        let mut via = Vec::new();
        // Warm-up (argon2 check, token fetch, TLS session caches), then
        // direct and via alternate so drift hits both alike.
        for i in 0..(s.login_warm + s.logins) {
            for (ep, how, out) in [
                (&t.imap, &direct_how, &mut direct),
                (&via_imap, &via_how, &mut via),
            ] {
                let (d, c) = clients::timed_login(ep, how)
                    .await
                    .with_context(|| format!("{} login ({kind}) via {}", t.name, ep.addr))?;
                c.logout().await;
                if i >= s.login_warm {
                    out.push(d);
                }
            }
        }
        direct.sort();
        via.sort();
        let (d50, v50) = (pct(&direct, 50.0), pct(&via, 50.0));
        progress(format!(
            "{} login ({kind}): direct p50 {d50:.2} ms, via p50 {v50:.2} ms (added {:.2} ms)",
            t.name,
            v50 - d50
        ));
        r.row(
            t.name,
            format!("IMAP login p50 ms ({kind})"),
            d50,
            v50,
            2,
            format!("added {:.2} ms", v50 - d50),
        );
        let (d99, v99) = (pct(&direct, 99.0), pct(&via, 99.0));
        r.row(
            t.name,
            format!("IMAP login p99 ms ({kind})"),
            d99,
            v99,
            2,
            format!("added {:.2} ms", v99 - d99),
        );
    }
    // The peer logs in upstream with XOAUTH2 and a cached token: its row.
    if let Some(pr) = peer_for(s, t) {
        let mut times = Vec::new();
        for i in 0..(2 + s.peer_logins) {
            let (d, c) = clients::timed_login(&pr.imap, &pr.login())
                .await
                .context("login via email-oauth2-proxy")?;
            c.logout().await;
            if i >= 2 {
                times.push(d);
            }
        }
        times.sort();
        let (p50, p99) = (pct(&times, 50.0), pct(&times, 99.0));
        progress(format!(
            "{} login via email-oauth2-proxy: p50 {p50:.2} ms, p99 {p99:.2} ms ({} logins)",
            t.name,
            times.len()
        ));
        r.peer(t.name, "IMAP login p50 ms (XOAUTH2, cached token)", p50);
        r.peer(t.name, "IMAP login p99 ms (XOAUTH2, cached token)", p99);
        r.notes.push(format!(
            "{}: email-oauth2-proxy's login figures are from {} logins (each costs it about 0.3 s, most of it PBKDF2 over its token cache key)",
            t.name,
            times.len()
        ));
    }
    Ok(())
}
