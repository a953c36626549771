//! Integration tests: one binary (linking many is slow on 2 cores).
//! Real sockets on 127.0.0.1, a real `postern` process, real clients.

// A test or bench crate has no public API: `pub` in its modules means
// "shared between its files".
#![allow(unreachable_pub)]

mod browser;
mod cli;
mod events;
mod fake_smtp;
mod hardening;
mod harness;
mod hostile;
mod imap;
mod layout;
mod listeners;
mod local_smtp;
mod oauth;
mod oauth_server;
mod ops;
mod pool_store;
mod pools;
mod pop3;
mod providers;
mod queue;
mod relay;
mod relay_failures;
mod reload;
mod sandbox;
mod selfsigned;
mod service_unit;
mod setup;
mod web_ui;
