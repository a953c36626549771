//! `postern auth ACCOUNT`: the consent flows (authorization code with PKCE
//! and a loopback redirect or a pasted address, the device flow, and a
//! client-credentials check), saving what they get in the token store.

use crate::auth::oauth::http::classify;
use crate::auth::oauth::http::clean;
use crate::auth::oauth::http::HttpError;
use crate::providers::provider_oauth;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use oauth2::url::Url;
use oauth2::{
    AuthUrl, AuthorizationCode, CsrfToken, DeviceAuthorizationUrl, DeviceCodeErrorResponseType,
    PkceCodeChallenge, RedirectUrl, RequestTokenError, Scope, StandardDeviceAuthorizationResponse,
    StandardErrorResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use super::http::{Failure, Http, Issued};
use super::settings::{OAuthError, OAuthSettings};
use crate::auth::store::{self, to_unix, AccountState, StoredToken, TokenStore};
use crate::auth::token::TokenError;
use crate::config::{Config, Grant};
use crate::providers::OAuthProvider;

/// How long `postern auth` waits for the browser or a pasted address.
const CONSENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Longest request head the loopback listener reads.
const MAX_REDIRECT_REQUEST: usize = 16 * 1024;

/// How `postern auth` asks for consent.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsentOptions {
    /// Do not try to open a browser; the redirected address is pasted back.
    pub no_browser: bool,
    /// Use the device authorization grant.
    pub device: bool,
}

/// What `postern auth` saved.
#[derive(Debug, Clone)]
pub struct ConsentOutcome {
    pub account: String,
    pub grant: Grant,
    pub valid_until: SystemTime,
    pub has_refresh_token: bool,
    pub store_file: PathBuf,
}

