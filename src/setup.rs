//! Guided setup: `postern account add EMAIL` and `postern user add NAME`.
//!
//! Both edit the config file in place with `toml_edit`, so its comments,
//! order and layout stay as the operator wrote them; a new table goes after
//! the last of its kind (or at the end), under a comment saying where it
//! came from. Nothing is
//! written unless the whole new file passes the same check as `run`, and
//! the file is replaced atomically (written next to it, then renamed).
//!
//! Every answer can come from a flag, so scripts never see a prompt; what a
//! flag does not give is asked on the terminal. Passwords are read with the
//! terminal's echo off and never written into the config: an upstream
//! password goes to a file of its own (mode 0600) under `data_dir/secrets/`,
//! a local password only as its argon2id hash.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use toml_edit::{DocumentMut, InlineTable, Item, Table};

use crate::config::Config;
use crate::providers::{self, AuthKind, Preset, TlsMode};
use crate::secret::Secret;

/// `postern account add`: flags for every question it would ask.
#[derive(Debug, clap::Args)]
pub struct AccountArgs {
    /// The mailbox's address; its domain picks the provider preset.
    pub email: String,
    /// The account's name in the config (default: the address's name part).
    #[arg(long)]
    pub name: Option<String>,
    /// A preset from `postern providers` (default: the one for the domain).
    #[arg(long)]
    pub provider: Option<String>,
    /// SMTP server HOST:PORT, for a provider without a preset (465 is TLS
    /// from the first byte, other ports upgrade with STARTTLS).
    #[arg(long, value_name = "HOST:PORT")]
    pub smtp: Option<String>,
    /// IMAP server HOST:PORT (993 is TLS from the first byte); "none" for
    /// no IMAP.
    #[arg(long, value_name = "HOST:PORT")]
    pub imap: Option<String>,
    /// CA certificate (PEM) of a server with a private CA.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// How Postern signs in to the provider: oauth2, app-password, password.
    #[arg(long, value_parser = parse_auth)]
    pub auth: Option<AuthKind>,
    /// Read the (app) password from this environment variable at run time.
    #[arg(long, conflicts_with = "password_file")]
    pub password_env: Option<String>,
    /// Read the (app) password from this file at run time.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// OAuth2 through a helper that prints an access token (pizauth, oama).
    #[arg(long)]
    pub token_command: Option<String>,
    /// OAuth2 client ID for Postern's built-in OAuth (`postern auth`).
    #[arg(long)]
    pub client_id: Option<String>,
    /// The OAuth client secret's environment variable.
    #[arg(long, conflicts_with = "client_secret_file")]
    pub client_secret_env: Option<String>,
    /// The OAuth client secret's file.
    #[arg(long)]
    pub client_secret_file: Option<PathBuf>,
    /// The local login your programs use (default: the account's name).
    #[arg(long, conflicts_with = "no_user")]
    pub user: Option<String>,
    /// Do not add a local user.
    #[arg(long)]
    pub no_user: bool,
    /// The local user's password, from this environment variable (else it
    /// is asked with the echo off).
    #[arg(long)]
    pub user_password_env: Option<String>,
    /// Do not run `doctor` on the new account.
    #[arg(long)]
    pub no_doctor: bool,
}

/// `postern user add`.
#[derive(Debug, clap::Args)]
pub struct UserArgs {
    /// The login name.
    pub name: String,
    /// Where its mail goes: an account, `pool:NAME` or `capture`.
    #[arg(long)]
    pub send_via: Option<String>,
    /// The account its IMAP/POP3 login reads.
    #[arg(long)]
    pub read_via: Option<String>,
    /// The password, from this environment variable (else it is asked
    /// with the echo off).
    #[arg(long)]
    pub password_env: Option<String>,
}

