//! Envelope encryption of sensitive column values (feature `seal`).
//!
//! A [`Sealer`] encrypts a value with a *data key* (XChaCha20-Poly1305, RustCrypto's
//! `chacha20poly1305`); the data key is *wrapped* (encrypted) by a *key-encryption key* held by a
//! [`KeyProvider`] under a key id. The default provider, [`StaticKeyProvider`], holds its keys
//! from configuration ([`SealConfig`], `NEO_DB_SEAL__*`); a KMS or Vault client plugs in by
//! implementing [`KeyProvider`].
//!
//! Every value is bound to where it is stored: the [`Binding`] (table, column, row id) is
//! authenticated as associated data, so a sealed value copied to another row or column does
//! not open ([`SealProblem::DoesNotOpen`]).
//!
//! Data keys are cached: a sealer wraps one data key per key id and reuses it (a fresh
//! 24-byte random nonce per value), and keeps unwrapped data keys it has opened, so reading a
//! value costs one AEAD decryption, not a call to the key provider.
//!
//! # Sealed format (version 1)
//!
//! | bytes | what |
//! |---|---|
//! | 1 | version, `1` |
//! | 1 | `n`, length of the key id (1–255) |
//! | `n` | the key id (UTF-8) of the key-encryption key |
//! | 2 | `m`, length of the wrapped data key, big-endian |
//! | `m` | the wrapped data key, as the [`KeyProvider`] returned it |
//! | 24 | nonce |
//! | rest | ciphertext and the 16-byte Poly1305 tag |
//!
//! The associated data is everything before the nonce, then the binding (table, column and
//! row, each as a 4-byte big-endian length and its bytes). In text columns a sealed value is
//! stored as [`SEALED_TEXT_PREFIX`] followed by the bytes in URL-safe base64 without padding
//! ([`Sealer::seal_text`], [`Sealer::open_text`]).
//!
//! [`StaticKeyProvider`] wraps a data key as a 24-byte nonce followed by the data key sealed
//! with XChaCha20-Poly1305 under the key-encryption key, the key id as associated data.
//!
//! # Example
//! ```
//! # async fn demo() -> neo_db::Result<()> {
//! use neo_db::seal::{Binding, SealConfig, Sealer};
//! use neo_core::{ExposeSecret, SecretString};
//! let config = SealConfig {
//!     current_key_id: "k1".into(),
//!     keys: [("k1".to_owned(), SecretString::from("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="))].into(),
//!     ..SealConfig::default()
//! };
//! let sealer = Sealer::from_config(&config)?;
//! let here = Binding::new("webhook_endpoints", "secrets", "0190c6d0-0000-7000-8000-000000000001");
//! let stored = sealer.seal_text("whsec_c2VjcmV0", &here).await?;
//! assert_eq!(sealer.open_text(&stored, &here).await?.expose_secret(), "whsec_c2VjcmV0");
//! # Ok(()) }
//! ```

mod provider;
mod registry;
mod reseal;
mod sealed;

pub use provider::{KeyProvider, SealConfig, StaticKeyProvider};
pub use registry::{KeyRegistry, KeyRegistryConfig, KeyUsage};
pub use reseal::{ResealConfig, ResealPosition, ResealProgress, ResealTarget, Resealer};
pub use sealed::{SealValue, Sealed};

use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use neo_core::SecretString;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// The version byte of the sealed format this crate writes.
pub const SEALED_VERSION: u8 = 1;
/// What a sealed value stored in a text column starts with.
pub const SEALED_TEXT_PREFIX: &str = "sealed:";
const NONCE_LEN: usize = 24;
const DATA_KEY_LEN: usize = 32;

/// Why a value could not be sealed or opened ([`Error::Seal`]). Never carries plaintext or
/// key material.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealProblem {
    /// The key provider does not hold this key id (retired, or not configured here).
    UnknownKey,
    /// The wrapped data key does not open with the key of this id: the configured key
    /// material differs from the one that sealed the value.
    WrongKey,
    /// The value does not open: it was sealed for another row or column, or altered.
    DoesNotOpen,
    /// The bytes are not a sealed value this version reads.
    Malformed(String),
    /// The key provider failed (a KMS or Vault call, bad configuration).
    Provider(String),
    /// The key cannot be retired: this many stored rows still hold values sealed under it
    /// (re-seal them first).
    StillInUse {
        /// Rows with at least one value under the key.
        rows: u64,
    },
    /// The key is retired ([`KeyRegistry::retire`], on this instance or another): values
    /// under it are no longer opened and none is sealed under it.
    Retired,
}

