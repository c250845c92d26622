//! The redis-rs client for a URL, with the TLS files of [`TlsConfig`] when it says `rediss://`.

use crate::{Error, Result, TlsConfig};
use redis::{ClientTlsConfig, TlsCertificates};
use std::path::Path;

/// The certificates `tls` names, read from their files; `None` when it names none (the
/// public roots are trusted then).
///
/// # Errors
/// [`Error::InvalidSetting`] naming the setting whose file cannot be read.
pub(crate) fn certificates(tls: &TlsConfig) -> Result<Option<TlsCertificates>> {
    let read = |setting: &str, path: &Path| {
        std::fs::read(path).map_err(|e| Error::InvalidSetting {
            setting: setting.to_owned(),
            reason: format!("cannot be read ({}): {e}", path.display()),
        })
    };
    let root_cert = match &tls.ca_file {
        Some(path) => Some(read("tls.ca_file", path)?),
        None => None,
    };
    let client_tls = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("tls.client_cert_file", cert)?,
            client_key: read("tls.client_key_file", key)?,
        }),
        _ => None,
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    install_crypto_provider();
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// A client for the standalone `url`, with `tls`'s certificates when it is `rediss://`.
///
/// # Errors
/// [`Error::InvalidSetting`] for an unreadable file or an invalid URL or PEM (the URL's text
/// is not shown).
pub(crate) fn client(url: &str, tls: &TlsConfig) -> Result<redis::Client> {
    install_crypto_provider();
    let client = match certificates(tls)? {
        None => redis::Client::open(url),
        Some(certs) => redis::Client::build_with_tls(url, certs),
    };
    client.map_err(|e| Error::InvalidSetting {
        setting: "url".into(),
        reason: match e.kind() {
            redis::ErrorKind::Io => format!("with the TLS files: {e}"),
            _ => "is not a valid Redis URL (its text is not shown)".into(),
        },
    })
}

/// redis-rs builds rustls without naming a crypto provider: make ring (the one this crate
/// builds) the process default unless the application installed one already.
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
