//! Postern: a local SMTP/IMAP gateway. Legacy programs log in on localhost
//! with a plain password; Postern talks to the provider the modern way.
//!
//! Module map (dependencies point down, never up): `server` spawns the
//! sessions (`smtp::session`, `imap::proxy`) over `conn::Conn`; sessions use
//! `auth`, `smtp::route` (capture, `smtp::relay`, `pool`) and the sans-I/O
//! codecs (`smtp::codec`, `imap::codec`, `sasl`); the upstream clients
//! (`smtp::upstream`, `imap::upstream`) stand on `upstream`; everything reads
//! `config`, which reads `providers`. `text`, `secret` and `io` are at the
//! bottom. `tests/it/layout.rs` checks that no two files import each other.

pub mod auth;
pub mod capture;
pub mod cert;
pub mod config;
pub mod conn;
pub mod control;
pub mod db;
pub mod doctor;
pub mod events;
pub mod gate;
pub mod http;
pub mod imap;
pub mod io;
pub mod metrics;
pub mod pattern;
pub mod pool;
pub mod pop3;
pub mod providers;
pub mod queue;
pub mod rewrite;
pub mod sandbox;
pub mod sasl;
pub mod secret;
pub mod server;
pub mod setup;
pub mod smtp;
pub mod splice;
pub mod status;
pub mod text;
pub mod tls;
pub mod upstream;
