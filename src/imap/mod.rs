//! IMAP: the sans-I/O codec and the pre-auth proxy.

pub mod codec;
