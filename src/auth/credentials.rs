//! An account's upstream credential: an app password (from an environment
//! variable or a file, read when needed so a rotated password is picked up)
//! or a bearer token source.

use std::sync::Arc;

use crate::auth::command::CommandSource;
use crate::auth::oauth::TokenManager;
use crate::auth::token::{TokenError, TokenSource};
use crate::config::{Account, AuthMethod, Config, PasswordSource};
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub enum Credential {
    Password(PasswordSource),
    Bearer(TokenSource),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("the app password for account {account} is not available: environment variable {var} is not set")]
    EnvMissing { account: String, var: String },
    #[error(
        "the app password for account {account} is not available: cannot read {path}: {reason}"
    )]
    FileUnreadable {
        account: String,
        path: String,
        reason: String,
    },
    #[error("the app password for account {account} is empty")]
    Empty { account: String },
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl Credential {
    /// The credential configured for an account. Built-in OAuth accounts
    /// (no `token_command`) get their source from the token manager; None
    /// without one.
    pub fn for_account(a: &Account, tokens: Option<&Arc<TokenManager>>) -> Option<Credential> {
        if !a.enabled {
            return None;
        }
        match a.auth {
            AuthMethod::Password => a.password.clone().map(Credential::Password),
            AuthMethod::Oauth2 => match a.token_command.as_deref() {
                Some(cmd) => Some(Credential::Bearer(CommandSource::source(&a.name, cmd))),
                None => tokens
                    .and_then(|m| m.source(&a.name))
                    .map(Credential::Bearer),
            },
        }
    }
    /// Read the app password now.
    pub fn password(account: &str, src: &PasswordSource) -> Result<Secret, CredentialError> {
        let pw = match src {
            PasswordSource::Env(var) => {
                std::env::var(var).map_err(|_| CredentialError::EnvMissing {
                    account: account.to_owned(),
                    var: var.clone(),
                })?
            }
            PasswordSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| CredentialError::FileUnreadable {
                    account: account.to_owned(),
                    path: path.display().to_string(),
                    reason: e.kind().to_string(),
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        };
        if pw.is_empty() {
            return Err(CredentialError::Empty {
                account: account.to_owned(),
            });
        }
        Ok(Secret::new(pw))
    }
}

/// Every secret an enabled account needs, read once now: a line per one
/// that is missing, empty or unreadable, naming the account and the key
/// (for `check-config` and the start of `run`, so a missing secret is found
/// before the first send and not by parking a mailbox).
pub fn missing_secrets(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(src) = config.http.as_ref().and_then(|h| h.token.as_ref()) {
        if let Err(e) = Credential::password("http", src) {
            let field = match src {
                PasswordSource::Env(_) => "token_env",
                PasswordSource::File(_) => "token_file",
            };
            out.push(format!("http.{field}: {e}"));
        }
    }
    for a in config.accounts.values().filter(|a| a.enabled) {
        let key = format!("accounts.{}", a.name);
        match (a.auth, &a.password) {
            (AuthMethod::Password, Some(src)) => {
                if let Err(e) = Credential::password(&a.name, src) {
                    let field = match src {
                        PasswordSource::Env(_) => "password_env",
                        PasswordSource::File(_) => "password_file",
                    };
                    out.push(format!("{key}.{field}: {e}"));
                }
            }
            (AuthMethod::Oauth2, _) if a.token_command.is_none() => {
                let secret = crate::auth::oauth::OAuthSettings::resolve(a)
                    .map_err(|e| e.to_string())
                    .and_then(|s| s.client_secret().map_err(|e| e.to_string()));
                if let Err(e) = secret {
                    let o = a.oauth.as_ref();
                    let field = if o.is_some_and(|o| o.client_secret_file.is_some()) {
                        "oauth.client_secret_file"
                    } else {
                        "oauth.client_secret_env"
                    };
                    out.push(format!("{key}.{field}: {e}"));
                }
            }
            _ => {}
        }
    }
    out
}
