//! IMAP: the sans-I/O codec, the upstream client and the proxy.

pub mod codec;
pub mod proxy;
pub mod upstream;
