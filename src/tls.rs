//! rustls configuration: the local side's server config (a configured
//! certificate, or a self-signed one made on first run) and the upstream
//! side's client config (OS trust store plus an optional per-account CA).
//!
//! Only the ring provider is in the tree; every config is built with it
//! explicitly, so no process-wide default provider is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {what}")]
    File { path: PathBuf, what: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("making the self-signed certificate: {0}")]
    Generate(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// TLS 1.2 and 1.3 only (TLS 1.0/1.1 are not implemented by rustls at all).
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if !path.exists() {
        return Err(TlsError::File {
            path: path.to_owned(),
            what: "file not found".into(),
        });
    }
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            what: format!("cannot read certificates: {e}"),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            what: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.to_owned(),
            what: "no CERTIFICATE in this PEM file".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    if !path.exists() {
        return Err(TlsError::File {
            path: path.to_owned(),
            what: "file not found".into(),
        });
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_owned(),
        what: format!("no usable private key: {e}"),
    })
}

/// Server config for local listeners. With `files`, those must exist; without,
/// a self-signed certificate for localhost, 127.0.0.1 and ::1 is made in
/// `data_dir/tls/` on first run and reused afterwards.
pub fn server_config(
    files: Option<&TlsFiles>,
    data_dir: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert, key) = match files {
        Some(f) => (f.cert.clone(), f.key.clone()),
        None => ensure_self_signed(&data_dir.join("tls"))?,
    };
    let certs = read_certs(&cert)?;
    let key = read_key(&key)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols.clear();
    Ok(Arc::new(cfg))
}

/// Paths of the generated certificate and key, made if missing.
pub fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join("localhost.pem");
    let key = dir.join("localhost-key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    write_private(&key, ck.signing_key.serialize_pem().as_bytes()).map_err(io(&key))?;
    write_private(&cert, ck.cert.pem().as_bytes()).map_err(io(&cert))?;
    tracing::info!(cert = %cert.display(), "made a self-signed certificate for localhost");
    Ok((cert, key))
}

/// Write a file readable by its owner only, atomically (tmp + rename).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Client config for upstream connections: the OS trust store plus the
/// account's `ca_file`, TLS 1.2 minimum.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = ca_file {
        for cert in read_certs(ca)? {
            roots.add(cert).map_err(|e| TlsError::File {
                path: ca.to_owned(),
                what: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Tests: a TLS client over `stream` that trusts only the certificate in
/// `ca_pem`, connecting as "localhost".
#[cfg(test)]
pub(crate) async fn test_connect<S>(ca_pem: &Path, stream: S) -> tokio_rustls::client::TlsStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut roots = RootCertStore::empty();
    for c in read_certs(ca_pem).unwrap() {
        roots.add(c).unwrap();
    }
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), stream)
        .await
        .unwrap()
}
