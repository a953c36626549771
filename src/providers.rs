//! Built-in provider presets: the one place that holds each provider's SMTP,
//! IMAP and POP endpoints (host, port, TLS mode, login-name form), the auth
//! methods it accepts, its OAuth provider, its daily sending limit and quota
//! window, the email domains it serves, and the setup hints a user needs.
//! `postern providers` prints this data through [`render_table`].
//!
//! Plain data and lookups only: std + serde, no I/O, no tokio, and no
//! imports from `config` (config depends on this module, never the reverse).
//!
//! Values come from the providers' published mail-client settings pages, as
//! summarised in DESIGN.md's "Provider presets" table; where DESIGN lists two
//! SMTP ports, the first is the primary. A daily limit marked "conservative
//! guess" is not published by the provider.

use std::fmt;

/// How a connection is secured: plaintext, STARTTLS after the greeting, or
/// TLS from the first byte (465, 993, 995).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    Starttls,
    Implicit,
}

impl TlsMode {
    /// The config spelling: `none`, `starttls` or `implicit`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One upstream endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server {
    pub host: &'static str,
    pub port: u16,
    pub tls: TlsMode,
}

/// `host:port/tls`, e.g. `smtp.gmail.com:587/starttls`.
impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.port, self.tls)
    }
}

/// The login name sent upstream, derived from the account's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserForm {
    /// `alice@example.com`
    FullAddress,
    /// `alice` (iCloud IMAP wants only the name part)
    LocalPart,
}

impl UserForm {
    /// The login name for `email`. `LocalPart` takes what stands before the
    /// last `@` (a quoted local part may itself contain `@`); an input without
    /// `@` is returned unchanged.
    pub fn apply(self, email: &str) -> String {
        match self {
            UserForm::FullAddress => email.to_owned(),
            UserForm::LocalPart => email
                .rsplit_once('@')
                .map_or(email, |(local, _)| local)
                .to_owned(),
        }
    }
}

/// One protocol (SMTP, IMAP or POP) of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    pub primary: Server,
    /// Tried when the primary's port is blocked or its TLS mode fails.
    pub alternate: Option<Server>,
    pub user: UserForm,
}

/// A way of authenticating that the provider accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthKind {
    Oauth2,
    /// A generated password (app password, app-specific password, secure
    /// mail key) used in place of the account password.
    AppPassword,
    /// The account's normal password.
    Password,
}

impl AuthKind {
    /// The serde spelling: `oauth2`, `app-password` or `password`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Oauth2 => "oauth2",
            AuthKind::AppPassword => "app-password",
            AuthKind::Password => "password",
        }
    }
}

impl fmt::Display for AuthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose OAuth2 authorization server issues tokens for a preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthProvider {
    Google,
    Microsoft,
    Yahoo,
    Aol,
}

/// A provider's authorization server, as the presets know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderOAuth {
    pub name: &'static str,
    pub auth_url: String,
    pub token_url: String,
    pub device_url: Option<String>,
    /// Scopes for a user's mailbox (authorization code and device grants).
    pub scopes: Vec<String>,
    /// Scopes for app-only access (client credentials grant).
    pub app_only_scopes: Vec<String>,
    /// Extra parameters of the authorization request.
    pub auth_params: Vec<(String, String)>,
    /// Host name in the loopback redirect URI the app registration expects.
    pub redirect_host: &'static str,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The endpoints and default scopes of `p` (`tenant`: Microsoft only).