fn parse_auth(s: &str) -> Result<AuthKind, String> {
    match s {
        "oauth2" => Ok(AuthKind::Oauth2),
        "app-password" => Ok(AuthKind::AppPassword),
        "password" => Ok(AuthKind::Password),
        _ => Err("one of oauth2, app-password, password".into()),
    }
}

/// Questions on the terminal (standard error) and answers from standard
/// input; without a terminal the answers are read as lines, so a script can
/// pipe them in.
pub struct Prompt<R> {
    input: R,
    terminal: bool,
}

impl Prompt<std::io::StdinLock<'static>> {
    pub fn stdin() -> Self {
        use std::io::IsTerminal;
        Prompt {
            input: std::io::stdin().lock(),
            terminal: std::io::stdin().is_terminal(),
        }
    }
}

impl<R: BufRead> Prompt<R> {
    fn line(&mut self, question: &str) -> anyhow::Result<String> {
        let mut s = String::new();
        let n = self
            .input
            .read_line(&mut s)
            .context("reading standard input")?;
        if n == 0 {
            bail!("no answer to \"{question}\" (standard input ended): give it as a flag");
        }
        Ok(s.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// Asks `question`; an empty answer takes `default`.
    pub fn ask(&mut self, question: &str, default: Option<&str>) -> anyhow::Result<String> {
        match default {
            Some(d) if !d.is_empty() => eprint!("{question} [{d}]: "),
            _ => eprint!("{question}: "),
        }
        let _ = std::io::stderr().flush();
        let a = self.line(question)?.trim().to_owned();
        Ok(if a.is_empty() {
            default.unwrap_or("").to_owned()
        } else {
            a
        })
    }

    /// Asks for a secret with the terminal's echo off.
    pub fn secret(&mut self, question: &str) -> anyhow::Result<Secret> {
        eprint!("{question} (typing is hidden): ");
        let _ = std::io::stderr().flush();
        let _echo = self.terminal.then(NoEcho::new).flatten();
        // With the echo off the terminal still shows the newline (ECHONL).
        let a = self.line(question);
        drop(_echo);
        Ok(Secret::new(a?))
    }

    /// A new password, asked twice on a terminal.
    fn new_password(&mut self, question: &str) -> anyhow::Result<Secret> {
        loop {
            let a = self.secret(question)?;
            if a.expose().is_empty() {
                bail!("empty password");
            }
            if !self.terminal {
                return Ok(a);
            }
            if self.secret("Again")?.expose() == a.expose() {
                return Ok(a);
            }
            eprintln!("The two did not match; once more.");
        }
    }
}

/// The terminal's echo turned off while it lives.
struct NoEcho(rustix::termios::Termios);

impl NoEcho {
    fn new() -> Option<NoEcho> {
        use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
        let stdin = std::io::stdin();
        let old = tcgetattr(&stdin).ok()?;
        let mut quiet = old.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        tcsetattr(&stdin, OptionalActions::Now, &quiet).ok()?;
        Some(NoEcho(old))
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

/// The config file as text, its checked form, and its editable document.
struct Edit {
    file: PathBuf,
    config: Config,
    doc: DocumentMut,
}

impl Edit {
    fn open(file: &Path) -> anyhow::Result<Edit> {
        let text = std::fs::read_to_string(file).with_context(|| {
            format!(
                "cannot read {} (start from the shipped config/postern.toml, or pass --config)",
                file.display()
            )
        })?;
        let config = Config::from_str(&text, file)
            .with_context(|| format!("{} must be valid before it is edited", file.display()))?;
        let doc = text.parse::<DocumentMut>()?;
        Ok(Edit {
            file: file.to_owned(),
            config,
            doc,
        })
    }

    /// `[section.name] = table`, at the end of the file under `comment`.
    fn insert(&mut self, section: &str, name: &str, mut table: Table, comment: &str) {
        let parent = self.doc.entry(section).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        table.decor_mut().set_prefix(format!("\n# {comment}\n"));
        if let Some(t) = parent.as_table_mut() {
            t.insert(name, Item::Table(table));
        }
    }

    /// Checks the edited text as `run` would and replaces the file.
    fn save(self) -> anyhow::Result<Config> {
        let text = self.doc.to_string();
        let config = Config::from_str(&text, &self.file)
            .context("the edited config does not pass the check; the file is unchanged")?;
        let tmp = self.file.with_extension("toml.new");
        std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
        if let Ok(meta) = std::fs::metadata(&self.file) {
            let _ = std::fs::set_permissions(&tmp, meta.permissions());
        }
        std::fs::rename(&tmp, &self.file)
            .with_context(|| format!("replacing {}", self.file.display()))?;
        Ok(config)
    }
}

/// A config key from an address's name part: lowercase letters, digits,
/// `-` and `_`.
fn key_from(email: &str) -> String {
    let local = email.rsplit_once('@').map_or(email, |(l, _)| l);
    let k: String = local
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_') => c,
            _ => '-',
        })
        .collect();
    let k = k.trim_matches('-').to_owned();
    if k.is_empty() {
        "mailbox".into()
    } else {
        k
    }
}

/// `key`, or `key-2`, `key-3`… when taken.
fn unique(key: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(key) {
        return key.to_owned();
    }
    (2..)
        .map(|n| format!("{key}-{n}"))
        .find(|k| !taken(k))
        .expect("an unused name")
}

/// `HOST:PORT`, with the TLS mode its port implies (465, 993, 995: TLS
/// from the first byte; else STARTTLS), or `HOST:PORT/TLS` as `postern
/// providers` writes it.
fn server(s: &str, what: &str) -> anyhow::Result<InlineTable> {
    let (addr, tls) = match s.trim().rsplit_once('/') {
        Some((a, t)) => (a, Some(t)),
        None => (s.trim(), None),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("{what} server \"{s}\": write it as HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("{what} server \"{s}\": the port must be 1-65535"))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        bail!("{what} server \"{s}\": no host name");
    }
    let tls = match (tls, port) {
        (Some("implicit"), _) => TlsMode::Implicit,
        (Some("starttls"), _) => TlsMode::Starttls,
        (Some("none"), _) => TlsMode::None,
        (Some(t), _) => {
            bail!("{what} server \"{s}\": TLS mode \"{t}\" is not implicit, starttls or none")
        }
        (None, 465 | 993 | 995) => TlsMode::Implicit,
        (None, _) => TlsMode::Starttls,
    };
    let mut t = InlineTable::new();
    t.insert("host", host.into());
    t.insert("port", i64::from(port).into());
    t.insert("tls", tls.as_str().into());
    Ok(t)
}

/// Writes `secret` to `data_dir/secrets/NAME.password`, readable by the
/// owner only, and returns its path.
fn store_secret(data_dir: &Path, name: &str, secret: &Secret) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = data_dir.join("secrets");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.password"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{}", secret.expose())?;
    Ok(std::path::absolute(&path).unwrap_or(path))
}

