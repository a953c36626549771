//! Bearer tokens for XOAUTH2/OAUTHBEARER: the interface every token source
//! keeps ([`BearerSource`], shared as a [`TokenSource`]), the token and the
//! error. The sources live beside it: `token_command` in
//! [`crate::auth::command`], built-in OAuth2 in [`crate::auth::oauth`].
//!
//! The contract: a token is served from a cache while it is good and
//! fetched by one caller at a time per account (fifty sessions asking at
//! once cause one fetch); a token the upstream refused is forgotten with
//! `invalidate`; tokens never reach logs or error texts.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::secret::Secret;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token_command for account {account} could not start: {reason}")]
    Spawn { account: String, reason: String },
    #[error("token_command for account {account} took longer than {secs} s")]
    Timeout { account: String, secs: u64 },
    #[error("token_command for account {account} failed ({status})")]
    Failed { account: String, status: String },
    #[error("token_command for account {account} printed no token")]
    Empty { account: String },
    #[error("account {account} needs consent: run `postern auth {account}`")]
    NeedsConsent { account: String },
    #[error("token endpoint for account {account} is unavailable: {reason}")]
    Unavailable { account: String, reason: String },
    /// The token endpoint refused the client or the request (not the user's
    /// consent): a configuration problem that retrying does not fix.
    #[error("OAuth for account {account} failed: {reason}")]
    Rejected { account: String, reason: String },
}

impl TokenError {
    /// Whether retrying later may help without the user doing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TokenError::Timeout { .. } | TokenError::Unavailable { .. }
        )
    }
}

/// A token with where it came from, so a rejection can be told apart from a
/// fresh token being bad.
#[derive(Debug, Clone)]
pub struct Token {
    pub secret: Secret,
    /// True when this token was just fetched (not served from the cache).
    pub fresh: bool,
}

/// A boxed future, so sources can sit behind one trait object.
pub type TokenFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a token source does.
pub trait BearerSource: Send + Sync + fmt::Debug {
    /// A token: cached if valid, else freshly fetched.
    fn token(&self) -> TokenFuture<'_, Result<Token, TokenError>>;
    /// The upstream rejected `rejected`: forget it (unless another caller
    /// already replaced it) so the next call fetches a new one.
    fn invalidate<'a>(&'a self, rejected: &'a Secret) -> TokenFuture<'a, ()>;
}

/// Where an account's bearer tokens come from (cheap to clone).
#[derive(Debug, Clone)]
pub struct TokenSource(Arc<dyn BearerSource>);

impl TokenSource {
    pub fn new(source: Arc<dyn BearerSource>) -> TokenSource {
        TokenSource(source)
    }

    /// A token: cached if valid, else freshly fetched.
    pub async fn token(&self) -> Result<Token, TokenError> {
        self.0.token().await
    }

    /// The upstream rejected `rejected`: forget it so the next call fetches
    /// a new one.
    pub async fn invalidate(&self, rejected: &Secret) {
        self.0.invalidate(rejected).await
    }
}
