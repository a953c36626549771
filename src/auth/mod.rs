//! Local logins and (later) upstream credentials. Knows nothing of SMTP or IMAP.

pub mod users;
