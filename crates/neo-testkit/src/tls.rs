//! Certificates generated at test time: a throwaway CA and a server certificate it signs.

use crate::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate authority made for one test run, a server certificate and a client
/// certificate signed by it, as PEM text (ECDSA P-256 keys, valid from 1975 to 4096).
/// [`CertificateFiles`](crate::CertificateFiles) writes them out for servers that read files.
///
/// Give it to [`PgServerOptions::tls`](crate::PgServerOptions::tls) to start a server with
/// TLS; clients trust [`ca_pem`](Self::ca_pem) (or the file [`write_ca`](Self::write_ca)
/// writes). A second `TestCertificates` is a CA the server's certificate does not chain to.
/// `Debug` leaves the private key out.
///
/// # Example
/// ```
/// let certs = neo_testkit::TestCertificates::generate(&["localhost"])?;
/// assert!(certs.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// assert!(!format!("{certs:?}").contains("PRIVATE KEY"));
/// # Ok::<(), neo_testkit::Error>(())
/// ```
#[derive(Clone)]
pub struct TestCertificates(Arc<Pems>);

struct Pems {
    names: Vec<String>,
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl std::fmt::Debug for TestCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCertificates")
            .field("names", &self.0.names)
            .finish_non_exhaustive()
    }
}

impl TestCertificates {
    /// A new CA and a server certificate for `server_names`: DNS names (`"localhost"`) or
    /// IP addresses (`"127.0.0.1"`), which go into the subjectAltName as such.
    ///
    /// # Errors
    /// [`Error::Certificates`] when a name is not a valid DNS name or the generation fails.
    pub fn generate(server_names: &[&str]) -> Result<Self> {
        let fail = |e: rcgen::Error| Error::Certificates(e.to_string());
        // A CA name of its own, so two sets never look like the same issuer.
        let ca_name = format!("neo-testkit CA {}", uuid::Uuid::now_v7().simple());
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(fail)?)
            .map_err(fail)?;

        let names: Vec<String> = server_names.iter().map(|n| (*n).to_owned()).collect();
        let mut server_params = CertificateParams::new(names.clone()).map_err(fail)?;
        if let Some(first) = names.first() {
            server_params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().map_err(fail)?;
        let server_cert = server_params.signed_by(&server_key, &ca).map_err(fail)?;
        let mut client_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "neo-testkit client");
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().map_err(fail)?;
        let client_cert = client_params.signed_by(&client_key, &ca).map_err(fail)?;
        Ok(TestCertificates(Arc::new(Pems {
            names,
            ca_pem: ca.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        })))
    }

    /// The names the server certificate holds.
    pub fn server_names(&self) -> &[String] {
        &self.0.names
    }

    /// The CA certificate (PEM), for clients' `sslrootcert`.
    pub fn ca_pem(&self) -> &str {
        &self.0.ca_pem
    }

    /// The server certificate (PEM).
    pub fn server_cert_pem(&self) -> &str {
        &self.0.server_cert_pem
    }

    /// The server's private key (PKCS#8 PEM).
    pub fn server_key_pem(&self) -> &str {
        &self.0.server_key_pem
    }

    /// A client certificate (PEM) signed by the CA, for servers that require one.
    pub fn client_cert_pem(&self) -> &str {
        &self.0.client_cert_pem
    }

    /// The client certificate's private key (PKCS#8 PEM).
    pub fn client_key_pem(&self) -> &str {
        &self.0.client_key_pem
    }

    /// Writes the CA certificate to `dir/ca.crt` and returns that path.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn write_ca(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("ca.crt");
        std::fs::write(&path, &self.0.ca_pem)
            .map_err(Error::io(format!("writing {}", path.display())))?;
        Ok(path)
    }
}
