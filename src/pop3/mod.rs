//! POP3 (RFC 1939 with RFC 2449 CAPA, RFC 2595 STLS and RFC 5034 AUTH).
//!
//! [`codec`] is the sans-I/O part: line framing, command and response
//! parsing and encoding, multi-line bodies and the capability list.
//! [`proxy`] serves local clients until they log in; [`upstream`] logs in
//! to the provider; then [`crate::splice`] copies bytes both ways. On the
//! sandbox's POP3 listener (`[sandbox] pop3`) a login reads its own inbox
//! of captured mail instead (`mailbox.rs`).

pub mod codec;
mod mailbox;
pub mod proxy;
pub mod upstream;