pub fn provider_oauth(p: OAuthProvider, tenant: &str) -> ProviderOAuth {
    match p {
        OAuthProvider::Google => ProviderOAuth {
            name: "Google",
            auth_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
            token_url: "https://oauth2.googleapis.com/token".into(),
            // Exists, but does not allow the Gmail scope (see `consent`).
            device_url: Some("https://oauth2.googleapis.com/device/code".into()),
            scopes: strings(&["https://mail.google.com/"]),
            app_only_scopes: Vec::new(),
            // offline: issue a refresh token; consent: issue it again on re-consent.
            auth_params: vec![
                ("access_type".into(), "offline".into()),
                ("prompt".into(), "consent".into()),
            ],
            redirect_host: "127.0.0.1",
        },
        OAuthProvider::Microsoft => {
            let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
            ProviderOAuth {
                name: "Microsoft",
                auth_url: format!("{base}/authorize"),
                token_url: format!("{base}/token"),
                device_url: Some(format!("{base}/devicecode")),
                scopes: strings(&[
                    "https://outlook.office.com/IMAP.AccessAsUser.All",
                    "https://outlook.office.com/POP.AccessAsUser.All",
                    "https://outlook.office.com/SMTP.Send",
                    "offline_access",
                ]),
                app_only_scopes: strings(&["https://outlook.office365.com/.default"]),
                auth_params: Vec::new(),
                // "Mobile and desktop applications" registrations use
                // http://localhost; the port is free at run time.
                redirect_host: "localhost",
            }
        }
        OAuthProvider::Yahoo => ProviderOAuth {
            name: "Yahoo",
            auth_url: "https://api.login.yahoo.com/oauth2/request_auth".into(),
            token_url: "https://api.login.yahoo.com/oauth2/get_token".into(),
            device_url: None,
            scopes: strings(&["mail-w"]),
            app_only_scopes: Vec::new(),
            auth_params: Vec::new(),
            redirect_host: "localhost",
        },
        OAuthProvider::Aol => ProviderOAuth {
            name: "AOL",
            auth_url: "https://api.login.aol.com/oauth2/request_auth".into(),
            token_url: "https://api.login.aol.com/oauth2/get_token".into(),
            device_url: None,
            scopes: strings(&["mail-w"]),
            app_only_scopes: Vec::new(),
            auth_params: Vec::new(),
            redirect_host: "localhost",
        },
    }
}

/// How a daily limit is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub enum Window {
    /// The last 24 hours, sliding.
    #[serde(rename = "rolling-24h")]
    Rolling24h,
    /// Midnight to midnight in a configured time zone.
    #[serde(rename = "calendar-day")]
    CalendarDay,
}

impl Window {
    /// The config spelling: `rolling-24h` or `calendar-day`.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Rolling24h => "rolling-24h",
            Window::CalendarDay => "calendar-day",
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A built-in provider.
#[derive(Debug)]
pub struct Preset {
    /// The name used in config (`provider = "gmail"`).
    pub name: &'static str,
    pub display: &'static str,
    pub smtp: Option<Service>,
    pub imap: Option<Service>,
    pub pop: Option<Service>,
    /// Accepted auth methods, preferred first.
    pub auth: &'static [AuthKind],
    pub oauth: Option<OAuthProvider>,
    /// Messages per `window` before the provider starts refusing.
    pub daily_limit: u32,
    /// Simultaneous SMTP connections per mailbox Postern opens at most
    /// (`max_connections` on the account overrides it). The provider's
    /// published cap where there is one; else a conservative guess, since
    /// the user's phone and desktop share the provider's allowance.
    pub max_connections: usize,
    /// Messages per minute per mailbox (`max_per_minute`), where the
    /// provider publishes a rate limit.
    pub max_per_minute: Option<u32>,
    pub window: Window,
    /// Address domains served by this preset (lowercase). A domain belongs
    /// to at most one preset.
    pub domains: &'static [&'static str],
    /// Setup steps a user needs before the account works through Postern.
    pub hints: &'static [&'static str],
}

const fn server(host: &'static str, port: u16, tls: TlsMode) -> Server {
    Server { host, port, tls }
}

/// SMTP on 587 STARTTLS with 465 implicit TLS as the alternate.
const fn smtp_587_465(host: &'static str) -> Option<Service> {
    Some(Service {
        primary: server(host, 587, TlsMode::Starttls),
        alternate: Some(server(host, 465, TlsMode::Implicit)),
        user: UserForm::FullAddress,
    })
}

/// SMTP on 465 implicit TLS with 587 STARTTLS as the alternate.
const fn smtp_465_587(host: &'static str) -> Option<Service> {
    Some(Service {
        primary: server(host, 465, TlsMode::Implicit),
        alternate: Some(server(host, 587, TlsMode::Starttls)),
        user: UserForm::FullAddress,
    })
}

/// A single implicit-TLS or STARTTLS endpoint, full address as login.
const fn single(host: &'static str, port: u16, tls: TlsMode) -> Option<Service> {
    Some(Service {
        primary: server(host, port, tls),
        alternate: None,
        user: UserForm::FullAddress,
    })
}

/// IMAP on 993, implicit TLS.
const fn imap_993(host: &'static str) -> Option<Service> {
    single(host, 993, TlsMode::Implicit)
}

/// POP3 on 995, implicit TLS.
const fn pop_995(host: &'static str) -> Option<Service> {
    single(host, 995, TlsMode::Implicit)
}

