//! Integration tests: one binary (linking many is slow on 2 cores).
//! Real sockets on 127.0.0.1, a real `postern` process, real clients.

mod cli;
mod fake_smtp;
mod harness;
mod imap;
mod local_smtp;
mod providers;
mod relay;
mod relay_failures;
