//! TLS to the server: `sslmode` and `sslrootcert` from the URL or [`DbConfig`], and what a
//! refused handshake means.

use crate::{DbConfig, Error, Result, TlsProblem};
use serde::{Deserialize, Deserializer};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// libpq's `sslmode`: whether the connection uses TLS and what of the server's certificate
/// is checked.
///
/// | mode | TLS | certificate checked |
/// |---|---|---|
/// | `disable` | never | — |
/// | `allow` | never (as sqlx: no fallback *to* TLS) | — |
/// | `prefer` (the default) | when the server offers it | no |
/// | `require` | always | no (encryption only: anyone in the path can answer) |
/// | `verify-ca` | always | signed by a trusted CA |
/// | `verify-full` | always | signed by a trusted CA **and** names the host connected to |
///
/// Parsed from the URL's `sslmode`, `NEO_DB_SSL_MODE` or `PGSSLMODE`; anything else is
/// refused with [`Error::UnknownSslMode`].
///
/// # Example
/// ```
/// use neo_db::SslMode;
/// assert_eq!("verify-full".parse::<SslMode>().unwrap(), SslMode::VerifyFull);
/// let err = "verify".parse::<SslMode>().unwrap_err();
/// assert!(err.to_string().contains("\"verify\""));
/// assert!(err.to_string().contains("verify-full"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// Plain TCP (sqlx does not retry with TLS when the server demands it).
    Allow,
    /// TLS when the server offers it, without checking its certificate.
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS with a certificate signed by a trusted CA; the host name is not checked.
    VerifyCa,
    /// TLS with a certificate signed by a trusted CA that names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Every accepted spelling, in order of strictness.
    pub const ACCEPTED: [&'static str; 6] = [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];

    /// libpq's spelling (`"verify-full"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn to_sqlx(self) -> PgSslMode {
        match self {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow => PgSslMode::Allow,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = Error;

    /// Case-insensitive, as sqlx reads it.
    fn from_str(value: &str) -> Result<Self> {
        let mode = match value.to_ascii_lowercase().as_str() {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(Error::UnknownSslMode {
                    value: value.to_owned(),
                });
            }
        };
        Ok(mode)
    }
}

impl<'de> Deserialize<'de> for SslMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the URL, the configuration and libpq's variables put `sslmode` and `sslrootcert`.
#[derive(Debug, Default)]
struct UrlTls {
    mode: Option<String>,
    root_cert: Option<String>,
}

fn url_tls(url: &str) -> UrlTls {
    let mut found = UrlTls::default();
    // An unparseable URL is reported by the caller without quoting it.
    let Ok(parsed) = url::Url::parse(url) else {
        return found;
    };
    for (key, value) in parsed.query_pairs() {
        // The spellings sqlx reads.
        match &*key {
            "sslmode" | "ssl-mode" => found.mode = Some(value.into_owned()),
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => {
                found.root_cert = Some(value.into_owned());
            }
            _ => {}
        }
    }
    found
}

/// Checks `sslmode` wherever it was given (sqlx refuses an unknown one in the URL with a
/// message neo-db cannot show, and ignores one in `PGSSLMODE`), then lets the configuration
/// override the URL.
pub(crate) fn check_url(url: &str) -> Result<()> {
    if let Some(mode) = url_tls(url).mode {
        mode.parse::<SslMode>()?;
    }
    Ok(())
}

/// Applies `ssl_mode` and `ssl_root_cert` of the configuration over what the URL says, after
/// checking that the root certificate in effect can be read.
pub(crate) fn apply(
    config: &DbConfig,
    url: &str,
    mut connect: PgConnectOptions,
) -> Result<PgConnectOptions> {
    let from_url = url_tls(url);
    if config.ssl_mode.is_none()
        && from_url.mode.is_none()
        && let Ok(mode) = std::env::var("PGSSLMODE")
    {
        mode.parse::<SslMode>()?;
    }
    if let Some(mode) = config.ssl_mode {
        connect = connect.ssl_mode(mode.to_sqlx());
    }
    match &config.ssl_root_cert {
        Some(path) => {
            check_readable(path, "ssl_root_cert (NEO_DB_SSL_ROOT_CERT)")?;
            connect = connect.ssl_root_cert(path);
        }
        // sqlx takes PEM text in place of a path too.
        None => {
            if let Some(root) = from_url.root_cert.filter(|r| !r.starts_with("-----BEGIN")) {
                check_readable(Path::new(&root), "the URL's sslrootcert")?;
            }
        }
    }
    Ok(connect)
}

fn check_readable(path: &Path, what: &str) -> Result<()> {
    match std::fs::File::open(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Config(format!(
            "{what} {} cannot be read: {e}",
            path.display()
        ))),
    }
}

/// What went wrong in a TLS handshake, when `error` is one.
pub(crate) fn problem(error: &sqlx::Error) -> Option<TlsProblem> {
    match error {
        sqlx::Error::Tls(inner) => Some(match inner.downcast_ref::<rustls::Error>() {
            Some(tls) => from_rustls(tls),
            None if inner.to_string() == "server does not support TLS" => TlsProblem::NotOffered,
            None => TlsProblem::Handshake(inner.to_string()),
        }),
        // rustls reports a failed handshake as an I/O error of kind `InvalidData`.
        sqlx::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(from_rustls),
        _ => None,
    }
}

fn from_rustls(error: &rustls::Error) -> TlsProblem {
    use rustls::CertificateError as Cert;
    match error {
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => {
            TlsProblem::UntrustedCertificate
        }
        rustls::Error::InvalidCertificate(Cert::NotValidForNameContext {
            expected,
            presented,
        }) => TlsProblem::NameMismatch {
            host: expected.to_str().into_owned(),
            names: presented.iter().map(|name| plain_name(name)).collect(),
        },
        rustls::Error::InvalidCertificate(Cert::NotValidForName) => TlsProblem::NameMismatch {
            host: String::new(),
            names: Vec::new(),
        },
        rustls::Error::InvalidCertificate(other) => {
            TlsProblem::InvalidCertificate(other.to_string())
        }
        other => TlsProblem::Handshake(other.to_string()),
    }
}

/// rustls lists a certificate's names in webpki's debug form (`DnsName("localhost")`,
/// `IpAddress(127.0.0.1)`); the name alone reads better.
fn plain_name(presented: &str) -> String {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .unwrap_or(presented)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::plain_name;

    #[test]
    fn certificate_names_lose_their_debug_wrapping() {
        assert_eq!(plain_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("DirectoryName"), "DirectoryName");
    }
}
