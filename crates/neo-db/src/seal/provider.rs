//! Key-encryption keys: the [`KeyProvider`] trait and the [`StaticKeyProvider`] from
//! configuration.

use super::{SealProblem, seal_error};
use crate::Result;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures_util::future::BoxFuture;
use neo_core::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::RwLock;
use zeroize::Zeroizing;

/// Wraps and unwraps data keys with key-encryption keys named by key id: where a KMS or Vault
/// client plugs in. Implementations never log or show key material.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// The key id new data keys are wrapped under.
    fn current_key_id(&self) -> &str;

    /// Wraps (encrypts) `data_key` under the key `key_id`.
    ///
    /// # Errors
    /// [`Error::Seal`](crate::Error::Seal) naming `key_id`: [`SealProblem::UnknownKey`], or
    /// [`SealProblem::Provider`] for a failing call.
    fn wrap<'a>(&'a self, key_id: &'a str, data_key: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>>>;

    /// Unwraps a data key wrapped under `key_id`.
    ///
    /// # Errors
    /// [`Error::Seal`](crate::Error::Seal) naming `key_id`: [`SealProblem::UnknownKey`],
    /// [`SealProblem::WrongKey`] when it does not open, [`SealProblem::Provider`].
    fn unwrap<'a>(
        &'a self,
        key_id: &'a str,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>>>;

    /// Stops unwrapping data keys of `key_id` (its values no longer open). The default
    /// refuses: a KMS key is disabled in the KMS.
    ///
    /// # Errors
    /// [`Error::Seal`](crate::Error::Seal) naming `key_id`: [`SealProblem::UnknownKey`], or
    /// [`SealProblem::Provider`] when this provider cannot retire keys.
    fn retire<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            Err(seal_error(
                key_id,
                SealProblem::Provider(
                    "this key provider does not retire keys: disable the key where it is kept"
                        .into(),
                ),
            ))
        })
    }
}

/// The key-encryption keys of a [`StaticKeyProvider`], from `NEO_DB_SEAL__*`
/// (`NEO_DB_SEAL__CURRENT_KEY_ID=k2`, `NEO_DB_SEAL__KEYS__K1=<base64>`,
/// `NEO_DB_SEAL__KEYS__K2=<base64>`). Keys are secrets: `Debug` shows `[REDACTED]`.
///
/// Rotation: add a new key, make it current; values sealed under the old one keep opening as
/// long as its key stays configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SealConfig {
    /// The key id new values are sealed under.
    pub current_key_id: String,
    /// Key id → key: standard base64 of 32 random bytes (`openssl rand -base64 32`).
    pub keys: BTreeMap<String, SecretString>,
    /// Most unwrapped data keys a sealer keeps.
    pub max_cached_data_keys: usize,
    /// How a [`Resealer`](super::Resealer) pass over a user's table runs
    /// (`NEO_DB_SEAL__RESEAL__BATCH_SIZE`, `NEO_DB_SEAL__RESEAL__PAUSE`).
    pub reseal: super::ResealConfig,
    /// Where keys retired for every instance are recorded
    /// (`NEO_DB_SEAL__REGISTRY__TABLE`, `NEO_DB_SEAL__REGISTRY__REFRESH_INTERVAL`).
    pub registry: super::KeyRegistryConfig,
}

impl Default for SealConfig {
    fn default() -> Self {
        SealConfig {
            current_key_id: String::new(),
            keys: BTreeMap::new(),
            max_cached_data_keys: 1024,
            reseal: super::ResealConfig::default(),
            registry: super::KeyRegistryConfig::default(),
        }
    }
}

/// Key-encryption keys held in memory (zeroized on drop), from [`SealConfig`]. `Debug` shows
/// the key ids only.
pub struct StaticKeyProvider {
    current: String,
    keys: RwLock<HashMap<String, XChaCha20Poly1305>>,
}

impl fmt::Debug for StaticKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<String> = self.read_keys().keys().cloned().collect();
        ids.sort_unstable();
        f.debug_struct("StaticKeyProvider")
            .field("current", &self.current)
            .field("key_ids", &ids)
            .finish()
    }
}

const WRAP_NONCE_LEN: usize = 24;