impl fmt::Display for SealProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealProblem::UnknownKey => f.write_str("the key provider does not hold this key"),
            SealProblem::WrongKey => f.write_str(
                "the data key does not open with this key: the configured key differs from the one that sealed it",
            ),
            SealProblem::DoesNotOpen => f.write_str(
                "the value does not open: it was sealed for another row or column, or altered",
            ),
            SealProblem::Malformed(why) => write!(f, "not a sealed value: {why}"),
            SealProblem::Provider(why) => write!(f, "the key provider failed: {why}"),
            SealProblem::StillInUse { rows } => write!(
                f,
                "the key is still used by {rows} stored row(s): re-seal them before retiring it"
            ),
            SealProblem::Retired => f.write_str("the key is retired"),
        }
    }
}

impl SealProblem {
    /// `Configuration` for a key that is missing or differs, `Unavailable` for a failing
    /// provider, `Conflict` for a key still in use, `Internal` for a value that does not open
    /// or is malformed.
    pub fn kind(&self) -> neo_core::ErrorKind {
        use neo_core::ErrorKind;
        match self {
            SealProblem::UnknownKey | SealProblem::WrongKey | SealProblem::Retired => {
                ErrorKind::Configuration
            }
            SealProblem::Provider(_) => ErrorKind::Unavailable,
            SealProblem::StillInUse { .. } => ErrorKind::Conflict,
            SealProblem::DoesNotOpen | SealProblem::Malformed(_) => ErrorKind::Internal,
        }
    }
}

pub(crate) fn seal_error(key_id: &str, problem: SealProblem) -> Error {
    Error::Seal {
        key_id: key_id.to_owned(),
        problem,
    }
}

/// Where a sealed value is stored: bound into its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// The table.
    pub table: &'a str,
    /// The column (or column and field, e.g. `headers.authorization`).
    pub column: &'a str,
    /// The row's id, as text.
    pub row: &'a str,
}

impl<'a> Binding<'a> {
    /// A value of `table`.`column` in the row whose id is `row`.
    pub fn new(table: &'a str, column: &'a str, row: &'a str) -> Self {
        Binding { table, column, row }
    }

    fn append_to(&self, ad: &mut Vec<u8>) {
        for part in [self.table, self.column, self.row] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            ad.extend_from_slice(&len.to_be_bytes());
            ad.extend_from_slice(part.as_bytes());
        }
    }
}

/// A data key in the clear (zeroized on drop), and wrapped under a key id.
struct DataKey {
    wrapped: Vec<u8>,
    cipher: XChaCha20Poly1305,
}

/// An unwrapped data key's cache entry: by key id and wrapped bytes.
type OpenedKeys = HashMap<(String, Vec<u8>), Arc<XChaCha20Poly1305>>;

struct Shared {
    /// Replaced at run time when keys change ([`Sealer::replace_provider`]).
    provider: Mutex<Arc<dyn KeyProvider>>,
    /// The data key values are sealed with, per key id.
    sealing: Mutex<HashMap<String, Arc<DataKey>>>,
    /// Data keys already unwrapped, by key id and wrapped bytes.
    opened: Mutex<OpenedKeys>,
    /// Key ids retired for every instance ([`KeyRegistry`]): refused whatever the provider
    /// holds.
    retired: Mutex<HashSet<String>>,
    max_cached: usize,
}

/// Seals and opens values with data keys wrapped by a [`KeyProvider`]; cheap to clone (one
/// cache shared by the clones). `Debug` shows the provider's key ids, never key material.
#[derive(Clone)]
pub struct Sealer {
    shared: Arc<Shared>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("provider", &self.provider())
            .finish_non_exhaustive()
    }
}

use neo_core::sync::lock;