const ATT_DOMAINS: &[&str] = &[
    "att.net",
    "sbcglobal.net",
    "bellsouth.net",
    "ameritech.net",
    "pacbell.net",
    "prodigy.net",
    "snet.net",
    "swbell.net",
    "flash.net",
    "nvbell.net",
    "currently.com",
    "wans.net",
];

const ZOHO_HINTS: &[&str] = &[
    "enable IMAP access in Zoho Mail settings",
    "paid custom domains use the pro hosts (zoho-pro, zoho-pro-eu)",
    "EU accounts only work on the .eu hosts (zoho-eu, zoho-pro-eu)",
    "with two-factor authentication on, use an app-specific password",
];

const GMX_HINT: &str = "enable IMAP/POP access in GMX settings (off by default); TLS 1.2 or \
                        newer; log in with the normal password";

/// Every built-in preset, in the order of DESIGN.md's table.
pub static PRESETS: &[Preset] = &[
    Preset {
        name: "gmail",
        display: "Gmail (personal)",
        smtp: smtp_587_465("smtp.gmail.com"),
        imap: imap_993("imap.gmail.com"),
        // developers.google.com/workspace/gmail/imap/imap-smtp: "the POP server at
        // pop.gmail.com:995 require[s] SSL"; XOAUTH2 over POP AUTH: developers.google.com/gmail/imap/xoauth2-protocol.
        pop: pop_995("pop.gmail.com"),
        auth: &[AuthKind::Oauth2, AuthKind::AppPassword],
        oauth: Some(OAuthProvider::Google),
        // Google: "Gmail sending limits" — 500 recipients/day for personal accounts.
        daily_limit: 500,
        // Google publishes no SMTP connection cap for smtp.gmail.com
        // (developers.google.com/workspace/gmail/imap/imap-smtp: quotas "are
        // per user and are shared by all clients accessing the account");
        // a conservative guess, well under the 15 IMAP sessions Gmail allows.
        max_connections: 3,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: &["gmail.com", "googlemail.com"],
        hints: &[
            "turn on 2-step verification and create an app password, or use OAuth \
             (auth = \"oauth2\")",
        ],
    },
    Preset {
        name: "google-workspace",
        display: "Google Workspace",
        smtp: smtp_587_465("smtp.gmail.com"),
        imap: imap_993("imap.gmail.com"),
        // developers.google.com/workspace/gmail/imap/imap-smtp: "the POP server at
        // pop.gmail.com:995 require[s] SSL"; XOAUTH2 over POP AUTH: developers.google.com/gmail/imap/xoauth2-protocol.
        pop: pop_995("pop.gmail.com"),
        auth: &[AuthKind::Oauth2],
        oauth: Some(OAuthProvider::Google),
        // Google Workspace admin help: 2,000 messages/day per user.
        daily_limit: 2000,
        // Google publishes no SMTP connection cap for smtp.gmail.com
        // (developers.google.com/workspace/gmail/imap/imap-smtp: quotas "are
        // per user and are shared by all clients accessing the account");
        // a conservative guess, well under the 15 IMAP sessions Gmail allows.
        max_connections: 3,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: &[],
        hints: &["OAuth only since May 2025: app passwords and plain passwords are refused"],
    },
    Preset {
        name: "outlook",
        display: "Outlook.com / Hotmail (personal)",
        smtp: single("smtp-mail.outlook.com", 587, TlsMode::Starttls),
        imap: imap_993("outlook.office365.com"),
        // learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/pop3-and-imap4/pop3-and-imap4:
        // "POP3 | Outlook.office365.com | 995 | TLS"; OAuth: learn.microsoft.com/en-us/exchange/client-developer/
        // legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth.
        pop: pop_995("outlook.office365.com"),
        auth: &[AuthKind::Oauth2],
        oauth: Some(OAuthProvider::Microsoft),
        // Outlook.com sending limits: 300 recipients/day for personal accounts.
        daily_limit: 300,
        // learn.microsoft.com/en-us/exchange/troubleshoot/send-emails/smtp-submission-improvements:
        // "Up to three concurrent connections are allowed to send email
        // messages at the same time" (432 4.3.2 Concurrent connections limit
        // exceeded beyond), and "30 messages per minute".
        max_connections: 3,
        max_per_minute: Some(30),
        window: Window::Rolling24h,
        domains: &[
            "outlook.com",
            "hotmail.com",
            "live.com",
            "msn.com",
            "outlook.de",
            "outlook.fr",
            "outlook.es",
            "outlook.it",
            "hotmail.co.uk",
            "hotmail.de",
            "hotmail.fr",
            "hotmail.es",
            "hotmail.it",
            "live.co.uk",
            "live.de",
            "live.fr",
        ],
        hints: &[
            "enable IMAP/POP in Outlook.com Settings › Mail › Forwarding and IMAP",
            "OAuth2 only: basic authentication has been removed",
        ],
    },
    Preset {
        name: "office365",
        display: "Microsoft 365 / Exchange Online",
        smtp: single("smtp.office365.com", 587, TlsMode::Starttls),
        imap: imap_993("outlook.office365.com"),
        // learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/pop3-and-imap4/pop3-and-imap4:
        // "POP3 | Outlook.office365.com | 995 | TLS"; OAuth: learn.microsoft.com/en-us/exchange/client-developer/
        // legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth.
        pop: pop_995("outlook.office365.com"),
        auth: &[AuthKind::Oauth2],
        oauth: Some(OAuthProvider::Microsoft),
        // Exchange Online limits allow more per mailbox, but new tenants are
        // throttled around 5,000–6,000/day; the low end is the safe default.
        daily_limit: 5000,
        // learn.microsoft.com/en-us/exchange/troubleshoot/send-emails/smtp-submission-improvements:
        // "Up to three concurrent connections are allowed to send email
        // messages at the same time" (432 4.3.2 Concurrent connections limit
        // exceeded beyond), and "30 messages per minute".
        max_connections: 3,
        max_per_minute: Some(30),
        window: Window::Rolling24h,
        domains: &[],
        hints: &[
            "SMTP AUTH must be enabled for the mailbox (Microsoft 365 admin center)",
            "new tenants throttle around 5,000–6,000 messages/day",
        ],
    },
    Preset {
        name: "yahoo",
        display: "Yahoo Mail",
        smtp: smtp_587_465("smtp.mail.yahoo.com"),
        imap: imap_993("imap.mail.yahoo.com"),
        // help.yahoo.com/kb/pop-access-settings-instructions-yahoo-mail-sln4724.html (read via
        // Thunderbird's ISPDB entry for yahoo.com: pop.mail.yahoo.com 995 SSL).
        pop: pop_995("pop.mail.yahoo.com"),
        auth: &[AuthKind::AppPassword, AuthKind::Oauth2],
        oauth: Some(OAuthProvider::Yahoo),
        // Yahoo does not publish a fixed number; ~500/day is the commonly
        // observed ceiling (DESIGN.md).
        daily_limit: 500,
        // No published SMTP connection cap: a conservative guess (the
        // provider's allowance is shared with the user's other devices).
        max_connections: 2,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: &[
            "yahoo.com",
            "ymail.com",
            "rocketmail.com",
            "yahoo.co.uk",
            "yahoo.ca",
            "yahoo.de",
            "yahoo.fr",
        ],
        hints: &["generate an app password in Yahoo Account security"],
    },
    Preset {
        name: "zoho",
        display: "Zoho Mail (free, zoho.com)",
        smtp: smtp_587_465("smtp.zoho.com"),
        imap: imap_993("imap.zoho.com"),
        // zoho.com/mail/help/pop-access.html: "Incoming Server Name: pop.zoho.com Port: 995 Require SSL: Yes".
        pop: pop_995("pop.zoho.com"),
        auth: &[AuthKind::AppPassword, AuthKind::Password],
        oauth: None,
        // Conservative guess: Zoho's limits depend on the plan and are not a
        // single published number.
        daily_limit: 500,
        // No published SMTP connection cap: a conservative guess (the
        // provider's allowance is shared with the user's other devices).
        max_connections: 2,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: &["zoho.com", "zohomail.com"],
        hints: ZOHO_HINTS,
    },
    Preset {
        name: "zoho-pro",
        display: "Zoho Mail (paid / custom domain)",
        smtp: smtp_587_465("smtppro.zoho.com"),
        imap: imap_993("imappro.zoho.com"),
        // zoho.com/mail/help/pop-access.html (organization users): poppro.zoho.com 995 SSL.
        pop: pop_995("poppro.zoho.com"),
        auth: &[AuthKind::AppPassword, AuthKind::Password],
        oauth: None,
        // Conservative guess (see zoho).
        daily_limit: 500,
        // No published SMTP connection cap: a conservative guess (the
        // provider's allowance is shared with the user's other devices).
        max_connections: 2,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: &[],
        hints: ZOHO_HINTS,
    },
    Preset {
        name: "zoho-eu",
        display: "Zoho Mail EU (free, zoho.eu)",
        smtp: smtp_587_465("smtp.zoho.eu"),
        imap: imap_993("imap.zoho.eu"),
        // Zoho's per-data-centre hosts (.eu); unverified on a Zoho EU page.
        pop: pop_995("pop.zoho.eu"),
        auth: &[AuthKind::AppPassword, AuthKind::Password],
        oauth: None,
        // Conservative guess (see zoho).
        daily_limit: 500,
        // No published SMTP connection cap: a conservative guess (the
        // provider's allowance is shared with the user's other devices).
        max_connections: 2,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: &["zohomail.eu"],
        hints: ZOHO_HINTS,
    },
    Preset {
        name: "zoho-pro-eu",
        display: "Zoho Mail EU (paid / custom domain)",
        smtp: smtp_587_465("smtppro.zoho.eu"),
        imap: imap_993("imappro.zoho.eu"),
        // As zoho-eu: the EU data centre's organization host; unverified on a Zoho EU page.
        pop: pop_995("poppro.zoho.eu"),
        auth: &[AuthKind::AppPassword, AuthKind::Password],
        oauth: None,
        // Conservative guess (see zoho).
        daily_limit: 500,
        // No published SMTP connection cap: a conservative guess (the
        // provider's allowance is shared with the user's other devices).
        max_connections: 2,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: &[],
        hints: ZOHO_HINTS,
    },
    Preset {
        name: "icloud",
        display: "iCloud Mail",
        smtp: single("smtp.mail.me.com", 587, TlsMode::Starttls),
        // Apple: the IMAP user name is the name part of the address, the
        // SMTP user name the full address.
        imap: Some(Service {
            primary: server("imap.mail.me.com", 993, TlsMode::Implicit),
            alternate: None,
            user: UserForm::LocalPart,
        }),
        // Apple (support.apple.com/en-us/102525) publishes IMAP and SMTP settings only: no POP.
        pop: None,
        auth: &[AuthKind::AppPassword],
        oauth: None,
        // Apple: "iCloud Mail limits" — 1,000 recipients/day.
        daily_limit: 1000,
        // No published SMTP connection cap: a conservative guess (the
        // provider's allowance is shared with the user's other devices).
        max_connections: 2,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: &["icloud.com", "me.com", "mac.com"],
        hints: &[
            "create an app-specific password at appleid.apple.com",
            "IMAP user is the name part of the address, SMTP user the full address",
        ],
    },
    Preset {
        name: "att",
        display: "AT&T Mail (currently.com)",
        smtp: smtp_465_587("smtp.mail.att.net"),
        imap: imap_993("imap.mail.att.net"),
        // Unverified: no AT&T page found; the long-standing published POP host of AT&T mail.
        pop: pop_995("inbound.att.net"),
        auth: &[AuthKind::AppPassword],
        oauth: None,
        // Conservative guess: AT&T publishes no daily number.
        daily_limit: 500,
        // No published SMTP connection cap: a conservative guess (the
        // provider's allowance is shared with the user's other devices).
        max_connections: 2,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: ATT_DOMAINS,
        hints: &[
            "create a secure mail key in AT&T profile › Sign-in info and use it as the password",
            "covers sbcglobal, bellsouth, ameritech, pacbell, prodigy, snet, swbell, flash, \
             nvbell, currently and wans addresses",
        ],
    },
    Preset {
        name: "att-legacy",
        display: "AT&T Mail (older POP3 setup)",
        smtp: single("outbound.att.net", 465, TlsMode::Implicit),
        imap: None,
        // Unverified: no AT&T page found; the long-standing published POP host of AT&T mail.
        pop: pop_995("inbound.att.net"),
        auth: &[AuthKind::AppPassword],
        oauth: None,
        // Conservative guess (see att).
        daily_limit: 500,
        // No published SMTP connection cap: a conservative guess (the
        // provider's allowance is shared with the user's other devices).
        max_connections: 2,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: &[],
        hints: &[
            "AT&T's older POP3 setup; prefer the att preset for IMAP",
            "use a secure mail key as the password",
        ],
    },
    Preset {
        name: "aol",
        display: "AOL Mail",
        smtp: smtp_465_587("smtp.aol.com"),
        imap: imap_993("imap.aol.com"),
        // help.aol.com/articles/how-do-i-use-other-email-applications-to-send-and-receive-my-aol-mail
        // (with Thunderbird's ISPDB entry for aol.com: pop.aol.com 995 SSL).
        pop: pop_995("pop.aol.com"),
        auth: &[AuthKind::AppPassword, AuthKind::Oauth2],
        oauth: Some(OAuthProvider::Aol),
        // Conservative guess: AOL publishes no daily number; same as Yahoo,
        // whose mail platform it shares.
        daily_limit: 500,
        // No published SMTP connection cap: a conservative guess (the
        // provider's allowance is shared with the user's other devices).
        max_connections: 2,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: &["aol.com", "aim.com"],
        hints: &["generate an app password in AOL Account security"],
    },
    Preset {
        name: "gmx",
        display: "GMX (gmx.com)",
        smtp: smtp_587_465("mail.gmx.com"),
        imap: imap_993("imap.gmx.com"),
        // support.gmx.com/pop-imap/ (GMX: encrypted connections only); host unverified on GMX's page.
        pop: pop_995("pop.gmx.com"),
        auth: &[AuthKind::Password],
        oauth: None,
        // Conservative guess: GMX publishes no daily number.
        daily_limit: 500,
        // No published SMTP connection cap: a conservative guess (the
        // provider's allowance is shared with the user's other devices).
        max_connections: 2,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: &["gmx.com"],
        hints: &[GMX_HINT],
    },
    Preset {
        name: "gmx-net",
        display: "GMX (gmx.net / gmx.de)",
        smtp: smtp_587_465("mail.gmx.net"),
        imap: imap_993("imap.gmx.net"),
        // GMX (.net/.de): "Als POP-Server verwenden Sie pop.gmx.net … 995" (third-party guide; unverified).
        pop: pop_995("pop.gmx.net"),
        auth: &[AuthKind::Password],
        oauth: None,
        // Conservative guess (see gmx).
        daily_limit: 500,
        // No published SMTP connection cap: a conservative guess (the
        // provider's allowance is shared with the user's other devices).
        max_connections: 2,
        max_per_minute: None,
        window: Window::Rolling24h,
        domains: &["gmx.net", "gmx.de", "gmx.at", "gmx.ch"],
        hints: &[GMX_HINT],
    },
];