fn wrap_ad(key_id: &str) -> Vec<u8> {
    let mut ad = b"neo-db seal data key v1:".to_vec();
    ad.extend_from_slice(key_id.as_bytes());
    ad
}

impl StaticKeyProvider {
    /// The keys of `config`.
    ///
    /// # Errors
    /// [`Error::Seal`](crate::Error::Seal) naming a key that is not base64 of 32 bytes, or
    /// the current key id when it has no key.
    pub fn from_config(config: &SealConfig) -> Result<Self> {
        let mut keys = HashMap::new();
        for (id, encoded) in &config.keys {
            if id.is_empty() || id.len() > 255 {
                return Err(seal_error(
                    id,
                    SealProblem::Provider("a key id is 1 to 255 bytes".into()),
                ));
            }
            let raw = Zeroizing::new(STANDARD.decode(encoded.expose_secret().trim()).map_err(
                |_| {
                    seal_error(
                        id,
                        SealProblem::Provider("the key is not standard base64".into()),
                    )
                },
            )?);
            let cipher = XChaCha20Poly1305::new_from_slice(&raw).map_err(|_| {
                seal_error(
                    id,
                    SealProblem::Provider(format!("the key is {} bytes, not 32", raw.len())),
                )
            })?;
            keys.insert(id.clone(), cipher);
        }
        if !keys.contains_key(&config.current_key_id) {
            return Err(seal_error(&config.current_key_id, SealProblem::UnknownKey));
        }
        Ok(StaticKeyProvider {
            current: config.current_key_id.clone(),
            keys: RwLock::new(keys),
        })
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, XChaCha20Poly1305>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key(&self, key_id: &str) -> Result<XChaCha20Poly1305> {
        self.read_keys()
            .get(key_id)
            .cloned()
            .ok_or_else(|| seal_error(key_id, SealProblem::UnknownKey))
    }

    fn retire_now(&self, key_id: &str) -> Result<()> {
        if key_id == self.current {
            return Err(seal_error(
                key_id,
                SealProblem::Provider("the current key cannot be retired".into()),
            ));
        }
        self.keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key_id)
            .map(drop)
            .ok_or_else(|| seal_error(key_id, SealProblem::UnknownKey))
    }

    fn wrap_now(&self, key_id: &str, data_key: &[u8]) -> Result<Vec<u8>> {
        let key = self.key(key_id)?;
        let nonce = XNonce::try_generate().map_err(|e| {
            seal_error(key_id, SealProblem::Provider(format!("no randomness: {e}")))
        })?;
        let ad = wrap_ad(key_id);
        let sealed = key
            .encrypt(
                &nonce,
                Payload {
                    msg: data_key,
                    aad: &ad,
                },
            )
            .map_err(|_| seal_error(key_id, SealProblem::Provider("wrapping failed".into())))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap_now(&self, key_id: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let key = self.key(key_id)?;
        if wrapped.len() < WRAP_NONCE_LEN {
            return Err(seal_error(
                key_id,
                SealProblem::Malformed("wrapped data key too short".into()),
            ));
        }
        let (nonce, sealed) = wrapped.split_at(WRAP_NONCE_LEN);
        let nonce = XNonce::try_from(nonce)
            .map_err(|_| seal_error(key_id, SealProblem::Malformed("nonce".into())))?;
        let ad = wrap_ad(key_id);
        key.decrypt(
            &nonce,
            Payload {
                msg: sealed,
                aad: &ad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| seal_error(key_id, SealProblem::WrongKey))
    }
}

impl KeyProvider for StaticKeyProvider {
    fn current_key_id(&self) -> &str {
        &self.current
    }

    fn wrap<'a>(&'a self, key_id: &'a str, data_key: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>>> {
        let result = self.wrap_now(key_id, data_key);
        Box::pin(async move { result })
    }

    fn unwrap<'a>(
        &'a self,
        key_id: &'a str,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>>> {
        let result = self.unwrap_now(key_id, wrapped);
        Box::pin(async move { result })
    }

    fn retire<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Result<()>> {
        let result = self.retire_now(key_id);
        Box::pin(async move { result })
    }
}
