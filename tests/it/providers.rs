//! Provider presets checked against the providers' published settings,
//! written out here independently of `src/providers.rs`.

use postern::providers::{
    for_email, get, names, render_table, AuthKind, OAuthProvider, Server, Service, TlsMode,
    UserForm, Window, PRESETS,
};
use std::collections::{HashMap, HashSet};

use TlsMode::{Implicit, Starttls};

/// (host, port, tls) as the provider publishes it.
type Ep = (&'static str, u16, TlsMode);

struct Row {
    name: &'static str,
    smtp: Ep,
    smtp_alt: Option<Ep>,
    imap: Option<Ep>,
    pop: Option<Ep>,
    daily_limit: u32,
    oauth: Option<OAuthProvider>,
}

const fn row(
    name: &'static str,
    smtp: Ep,
    smtp_alt: Option<Ep>,
    imap: Option<Ep>,
    pop: Option<Ep>,
    daily_limit: u32,
    oauth: Option<OAuthProvider>,
) -> Row {
    Row {
        name,
        smtp,
        smtp_alt,
        imap,
        pop,
        daily_limit,
        oauth,
    }
}

const GOOGLE: Option<OAuthProvider> = Some(OAuthProvider::Google);
const MS: Option<OAuthProvider> = Some(OAuthProvider::Microsoft);

#[rustfmt::skip]
const PUBLISHED: &[Row] = &[
    row("gmail", ("smtp.gmail.com", 587, Starttls), Some(("smtp.gmail.com", 465, Implicit)),
        Some(("imap.gmail.com", 993, Implicit)), Some(("pop.gmail.com", 995, Implicit)), 500, GOOGLE),
    row("google-workspace", ("smtp.gmail.com", 587, Starttls), Some(("smtp.gmail.com", 465, Implicit)),
        Some(("imap.gmail.com", 993, Implicit)), Some(("pop.gmail.com", 995, Implicit)), 2000, GOOGLE),
    row("outlook", ("smtp-mail.outlook.com", 587, Starttls), None,
        Some(("outlook.office365.com", 993, Implicit)), Some(("outlook.office365.com", 995, Implicit)), 300, MS),
    row("office365", ("smtp.office365.com", 587, Starttls), None,
        Some(("outlook.office365.com", 993, Implicit)), Some(("outlook.office365.com", 995, Implicit)), 5000, MS),
    row("yahoo", ("smtp.mail.yahoo.com", 587, Starttls), Some(("smtp.mail.yahoo.com", 465, Implicit)),
        Some(("imap.mail.yahoo.com", 993, Implicit)), Some(("pop.mail.yahoo.com", 995, Implicit)), 500,
        Some(OAuthProvider::Yahoo)),
    row("zoho", ("smtp.zoho.com", 587, Starttls), Some(("smtp.zoho.com", 465, Implicit)),
        Some(("imap.zoho.com", 993, Implicit)), Some(("pop.zoho.com", 995, Implicit)), 500, None),
    row("zoho-pro", ("smtppro.zoho.com", 587, Starttls), Some(("smtppro.zoho.com", 465, Implicit)),
        Some(("imappro.zoho.com", 993, Implicit)), Some(("poppro.zoho.com", 995, Implicit)), 500, None),
    row("zoho-eu", ("smtp.zoho.eu", 587, Starttls), Some(("smtp.zoho.eu", 465, Implicit)),
        Some(("imap.zoho.eu", 993, Implicit)), Some(("pop.zoho.eu", 995, Implicit)), 500, None),
    row("zoho-pro-eu", ("smtppro.zoho.eu", 587, Starttls), Some(("smtppro.zoho.eu", 465, Implicit)),
        Some(("imappro.zoho.eu", 993, Implicit)), Some(("poppro.zoho.eu", 995, Implicit)), 500, None),
    row("icloud", ("smtp.mail.me.com", 587, Starttls), None,
        Some(("imap.mail.me.com", 993, Implicit)), None, 1000, None),
    row("att", ("smtp.mail.att.net", 465, Implicit), Some(("smtp.mail.att.net", 587, Starttls)),
        Some(("imap.mail.att.net", 993, Implicit)), Some(("inbound.att.net", 995, Implicit)), 500, None),
    row("att-legacy", ("outbound.att.net", 465, Implicit), None,
        None, Some(("inbound.att.net", 995, Implicit)), 500, None),
    row("aol", ("smtp.aol.com", 465, Implicit), Some(("smtp.aol.com", 587, Starttls)),
        Some(("imap.aol.com", 993, Implicit)), Some(("pop.aol.com", 995, Implicit)), 500,
        Some(OAuthProvider::Aol)),
    row("gmx", ("mail.gmx.com", 587, Starttls), Some(("mail.gmx.com", 465, Implicit)),
        Some(("imap.gmx.com", 993, Implicit)), Some(("pop.gmx.com", 995, Implicit)), 500, None),
    row("gmx-net", ("mail.gmx.net", 587, Starttls), Some(("mail.gmx.net", 465, Implicit)),
        Some(("imap.gmx.net", 993, Implicit)), Some(("pop.gmx.net", 995, Implicit)), 500, None),
];

/// Address domain → preset, as the providers document which domains they serve.
const DOMAINS: &[(&str, &str)] = &[
    ("gmail.com", "gmail"),
    ("googlemail.com", "gmail"),
    ("outlook.com", "outlook"),
    ("hotmail.com", "outlook"),
    ("live.com", "outlook"),
    ("msn.com", "outlook"),
    ("yahoo.com", "yahoo"),
    ("ymail.com", "yahoo"),
    ("rocketmail.com", "yahoo"),
    ("icloud.com", "icloud"),
    ("me.com", "icloud"),
    ("mac.com", "icloud"),
    ("att.net", "att"),
    ("sbcglobal.net", "att"),
    ("bellsouth.net", "att"),
    ("ameritech.net", "att"),
    ("pacbell.net", "att"),
    ("prodigy.net", "att"),
    ("snet.net", "att"),
    ("swbell.net", "att"),
    ("flash.net", "att"),
    ("nvbell.net", "att"),
    ("currently.com", "att"),
    ("wans.net", "att"),
    ("aol.com", "aol"),
    ("gmx.com", "gmx"),
    ("gmx.net", "gmx-net"),
    ("gmx.de", "gmx-net"),
];

fn server((host, port, tls): Ep) -> Server {
    Server { host, port, tls }
}

fn service(primary: Ep, alternate: Option<Ep>, user: UserForm) -> Service {
    Service {
        primary: server(primary),
        alternate: alternate.map(server),
        user,
    }
}

#[test]
fn presets_match_published_settings() {
    for row in PUBLISHED {
        let p = get(row.name).unwrap_or_else(|| panic!("no preset {}", row.name));
        assert_eq!(p.name, row.name);
        // iCloud is the one provider whose IMAP login is the name part only.
        let imap_user = if row.name == "icloud" {
            UserForm::LocalPart
        } else {
            UserForm::FullAddress
        };
        assert_eq!(
            p.smtp,
            Some(service(row.smtp, row.smtp_alt, UserForm::FullAddress)),
            "{} smtp",
            row.name
        );
        assert_eq!(
            p.imap,
            row.imap.map(|e| service(e, None, imap_user)),
            "{} imap",
            row.name
        );
        assert_eq!(
            p.pop,
            row.pop.map(|e| service(e, None, UserForm::FullAddress)),
            "{} pop",
            row.name
        );
        assert_eq!(p.daily_limit, row.daily_limit, "{} daily limit", row.name);
        assert_eq!(p.oauth, row.oauth, "{} oauth", row.name);
        assert_eq!(p.window, Window::Rolling24h, "{} window", row.name);
        assert!(!p.auth.is_empty(), "{} accepts no auth", row.name);
        assert_eq!(
            p.oauth.is_some(),
            p.auth.contains(&AuthKind::Oauth2),
            "{}: OAuth provider iff OAuth2 accepted",
            row.name
        );
        assert!(!p.display.is_empty(), "{} display", row.name);
        assert!(!p.hints.is_empty(), "{} has no setup hints", row.name);
    }
}

#[test]
fn icloud_user_forms() {
    let icloud = get("icloud").unwrap();
    assert_eq!(icloud.imap.unwrap().user, UserForm::LocalPart);
    assert_eq!(icloud.smtp.unwrap().user, UserForm::FullAddress);
    assert_eq!(icloud.pop, None);
    assert_eq!(icloud.auth, &[AuthKind::AppPassword]);
}

#[test]
fn auth_preferences() {
    let auth = |n: &str| get(n).unwrap().auth;
    assert_eq!(auth("gmail"), &[AuthKind::Oauth2, AuthKind::AppPassword]);
    assert_eq!(auth("google-workspace"), &[AuthKind::Oauth2]);
    assert_eq!(auth("outlook"), &[AuthKind::Oauth2]);
    assert_eq!(auth("office365"), &[AuthKind::Oauth2]);
    assert_eq!(auth("yahoo"), &[AuthKind::AppPassword, AuthKind::Oauth2]);
    assert_eq!(auth("aol"), &[AuthKind::AppPassword, AuthKind::Oauth2]);
    assert_eq!(auth("att"), &[AuthKind::AppPassword]);
    assert_eq!(auth("zoho"), &[AuthKind::AppPassword, AuthKind::Password]);
    assert_eq!(auth("gmx"), &[AuthKind::Password]);
}

#[test]
fn every_preset_has_a_published_row_and_vice_versa() {
    let tested: HashSet<&str> = PUBLISHED.iter().map(|r| r.name).collect();
    assert_eq!(tested.len(), PUBLISHED.len(), "duplicate row in PUBLISHED");
    let built_in: HashSet<&str> = names().collect();
    assert_eq!(built_in.len(), PRESETS.len(), "duplicate preset name");
    assert_eq!(built_in, tested);
    assert!(PRESETS.iter().map(|p| p.name).eq(names()));
}

#[test]
fn get_is_case_insensitive_and_rejects_unknown_names() {
    assert_eq!(get("GMail").unwrap().name, "gmail");
    assert_eq!(get("Zoho-Pro-EU").unwrap().name, "zoho-pro-eu");
    assert!(get("nope").is_none());
    assert!(get("").is_none());
}

#[test]
fn for_email_maps_every_listed_domain() {
    for &(domain, preset) in DOMAINS {
        for email in [
            format!("someone@{domain}"),
            format!("Someone@{}", domain.to_uppercase()),
        ] {
            assert_eq!(for_email(&email).map(|p| p.name), Some(preset), "{email}");
        }
    }
}

#[test]
fn for_email_rejects_unknown_domains() {
    assert!(for_email("a@example.com").is_none());
    assert!(for_email("a@mail.gmail.com").is_none());
    assert!(for_email("gmail.com").is_none());
    assert!(for_email("").is_none());
    // The domain is what follows the last '@'.
    assert!(for_email("\"x@gmail.com\"@example.org").is_none());
    assert_eq!(
        for_email("\"x@example.org\"@gmail.com").map(|p| p.name),
        Some("gmail")
    );
}

#[test]
fn no_domain_maps_to_two_presets() {
    let mut owner: HashMap<String, &str> = HashMap::new();
    for p in PRESETS {
        for d in p.domains {
            assert_eq!(
                *d,
                d.to_ascii_lowercase(),
                "{} domain not lowercase",
                p.name
            );
            if let Some(other) = owner.insert(d.to_ascii_lowercase(), p.name) {
                panic!("{d} maps to both {other} and {}", p.name);
            }
        }
    }
}

#[test]
fn render_table_mentions_every_preset_and_host() {
    let table = render_table();
    for p in PRESETS {
        assert!(table.contains(p.name), "{} missing", p.name);
        for s in [p.smtp, p.imap, p.pop].into_iter().flatten() {
            for server in std::iter::once(s.primary).chain(s.alternate) {
                assert!(table.contains(server.host), "{} missing", server.host);
                assert!(
                    table.contains(&server.port.to_string()),
                    "{} missing",
                    server.port
                );
            }
        }
        for hint in p.hints {
            assert!(table.contains(hint), "hint for {} missing", p.name);
        }
    }
    assert!(table.contains("smtp.gmail.com:587/starttls (+465/implicit)"));
    assert!(table.contains("imap.mail.me.com:993/implicit"));
    // One header plus one row per preset, all aligned: the SMTP column starts
    // at the same offset on every row.
    let rows: Vec<&str> = table.lines().take(PRESETS.len() + 1).collect();
    let col = rows[0].find("SMTP").unwrap();
    for (line, p) in rows[1..].iter().zip(PRESETS) {
        assert!(line.starts_with(p.name), "{line}");
        let host = p.smtp.unwrap().primary.host;
        assert!(line[col..].starts_with(host), "{line}");
    }
}

#[test]
fn user_form_apply() {
    assert_eq!(
        UserForm::FullAddress.apply("Emily@icloud.com"),
        "Emily@icloud.com"
    );
    assert_eq!(UserForm::LocalPart.apply("emily@icloud.com"), "emily");
    assert_eq!(UserForm::LocalPart.apply("\"a@b\"@me.com"), "\"a@b\"");
    assert_eq!(UserForm::LocalPart.apply("nodomain"), "nodomain");
}

#[test]
fn display_and_serde_spellings_agree() {
    #[derive(serde::Deserialize)]
    struct T {
        tls: TlsMode,
        auth: AuthKind,
        window: Window,
    }
    for (tls, s) in [
        (TlsMode::None, "none"),
        (Starttls, "starttls"),
        (Implicit, "implicit"),
    ] {
        assert_eq!(tls.to_string(), s);
        let t: T = toml::from_str(&format!(
            "tls = \"{s}\"\nauth = \"app-password\"\nwindow = \"rolling-24h\""
        ))
        .unwrap();
        assert_eq!(t.tls, tls);
        assert_eq!(t.auth, AuthKind::AppPassword);
        assert_eq!(t.window, Window::Rolling24h);
    }
    for (w, s) in [
        (Window::Rolling24h, "rolling-24h"),
        (Window::CalendarDay, "calendar-day"),
    ] {
        assert_eq!(w.to_string(), s);
        let t: T = toml::from_str(&format!(
            "tls = \"none\"\nauth = \"oauth2\"\nwindow = \"{s}\""
        ))
        .unwrap();
        assert_eq!(t.window, w);
        assert_eq!(t.auth, AuthKind::Oauth2);
    }
    assert!(
        toml::from_str::<T>("tls = \"ssl\"\nauth = \"password\"\nwindow = \"rolling-24h\"")
            .is_err()
    );
}
