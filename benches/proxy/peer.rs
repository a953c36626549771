//! The peer column: email-oauth2-proxy (PyPI `emailproxy`, pinned in
//! benches/eop/setup) in front of the same Dovecot, started by
//! `benches/eop/start` (which `benches/run` calls). It logs in upstream with
//! XOAUTH2 from a loopback client_credentials token endpoint; clients reach
//! it over plain IMAP and SMTP on 127.0.0.1, as they reach Postern's SMTP.
//! Measured in the same rounds as direct and Postern, on the Dovecot
//! upstream only.

use crate::*;

pub struct Peer {
    pub name: &'static str,
    pub smtp: Endpoint,
    pub imap: Endpoint,
    pub user: String,
    pub password: String,
    pub pid: u32,
}

impl Peer {
    /// From the variables `benches/eop/start` prints.
    pub fn from_env() -> anyhow::Result<Peer> {
        let var = |v: &str| {
            std::env::var(v).with_context(|| {
                format!("{v} is not set: --peer eop needs email-oauth2-proxy running (benches/run starts it: benches/eop/setup, benches/eop/start)")
            })
        };
        let ep = |port: String| -> anyhow::Result<Endpoint> {
            Ok(Endpoint {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>()?)),
                tls: None,
            })
        };
        let pid: u32 = var("EOP_PID")?.parse()?;
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("email-oauth2-proxy (pid {pid}, EOP_PID) is not running");
        }
        Ok(Peer {
            name: "email-oauth2-proxy",
            smtp: ep(var("EOP_SMTP_PORT")?)?,
            imap: ep(var("EOP_IMAP_PORT")?)?,
            user: var("EOP_USER")?,
            password: var("EOP_PASSWORD")?,
            pid,
        })
    }

    pub fn login(&self) -> Login {
        Login::Password(self.user.clone(), self.password.clone())
    }
}

/// The peer, when this run measures one and `t` is the upstream it fronts.
pub fn peer_for<'a>(s: &'a Settings, t: &Target) -> Option<&'a Peer> {
    s.peer.as_deref().filter(|_| t.name == "dovecot")
}
