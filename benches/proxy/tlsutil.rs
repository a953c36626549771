//! TLS material for the benchmark: one self-signed certificate for
//! localhost/127.0.0.1 (rcgen), used by the in-process upstream and by
//! Postern's local listener, and a client config that trusts it plus the
//! test peers' CA. ring provider only, as in Postern.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::crypto::ring;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct Material {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Make the certificate in `dir`; the client trusts it and `extra_ca` (PEM).
pub fn make(dir: &Path, extra_ca: Option<&Path>) -> anyhow::Result<Material> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .context("rcgen")?;
    let cert_pem = dir.join("bench-cert.pem");
    let key_pem = dir.join("bench-key.pem");
    std::fs::write(&cert_pem, ck.cert.pem())?;
    std::fs::write(&key_pem, ck.signing_key.serialize_pem())?;
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    let mut roots = RootCertStore::empty();
    roots.add(cert)?;
    if let Some(ca) = extra_ca {
        for c in CertificateDer::pem_file_iter(ca).with_context(|| format!("{}", ca.display()))? {
            roots.add(c?)?;
        }
    }
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Material {
        cert_pem,
        key_pem,
        server: Arc::new(server),
        client: Arc::new(client),
    })
}
