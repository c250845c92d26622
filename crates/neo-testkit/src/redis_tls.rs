//! The TLS-only Redis shared by a test binary.

use crate::redis::{RedisServer, RedisServerOptions};
use crate::{Error, Result, TestCertificates};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The TLS-only Redis shared by this test binary ([`crate::redis_tls`]): its `rediss://` URL,
/// the certificates to connect with (the server requires a client certificate), and a key
/// prefix unique to the test.
#[derive(Debug, Clone)]
pub struct TestRedisTls {
    url: String,
    port: u16,
    certificates: TestCertificates,
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
    pub fn certificates(&self) -> &TestCertificates {
        &self.certificates
    }

    /// A prefix unique to this test (`tls<pid>-<n>:`); the server and database are shared.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }
}

static SHARED_TLS: OnceLock<std::result::Result<RedisServer, Arc<Error>>> = OnceLock::new();
static NEXT_PREFIX: AtomicU64 = AtomicU64::new(1);

/// The shared TLS server, started by the first caller (blocking).
pub(crate) fn shared() -> Result<TestRedisTls> {
    let shared = SHARED_TLS.get_or_init(|| {
        RedisServer::start_with(RedisServerOptions {
            tls: true,
            ..RedisServerOptions::default()
        })
        .map_err(Arc::new)
    });
    let server = shared.as_ref().map_err(|e| Error::Shared(Arc::clone(e)))?;
    let certificates = server
        .certificates()
        .cloned()
        .ok_or_else(|| Error::Client {
            context: "starting the shared TLS Redis".into(),
            detail: "the server has no certificates".into(),
        })?;
    Ok(TestRedisTls {
        url: server.url(),
        port: server.port(),
        certificates,
        key_prefix: format!(
            "tls{}-{}:",
            std::process::id(),
            NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)
        ),
    })
}
