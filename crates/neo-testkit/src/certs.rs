//! Certificates made at test time (rcgen) for TLS servers: a CA, a server certificate for
//! `localhost` and `127.0.0.1`, and a client certificate, all as PEM files.

use crate::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// PEM files of a throwaway certificate authority and the server and client certificates it
/// signed, written into a directory of the caller's. Each call makes a new CA, so a second
/// set is the "wrong CA" of a test that wants one.
///
/// # Example
/// ```no_run
/// let dir = tempfile::tempdir()?;
/// let certs = neo_testkit::TestCertificates::generate(dir.path())?;
/// assert!(certs.ca_file().exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TestCertificates {
    dir: PathBuf,
}

impl TestCertificates {
    /// Makes a CA and the certificates it signs, and writes them into `dir` (`ca.pem`,
    /// `server.pem`, `server.key`, `client.pem`, `client.key`).
    ///
    /// # Errors
    /// [`Error::Io`] when generating or writing fails.
    pub fn generate(dir: &Path) -> Result<Self> {
        let failed = |e: rcgen::Error| Error::Io {
            context: "generating test certificates (rcgen)".into(),
            source: std::io::Error::other(e.to_string()),
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        // A name of its own per CA: a client that trusts another set's CA finds no issuer of
        // that name (rustls: UnknownIssuer), as with a real wrong CA.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("neo-testkit CA {}-{nanos}", std::process::id()),
        );
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(failed)?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(failed)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| -> Result<(String, String)> {
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .map_err(failed)?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().map_err(failed)?;
            let cert = params.signed_by(&key, &issuer).map_err(failed)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) =
            leaf("neo-testkit server", ExtendedKeyUsagePurpose::ServerAuth)?;
        let (client_cert, client_key) =
            leaf("neo-testkit client", ExtendedKeyUsagePurpose::ClientAuth)?;

        let certs = TestCertificates {
            dir: dir.to_path_buf(),
        };
        for (path, pem) in [
            (certs.ca_file(), ca_cert.pem()),
            (certs.server_cert_file(), server_cert),
            (certs.server_key_file(), server_key),
            (certs.client_cert_file(), client_cert),
            (certs.client_key_file(), client_key),
        ] {
            std::fs::write(&path, pem).map_err(Error::io(format!("writing {}", path.display())))?;
        }
        Ok(certs)
    }

    /// The certificates [`generate`](TestCertificates::generate) wrote into `dir` earlier
    /// (e.g. by another process: `neo-test-servers`).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        TestCertificates { dir: dir.into() }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM), the one to trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate (PEM), for `localhost` and `127.0.0.1`.
    pub fn server_cert_file(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The server certificate's private key (PEM).
    pub fn server_key_file(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// A client certificate (PEM) signed by the CA, for servers that require one.
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    /// The client certificate's private key (PEM).
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}
