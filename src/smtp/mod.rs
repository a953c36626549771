//! SMTP: the sans-I/O codec and the local server session.

pub mod codec;
pub mod relay;
pub mod session;
pub mod upstream;