/// Run the account's consent flow and save the tokens. `say` prints a line
/// for the user (instructions only; never a token).
pub async fn consent(
    config: &Config,
    account: &str,
    opts: ConsentOptions,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<ConsentOutcome, OAuthError> {
    let a = config
        .accounts
        .get(account)
        .ok_or_else(|| OAuthError::UnknownAccount {
            account: account.to_owned(),
        })?;
    let s = OAuthSettings::resolve(a)?;
    let store = TokenStore::open(&config.data_dir, config.key_file.as_deref())?;
    let http = Http::new(config.limits.upstream_timeout)?;
    let grant = if opts.device { Grant::Device } else { s.grant };
    let issued = match grant {
        Grant::AuthorizationCode => authorization_code(&s, &http, opts, say).await?,
        Grant::Device => device(&s, &http, say).await?,
        Grant::ClientCredentials => {
            say(&format!(
                "Account {account} uses grant = \"client_credentials\": no consent is needed. Checking that the client can get a token…"
            ));
            let client = s.client()?;
            let r = client
                .exchange_client_credentials()
                .add_scopes(s.scopes.iter().cloned().map(Scope::new))
                .request_async(&http.caller())
                .await;
            Issued::from_response(&r.map_err(|e| failure_error(&s, classify(e)))?)
        }
    };
    let now = SystemTime::now();
    let valid_until = now + issued.lifetime;
    let has_refresh_token = issued.refresh.is_some();
    if !has_refresh_token && grant != Grant::ClientCredentials {
        say("Warning: the provider sent no refresh token, so this consent lasts only until the access token expires.");
    }
    let record = StoredToken {
        client_id: s.client_id.clone(),
        token_url: s.token_url.clone(),
        grant: OAuthSettings::grant_name(grant).into(),
        refresh_token: issued.refresh,
        access_token: Some(issued.access),
        expires_at: Some(to_unix(valid_until)),
        issued_at: Some(to_unix(now)),
        consented_at: to_unix(now),
        scopes: issued.scopes.unwrap_or_else(|| s.scopes.clone()),
    };
    store.save(account, &record)?;
    let state = AccountState {
        updated_at: to_unix(now),
        pid: std::process::id(),
        valid_until: Some(to_unix(valid_until)),
        needs_consent: false,
        consented_at: Some(record.consented_at),
        last_refresh: Some(to_unix(now)),
        last_error: None,
        last_error_at: None,
        refreshes: 0,
    };
    if let Err(e) = store::write_state(&config.data_dir, account, &state) {
        warn!(account = %account, error = %e, "cannot write the OAuth state for `postern status`");
    }
    info!(account = %account, grant = OAuthSettings::grant_name(grant), "OAuth consent saved");
    Ok(ConsentOutcome {
        account: account.to_owned(),
        grant,
        valid_until,
        has_refresh_token,
        store_file: store.token_path(account),
    })
}

/// A token-endpoint failure during consent, as an error for the user.
fn failure_error(s: &OAuthSettings, f: Failure) -> OAuthError {
    let account = s.account.clone();
    match f {
        Failure::Transient(reason) => {
            OAuthError::Token(TokenError::Unavailable { account, reason })
        }
        Failure::Consent(reason) => OAuthError::Consent {
            account,
            message: format!("the provider refused the authorization: {reason}"),
        },
        Failure::Rejected(reason) => OAuthError::Token(TokenError::Rejected { account, reason }),
    }
}

/// Authorization code with PKCE (S256) and a loopback redirect listener.
async fn authorization_code(
    s: &OAuthSettings,
    http: &Http,
    opts: ConsentOptions,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<Issued, OAuthError> {
    let account = &s.account;
    let auth_url = s.auth_url.clone().ok_or_else(|| OAuthError::Config {
        account: account.clone(),
        message: "oauth.auth_url is needed for the authorization code grant".into(),
    })?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| OAuthError::Listen(e.to_string()))?;
    let port = listener
        .local_addr()
        .map_err(|e| OAuthError::Listen(e.to_string()))?
        .port();
    // A browser may resolve "localhost" to ::1 first: listen there too.
    let v6 = if s.redirect_host == "localhost" {
        TcpListener::bind(("::1", port)).await.ok()
    } else {
        None
    };
    let redirect = format!("http://{}:{port}/", s.redirect_host);
    let bad_url = |what: &str| OAuthError::Config {
        account: account.clone(),
        message: format!("oauth.{what} is not a URL"),
    };
    let client = s
        .client()?
        .set_auth_uri(AuthUrl::new(auth_url).map_err(|_| bad_url("auth_url"))?)
        .set_redirect_uri(RedirectUrl::new(redirect.clone()).map_err(|_| bad_url("redirect"))?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(s.scopes.iter().cloned().map(Scope::new))
        .set_pkce_challenge(challenge);
    for (k, v) in &s.auth_params {
        req = req.add_extra_param(k.clone(), v.clone());
    }
    if !s.email.is_empty() {
        req = req.add_extra_param("login_hint", s.email.clone());
    }
    let (url, state) = req.url();
    let who = s
        .provider
        .map(|p| provider_oauth(p, "common").name)
        .unwrap_or("the provider");
    say(&format!(
        "Account {account} <{}>: sign in with {who} and allow access.\n\nOpen this address in a browser:\n\n    {url}\n",
        s.email
    ));
    say(&format!(
        "Waiting for the browser to come back to {redirect}\nOn another machine (or no browser here)? Sign in there, then copy the address the browser ends on\n(it starts with {redirect} and the page may say it cannot be reached) and paste it here:"
    ));
    if !opts.no_browser {
        open_browser(url.as_str());
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<String, OAuthError>>(4);
    let expected = state.secret().clone();
    let server = tokio::spawn(serve_redirects(
        listener,
        v6,
        expected.clone(),
        account.clone(),
        tx.clone(),
    ));
    let mut pasted = stdin_lines();
    let code = tokio::time::timeout(CONSENT_TIMEOUT, async {
        loop {
            tokio::select! {
                Some(r) = rx.recv() => return r,
                Some(line) = pasted.recv() => match parse_pasted(&line, &expected, account) {
                    None => {}
                    Some(Ok(code)) => return Ok(code),
                    Some(Err(OAuthError::Consent { message, .. })) if message.contains("state") => {
                        say(&format!("{message}; paste the address from this run's sign-in"));
                    }
                    Some(Err(e)) => return Err(e),
                },
            }
        }
    })
    .await
    .map_err(|_| OAuthError::Consent {
        account: account.clone(),
        message: format!(
            "no answer from the browser within {} minutes; run `postern auth {account}` again",
            CONSENT_TIMEOUT.as_secs() / 60
        ),
    })?;
    server.abort();
    let code = code?;
    say("Authorization received; getting tokens…");
    let r = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http.caller())
        .await;
    Ok(Issued::from_response(
        &r.map_err(|e| failure_error(s, classify(e)))?,
    ))
}

/// Try to open `url` in the desktop's browser; silently do nothing on a
/// machine without one.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if std::env::var_os("DISPLAY").is_some_and(|v| !v.is_empty())
        || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|v| !v.is_empty())
    {
        Some("xdg-open")
    } else {
        None
    };
    if let Some(cmd) = opener {
        let _ = std::process::Command::new(cmd)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// Lines typed on standard input (read on a plain thread, which does not
/// hold up the exit). Closed input just ends the stream.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The code from a pasted redirect address (or a bare code). None: nothing
/// usable on this line.
fn parse_pasted(line: &str, state: &str, account: &str) -> Option<Result<String, OAuthError>> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    if !line.contains("code=") && !line.contains("error=") {
        if line.contains(char::is_whitespace) || line.contains("://") {
            return None;
        }
        return Some(Ok(line.to_owned()));
    }
    let query = line.split_once('?').map(|(_, q)| q).unwrap_or(line);
    let query = query.split('#').next().unwrap_or(query);
    Some(redirect_outcome(
        url::form_urlencoded::parse(query.as_bytes()),
        state,
        account,
    ))
}

/// Read the authorization response (RFC 6749 4.1.2): `code` and `state`, or
/// `error` and `error_description`.
fn redirect_outcome<'a>(
    pairs: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
    state: &str,
    account: &str,
) -> Result<String, OAuthError> {
    let mut code = None;
    let mut got_state = None;
    let mut error = None;
    let mut description = None;
    for (k, v) in pairs {
        match k.as_ref() {
            "code" => code = Some(v.into_owned()),
            "state" => got_state = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            _ => {}
        }
    }
    let consent = |message: String| OAuthError::Consent {
        account: account.to_owned(),
        message,
    };
    if let Some(e) = error {
        let d = description
            .map(|d| format!(" ({})", clean(&d, 200)))
            .unwrap_or_default();
        return Err(consent(format!(
            "consent was not given: {}{d}",
            clean(&e, 60)
        )));
    }
    if got_state.as_deref() != Some(state) {
        return Err(consent(
            "the answer's state does not match this sign-in (an old browser tab?)".into(),
        ));
    }
    code.filter(|c| !c.is_empty())
        .ok_or_else(|| consent("the answer carries no authorization code".into()))
}