impl Sealer {
    /// A sealer over `provider`, keeping at most `max_cached_data_keys` unwrapped data keys.
    pub fn new(provider: Arc<dyn KeyProvider>, max_cached_data_keys: usize) -> Self {
        Sealer {
            shared: Arc::new(Shared {
                provider: Mutex::new(provider),
                sealing: Mutex::new(HashMap::new()),
                opened: Mutex::new(HashMap::new()),
                retired: Mutex::new(HashSet::new()),
                max_cached: max_cached_data_keys.max(1),
            }),
        }
    }

    /// A sealer over a [`StaticKeyProvider`] built from `config`.
    ///
    /// # Errors
    /// [`Error::Seal`] naming a key that is not base64 of 32 bytes, or a current key id that
    /// has no key.
    pub fn from_config(config: &SealConfig) -> Result<Self> {
        let provider = StaticKeyProvider::from_config(config)?;
        Ok(Sealer::new(Arc::new(provider), config.max_cached_data_keys))
    }

    /// The provider's current key id (new values are sealed under it).
    pub fn current_key_id(&self) -> String {
        self.provider().current_key_id().to_owned()
    }

    /// The key provider in use now.
    pub fn provider(&self) -> Arc<dyn KeyProvider> {
        Arc::clone(&lock(&self.shared.provider))
    }

    /// Changes the keys at run time, for every clone of this sealer: a provider with a new
    /// current key (rotation) that still holds the old keys, so values sealed under them keep
    /// opening while they are re-sealed. Cached data keys are dropped.
    pub fn replace_provider(&self, provider: Arc<dyn KeyProvider>) {
        *lock(&self.shared.provider) = provider;
        lock(&self.shared.sealing).clear();
        lock(&self.shared.opened).clear();
        tracing::info!(current_key_id = %self.current_key_id(), "sealer keys replaced");
    }

    /// Retires `key_id` at the provider ([`KeyProvider::retire`]) and drops its cached data
    /// keys: values still sealed under it no longer open. The stores that hold sealed values
    /// check first that none is left (e.g. `neo_events::Webhooks::retire_key`). This acts on
    /// this process only; [`KeyRegistry::retire`] retires a key for every instance.
    ///
    /// # Errors
    /// [`Error::Seal`] naming the key: it is the current key, or the provider refused.
    pub async fn retire_key(&self, key_id: &str) -> Result<()> {
        let provider = self.provider();
        if provider.current_key_id() == key_id {
            return Err(seal_error(
                key_id,
                SealProblem::Provider("the current key cannot be retired".into()),
            ));
        }
        provider.retire(key_id).await?;
        lock(&self.shared.sealing).remove(key_id);
        lock(&self.shared.opened).retain(|(id, _), _| id != key_id);
        tracing::info!(key_id, "seal key retired");
        Ok(())
    }

    /// Marks key ids retired (what [`KeyRegistry`] read or recorded) and drops their cached
    /// data keys: values under them no longer open, and nothing is sealed under them.
    pub(crate) fn mark_retired(&self, key_ids: &[String]) {
        let mut retired = lock(&self.shared.retired);
        for key_id in key_ids {
            if retired.insert(key_id.clone()) {
                lock(&self.shared.sealing).remove(key_id);
                lock(&self.shared.opened).retain(|(id, _), _| id != key_id);
                tracing::info!(key_id = %key_id, "seal key marked retired");
                if *key_id == self.current_key_id() {
                    tracing::error!(
                        key_id = %key_id,
                        "the current seal key is retired: sealing fails until a new key is current"
                    );
                }
            }
        }
    }

    /// Whether `key_id` is known here to be retired for every instance ([`KeyRegistry`]).
    pub fn is_retired(&self, key_id: &str) -> bool {
        lock(&self.shared.retired).contains(key_id)
    }

    fn refuse_retired(&self, key_id: &str) -> Result<()> {
        if self.is_retired(key_id) {
            return Err(seal_error(key_id, SealProblem::Retired));
        }
        Ok(())
    }