fn env_password(var: &str) -> anyhow::Result<Secret> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => bail!("environment variable {var} is not set or empty"),
    }
}

/// The local user's table: its hash and routes.
fn user_table(password: &Secret, send_via: Option<&str>, read_via: Option<&str>) -> Table {
    let mut u = Table::new();
    u["password_hash"] = toml_edit::value(crate::auth::users::hash_password(password));
    if let Some(s) = send_via {
        u["send_via"] = toml_edit::value(s);
    }
    if let Some(r) = read_via {
        u["read_via"] = toml_edit::value(r);
    }
    u
}

fn today() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%d").to_string()
}

/// What `account add` did.
pub struct Added {
    pub account: String,
    pub config: Config,
    /// Whether `doctor` should run now (false for built-in OAuth before
    /// consent, or when asked not to).
    pub doctor: bool,
}

/// `postern account add`: asks what the flags do not give, writes the
/// account (and a local user), and says what comes next.
pub fn account_add<R: BufRead>(
    file: &Path,
    a: &AccountArgs,
    p: &mut Prompt<R>,
) -> anyhow::Result<Added> {
    let mut edit = Edit::open(file)?;
    let email = a.email.trim();
    let Some((_, domain)) = email.rsplit_once('@') else {
        bail!("\"{email}\" is not an email address");
    };
    if domain.is_empty() || email.contains(|c: char| c.is_whitespace() || c == '"') {
        bail!("\"{email}\" is not an email address");
    }
    let preset: Option<&'static Preset> = match &a.provider {
        Some(n) => Some(providers::get(n).with_context(|| {
            format!(
                "no preset \"{n}\"; the presets: {}",
                providers::names().collect::<Vec<_>>().join(", ")
            )
        })?),
        None if a.smtp.is_some() => None,
        None => providers::for_email(email),
    };

    let name = match &a.name {
        Some(n) => {
            if edit.config.accounts.contains_key(n) {
                bail!("an account \"{n}\" is already in {}", file.display());
            }
            n.clone()
        }
        None => unique(&key_from(email), |k| edit.config.accounts.contains_key(k)),
    };

    let mut acc = Table::new();
    let mut has_imap = false;
    match preset {
        Some(ps) => {
            eprintln!(
                "{email}: {} (preset \"{}\"){}{}, daily limit {}.",
                ps.display,
                ps.name,
                ps.smtp
                    .map(|s| format!(", SMTP {}", s.primary))
                    .unwrap_or_default(),
                ps.imap
                    .map(|s| format!(", IMAP {}", s.primary))
                    .unwrap_or_default(),
                ps.daily_limit
            );
            for h in ps.hints {
                eprintln!("  - {h}");
            }
            acc["provider"] = toml_edit::value(ps.name);
            has_imap = ps.imap.is_some();
        }
        None => {
            if a.smtp.is_none() {
                eprintln!("No preset serves {domain} (see `postern providers`): give its servers.");
            }
        }
    }
    acc["email"] = toml_edit::value(email);
    let smtp = match (&a.smtp, preset) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(p.ask("SMTP server (HOST:PORT or HOST:PORT/TLS)", None)?),
    };
    if let Some(s) = smtp {
        acc["smtp"] = toml_edit::value(server(&s, "SMTP")?);
    }
    let imap = match (&a.imap, preset) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(p.ask(
            "IMAP server (HOST:PORT or HOST:PORT/TLS, or none)",
            Some("none"),
        )?),
    };
    match imap.as_deref().map(str::trim) {
        Some("none" | "") => has_imap = false,
        Some(s) => {
            acc["imap"] = toml_edit::value(server(s, "IMAP")?);
            has_imap = true;
        }
        None => {}
    }
    let ca = match (&a.ca_file, preset) {
        (Some(c), _) => Some(c.display().to_string()),
        (None, Some(_)) => None,
        (None, None) => Some(p.ask(
            "CA certificate file of a private server (empty: the system's)",
            None,
        )?),
    };
    if let Some(c) = ca.filter(|c| !c.is_empty()) {
        let path = std::path::absolute(&c).unwrap_or_else(|_| PathBuf::from(&c));
        if !path.is_file() {
            bail!("CA file {} does not exist", path.display());
        }
        acc["ca_file"] = toml_edit::value(path.display().to_string());
    }

    // How Postern signs in: what the provider accepts, preferred first.
    let accepted: &[AuthKind] =
        preset.map_or(&[AuthKind::Password, AuthKind::AppPassword], |ps| ps.auth);
    let auth = match a.auth {
        Some(k) if preset.is_none() || accepted.contains(&k) => k,
        // An app password is a password to the protocol.
        Some(AuthKind::Password) if accepted.contains(&AuthKind::AppPassword) => {
            AuthKind::AppPassword
        }
        Some(k) => bail!(
            "{} does not accept {k}; it accepts {}",
            preset.map_or("this provider", |ps| ps.display),
            accepted
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None if a.token_command.is_some() || a.client_id.is_some() => AuthKind::Oauth2,
        None if a.password_env.is_some() || a.password_file.is_some() => *accepted
            .iter()
            .find(|k| **k != AuthKind::Oauth2)
            .with_context(|| {
                format!(
                    "{} takes only OAuth: give --client-id or --token-command, not a password",
                    preset.map_or("this provider", |ps| ps.display)
                )
            })?,
        None if accepted.len() == 1 => accepted[0],
        None => {
            let names: Vec<&str> = accepted.iter().map(|k| k.as_str()).collect();
            let pick = p.ask(
                &format!("How should Postern sign in ({})", names.join(", ")),
                Some(names[0]),
            )?;
            *accepted
                .iter()
                .find(|k| k.as_str() == pick)
                .with_context(|| format!("\"{pick}\" is not one of {}", names.join(", ")))?
        }
    };

    let mut doctor = !a.no_doctor;
    let data_dir = edit.config.data_dir.clone();
    match auth {
        AuthKind::Password | AuthKind::AppPassword => {
            acc["auth"] = toml_edit::value("password");
            if let Some(v) = &a.password_env {
                acc["password_env"] = toml_edit::value(v.as_str());
            } else if let Some(f) = &a.password_file {
                let f = std::path::absolute(f).unwrap_or_else(|_| f.clone());
                acc["password_file"] = toml_edit::value(f.display().to_string());
            } else {
                let what = if auth == AuthKind::AppPassword {
                    "App password"
                } else {
                    "Password"
                };
                let s = p.secret(&format!("{what} for {email}"))?;
                if s.expose().is_empty() {
                    bail!("empty password");
                }
                let f = store_secret(&data_dir, &name, &s)?;
                eprintln!("Saved it in {} (mode 0600).", f.display());
                acc["password_file"] = toml_edit::value(f.display().to_string());
            }
        }
        AuthKind::Oauth2 => {
            acc["auth"] = toml_edit::value("oauth2");
            if let Some(c) = &a.token_command {
                acc["token_command"] = toml_edit::value(c.as_str());
            } else {
                let id = match &a.client_id {
                    Some(id) => id.clone(),
                    None => p.ask(
                        "OAuth client ID (README, \"OAuth2\": register a desktop app)",
                        None,
                    )?,
                };
                if id.is_empty() {
                    bail!("built-in OAuth needs a client ID (or --token-command)");
                }
                let mut o = InlineTable::new();
                o.insert("client_id", id.as_str().into());
                if let Some(v) = &a.client_secret_env {
                    o.insert("client_secret_env", v.as_str().into());
                } else if let Some(f) = &a.client_secret_file {
                    let f = std::path::absolute(f).unwrap_or_else(|_| f.clone());
                    o.insert("client_secret_file", f.display().to_string().into());
                } else if a.client_id.is_none() {
                    let s = p.secret("OAuth client secret (empty if it has none)")?;
                    if !s.expose().is_empty() {
                        let f = store_secret(&data_dir, &format!("{name}.client"), &s)?;
                        o.insert("client_secret_file", f.display().to_string().into());
                    }
                }
                acc["oauth"] = toml_edit::value(o);
                // Consent first: doctor would only say there are no tokens.
                doctor = false;
            }
        }
    }
    edit.insert(
        "accounts",
        &name,
        acc,
        &format!("{email}: added by `postern account add` on {}", today()),
    );

    let mut user_name = None;
    if !a.no_user {
        let u = match &a.user {
            Some(u) => u.clone(),
            None if a.user_password_env.is_some() => name.clone(),
            None => p.ask("Local login for your programs", Some(&name))?,
        };
        if edit.config.users.contains_key(&u) {
            bail!(
                "a user \"{u}\" is already in {}: choose another with --user, or --no-user",
                file.display()
            );
        }
        let pw = match &a.user_password_env {
            Some(v) => env_password(v)?,
            None => p.new_password(&format!("Local password for {u}"))?,
        };
        let read = has_imap.then_some(name.as_str());
        edit.insert(
            "users",
            &u,
            user_table(&pw, Some(&name), read),
            &format!(
                "local login for {email}: added by `postern account add` on {}",
                today()
            ),
        );
        user_name = Some(u);
    }

    let config = edit.save()?;
    eprintln!(
        "Wrote [accounts.{name}]{} to {}.",
        user_name
            .as_ref()
            .map(|u| format!(" and [users.{u}]"))
            .unwrap_or_default(),
        file.display()
    );
    if has_imap && config.imap.is_none() && user_name.is_some() {
        eprintln!(
            "To read this mailbox through Postern, add an [imap] listener (see config/examples/gmail.toml)."
        );
    }
    if auth == AuthKind::Oauth2 && a.token_command.is_none() {
        eprintln!("Next: `postern auth {name}` to give consent, then `postern doctor {name}`.");
    }
    Ok(Added {
        account: name,
        config,
        doctor,
    })
}

