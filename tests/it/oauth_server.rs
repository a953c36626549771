//! A small OAuth2 authorization server for the tests: real HTTP/1.1 on
//! 127.0.0.1 (a thread per connection, `Connection: close`), one instance
//! per test with its own switches and counters.
//!
//! - `GET /authorize`: checks client_id, `response_type=code`, an S256 PKCE
//!   challenge and a loopback redirect_uri, then "consents" at once and
//!   answers 302 to `redirect_uri?code=…&state=…` (or `error=access_denied`).
//! - `POST /token`: `authorization_code` (checks redirect_uri and the PKCE
//!   verifier), `refresh_token`, the device-code grant and
//!   `client_credentials`. A public client must send no secret; a
//!   confidential one must send the right one.
//! - `POST /device`: a device code, user code and verification URI.
//!
//! Every access token it issues is minted into `$TOKENS_DIR` (the format of
//! `tests/peers/token`), so Dovecot's oauth2 passdb accepts it.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::harness::peer_env;

/// Behaviour switches, changed while the server runs.
#[derive(Debug, Clone)]
pub struct Switches {
    /// `expires_in` of new access tokens; None: left out of the answer.
    pub expires_in: Option<u64>,
    /// Issue a new refresh token on every refresh (and forget the old one).
    pub rotate: bool,
    /// Answer every refresh with `invalid_grant` (consent revoked).
    pub invalid_grant: bool,
    /// Answer the next N token requests with HTTP 500.
    pub fail_next: u32,
    /// Answer every token request with HTTP 500 while set.
    pub fail_all: bool,
    /// Wait this long before answering a token request.
    pub delay: Duration,
    /// Device polls answered `authorization_pending` before anything else.
    pub device_pending: u32,
    /// Then answer `slow_down` once.
    pub device_slow_down: bool,
    /// Answer device polls with `expired_token`.
    pub device_expired: bool,
    /// The user declines consent at /authorize.
    pub deny: bool,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            expires_in: Some(3600),
            rotate: false,
            invalid_grant: false,
            fail_next: 0,
            fail_all: false,
            delay: Duration::ZERO,
            device_pending: 0,
            device_slow_down: false,
            device_expired: false,
            deny: false,
        }
    }
}

/// Counts of what the server was asked.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub authorize: u32,
    /// Every POST /token, answered or failed.
    pub token_requests: u32,
    pub code_exchanges: u32,
    /// `grant_type=refresh_token` requests that reached the grant logic.
    pub refreshes: u32,
    pub device_codes: u32,
    pub device_polls: u32,
    pub client_credentials: u32,
}

/// One token request as received (the parameters, secrets included, for
/// the tests that check what was sent).
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub params: HashMap<String, String>,
    pub basic_auth: bool,
}

struct Code {
    challenge: String,
    redirect_uri: String,
    used: bool,
}

struct Device {
    slowed: bool,
}

struct State {
    sw: Switches,
    client_id: String,
    client_secret: Option<String>,
    user: String,
    counters: Counters,
    codes: HashMap<String, Code>,
    refresh: HashSet<String>,
    devices: HashMap<String, Device>,
    /// Every secret handed out or received: tokens, codes, verifiers.
    secrets: Vec<String>,
    access: Vec<String>,
    refresh_used: Vec<String>,
    requests: Vec<TokenRequest>,
    authorize_params: Vec<HashMap<String, String>>,
    next: u64,
}

impl State {
    fn new_secret(&mut self, prefix: &str) -> String {
        self.next += 1;
        let mut r = [0u8; 12];
        rand_bytes(&mut r);
        let s = format!("{prefix}-{}-{}", self.next, hex(&r));
        self.secrets.push(s.clone());
        s
    }
}