    /// Seals `plaintext` for `binding` under the provider's current key.
    ///
    /// # Errors
    /// [`Error::Seal`] when the provider cannot wrap a data key.
    pub async fn seal(&self, plaintext: &[u8], binding: &Binding<'_>) -> Result<Vec<u8>> {
        let provider = self.provider();
        let key_id = provider.current_key_id().to_owned();
        self.refuse_retired(&key_id)?;
        let data_key = self.sealing_key(provider.as_ref(), &key_id).await?;
        let key_len = u8::try_from(key_id.len())
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                seal_error(
                    &key_id,
                    SealProblem::Provider("key ids are 1 to 255 bytes".into()),
                )
            })?;
        let wrapped_len = u16::try_from(data_key.wrapped.len()).map_err(|_| {
            seal_error(
                &key_id,
                SealProblem::Provider("a wrapped data key is at most 65535 bytes".into()),
            )
        })?;
        let mut out = Vec::with_capacity(
            4 + key_id.len() + data_key.wrapped.len() + NONCE_LEN + plaintext.len() + 16,
        );
        out.push(SEALED_VERSION);
        out.push(key_len);
        out.extend_from_slice(key_id.as_bytes());
        out.extend_from_slice(&wrapped_len.to_be_bytes());
        out.extend_from_slice(&data_key.wrapped);
        let mut ad = out.clone();
        binding.append_to(&mut ad);
        let nonce = XNonce::try_generate().map_err(|e| {
            seal_error(
                &key_id,
                SealProblem::Provider(format!("no randomness: {e}")),
            )
        })?;
        let ciphertext = data_key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &ad,
                },
            )
            .map_err(|_| seal_error(&key_id, SealProblem::Provider("encryption failed".into())))?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens a value sealed for `binding`.
    ///
    /// # Errors
    /// [`Error::Seal`] naming the value's key id: unknown or different key, a value sealed for
    /// another binding or altered, bytes that are not a sealed value.
    pub async fn open(&self, sealed: &[u8], binding: &Binding<'_>) -> Result<Zeroizing<Vec<u8>>> {
        let parts = Parts::parse(sealed)?;
        self.refuse_retired(parts.key_id)?;
        let cipher = self.opening_key(parts.key_id, parts.wrapped).await?;
        let mut ad = sealed[..parts.header_len].to_vec();
        binding.append_to(&mut ad);
        let nonce = XNonce::try_from(parts.nonce)
            .map_err(|_| seal_error(parts.key_id, SealProblem::Malformed("nonce".into())))?;
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: parts.ciphertext,
                    aad: &ad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| seal_error(parts.key_id, SealProblem::DoesNotOpen))
    }

    /// Seals text for a text column: [`SEALED_TEXT_PREFIX`] and base64.
    ///
    /// # Errors
    /// As [`seal`](Sealer::seal).
    pub async fn seal_text(&self, plaintext: &str, binding: &Binding<'_>) -> Result<String> {
        let sealed = self.seal(plaintext.as_bytes(), binding).await?;
        Ok(format!(
            "{SEALED_TEXT_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(sealed)
        ))
    }

    /// Opens text sealed by [`seal_text`](Sealer::seal_text).
    ///
    /// # Errors
    /// As [`open`](Sealer::open); text without the prefix or not base64 is
    /// [`SealProblem::Malformed`].
    pub async fn open_text(&self, stored: &str, binding: &Binding<'_>) -> Result<SecretString> {
        let encoded = stored
            .strip_prefix(SEALED_TEXT_PREFIX)
            .ok_or_else(|| seal_error("", SealProblem::Malformed("no sealed: prefix".into())))?;
        let sealed = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(encoded)
                .map_err(|e| seal_error("", SealProblem::Malformed(format!("base64: {e}"))))?,
        );
        let plain = self.open(&sealed, binding).await?;
        let text = std::str::from_utf8(&plain).map_err(|_| {
            seal_error(
                Parts::parse(&sealed).map(|p| p.key_id).unwrap_or(""),
                SealProblem::Malformed("not UTF-8".into()),
            )
        })?;
        Ok(SecretString::from(text))
    }

    /// The key id a sealed text value names, if it is one (e.g. to find values still under a
    /// retired key, or to name the key in an error).
    pub fn key_id_of_text(stored: &str) -> Option<String> {
        let encoded = stored.strip_prefix(SEALED_TEXT_PREFIX)?;
        let sealed = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        Parts::parse(&sealed).ok().map(|p| p.key_id.to_owned())
    }

    /// Whether stored text is a sealed value (starts with [`SEALED_TEXT_PREFIX`]).
    pub fn is_sealed_text(stored: &str) -> bool {
        stored.starts_with(SEALED_TEXT_PREFIX)
    }

    async fn sealing_key(&self, provider: &dyn KeyProvider, key_id: &str) -> Result<Arc<DataKey>> {
        if let Some(key) = lock(&self.shared.sealing).get(key_id) {
            return Ok(Arc::clone(key));
        }
        let raw: Zeroizing<[u8; DATA_KEY_LEN]> = Zeroizing::new(
            chacha20poly1305::Key::try_generate()
                .map_err(|e| {
                    seal_error(key_id, SealProblem::Provider(format!("no randomness: {e}")))
                })?
                .into(),
        );
        let wrapped = provider.wrap(key_id, &raw[..]).await?;
        let cipher = XChaCha20Poly1305::new(&(*raw).into());
        let key = Arc::new(DataKey {
            wrapped: wrapped.clone(),
            cipher: cipher.clone(),
        });
        lock(&self.shared.sealing)
            .entry(key_id.to_owned())
            .or_insert_with(|| Arc::clone(&key));
        self.remember((key_id.to_owned(), wrapped), Arc::new(cipher));
        Ok(key)
    }

    async fn opening_key(&self, key_id: &str, wrapped: &[u8]) -> Result<Arc<XChaCha20Poly1305>> {
        let cache_key = (key_id.to_owned(), wrapped.to_vec());
        if let Some(cipher) = lock(&self.shared.opened).get(&cache_key) {
            return Ok(Arc::clone(cipher));
        }
        let raw = self.provider().unwrap(key_id, wrapped).await?;
        if raw.len() != DATA_KEY_LEN {
            return Err(seal_error(
                key_id,
                SealProblem::Provider(format!(
                    "unwrapped a data key of {} bytes, not 32",
                    raw.len()
                )),
            ));
        }
        let cipher = Arc::new(
            XChaCha20Poly1305::new_from_slice(&raw)
                .map_err(|_| seal_error(key_id, SealProblem::Malformed("data key".into())))?,
        );
        self.remember(cache_key, Arc::clone(&cipher));
        Ok(cipher)
    }

    fn remember(&self, key: (String, Vec<u8>), cipher: Arc<XChaCha20Poly1305>) {
        let mut opened = lock(&self.shared.opened);
        if opened.len() >= self.shared.max_cached && !opened.contains_key(&key) {
            opened.clear();
        }
        opened.insert(key, cipher);
    }
}