async fn accept_any(a: &TcpListener, b: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match b {
        None => a.accept().await.map(|(s, _)| s),
        Some(b) => tokio::select! {
            r = a.accept() => r.map(|(s, _)| s),
            r = b.accept() => r.map(|(s, _)| s),
        },
    }
}

/// Answer the browser's requests on the loopback listener(s); each request
/// in its own task, so a browser's idle pre-connection blocks nothing.
async fn serve_redirects(
    a: TcpListener,
    b: Option<TcpListener>,
    state: String,
    account: String,
    tx: tokio::sync::mpsc::Sender<Result<String, OAuthError>>,
) {
    loop {
        let Ok(stream) = accept_any(&a, b.as_ref()).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (state, account, tx) = (state.clone(), account.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(60),
                answer_redirect(stream, &state, &account, &tx),
            )
            .await;
        });
    }
}

async fn answer_redirect(
    mut s: TcpStream,
    state: &str,
    account: &str,
    tx: &tokio::sync::mpsc::Sender<Result<String, OAuthError>>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REDIRECT_REQUEST {
            return respond(&mut s, 431, "Request too large").await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut s, 405, "Only GET is answered here.").await;
    }
    let Ok(url) = Url::parse(&format!("http://127.0.0.1{target}")) else {
        return respond(&mut s, 400, "Bad request.").await;
    };
    if url.path() != "/" || url.query().is_none() {
        return respond(&mut s, 404, "Not found.").await;
    }
    match redirect_outcome(url.query_pairs(), state, account) {
        Ok(code) => {
            respond(
                &mut s,
                200,
                &format!("Postern received the authorization for account {account}. You can close this window."),
            )
            .await?;
            let _ = tx.send(Ok(code)).await;
        }
        Err(OAuthError::Consent { message, .. }) if message.contains("state") => {
            respond(
                &mut s,
                400,
                &format!(
                    "{message}. Use the address printed by the `postern auth` run that is waiting."
                ),
            )
            .await?;
        }
        Err(e) => {
            respond(
                &mut s,
                200,
                &format!("Postern: {e}. Run `postern auth {account}` again."),
            )
            .await?;
            let _ = tx.send(Err(e)).await;
        }
    }
    Ok(())
}

