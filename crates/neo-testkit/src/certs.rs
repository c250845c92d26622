//! Test certificates as PEM files in a directory, for servers and clients that read files.

use crate::{Error, Result, TestCertificates};
use std::path::{Path, PathBuf};

/// PEM files of a throwaway certificate authority and the server and client certificates it
/// signed ([`TestCertificates`]), written into a directory of the caller's, for servers and
/// clients that read files (Redis' `--tls-*-file` options, redis-rs' TLS settings). Each call makes a new CA, so a second
/// set is the "wrong CA" of a test that wants one.
///
/// # Example
/// ```no_run
/// let dir = tempfile::tempdir()?;
/// let certs = neo_testkit::CertificateFiles::generate(dir.path())?;
/// assert!(certs.ca_file().exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    dir: PathBuf,
}

impl CertificateFiles {
    /// Makes a CA and the certificates it signs ([`TestCertificates`], for `localhost` and
    /// `127.0.0.1`), and writes them into `dir` (`ca.pem`, `server.pem`, `server.key`,
    /// `client.pem`, `client.key`).
    ///
    /// # Errors
    /// [`Error::Certificates`] when generating fails, [`Error::Io`] when writing does.
    pub fn generate(dir: &Path) -> Result<Self> {
        let made = TestCertificates::generate(&["localhost", "127.0.0.1"])?;
        let files = CertificateFiles {
            dir: dir.to_path_buf(),
        };
        for (path, pem) in [
            (files.ca_file(), made.ca_pem()),
            (files.server_cert_file(), made.server_cert_pem()),
            (files.server_key_file(), made.server_key_pem()),
            (files.client_cert_file(), made.client_cert_pem()),
            (files.client_key_file(), made.client_key_pem()),
        ] {
            std::fs::write(&path, pem).map_err(Error::io(format!("writing {}", path.display())))?;
        }
        Ok(files)
    }

    /// The certificates [`generate`](CertificateFiles::generate) wrote into `dir` earlier
    /// (e.g. by another process: `neo-test-servers`).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        CertificateFiles { dir: dir.into() }
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