/// A sealed value taken apart (see the module docs for the layout).
struct Parts<'a> {
    key_id: &'a str,
    wrapped: &'a [u8],
    header_len: usize,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

impl<'a> Parts<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self> {
        let malformed =
            |key_id: &str, why: &str| seal_error(key_id, SealProblem::Malformed(why.into()));
        let (&version, rest) = bytes.split_first().ok_or_else(|| malformed("", "empty"))?;
        if version != SEALED_VERSION {
            return Err(malformed(
                "",
                &format!("version {version} is not {SEALED_VERSION}"),
            ));
        }
        let (&id_len, rest) = rest
            .split_first()
            .ok_or_else(|| malformed("", "truncated"))?;
        let id_len = usize::from(id_len);
        if id_len == 0 || rest.len() < id_len + 2 {
            return Err(malformed("", "truncated key id"));
        }
        let key_id = std::str::from_utf8(&rest[..id_len])
            .map_err(|_| malformed("", "key id is not UTF-8"))?;
        let rest = &rest[id_len..];
        let wrapped_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let rest = &rest[2..];
        if rest.len() < wrapped_len + NONCE_LEN + 16 {
            return Err(malformed(key_id, "truncated"));
        }
        let wrapped = &rest[..wrapped_len];
        let rest = &rest[wrapped_len..];
        Ok(Parts {
            key_id,
            wrapped,
            header_len: 2 + id_len + 2 + wrapped_len,
            nonce: &rest[..NONCE_LEN],
            ciphertext: &rest[NONCE_LEN..],
        })
    }
}

#[cfg(test)]
mod tests;
