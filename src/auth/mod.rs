//! Local logins and upstream credentials. Knows nothing of SMTP or IMAP.

pub mod command;
pub mod credentials;
pub mod oauth;
pub mod store;
pub mod token;
pub mod users;
