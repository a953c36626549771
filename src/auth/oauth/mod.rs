//! Built-in OAuth2: an account's settings from its provider preset
//! ([`settings`]), the token endpoint over HTTP ([`http`]), the token
//! manager behind the built-in token source ([`manager`]), the consent flows
//! of `postern auth` ([`consent`]) and the OAuth part of `postern status`
//! ([`status`]). Tokens live in [`Secret`](crate::secret::Secret)s: nothing
//! here logs a token, a code, a verifier or a client secret. Knows nothing
//! of SMTP or IMAP.

pub mod consent;
pub mod http;
pub mod manager;
pub mod settings;
pub mod status;

pub use consent::{consent, ConsentOptions, ConsentOutcome};
pub use manager::{OAuthSource, TokenManager};
pub use settings::{
    uses_builtin, ClientSecretSource, OAuthError, OAuthSettings, DEFAULT_REFRESH_MARGIN,
};
pub use status::{status_json, status_report};
