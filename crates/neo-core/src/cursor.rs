//! Opaque, tamper-evident, versioned pagination cursors.

use crate::error::CursorErrorReason;
use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Current cursor format: `base64url(version ‖ json payload ‖ HMAC-SHA256(version ‖ payload)[..16])`.
const VERSION: u8 = 1;
const TAG_LEN: usize = 16;

/// Signs and verifies opaque cursors with a key the host provides.
///
/// Cursors are base64url text that clients hand back unchanged. Any change to a cursor, or a
/// cursor signed with a key this codec does not know, is refused with
/// [`Error::Cursor`]. Keys rotate: sign with the newest, keep older ones for verification
/// until their cursors have expired from clients. Keys never appear in `Debug`.
///
/// # Example
/// ```
/// use neo_core::CursorCodec;
/// let codec = CursorCodec::new(b"0123456789abcdef0123456789abcdef".to_vec())?;
/// let token = codec.encode(&("acme", 42_u64))?;
/// let (name, n): (String, u64) = codec.decode(&token)?;
/// assert_eq!((name.as_str(), n), ("acme", 42));
/// assert!(codec.decode::<(String, u64)>(&format!("{token}A")).is_err());
/// # Ok::<(), neo_core::Error>(())
/// ```
#[derive(Clone)]
pub struct CursorCodec {
    signing: SecretSlice<u8>,
    verifying: Vec<SecretSlice<u8>>,
}

impl CursorCodec {
    /// Shortest accepted key.
    pub const MIN_KEY_LEN: usize = 32;
    /// Longest accepted cursor text; longer input is refused before decoding.
    pub const MAX_CURSOR_LEN: usize = 4096;

    /// A codec that signs and verifies with `key`.
    ///
    /// # Errors
    /// [`Error::Config`] when the key is shorter than [`CursorCodec::MIN_KEY_LEN`] bytes.
    pub fn new(key: Vec<u8>) -> Result<Self> {
        Self::with_previous_keys(key, Vec::new())
    }

    /// A codec that signs with `key` and also accepts cursors signed with `previous` keys.
    ///
    /// # Errors
    /// [`Error::Config`] when any key is shorter than [`CursorCodec::MIN_KEY_LEN`] bytes.
    pub fn with_previous_keys(key: Vec<u8>, previous: Vec<Vec<u8>>) -> Result<Self> {
        for k in std::iter::once(&key).chain(&previous) {
            if k.len() < Self::MIN_KEY_LEN {
                return Err(Error::Config(format!(
                    "cursor keys must be at least {} bytes, got {}",
                    Self::MIN_KEY_LEN,
                    k.len()
                )));
            }
        }
        let signing = SecretSlice::from(key.clone());
        let verifying = std::iter::once(key)
            .chain(previous)
            .map(SecretSlice::from)
            .collect();
        Ok(CursorCodec { signing, verifying })
    }

    /// Encodes `position` into an opaque cursor.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `position` cannot be serialized as JSON or the cursor would be
    /// longer than [`CursorCodec::MAX_CURSOR_LEN`].
    pub fn encode<T: Serialize + ?Sized>(&self, position: &T) -> Result<String> {
        let mut buf = Vec::with_capacity(64);
        buf.push(VERSION);
        serde_json::to_writer(&mut buf, position)
            .map_err(|e| Error::invalid("cursor position", e.to_string()))?;
        let tag = tag(self.signing.expose_secret(), &buf);
        buf.extend_from_slice(&tag[..TAG_LEN]);
        let token = URL_SAFE_NO_PAD.encode(&buf);
        if token.len() > Self::MAX_CURSOR_LEN {
            return Err(Error::invalid(
                "cursor position",
                format!(
                    "encodes to {} characters, more than {}",
                    token.len(),
                    Self::MAX_CURSOR_LEN
                ),
            ));
        }
        Ok(token)
    }

    /// Verifies and decodes a cursor made by [`CursorCodec::encode`].
    ///
    /// # Errors
    /// [`Error::Cursor`] with the reason: malformed, unsupported version, bad signature, or a
    /// payload that is not a `T`.
    pub fn decode<T: DeserializeOwned>(&self, token: &str) -> Result<T> {
        if token.len() > Self::MAX_CURSOR_LEN {
            return Err(Error::Cursor(CursorErrorReason::Malformed));
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| Error::Cursor(CursorErrorReason::Malformed))?;
        if raw.len() < 1 + TAG_LEN {
            return Err(Error::Cursor(CursorErrorReason::Malformed));
        }
        let (signed, received_tag) = raw.split_at(raw.len() - TAG_LEN);
        if signed[0] != VERSION {
            return Err(Error::Cursor(CursorErrorReason::UnsupportedVersion(
                signed[0],
            )));
        }
        let genuine = self.verifying.iter().any(|key| {
            let mut mac = new_mac(key.expose_secret());
            mac.update(signed);
            mac.verify_truncated_left(received_tag).is_ok()
        });
        if !genuine {
            return Err(Error::Cursor(CursorErrorReason::BadSignature));
        }
        serde_json::from_slice(&signed[1..])
            .map_err(|_| Error::Cursor(CursorErrorReason::BadPayload))
    }
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorCodec")
            .field("keys", &self.verifying.len())
            .finish_non_exhaustive()
    }
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this never fails.
    <HmacSha256 as hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac takes any key length"))
}

fn tag(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = new_mac(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}