/// `postern user add`.
pub fn user_add<R: BufRead>(file: &Path, a: &UserArgs, p: &mut Prompt<R>) -> anyhow::Result<()> {
    let mut edit = Edit::open(file)?;
    if edit.config.users.contains_key(&a.name) {
        bail!("a user \"{}\" is already in {}", a.name, file.display());
    }
    if a.send_via.is_none() && a.read_via.is_none() {
        bail!("give --send-via (an account, pool:NAME or capture) and/or --read-via (an account)");
    }
    let pw = match &a.password_env {
        Some(v) => env_password(v)?,
        None => p.new_password(&format!("Password for {}", a.name))?,
    };
    edit.insert(
        "users",
        &a.name,
        user_table(&pw, a.send_via.as_deref(), a.read_via.as_deref()),
        &format!("added by `postern user add` on {}", today()),
    );
    edit.save()?;
    eprintln!("Wrote [users.{}] to {}.", a.name, file.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_addresses() {
        assert_eq!(key_from("Alice.Smith@gmail.com"), "alice-smith");
        assert_eq!(key_from("\"@\"@x.test"), "mailbox");
        assert_eq!(unique("a", |k| k == "a" || k == "a-2"), "a-3");
    }

    #[test]
    fn servers_and_their_tls() {
        let t = server("mail.example.com:465", "SMTP").unwrap();
        assert_eq!(t.get("tls").unwrap().as_str(), Some("implicit"));
        let t = server("localhost:2993/implicit", "IMAP").unwrap();
        assert_eq!(t.get("tls").unwrap().as_str(), Some("implicit"));
        assert!(server("localhost:2993/ssl", "IMAP").is_err());
        let t = server("[::1]:587", "SMTP").unwrap();
        assert_eq!(t.get("host").unwrap().as_str(), Some("::1"));
        assert_eq!(t.get("tls").unwrap().as_str(), Some("starttls"));
        assert!(server("mail.example.com", "SMTP").is_err());
        assert!(server("x:0", "SMTP").is_err());
    }

    #[test]
    fn an_edit_keeps_comments_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        let text =
            "# top comment\ndata_dir = \"var\"\n\n[smtp]\nlisten = \"127.0.0.1:0\" # inline\n";
        std::fs::write(&f, text).unwrap();
        let mut e = Edit::open(&f).unwrap();
        let pw = Secret::new("pw");
        e.insert(
            "users",
            "bob",
            user_table(&pw, Some("capture"), None),
            "bob",
        );
        e.save().unwrap();
        let out = std::fs::read_to_string(&f).unwrap();
        assert!(out.starts_with(text), "{out}");
        assert!(
            out.contains("\n# bob\n[users.bob]\npassword_hash = \"$argon2id$"),
            "{out}"
        );
    }
}
