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

use crate::cert::{fingerprint, pin_text};
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
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names).map_err(generate)?;
    // What a person sees when a client asks whether to trust it.
    let name = format!("Postern local ({})", machine_name());
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, name.as_str());
    dn.push(rcgen::DnType::OrganizationName, "Postern");
    params.distinguished_name = dn;
    let signing = rcgen::KeyPair::generate().map_err(generate)?;
    let made = params.self_signed(&signing).map_err(generate)?;
    write_private(&key, signing.serialize_pem().as_bytes()).map_err(io(&key))?;
    write_private(&cert, made.pem().as_bytes()).map_err(io(&cert))?;
    let fp = pin_text(&fingerprint(made.der()));
    tracing::info!(cert = %cert.display(), subject = %name, fingerprint = %fp, "made a self-signed certificate for localhost, 127.0.0.1 and ::1: a client that asks whether to trust it should show this fingerprint");
    Ok((cert, key))
}

/// This machine's host name (Linux), for the local certificate's subject.
fn machine_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| crate::text::sanitize(s.trim(), 64))
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
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
/// account's `ca_file` and `tls_pin`, TLS 1.2 minimum (see
/// [`AccountVerifier`]).
pub fn client_config(
    ca_file: Option<&Path>,
    pin: Option<[u8; 32]>,
) -> Result<Arc<ClientConfig>, TlsError> {
    Ok(client_config_with(ca_file, pin)?.0)
}

/// As [`client_config`], with `tls_pin`, and the verifier (which remembers
/// the certificate a server presented, for `doctor`).
pub fn client_config_with(
    ca_file: Option<&Path>,
    pin: Option<[u8; 32]>,
) -> Result<(Arc<ClientConfig>, Arc<AccountVerifier>), TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    let mut listed = Vec::new();
    if let Some(ca) = ca_file {
        for cert in read_certs(ca)? {
            roots.add(cert.clone()).map_err(|e| TlsError::File {
                path: ca.to_owned(),
                what: format!("not a usable CA certificate: {e}"),
            })?;
            listed.push(cert);
        }
    }
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Generate(format!("certificate verifier: {e}")))?;
    let verifier = Arc::new(AccountVerifier {
        inner,
        listed,
        pin,
        last: std::sync::Mutex::new(None),
    });
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    Ok((Arc::new(cfg), verifier))
}

/// How an upstream's certificate is checked: the usual web PKI checks
/// against the OS trust store and `ca_file`; besides them, a certificate
/// that is byte for byte one listed in `ca_file` is accepted for a name it
/// is valid for even when it says `CA:TRUE` (what `openssl req -x509` makes
/// by default, and what OpenSSL-based clients accept once trusted); and
/// with `tls_pin` exactly the pinned certificate is accepted, whatever else
/// it says (`doctor` reports its name and dates). Every other case is
/// verified as usual.
#[derive(Debug)]
pub struct AccountVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    listed: Vec<CertificateDer<'static>>,
    pin: Option<[u8; 32]>,
    /// The end-entity certificate the last server presented.
    last: std::sync::Mutex<Option<CertificateDer<'static>>>,
}

impl AccountVerifier {
    /// Forget the last certificate (before the next server is checked).
    pub fn forget(&self) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The certificate the last server presented (for `doctor`).
    pub fn last_presented(&self) -> Option<CertificateDer<'static>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl AccountVerifier {
    /// Give a refusal words where rustls has none: a self-signed
    /// certificate, a CA certificate as a server's, a pin that does not
    /// match. Other errors stay as they are.
    fn explain(&self, e: rustls::Error, ee: &CertificateDer<'_>) -> rustls::Error {
        use crate::cert::{CertInfo, CertProblem};
        use rustls::CertificateError as C;
        let problem = if self.pin.is_some() {
            CertProblem::PinMismatch {
                presented: pin_text(&fingerprint(ee)),
                cause: e.to_string(),
            }
        } else {
            let Some(info) = CertInfo::parse(ee) else {
                return e;
            };
            match &e {
                rustls::Error::InvalidCertificate(C::UnknownIssuer | C::Other(_))
                    if info.self_signed =>
                {
                    CertProblem::SelfSigned {
                        subject: info.subject,
                    }
                }
                rustls::Error::InvalidCertificate(C::Other(_)) if info.is_ca => {
                    CertProblem::CaAsServer {
                        subject: info.subject,
                    }
                }
                _ => return e,
            }
        };
        rustls::Error::InvalidCertificate(C::Other(rustls::OtherError(Arc::new(problem))))
    }
}

impl rustls::client::danger::ServerCertVerifier for AccountVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(end_entity.clone().into_owned());
        if self.pin.is_some_and(|p| p == fingerprint(end_entity)) {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(v) => Ok(v),
            Err(e)
                if self
                    .listed
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                // Trusted by being listed itself: the name must still fit.
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                tracing::debug!(error = %e, "server certificate accepted: it is listed in ca_file");
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            Err(e) => Err(self.explain(e, end_entity)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate like `openssl req -x509` makes: self-signed, CA:TRUE.
    fn self_signed_ca(dir: &Path, name: &str) -> (PathBuf, Arc<ServerConfig>) {
        let mut p = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let cert_file = dir.join(format!("{name}.pem"));
        let key_file = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let files = TlsFiles {
            cert: cert_file.clone(),
            key: key_file,
        };
        (cert_file, server_config(Some(&files), dir).unwrap())
    }

    /// A handshake to a server presenting that certificate, as `name`.
    async fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
        name: &str,
    ) -> Result<(), String> {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let srv = tokio::spawn(async move {
            let _ = acceptor.accept(s).await;
        });
        let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let r = tokio_rustls::TlsConnector::from(client)
            .connect(name, c)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        srv.abort();
        r
    }

    #[tokio::test]
    async fn a_listed_ca_true_certificate_is_trusted_for_its_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, server) = self_signed_ca(dir.path(), "mail.self.test");
        // Not listed: refused, in words.
        let none = client_config(None, None).unwrap();
        let e = handshake(none, server.clone(), "mail.self.test")
            .await
            .unwrap_err();
        // (The io::Error's text shows the problem's Debug form; the
        // upstream error turns it into words.)
        assert!(e.contains("SelfSigned"), "{e}");
        // Listed in ca_file: accepted for its name, not for another.
        let listed = client_config(Some(&cert), None).unwrap();
        handshake(listed.clone(), server.clone(), "mail.self.test")
            .await
            .unwrap();
        let e = handshake(listed, server.clone(), "other.test")
            .await
            .unwrap_err();
        assert!(e.to_lowercase().contains("not valid for"), "{e}");
        // Pinned: exactly this certificate, whatever the name.
        let der = read_certs(&cert).unwrap().remove(0);
        let (pinned, verifier) = client_config_with(None, Some(fingerprint(&der))).unwrap();
        handshake(pinned, server.clone(), "other.test")
            .await
            .unwrap();
        assert_eq!(verifier.last_presented().as_ref(), Some(&der));
        // A wrong pin: refused, naming the certificate the server has.
        let wrong = client_config(None, Some([7u8; 32])).unwrap();
        let e = handshake(wrong, server, "mail.self.test")
            .await
            .unwrap_err();
        assert!(
            e.contains("PinMismatch") && e.contains(&pin_text(&fingerprint(&der))),
            "{e}"
        );
    }
}
