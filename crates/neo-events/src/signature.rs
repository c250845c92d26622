//! Standard Webhooks v1 signatures: what a sender attaches and what a receiver checks.
//!
//! A message is signed as `base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))` and sent with
//! the headers `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (`v1,<signature>`, several separated by spaces while a secret is being rotated). Secrets
//! are written `whsec_<base64 key>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The `webhook-id` header.
pub const HEADER_ID: &str = "webhook-id";
/// The `webhook-timestamp` header.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The `webhook-signature` header.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// How far a receiver accepts a timestamp from its own clock, by default (±5 minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

const PREFIX: &str = "whsec_";
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;

/// Why a secret or a signed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The secret is not `whsec_` + base64 of 24 to 64 bytes.
    #[error("invalid webhook secret: {0}")]
    InvalidSecret(&'static str),
    /// A required header is missing or not valid.
    #[error("missing or invalid {0} header")]
    BadHeader(&'static str),
    /// The timestamp is further than the tolerance from now (a replay, or a skewed clock).
    #[error(
        "webhook timestamp is {skew_secs} s away from now, more than the {tolerance_secs} s allowed"
    )]
    Stale {
        /// Timestamp minus now, in seconds.
        skew_secs: i64,
        /// The tolerance.
        tolerance_secs: i64,
    },
    /// No `v1` signature in the header matches.
    #[error("no webhook signature matches")]
    Mismatch,
}

impl neo_core::HasErrorKind for SignatureError {
    fn kind(&self) -> neo_core::ErrorKind {
        match self {
            SignatureError::InvalidSecret(_) => neo_core::ErrorKind::Configuration,
            SignatureError::BadHeader(_) => neo_core::ErrorKind::Validation,
            SignatureError::Stale { .. } | SignatureError::Mismatch => {
                neo_core::ErrorKind::Unauthorized
            }
        }
    }
}

/// A signing secret. `Debug` and `Display` never show the key.
///
/// # Example
/// ```
/// use neo_events::WebhookSecret;
/// let secret = WebhookSecret::generate();
/// assert!(secret.expose().starts_with("whsec_"));
/// assert_eq!(format!("{secret:?}"), "WebhookSecret(whsec_[REDACTED])");
/// let parsed = WebhookSecret::parse(&secret.expose())?;
/// # let _ = parsed;
/// # Ok::<(), neo_events::SignatureError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`.
    ///
    /// # Errors
    /// [`SignatureError::InvalidSecret`] saying what is wrong (the text is not echoed).
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text
            .strip_prefix(PREFIX)
            .ok_or(SignatureError::InvalidSecret("it must start with whsec_"))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SignatureError::InvalidSecret("the part after whsec_ is not base64"))?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SignatureError::InvalidSecret(
                "the key must be 24 to 64 bytes long",
            ));
        }
        Ok(WebhookSecret { key })
    }

    /// A new random 32-byte secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::fill(&mut key[..]);
        WebhookSecret { key }
    }

    /// The secret as text, to hand to the receiver once.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// The `v1,<base64>` signature of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable_key());
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cold]
fn unreachable_key() -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    unreachable!("HMAC-SHA256 accepts every key length")
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(whsec_[REDACTED])")
    }
}

/// The three headers of a signed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `webhook-id`: the message id (the same on every retry of it).
    pub id: String,
    /// `webhook-timestamp`: Unix seconds.
    pub timestamp: i64,
    /// `webhook-signature`: one `v1,…` per secret, space-separated.
    pub signature: String,
}

impl SignedHeaders {
    /// The headers as `(name, value)` pairs.
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            (HEADER_ID, self.id.clone()),
            (HEADER_TIMESTAMP, self.timestamp.to_string()),
            (HEADER_SIGNATURE, self.signature.clone()),
        ]
    }
}

/// Signs a message with every secret given (the current one first, then those still valid
/// during a rotation).
///
/// # Example
/// ```
/// use neo_events::{WebhookSecret, sign};
/// let secret = WebhookSecret::generate();
/// let headers = sign(&[&secret], "msg_1", 1_700_000_000, br#"{"type":"org.created"}"#);
/// assert!(headers.signature.starts_with("v1,"));
/// ```
pub fn sign(secrets: &[&WebhookSecret], id: &str, timestamp: i64, body: &[u8]) -> SignedHeaders {
    let signature = secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ");
    SignedHeaders {
        id: id.to_owned(),
        timestamp,
        signature,
    }
}

/// Checks signed messages for a receiver.
///
/// # Example
/// ```
/// use neo_events::{Verifier, WebhookSecret, sign};
/// let secret = WebhookSecret::generate();
/// let body = br#"{"type":"org.created"}"#;
/// let headers = sign(&[&secret], "msg_1", 1_700_000_000, body);
/// let verifier = Verifier::new(vec![secret]);
/// assert!(verifier.verify_at(&headers, body, 1_700_000_010).is_ok());
/// assert!(verifier.verify_at(&headers, b"tampered", 1_700_000_010).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<WebhookSecret>,
    tolerance_secs: i64,
}

impl Verifier {
    /// Accepts messages signed with any of `secrets` (several during a rotation).
    pub fn new(secrets: Vec<WebhookSecret>) -> Self {
        Verifier {
            secrets,
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
        }
    }

    /// Accepts timestamps up to `secs` away from now instead of 5 minutes.
    #[must_use]
    pub fn with_tolerance(mut self, secs: i64) -> Self {
        self.tolerance_secs = secs.max(0);
        self
    }

    /// Checks raw header values (as received) against the body, at the current time.
    ///
    /// # Errors
    /// As [`Self::verify_at`], plus [`SignatureError::BadHeader`] for missing or unparsable
    /// headers.
    pub fn verify_headers(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let headers = SignedHeaders {
            id: id
                .filter(|v| !v.is_empty())
                .ok_or(SignatureError::BadHeader(HEADER_ID))?
                .to_owned(),
            timestamp: timestamp
                .and_then(|v| v.trim().parse().ok())
                .ok_or(SignatureError::BadHeader(HEADER_TIMESTAMP))?,
            signature: signature
                .filter(|v| !v.is_empty())
                .ok_or(SignatureError::BadHeader(HEADER_SIGNATURE))?
                .to_owned(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.verify_at(&headers, body, now)
    }

    /// Checks a message as of `now` (Unix seconds): the timestamp within the tolerance, and
    /// one `v1` signature matching one secret (compared in constant time).
    ///
    /// # Errors
    /// [`SignatureError::Stale`] or [`SignatureError::Mismatch`].
    pub fn verify_at(
        &self,
        headers: &SignedHeaders,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let skew = headers.timestamp.saturating_sub(now);
        if skew.abs() > self.tolerance_secs {
            return Err(SignatureError::Stale {
                skew_secs: skew,
                tolerance_secs: self.tolerance_secs,
            });
        }
        let offered: Vec<&str> = headers
            .signature
            .split(' ')
            .filter_map(|part| part.strip_prefix("v1,"))
            .collect();
        for secret in &self.secrets {
            let expected = secret.sign(&headers.id, headers.timestamp, body);
            let expected = &expected.as_bytes()[3..];
            if offered
                .iter()
                .any(|candidate| bool::from(candidate.as_bytes().ct_eq(expected)))
            {
                return Ok(());
            }
        }
        Err(SignatureError::Mismatch)
    }
}
