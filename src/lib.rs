//! Postern: a local SMTP/IMAP gateway. Legacy programs log in on localhost
//! with a plain password; Postern talks to the provider the modern way.
//!
//! Module map (dependencies point down): `config` → `providers`; `server`
//! spawns `smtp::session`; sessions use `auth`, `route`, `capture` and the
//! sans-I/O codecs (`smtp::codec`, `sasl`).

pub mod auth;
pub mod capture;
pub mod config;
pub mod conn;
pub mod doctor;
pub mod imap;
pub mod io;
pub mod pool;
pub mod providers;
pub mod rewrite;
pub mod sasl;
pub mod secret;
pub mod server;
pub mod smtp;
pub mod text;
pub mod tls;
pub mod upstream;
