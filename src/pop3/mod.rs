//! POP3 (RFC 1939 with RFC 2449 CAPA, RFC 2595 STLS and RFC 5034 AUTH).
//!
//! [`codec`] is the sans-I/O part: line framing, command and response
//! parsing and encoding, multi-line bodies and the capability list.
//! [`proxy`] serves local clients until they log in; [`upstream`] logs in
//! to the provider; then [`crate::splice`] copies bytes both ways.

pub mod codec;
pub mod proxy;
pub mod upstream;
