//! An account's built-in OAuth2 settings ([`OAuthSettings`]: its provider
//! preset with the account's overrides, resolved once) and the OAuth error.
//! The bottom of the OAuth client: the HTTP layer, the token manager and
//! the consent flows all take these.

use std::path::PathBuf;
use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, TokenUrl};

use crate::auth::store::StoreError;
use crate::auth::token::TokenError;
use crate::config::{Account, AuthMethod, Grant};
use crate::providers::provider_oauth;
use crate::providers::OAuthProvider;
use crate::secret::Secret;

/// Refresh this long before the access token expires (`refresh_margin`).
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Whether an account gets its tokens from the built-in OAuth client.
pub fn uses_builtin(a: &Account) -> bool {
    a.auth == AuthMethod::Oauth2 && a.token_command.is_none() && a.oauth.is_some()
}

/// Where a client secret is read from (when it is needed, so a rotated
/// secret is picked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSecretSource {
    Env(String),
    File(PathBuf),
}

/// An account's OAuth settings: its preset with the account's overrides.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    pub account: String,
    pub email: String,
    pub provider: Option<OAuthProvider>,
    pub client_id: String,
    /// None: a public client, which sends no secret.
    pub client_secret: Option<ClientSecretSource>,
    pub auth_url: Option<String>,
    pub token_url: String,
    pub device_url: Option<String>,
    pub scopes: Vec<String>,
    pub grant: Grant,
    pub refresh_margin: Duration,
    /// `refresh_token_lifetime`: a consent ends this long after it was given.
    pub refresh_token_lifetime: Option<Duration>,
    pub auth_params: Vec<(String, String)>,
    pub redirect_host: &'static str,
}

impl OAuthSettings {
    pub fn resolve(a: &Account) -> Result<OAuthSettings, OAuthError> {
        let cfg_err = |message: &str| OAuthError::Config {
            account: a.name.clone(),
            message: message.to_owned(),
        };
        if !uses_builtin(a) {
            return Err(OAuthError::NotBuiltin {
                account: a.name.clone(),
            });
        }
        let o = a.oauth.as_ref().expect("checked by uses_builtin");
        let provider = a.provider.and_then(|p| p.oauth);
        let preset = provider.map(|p| provider_oauth(p, o.tenant.as_deref().unwrap_or("common")));
        let grant = o.grant.unwrap_or(Grant::AuthorizationCode);
        let client_id = o
            .client_id
            .clone()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| cfg_err("oauth.client_id is missing"))?;
        let token_url = o
            .token_url
            .clone()
            .or_else(|| preset.as_ref().map(|p| p.token_url.clone()))
            .ok_or_else(|| cfg_err("oauth.token_url is needed (no provider preset)"))?;
        let scopes = o.scopes.clone().unwrap_or_else(|| match (&preset, grant) {
            (Some(p), Grant::ClientCredentials) => p.app_only_scopes.clone(),
            (Some(p), _) => p.scopes.clone(),
            (None, _) => Vec::new(),
        });
        let client_secret = match (&o.client_secret_env, &o.client_secret_file) {
            (Some(v), _) => Some(ClientSecretSource::Env(v.clone())),
            (None, Some(f)) => Some(ClientSecretSource::File(f.clone())),
            (None, None) => None,
        };
        Ok(OAuthSettings {
            account: a.name.clone(),
            email: a.email.clone(),
            provider,
            client_id,
            client_secret,
            auth_url: o
                .auth_url
                .clone()
                .or_else(|| preset.as_ref().map(|p| p.auth_url.clone())),
            token_url,
            device_url: o
                .device_url
                .clone()
                .or_else(|| preset.as_ref().and_then(|p| p.device_url.clone())),
            scopes,
            grant,
            refresh_margin: o.refresh_margin.unwrap_or(DEFAULT_REFRESH_MARGIN),
            refresh_token_lifetime: o.refresh_token_lifetime,
            auth_params: preset
                .as_ref()
                .map(|p| p.auth_params.clone())
                .unwrap_or_default(),
            redirect_host: preset
                .as_ref()
                .map(|p| p.redirect_host)
                .unwrap_or("127.0.0.1"),
        })
    }

    /// The client secret, read now; None for a public client.
    pub fn client_secret(&self) -> Result<Option<Secret>, TokenError> {
        let rejected = |reason: String| TokenError::Rejected {
            account: self.account.clone(),
            reason,
        };
        let s = match &self.client_secret {
            None => return Ok(None),
            Some(ClientSecretSource::Env(v)) => std::env::var(v).map_err(|_| {
                rejected(format!(
                    "the client secret is not available: environment variable {v} is not set"
                ))
            })?,
            Some(ClientSecretSource::File(f)) => std::fs::read_to_string(f)
                .map_err(|e| {
                    rejected(format!(
                        "the client secret is not available: cannot read {}: {}",
                        f.display(),
                        e.kind()
                    ))
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        };
        if s.is_empty() {
            return Err(rejected("the client secret is empty".into()));
        }
        Ok(Some(Secret::new(s)))
    }

    pub(super) fn grant_name(grant: Grant) -> &'static str {
        match grant {
            Grant::AuthorizationCode => "authorization_code",
            Grant::Device => "device",
            Grant::ClientCredentials => "client_credentials",
        }
    }

    /// A token-endpoint client with this account's id, secret and endpoint.
    pub(super) fn client(&self) -> Result<TokenClient, TokenError> {
        let token_url =
            TokenUrl::new(self.token_url.clone()).map_err(|_| TokenError::Rejected {
                account: self.account.clone(),
                reason: "oauth.token_url is not a URL".into(),
            })?;
        let mut c = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_token_uri(token_url)
            // Secrets (when there is one) go in the form body, which every
            // preset's server accepts; a public client sends only client_id.
            .set_auth_type(AuthType::RequestBody);
        if let Some(s) = self.client_secret()? {
            c = c.set_client_secret(ClientSecret::new(s.expose().to_owned()));
        }
        Ok(c)
    }
}