async fn respond(s: &mut TcpStream, status: u16, text: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let esc = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Postern</title></head><body><p>{esc}</p></body></html>\n"
    );
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(msg.as_bytes()).await?;
    s.shutdown().await
}

/// Device authorization grant (RFC 8628).
async fn device(
    s: &OAuthSettings,
    http: &Http,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<Issued, OAuthError> {
    let account = &s.account;
    let cfg = |message: String| OAuthError::Config {
        account: account.clone(),
        message,
    };
    if s.provider == Some(OAuthProvider::Google)
        && s.scopes
            .iter()
            .any(|x| x.starts_with("https://mail.google.com"))
    {
        return Err(cfg(format!(
            "Google's device flow does not allow the Gmail scope (https://mail.google.com/); on a machine without a browser run `postern auth --no-browser {account}` and paste the address back"
        )));
    }
    let device_url = s.device_url.clone().ok_or_else(|| {
        cfg(format!(
            "this provider has no device flow (set oauth.device_url if it has one); use `postern auth --no-browser {account}`"
        ))
    })?;
    let client = s.client()?.set_device_authorization_url(
        DeviceAuthorizationUrl::new(device_url)
            .map_err(|_| cfg("oauth.device_url is not a URL".into()))?,
    );
    let caller = http.caller();
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(s.scopes.iter().cloned().map(Scope::new))
        .request_async(&caller)
        .await
        .map_err(|e| failure_error(s, classify(e)))?;
    say(&format!(
        "Account {account} <{}>: to sign in, open\n\n    {}\n\nand enter the code\n\n    {}\n",
        s.email,
        details.verification_uri().as_str(),
        details.user_code().secret()
    ));
    if let Some(c) = details.verification_uri_complete() {
        say(&format!(
            "(or open {} , which carries the code)",
            c.secret()
        ));
    }
    say(&format!(
        "Waiting for the sign-in (the code is valid for {} min)…",
        details.expires_in().as_secs().div_ceil(60)
    ));
    // The oauth2 crate polls at the server's interval, keeps polling on
    // authorization_pending, adds 5 s on slow_down and stops on
    // expired_token / access_denied.
    let r = client
        .exchange_device_access_token(&details)
        .request_async(&caller, tokio::time::sleep, None)
        .await;
    match r {
        Ok(t) => Ok(Issued::from_response(&t)),
        Err(RequestTokenError::ServerResponse(e)) => {
            let message = match e.error() {
                DeviceCodeErrorResponseType::ExpiredToken => format!(
                    "the code expired before the sign-in was finished; run `postern auth --device {account}` again"
                ),
                DeviceCodeErrorResponseType::AccessDenied => "the sign-in was declined".to_owned(),
                other => {
                    let f = classify(RequestTokenError::<HttpError, _>::ServerResponse(
                        StandardErrorResponse::new(other.clone(), e.error_description().cloned(), None),
                    ));
                    return Err(failure_error(s, f));
                }
            };
            Err(OAuthError::Consent {
                account: account.clone(),
                message,
            })
        }
        Err(e) => Err(failure_error(s, classify(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_answers() {
        let pairs = |q: &'static str| url::form_urlencoded::parse(q.as_bytes());
        assert_eq!(
            redirect_outcome(pairs("code=abc&state=s1"), "s1", "a").unwrap(),
            "abc"
        );
        let e = redirect_outcome(pairs("code=abc&state=s2"), "s1", "a").unwrap_err();
        assert!(e.to_string().contains("state does not match"), "{e}");
        let e = redirect_outcome(
            pairs("error=access_denied&error_description=User+said+no&state=s1"),
            "s1",
            "a",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("access_denied (User said no)"),
            "{e}"
        );
        assert!(redirect_outcome(pairs("state=s1"), "s1", "a").is_err());

        let p = |l| parse_pasted(l, "s1", "a");
        assert_eq!(
            p("http://127.0.0.1:4567/?code=4%2F0Ab&state=s1&scope=x")
                .unwrap()
                .unwrap(),
            "4/0Ab"
        );
        assert_eq!(p("  code=zz&state=s1 ").unwrap().unwrap(), "zz");
        assert_eq!(p("bare-code").unwrap().unwrap(), "bare-code");
        assert!(p("").is_none());
        assert!(p("http://127.0.0.1:4567/?code=zz&state=other")
            .unwrap()
            .is_err());
    }
}
