//! SMTP: the sans-I/O codec, the local server session, the routes a
//! session's mail takes (capture, an account, a pool), the relay
//! transactions and the upstream client.

pub mod codec;
pub mod delivery;
pub mod relay;
pub mod route;
pub mod session;
pub mod upstream;