type TokenClient = BasicClient<
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

/// Errors of the consent flows and of setting up the token manager.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    #[error("no account \"{account}\" in the configuration")]
    UnknownAccount { account: String },
    #[error("account {account} does not use built-in OAuth2 (it needs auth = \"oauth2\" and oauth = {{ client_id = \"…\" }}, without token_command)")]
    NotBuiltin { account: String },
    #[error("account {account}: {message}")]
    Config { account: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("account {account}: {message}")]
    Consent { account: String, message: String },
    #[error("cannot start the HTTP client: {0}")]
    Http(String),
    #[error("cannot listen for the browser's redirect on 127.0.0.1: {0}")]
    Listen(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn account(toml: &str) -> Account {
        let text = format!("[smtp]\nlisten = \"127.0.0.1:2525\"\n[accounts.a]\n{toml}\n");
        let c = Config::from_str(&text, Path::new("/tmp/x/postern.toml")).unwrap();
        c.accounts["a"].clone()
    }

    #[test]
    fn presets_and_overrides() {
        let g = OAuthSettings::resolve(&account(
            "provider = \"gmail\"\nemail = \"a@gmail.com\"\noauth = { client_id = \"cid\" }",
        ))
        .unwrap();
        assert_eq!(g.token_url, "https://oauth2.googleapis.com/token");
        assert_eq!(g.scopes, ["https://mail.google.com/"]);
        assert!(g
            .auth_params
            .contains(&("access_type".into(), "offline".into())));
        assert_eq!(g.client_secret, None, "public client by default");
        assert_eq!(g.refresh_margin, DEFAULT_REFRESH_MARGIN);

        let m = OAuthSettings::resolve(&account(
            "provider = \"office365\"\nemail = \"a@contoso.com\"\noauth = { client_id = \"cid\", client_secret_env = \"S\", refresh_margin = \"2m\" }",
        ))
        .unwrap();
        assert_eq!(
            m.auth_url.as_deref(),
            Some("https://login.microsoftonline.com/common/oauth2/v2.0/authorize")
        );
        assert!(m.scopes.iter().any(|s| s == "offline_access"));
        assert!(m.scopes.iter().any(|s| s.ends_with("SMTP.Send")));
        assert_eq!(m.client_secret, Some(ClientSecretSource::Env("S".into())));
        assert_eq!(m.refresh_margin, Duration::from_secs(120));
        assert_eq!(m.redirect_host, "localhost");

        let app = OAuthSettings::resolve(&account(
            "provider = \"office365\"\nemail = \"a@contoso.com\"\noauth = { client_id = \"cid\", client_secret_env = \"S\", tenant = \"contoso.onmicrosoft.com\", grant = \"client_credentials\" }",
        ))
        .unwrap();
        assert_eq!(
            app.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(app.scopes, ["https://outlook.office365.com/.default"]);

        let custom = OAuthSettings::resolve(&account(
            "email = \"a@x.test\"\nsmtp = { host = \"127.0.0.1\", port = 25, tls = \"none\" }\noauth = { client_id = \"cid\", token_url = \"http://127.0.0.1:9/t\", auth_url = \"http://127.0.0.1:9/a\", scopes = [\"s1\"] }",
        ))
        .unwrap();
        assert_eq!(custom.token_url, "http://127.0.0.1:9/t");
        assert_eq!(custom.scopes, ["s1"]);
        assert_eq!(custom.device_url, None);
        for p in [OAuthProvider::Yahoo, OAuthProvider::Aol] {
            let y = provider_oauth(p, "common");
            assert!(y.token_url.starts_with("https://") && y.device_url.is_none());
        }
    }

    #[test]
    fn config_checks() {
        let err = |toml: &str| {
            let text = format!("[smtp]\nlisten = \"127.0.0.1:2525\"\n[accounts.a]\n{toml}\n");
            Config::from_str(&text, Path::new("/tmp/x/postern.toml"))
                .unwrap_err()
                .to_string()
        };
        let custom =
            "email = \"a@x.test\"\nsmtp = { host = \"127.0.0.1\", port = 25, tls = \"none\" }\n";
        let e = err(&format!("{custom}oauth = {{ client_id = \"c\" }}"));
        assert!(e.contains("oauth.token_url"), "{e}");
        let e = err(&format!(
            "{custom}oauth = {{ client_id = \"c\", token_url = \"http://example.com/t\", auth_url = \"https://x/a\" }}"
        ));
        assert!(e.contains("https://"), "{e}");
        let e = err(&format!(
            "{custom}oauth = {{ client_id = \"c\", token_url = \"https://x/t\" }}"
        ));
        assert!(e.contains("oauth.auth_url"), "{e}");
        let e = err("provider = \"gmail\"\nemail = \"a@gmail.com\"\noauth = { client_id = \"c\", grant = \"device\" }");
        assert!(e.contains("--no-browser"), "{e}");
        let e = err("provider = \"yahoo\"\nemail = \"a@yahoo.com\"\nauth = \"oauth2\"\noauth = { client_id = \"c\", grant = \"device\" }");
        assert!(e.contains("no device flow"), "{e}");
        let e = err("provider = \"office365\"\nemail = \"a@c.com\"\noauth = { client_id = \"c\", grant = \"client_credentials\", client_secret_env = \"S\" }");
        assert!(e.contains("tenant"), "{e}");
        let e = err("provider = \"office365\"\nemail = \"a@c.com\"\noauth = { client_id = \"c\", grant = \"client_credentials\", tenant = \"t1\" }");
        assert!(e.contains("client_secret_env"), "{e}");
        let e = err("provider = \"office365\"\nemail = \"a@c.com\"\noauth = { client_id = \"c\", client_secret_env = \"S\", client_secret_file = \"f\" }");
        assert!(e.contains("not both"), "{e}");
        let e = err("provider = \"office365\"\nemail = \"a@c.com\"\noauth = { client_id = \"c\", tenant = \"a/b\" }");
        assert!(e.contains("tenant"), "{e}");
        // A relative client_secret_file is relative to the config file.
        let a = account("provider = \"office365\"\nemail = \"a@c.com\"\noauth = { client_id = \"c\", client_secret_file = \"s.txt\" }");
        assert_eq!(
            OAuthSettings::resolve(&a).unwrap().client_secret,
            Some(ClientSecretSource::File(PathBuf::from("/tmp/x/s.txt")))
        );
    }
}
