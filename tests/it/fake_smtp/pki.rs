//! The throw-away test CA and the certificates the fake server presents.

use super::*;

/// A throw-away certificate authority. The CA certificate (PEM) is written to
/// `ca_pem_path` inside a temp dir that lives as long as any clone of this value.
#[derive(Clone)]
pub struct TestPki {
    /// The CA certificate, PEM, on disk (give this to postern as a trust anchor).
    pub ca_pem_path: PathBuf,
    /// The same CA certificate, PEM text.
    pub ca_pem: String,
    /// The same CA certificate, DER.
    pub ca_der: CertificateDer<'static>,
    inner: Arc<PkiInner>,
}

pub(super) struct PkiInner {
    pub(super) issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub(super) _dir: tempfile::TempDir,
}

impl TestPki {
    /// A fresh CA (ECDSA P-256, `is_ca`), its certificate written to a temp file.
    pub fn new() -> TestPki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Postern Fake SMTP Test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_pem_path = dir.path().join("fake-smtp-ca.pem");
        let ca_pem = cert.pem();
        std::fs::write(&ca_pem_path, &ca_pem).unwrap();
        TestPki {
            ca_pem_path,
            ca_pem,
            ca_der: cert.der().clone(),
            inner: Arc::new(PkiInner {
                issuer: rcgen::Issuer::new(params, key),
                _dir: dir,
            }),
        }
    }

    /// A server config whose leaf certificate (signed by this CA) covers `names`
    /// (DNS names, or IP addresses such as `"127.0.0.1"`).
    pub fn server_config(&self, names: &[&str]) -> Arc<ServerConfig> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        self.try_server_config(&names).unwrap()
    }

    pub(super) fn try_server_config(&self, names: &[String]) -> Result<Arc<ServerConfig>, String> {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|x| e(&x))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cn = names.first().map(String::as_str).unwrap_or("fake smtp");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::NoCa;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().map_err(|x| e(&x))?;
        let cert = params
            .signed_by(&key, &self.inner.issuer)
            .map_err(|x| e(&x))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|x| e(&x))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .map_err(|x| e(&x))?;
        Ok(Arc::new(config))
    }

    /// A client config trusting only this CA (for tests that talk TLS themselves).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}