/// The preset called `name`, case-insensitively.
pub fn get(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// The preset serving `email`'s domain (after the last `@`),
/// case-insensitively. `None` for an unknown domain or a string without `@`.
pub fn for_email(email: &str) -> Option<&'static Preset> {
    let (_, domain) = email.rsplit_once('@')?;
    PRESETS
        .iter()
        .find(|p| p.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
}

/// Every preset name, in table order.
pub fn names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|p| p.name)
}

/// The text `postern providers` prints: one aligned row per preset, then
/// each preset's setup hints.
pub fn render_table() -> String {
    const HEADER: [&str; 8] = [
        "NAME", "SMTP", "IMAP", "POP", "AUTH", "LIMIT", "WINDOW", "DOMAINS",
    ];
    let rows: Vec<[String; 8]> = PRESETS
        .iter()
        .map(|p| {
            [
                p.name.to_owned(),
                service_cell(p.smtp),
                service_cell(p.imap),
                service_cell(p.pop),
                p.auth
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                p.daily_limit.to_string(),
                p.window.to_string(),
                if p.domains.is_empty() {
                    "-".to_owned()
                } else {
                    p.domains.join(",")
                },
            ]
        })
        .collect();

    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }

    let mut out = String::new();
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            // The last column is not padded, so lines carry no trailing blanks.
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}"));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }

    out.push_str("\nSetup hints:\n");
    for p in PRESETS {
        out.push_str(&format!("  {} ({}):\n", p.name, p.display));
        for hint in p.hints {
            out.push_str(&format!("    - {hint}\n"));
        }
    }
    out
}

/// `host:port/tls`, plus ` (+port/tls)` for an alternate on the same host or
/// ` (+host:port/tls)` for one elsewhere, and ` [user: local part]` when the
/// login is not the full address; `-` when the service is absent.
fn service_cell(service: Option<Service>) -> String {
    let Some(s) = service else {
        return "-".to_owned();
    };
    let mut cell = s.primary.to_string();
    if let Some(alt) = s.alternate {
        if alt.host == s.primary.host {
            cell.push_str(&format!(" (+{}/{})", alt.port, alt.tls));
        } else {
            cell.push_str(&format!(" (+{alt})"));
        }
    }
    if s.user == UserForm::LocalPart {
        cell.push_str(" [user: local part]");
    }
    cell
}