fn rand_bytes(buf: &mut [u8]) {
    use rand::RngCore;
    rand::rng().fill_bytes(buf);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

/// The introspection file of a token (`tests/peers/token` format).
pub fn token_file(token: &str) -> PathBuf {
    PathBuf::from(peer_env("TOKENS_DIR")).join(format!("{}.json", sha256_hex(token)))
}

fn put_token_file(token: &str, json: &str) {
    let path = token_file(token);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, format!("{json}\n")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

/// Let Dovecot accept `token` for `user`.
pub fn mint(token: &str, user: &str) {
    put_token_file(
        token,
        &format!("{{\"active\": true, \"username\": \"{user}\"}}"),
    );
}

/// Make Dovecot refuse `token` from now on.
pub fn revoke(token: &str) {
    put_token_file(token, "{\"active\": false}");
}

pub struct OAuthServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl OAuthServer {
    /// A server for client `client_id` (public when `client_secret` is
    /// None) whose tokens Dovecot accepts for `user`.
    pub fn start(client_id: &str, client_secret: Option<&str>, user: &str) -> OAuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            sw: Switches::default(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.map(str::to_owned),
            user: user.to_owned(),
            counters: Counters::default(),
            codes: HashMap::new(),
            refresh: HashSet::new(),
            devices: HashMap::new(),
            secrets: Vec::new(),
            access: Vec::new(),
            refresh_used: Vec::new(),
            requests: Vec::new(),
            authorize_params: Vec::new(),
            next: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stop2) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, addr, &st);
                });
            }
        });
        OAuthServer { addr, state, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Change switches.
    pub fn set(&self, f: impl FnOnce(&mut Switches)) {
        f(&mut self.state.lock().unwrap().sw);
    }

    pub fn counters(&self) -> Counters {
        self.state.lock().unwrap().counters.clone()
    }

    /// Every secret this server issued or received so far.
    pub fn secrets(&self) -> Vec<String> {
        self.state.lock().unwrap().secrets.clone()
    }

    /// Access tokens issued, oldest first.
    pub fn access_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().access.clone()
    }

    /// Refresh tokens presented in refresh requests, in order.
    pub fn refresh_used(&self) -> Vec<String> {
        self.state.lock().unwrap().refresh_used.clone()
    }

    /// Refresh tokens that are currently valid.
    pub fn valid_refresh_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().refresh.iter().cloned().collect()
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn authorize_params(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().unwrap().authorize_params.clone()
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn form(s: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn read_request(conn: &mut TcpStream) -> Option<Request> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), form(q)),
        None => (target, HashMap::new()),
    };
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn reply(conn: &mut TcpStream, status: u16, extra: &str, ctype: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\n{extra}Content-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(msg.as_bytes());
}

fn json(conn: &mut TcpStream, status: u16, v: serde_json::Value) {
    reply(conn, status, "", "application/json", &v.to_string());
}

fn oauth_error(conn: &mut TcpStream, status: u16, error: &str, description: &str) {
    json(
        conn,
        status,
        serde_json::json!({"error": error, "error_description": description}),
    );
}

fn handle(mut conn: TcpStream, addr: SocketAddr, st: &Mutex<State>) -> Option<()> {
    let req = read_request(&mut conn)?;
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/authorize") => authorize(&mut conn, &req, st),
        ("POST", "/token") => token(&mut conn, &req, st),
        ("POST", "/device") => device(&mut conn, &req, addr, st),
        ("GET", "/activate") => reply(&mut conn, 200, "", "text/plain", "enter the code\n"),
        _ => reply(&mut conn, 404, "", "text/plain", "not found\n"),
    }
    Some(())
}

fn authorize(conn: &mut TcpStream, req: &Request, st: &Mutex<State>) {
    let q = &req.query;
    let mut s = st.lock().unwrap();
    s.counters.authorize += 1;
    s.authorize_params.push(q.clone());
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let redirect = get("redirect_uri");
    let loopback =
        redirect.starts_with("http://127.0.0.1:") || redirect.starts_with("http://localhost:");
    if get("client_id") != s.client_id
        || get("response_type") != "code"
        || get("code_challenge_method") != "S256"
        || get("code_challenge").len() != 43
        || !loopback
    {
        drop(s);
        return reply(conn, 400, "", "text/plain", "bad authorization request\n");
    }
    let state = get("state");
    let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let location = if s.sw.deny {
        format!(
            "{redirect}?error=access_denied&error_description={}&state={}",
            enc("The user said no"),
            enc(&state)
        )
    } else {
        let code = s.new_secret("code");
        s.codes.insert(
            code.clone(),
            Code {
                challenge: get("code_challenge"),
                redirect_uri: redirect.clone(),
                used: false,
            },
        );
        format!(
            "{redirect}?code={}&state={}&scope={}",
            enc(&code),
            enc(&state),
            enc(&get("scope"))
        )
    };
    drop(s);
    reply(
        conn,
        302,
        &format!("Location: {location}\r\n"),
        "text/plain",
        "redirecting\n",
    );
}

/// Client authentication: the right secret from a confidential client,
/// none from a public one.
fn client_ok(s: &State, req: &Request, p: &HashMap<String, String>) -> Result<(), &'static str> {
    let basic = req.headers.get("authorization").and_then(|v| {
        let b = v.strip_prefix("Basic ")?;
        let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (id, secret) = text.split_once(':')?;
        Some((id.to_owned(), secret.to_owned()))
    });
    let (id, secret) = match basic {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (p.get("client_id").cloned(), p.get("client_secret").cloned()),
    };
    if id.as_deref() != Some(s.client_id.as_str()) {
        return Err("unknown client");
    }
    match (&s.client_secret, secret) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err("a public client must not send a secret"),
        (Some(want), Some(got)) if *want == got => Ok(()),
        (Some(_), _) => Err("wrong or missing client secret"),
    }
}

