//! The OAuth part of `postern status`: each built-in or command account's
//! token state, read from the token store's state files (no secrets).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use super::settings::uses_builtin;
use crate::auth::store::{self, from_unix, AccountState};
use crate::config::{AuthMethod, Config, Grant};

struct StatusRow {
    account: String,
    source: &'static str,
    /// Consent saved, or not needed (client credentials).
    consented: bool,
    app_only: bool,
    state: Option<AccountState>,
}

fn status_rows(config: &Config) -> Vec<StatusRow> {
    config
        .accounts
        .values()
        .filter(|a| a.auth == AuthMethod::Oauth2)
        .map(|a| {
            if uses_builtin(a) {
                let app_only =
                    a.oauth.as_ref().and_then(|o| o.grant) == Some(Grant::ClientCredentials);
                StatusRow {
                    account: a.name.clone(),
                    source: "built-in",
                    consented: app_only || store::token_path(&config.data_dir, &a.name).exists(),
                    app_only,
                    state: store::read_state(&config.data_dir, &a.name),
                }
            } else {
                StatusRow {
                    account: a.name.clone(),
                    source: "token_command",
                    consented: false,
                    app_only: false,
                    state: None,
                }
            }
        })
        .collect()
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(from_unix(unix)).to_string()
}

fn relative(unix: u64, now: u64) -> String {
    let d = |s: u64| humantime::format_duration(Duration::from_secs(s)).to_string();
    if unix >= now {
        format!("in {}", d(unix - now))
    } else {
        format!("{} ago", d(now - unix))
    }
}

/// The OAuth part of `postern status`, from the state `run` keeps in
/// `data_dir/oauth/` (no secrets).
pub fn status_report(config: &Config) -> String {
    let rows = status_rows(config);
    let now = store::unix_now();
    let mut out = String::new();
    let _ = writeln!(out, "OAuth2 accounts:");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    let width = rows.iter().map(|r| r.account.len()).max().unwrap_or(0);
    for r in &rows {
        let name = &r.account;
        let line = if r.source == "token_command" {
            "tokens from token_command (not managed by Postern)".to_owned()
        } else {
            match (&r.state, r.consented) {
                (Some(st), _) if st.needs_consent => {
                    let mut l = format!("NEEDS CONSENT: run `postern auth {name}`");
                    if let (Some(e), Some(at)) = (&st.last_error, st.last_error_at) {
                        let _ = write!(
                            l,
                            "; last refresh error {} ({}): {e}",
                            rfc3339(at),
                            relative(at, now)
                        );
                    }
                    l
                }
                (_, false) => format!("no consent yet: run `postern auth {name}`"),
                (None, true) if r.app_only => {
                    "client_credentials: no consent needed; no token yet".to_owned()
                }
                (None, true) => "consent saved; no state yet (`postern run` writes it)".to_owned(),
                (Some(st), true) => {
                    let mut l = match st.valid_until {
                        Some(v) if v > now => format!(
                            "ok: access token valid until {} ({})",
                            rfc3339(v),
                            relative(v, now)
                        ),
                        Some(v) => format!(
                            "ok: access token expired {} ({}); renewed at the next login",
                            rfc3339(v),
                            relative(v, now)
                        ),
                        None => "ok: no access token yet; fetched at the next login".to_owned(),
                    };
                    if let Some(t) = st.last_refresh {
                        let _ = write!(l, "; last refresh {}", rfc3339(t));
                    }
                    if let (Some(e), Some(at)) = (&st.last_error, st.last_error_at) {
                        let _ = write!(
                            l,
                            "; last refresh error {} ({}): {e}",
                            rfc3339(at),
                            relative(at, now)
                        );
                    }
                    l
                }
            }
        };
        let _ = writeln!(out, "  {name:<width$}  {line}");
    }
    out
}

/// The OAuth part of `postern status --json`: one object per OAuth account.
pub fn status_json(config: &Config) -> serde_json::Value {
    let now = store::unix_now();
    let rows: Vec<serde_json::Value> = status_rows(config)
        .into_iter()
        .map(|r| {
            let st = r.state.unwrap_or_default();
            let t = |v: Option<u64>| v.map(rfc3339);
            json!({
                "account": r.account,
                "source": r.source,
                "consented": r.consented,
                "app_only": r.app_only,
                "needs_consent": r.source == "built-in" && (st.needs_consent || !r.consented),
                "valid_until": t(st.valid_until),
                "valid": st.valid_until.is_some_and(|v| v > now),
                "last_refresh": t(st.last_refresh),
                "last_error": st.last_error,
                "last_error_at": t(st.last_error_at),
                "state_updated_at": (st.updated_at > 0).then(|| rfc3339(st.updated_at)),
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}
