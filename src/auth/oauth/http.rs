//! The token endpoint over HTTP: reqwest through the `oauth2` crate,
//! redirects off, status codes kept, and what a failure means (consent
//! needed, rejected, transient). Knows nothing of caching or consent.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oauth2::{ErrorResponseType, RequestTokenError, StandardErrorResponse, TokenResponse};
use sha2::{Digest, Sha256};

use super::settings::OAuthError;
use crate::secret::Secret;

/// Lifetime assumed when the token endpoint sends no `expires_in`.
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);

/// A transport failure or a status that means "try again later".
#[derive(Debug, thiserror::Error)]
pub(super) enum HttpError {
    #[error("{0}")]
    Transport(String),
    #[error("HTTP status {0}")]
    Status(u16),
}

type HttpFuture = Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send>>;

#[derive(Clone)]
pub(super) struct Http {
    client: oauth2::reqwest::Client,
    pub(super) timeout: Duration,
}

impl Http {
    pub(super) fn new(timeout: Duration) -> Result<Http, OAuthError> {
        let client = oauth2::reqwest::Client::builder()
            // A token endpoint that redirects is misconfigured; following it
            // could send credentials elsewhere (oauth2 crate advice).
            .redirect(oauth2::reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OAuthError::Http(e.to_string()))?;
        Ok(Http { client, timeout })
    }

    /// The oauth2 HTTP client: 5xx and 429 become errors so they are told
    /// apart from OAuth error answers (which oauth2 parses).
    pub(super) fn caller(
        &self,
    ) -> impl Fn(oauth2::HttpRequest) -> HttpFuture + Send + Sync + 'static {
        let client = self.client.clone();
        let timeout = self.timeout;
        move |req| {
            let client = client.clone();
            Box::pin(async move {
                let resp = oauth2::AsyncHttpClient::call(&client, req)
                    .await
                    .map_err(|e| HttpError::Transport(describe_http_error(&e, timeout)))?;
                let status = resp.status().as_u16();
                if status >= 500 || status == 429 {
                    return Err(HttpError::Status(status));
                }
                Ok(resp)
            })
        }
    }
}

fn describe_http_error(
    e: &oauth2::HttpClientError<oauth2::reqwest::Error>,
    timeout: Duration,
) -> String {
    match e {
        oauth2::HttpClientError::Reqwest(r) => {
            if r.is_timeout() {
                return format!("no answer within {} s", timeout.as_secs_f32());
            }
            // The innermost cause says what happened ("Connection refused").
            let mut src: &dyn std::error::Error = r.as_ref();
            while let Some(next) = src.source() {
                src = next;
            }
            if r.is_connect() {
                format!("cannot connect: {src}")
            } else {
                src.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// What went wrong with a token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// Network, timeout, 5xx, 429, `temporarily_unavailable`: retry later.
    Transient(String),
    /// The grant is dead (`invalid_grant` and friends): the user must consent again.
    Consent(String),
    /// The client or request is wrong: a configuration problem.
    Rejected(String),
}

/// Printable, short text from the server (descriptions are the server's words).
pub(super) fn clean(s: &str, max: usize) -> String {
    crate::text::sanitize(s, max).trim().to_owned()
}

pub(super) fn classify<T>(e: RequestTokenError<HttpError, StandardErrorResponse<T>>) -> Failure
where
    T: ErrorResponseType + std::fmt::Display + 'static,
{
    match e {
        RequestTokenError::Request(HttpError::Transport(r)) => Failure::Transient(r),
        RequestTokenError::Request(HttpError::Status(s)) => {
            Failure::Transient(format!("the token endpoint answered HTTP {s}"))
        }
        RequestTokenError::ServerResponse(r) => {
            let code = r.error().to_string();
            let text = match r.error_description() {
                Some(d) => format!("{code} ({})", clean(d, 200)),
                None => code.clone(),
            };
            match code.as_str() {
                "invalid_grant"
                | "interaction_required"
                | "consent_required"
                | "login_required" => Failure::Consent(text),
                "temporarily_unavailable" | "server_error" => Failure::Transient(text),
                "invalid_client" | "unauthorized_client" => Failure::Rejected(format!(
                    "{text}: check client_id and the client secret of the account"
                )),
                "invalid_scope" => Failure::Rejected(format!("{text}: check oauth.scopes")),
                _ => Failure::Rejected(text),
            }
        }
        RequestTokenError::Parse(..) => Failure::Rejected(
            "the token endpoint's answer is not an OAuth2 token response; check oauth.token_url"
                .into(),
        ),
        RequestTokenError::Other(m) => Failure::Rejected(clean(&m, 200)),
    }
}

/// The parts of a token response Postern keeps.
pub(super) struct Issued {
    pub(super) access: Secret,
    pub(super) refresh: Option<Secret>,
    pub(super) lifetime: Duration,
    pub(super) scopes: Option<Vec<String>>,
}

impl Issued {
    pub(super) fn from_response<R: TokenResponse>(r: &R) -> Issued {
        Issued {
            access: Secret::new(r.access_token().secret().as_str()),
            refresh: r.refresh_token().map(|t| Secret::new(t.secret().as_str())),
            // A missing (or zero) expires_in counts as an hour.
            lifetime: r
                .expires_in()
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_EXPIRES_IN),
            scopes: r
                .scopes()
                .map(|s| s.iter().map(|x| x.to_string()).collect()),
        }
    }
}

pub(super) fn fingerprint(s: &Secret) -> [u8; 32] {
    Sha256::digest(s.expose().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes() {
        use oauth2::basic::BasicErrorResponseType as T;
        let server = |t: T| {
            classify(RequestTokenError::<HttpError, _>::ServerResponse(
                StandardErrorResponse::new(t, Some("why\nnot".into()), None),
            ))
        };
        assert_eq!(
            server(T::InvalidGrant),
            Failure::Consent("invalid_grant (why not)".into())
        );
        assert!(
            matches!(server(T::InvalidClient), Failure::Rejected(m) if m.contains("client_id"))
        );
        assert!(matches!(
            server(T::Extension("temporarily_unavailable".into())),
            Failure::Transient(_)
        ));
        assert_eq!(
            classify::<oauth2::basic::BasicErrorResponseType>(RequestTokenError::Request(
                HttpError::Status(503)
            )),
            Failure::Transient("the token endpoint answered HTTP 503".into())
        );
    }
}