fn issue(s: &mut State, with_refresh: bool) -> serde_json::Value {
    let access = s.new_secret("at");
    mint(&access, &s.user.clone());
    s.access.push(access.clone());
    let mut v = serde_json::json!({"access_token": access, "token_type": "Bearer", "scope": "mail offline"});
    if let Some(e) = s.sw.expires_in {
        v["expires_in"] = e.into();
    }
    if with_refresh {
        let rt = s.new_secret("rt");
        s.refresh.insert(rt.clone());
        v["refresh_token"] = rt.into();
    }
    v
}

fn token(conn: &mut TcpStream, req: &Request, st: &Mutex<State>) {
    let delay = st.lock().unwrap().sw.delay;
    std::thread::sleep(delay);
    let p = form(&String::from_utf8_lossy(&req.body));
    let mut s = st.lock().unwrap();
    s.counters.token_requests += 1;
    s.requests.push(TokenRequest {
        params: p.clone(),
        basic_auth: req.headers.contains_key("authorization"),
    });
    if let Some(v) = p.get("code_verifier") {
        s.secrets.push(v.clone());
    }
    if s.sw.fail_all || s.sw.fail_next > 0 {
        s.sw.fail_next = s.sw.fail_next.saturating_sub(1);
        drop(s);
        return reply(conn, 500, "", "text/html", "<h1>oops</h1>\n");
    }
    if let Err(why) = client_ok(&s, req, &p) {
        drop(s);
        return oauth_error(conn, 401, "invalid_client", why);
    }
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    match get("grant_type").as_str() {
        "authorization_code" => {
            s.counters.code_exchanges += 1;
            let verifier = get("code_verifier");
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(verifier.as_bytes()));
            let ok = match s.codes.get_mut(&get("code")) {
                Some(c)
                    if !c.used
                        && c.redirect_uri == get("redirect_uri")
                        && c.challenge == computed =>
                {
                    c.used = true;
                    true
                }
                _ => false,
            };
            if !ok {
                drop(s);
                return oauth_error(
                    conn,
                    400,
                    "invalid_grant",
                    "bad code, redirect_uri or PKCE verifier",
                );
            }
            let v = issue(&mut s, true);
            drop(s);
            json(conn, 200, v)
        }
        "refresh_token" => {
            s.counters.refreshes += 1;
            let rt = get("refresh_token");
            s.refresh_used.push(rt.clone());
            if s.sw.invalid_grant || !s.refresh.contains(&rt) {
                drop(s);
                return oauth_error(
                    conn,
                    400,
                    "invalid_grant",
                    "Token has been expired or revoked.",
                );
            }
            let rotate = s.sw.rotate;
            if rotate {
                s.refresh.remove(&rt);
            }
            let v = issue(&mut s, rotate);
            drop(s);
            json(conn, 200, v)
        }
        "urn:ietf:params:oauth:grant-type:device_code" => {
            s.counters.device_polls += 1;
            let dc = get("device_code");
            if !s.devices.contains_key(&dc) {
                drop(s);
                return oauth_error(conn, 400, "invalid_grant", "unknown device code");
            }
            if s.sw.device_expired {
                drop(s);
                return oauth_error(conn, 400, "expired_token", "the code expired");
            }
            if s.sw.device_pending > 0 {
                s.sw.device_pending -= 1;
                drop(s);
                return oauth_error(conn, 400, "authorization_pending", "waiting for the user");
            }
            let slow = s.sw.device_slow_down;
            let d = s.devices.get_mut(&dc).unwrap();
            if slow && !d.slowed {
                d.slowed = true;
                drop(s);
                return oauth_error(conn, 400, "slow_down", "poll less often");
            }
            s.devices.remove(&dc);
            let v = issue(&mut s, true);
            drop(s);
            json(conn, 200, v)
        }
        "client_credentials" => {
            s.counters.client_credentials += 1;
            if s.client_secret.is_none() {
                drop(s);
                return oauth_error(
                    conn,
                    400,
                    "unauthorized_client",
                    "public clients cannot use client_credentials",
                );
            }
            let v = issue(&mut s, false);
            drop(s);
            json(conn, 200, v)
        }
        _ => {
            drop(s);
            oauth_error(conn, 400, "unsupported_grant_type", "")
        }
    }
}

fn device(conn: &mut TcpStream, req: &Request, addr: SocketAddr, st: &Mutex<State>) {
    let p = form(&String::from_utf8_lossy(&req.body));
    let mut s = st.lock().unwrap();
    if let Err(why) = client_ok(&s, req, &p) {
        drop(s);
        return oauth_error(conn, 401, "invalid_client", why);
    }
    s.counters.device_codes += 1;
    let dc = s.new_secret("dc");
    s.devices.insert(dc.clone(), Device { slowed: false });
    drop(s);
    json(
        conn,
        200,
        serde_json::json!({
            "device_code": dc,
            "user_code": "WDJB-MJHT",
            "verification_uri": format!("http://{addr}/activate"),
            "expires_in": 600,
            "interval": 1,
        }),
    );
}
