//! The TLS-only Redis shared by a test binary.

use crate::redis::{RedisServer, RedisServerOptions};
use crate::{CertificateFiles, Error, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The TLS-only Redis shared by this test binary ([`crate::redis_tls`]): its `rediss://` URL,
/// the certificates to connect with (the server requires a client certificate), and a key
/// prefix unique to the test.
#[derive(Debug, Clone)]
pub struct TestRedisTls {
    url: String,
    port: u16,
    certificates: CertificateFiles,
    key_prefix: String,
}

impl TestRedisTls {
    /// `rediss://127.0.0.1:<port>/0`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TLS port (the server has no plaintext port).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA to trust and the client certificate to present.
    pub fn certificates(&self) -> &CertificateFiles {
        &self.certificates
    }

    /// A prefix unique to this test (`tls<pid>-<n>:`); the server and database are shared.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }
}

/// Points the tests at a running TLS-only Redis (`rediss://127.0.0.1:<port>/0`) instead of
/// starting one; its certificates are in [`REDIS_TLS_CERTS_VAR`]'s directory.
pub const REDIS_TLS_URL_VAR: &str = "NEO_TEST_REDIS_TLS_URL";
/// The directory of the [`CertificateFiles`] of [`REDIS_TLS_URL_VAR`]'s server.
pub const REDIS_TLS_CERTS_VAR: &str = "NEO_TEST_REDIS_TLS_CERTS";

enum SharedTls {
    Owned(RedisServer),
    External { url: String, certs: PathBuf },
}

static SHARED_TLS: OnceLock<std::result::Result<SharedTls, Arc<Error>>> = OnceLock::new();
static NEXT_PREFIX: AtomicU64 = AtomicU64::new(1);

/// The shared TLS server, started by the first caller (blocking), or the one the
/// environment names.
pub(crate) fn shared() -> Result<TestRedisTls> {
    let shared = SHARED_TLS.get_or_init(|| {
        match (
            std::env::var(REDIS_TLS_URL_VAR),
            std::env::var_os(REDIS_TLS_CERTS_VAR),
        ) {
            (Ok(url), Some(certs)) if !url.is_empty() => Ok(SharedTls::External {
                url,
                certs: certs.into(),
            }),
            _ => RedisServer::start_with(RedisServerOptions {
                tls: true,
                ..RedisServerOptions::default()
            })
            .map(SharedTls::Owned)
            .map_err(Arc::new),
        }
    });
    let (url, certificates) = match shared {
        Ok(SharedTls::Owned(server)) => (
            server.url(),
            server
                .certificates()
                .cloned()
                .ok_or_else(|| Error::Client {
                    context: "starting the shared TLS Redis".into(),
                    detail: "the server has no certificates".into(),
                })?,
        ),
        Ok(SharedTls::External { url, certs }) => {
            (url.clone(), CertificateFiles::in_dir(certs.clone()))
        }
        Err(e) => return Err(Error::Shared(Arc::clone(e))),
    };
    let port = url::Url::parse(&url)
        .ok()
        .and_then(|u| u.port())
        .ok_or_else(|| Error::Client {
            context: format!("reading {REDIS_TLS_URL_VAR}"),
            detail: "expected rediss://127.0.0.1:<port>/0".into(),
        })?;
    Ok(TestRedisTls {
        url,
        port,
        certificates,
        key_prefix: format!(
            "tls{}-{}:",
            std::process::id(),
            NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)
        ),
    })
}
