//! Tenant-namespaced views of a cache: [`HybridCache::for_tenant`], [`TenantCache`],
//! [`HybridCache::invalidate_tenant`].
//!
//! A tenant's key `key` is stored as `t:{tenant}:{key}` inside the named cache: in L1 under
//! that string, in Redis as `{key_prefix}{name}:t:{tenant}:{key}`. `{tenant}` is the
//! hyphenated [`TenantId`] — always 36 characters of `0-9a-f-`, so the prefix has a fixed
//! length, no `:` inside the id can shift it (two tenants' keys never collide), and no glob
//! character can reach a SCAN pattern (`invalidate_tenant` and a view's
//! `invalidate_pattern` stay inside the tenant). Tags written through a view are scoped the
//! same way (`t:{tenant}:{tag}`), so a view's `invalidate_tag` never reaches another tenant.
//!
//! Keys written through the plain [`HybridCache`] that start with `t:` share this space: a
//! cache used per tenant should be used only through views.

use super::get::MissFuture;
use super::hybrid::HybridCache;
use super::l1::{TENANT_PREFIX_LEN, TenantLookup, prefix_digest};
use super::options::EntryOptions;
use super::validate::{validate_key, validate_name, validate_pattern};
use crate::stats::CacheStats;
use crate::{BoxError, Cache, Result};
use neo_core::TenantId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

/// `t:` + a hyphenated UUID + `:`.
const PREFIX_LEN: usize = TENANT_PREFIX_LEN;
/// Namespaced keys up to this length are built on the stack (no allocation on a hit).
const INLINE_KEY_LEN: usize = 128;

/// The namespace of one tenant's keys: `t:{tenant}:`.
type Prefix = [u8; PREFIX_LEN];

fn prefix_of(tenant: &TenantId) -> Prefix {
    let mut prefix = [0u8; PREFIX_LEN];
    prefix[..2].copy_from_slice(b"t:");
    tenant
        .as_uuid()
        .hyphenated()
        .encode_lower(&mut prefix[2..PREFIX_LEN - 1]);
    prefix[PREFIX_LEN - 1] = b':';
    prefix
}

/// `prefix + key`, on the stack when short.
enum TenantKey {
    Inline([u8; INLINE_KEY_LEN], usize),
    Heap(String),
}

impl TenantKey {
    #[inline(always)]
    fn new(prefix: &Prefix, key: &str) -> Self {
        let len = PREFIX_LEN + key.len();
        if len <= INLINE_KEY_LEN {
            let mut buf = [0u8; INLINE_KEY_LEN];
            buf[..PREFIX_LEN].copy_from_slice(prefix);
            buf[PREFIX_LEN..len].copy_from_slice(key.as_bytes());
            TenantKey::Inline(buf, len)
        } else {
            let mut full = String::with_capacity(len);
            full.push_str(prefix_str(prefix));
            full.push_str(key);
            TenantKey::Heap(full)
        }
    }

    #[inline(always)]
    fn as_str(&self) -> &str {
        match self {
            // ASCII prefix + a `str`: always UTF-8; the check is the price of safe code
            // (a few ns on a short key). Were it ever to fail, the empty key is refused.
            TenantKey::Inline(buf, len) => std::str::from_utf8(&buf[..*len]).unwrap_or_default(),
            TenantKey::Heap(full) => full,
        }
    }
}

fn prefix_str(prefix: &Prefix) -> &str {
    // Built by `prefix_of` from ASCII only.
    std::str::from_utf8(prefix).unwrap_or_default()
}

fn owned_key(prefix: &Prefix, key: &str) -> String {
    let mut full = String::with_capacity(PREFIX_LEN + key.len());
    full.push_str(prefix_str(prefix));
    full.push_str(key);
    full
}

/// One tenant's view of a [`HybridCache`]: the same [`Cache`] methods, on keys (and tags and
/// patterns) namespaced by the tenant (stored in Redis as `{key_prefix}{name}:t:{tenant}:{key}`).
///
/// Cheap: a clone of the cache handle and the 39-byte prefix; make one per request. Statistics
/// are the named cache's, shared by every tenant (no tenant labels).
pub struct TenantCache<V> {
    cache: HybridCache<V>,
    tenant: TenantId,
    prefix: Prefix,
    /// What L1 hashes the prefix as (computed once, so a read hashes only the caller's key).
    digest: u64,
}

impl<V> Clone for TenantCache<V> {
    fn clone(&self) -> Self {
        TenantCache {
            cache: self.cache.clone(),
            tenant: self.tenant,
            prefix: self.prefix,
            digest: self.digest,
        }
    }
}

impl<V> std::fmt::Debug for TenantCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCache")
            .field("cache", &self.cache)
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl<V> TenantCache<V> {
    /// The tenant this view reads and writes for.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }
}

impl<V> HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// `tenant`'s view of this cache: its keys never meet another tenant's.
    pub fn for_tenant(&self, tenant: &TenantId) -> TenantCache<V> {
        let prefix = prefix_of(tenant);
        TenantCache {
            cache: self.clone(),
            tenant: *tenant,
            prefix,
            digest: prefix_digest(&prefix),
        }
    }

    /// The view of the tenant in [`neo_tenant::scope`].
    ///
    /// # Errors
    /// [`Error::Tenant`](crate::Error::Tenant) outside a tenant scope (fail closed: never a
    /// view over every tenant).
    pub fn for_current_tenant(&self) -> Result<TenantCache<V>> {
        Ok(self.for_tenant(&neo_tenant::require()?))
    }

    /// Removes every entry of `tenant`: in Redis (SCAN of `…:t:{tenant}:*` on every master),
    /// in this instance's L1 and, through the backplane, in every other instance's L1.
    /// Returns how many Redis entries were removed.
    ///
    /// # Errors
    /// A Redis error only when the cache is configured to surface them.
    pub async fn invalidate_tenant(&self, tenant: &TenantId) -> Result<u64> {
        let pattern = owned_key(&prefix_of(tenant), "*");
        self.remove_matching(&pattern).await
    }
}

impl<V> TenantCache<V> {
    fn scoped_options(&self, options: &EntryOptions) -> EntryOptions {
        let mut scoped = options.clone();
        scoped.tags = options
            .tags
            .iter()
            .map(|tag| owned_key(&self.prefix, tag))
            .collect();
        scoped
    }
}

impl<V> Cache<V> for TenantCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<V>>> + Send {
        TenantGetFuture {
            view: self,
            key,
            started: false,
            miss: None,
        }
    }

    async fn set(&self, key: &str, value: V, options: &EntryOptions) -> Result<()> {
        validate_key(key)?;
        options
            .tags
            .iter()
            .try_for_each(|t| validate_name("tag", t))?;
        let options = self.scoped_options(options);
        let key = TenantKey::new(&self.prefix, key);
        self.cache.set(key.as_str(), value, &options).await
    }

    async fn remove(&self, key: &str) -> Result<()> {
        let key = TenantKey::new(&self.prefix, key);
        self.cache.remove(key.as_str()).await
    }

    async fn get_or_load<F, Fut, E>(&self, key: &str, loader: F) -> Result<Option<V>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        validate_key(key)?;
        let key = TenantKey::new(&self.prefix, key);
        self.cache.get_or_load(key.as_str(), loader).await
    }

    async fn get_or_load_many<F, Fut, E>(
        &self,
        keys: &[String],
        loader: F,
    ) -> Vec<Result<Option<V>>>
    where
        F: FnOnce(Vec<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<String, V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let prefix = self.prefix;
        // Each key is checked as the caller wrote it (the prefix would make "" valid).
        let refused: Vec<Option<crate::Error>> =
            keys.iter().map(|key| validate_key(key).err()).collect();
        let scoped: Vec<String> = keys
            .iter()
            .zip(&refused)
            .filter(|(_, refused)| refused.is_none())
            .map(|(key, _)| owned_key(&prefix, key))
            .collect();
        // The loader sees the caller's keys and answers with them; the cache sees the tenant's.
        let scoped_loader = move |missing: Vec<String>| {
            let unscoped = missing
                .into_iter()
                .map(|mut key| {
                    key.drain(..PREFIX_LEN.min(key.len()));
                    key
                })
                .collect();
            let loading = loader(unscoped);
            async move {
                loading.await.map(|found| {
                    found
                        .into_iter()
                        .map(|(key, value)| (owned_key(&prefix, &key), value))
                        .collect::<HashMap<_, _>>()
                })
            }
        };
        let mut found = self
            .cache
            .get_or_load_many(&scoped, scoped_loader)
            .await
            .into_iter();
        refused
            .into_iter()
            .map(|refused| match refused {
                Some(error) => Err(error),
                None => found.next().unwrap_or(Ok(None)),
            })
            .collect()
    }

    async fn invalidate_tag(&self, tag: &str) -> Result<u64> {
        validate_name("tag", tag)?;
        self.cache
            .remove_tagged(&owned_key(&self.prefix, tag))
            .await
    }

    async fn invalidate_pattern(&self, pattern: &str) -> Result<u64> {
        validate_pattern(pattern)?;
        self.cache
            .remove_matching(&owned_key(&self.prefix, pattern))
            .await
    }

    /// Removes every entry of this tenant (see [`HybridCache::invalidate_tenant`]).
    async fn clear(&self) -> Result<u64> {
        self.cache.invalidate_tenant(&self.tenant).await
    }

    fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

/// The future of [`TenantCache::get`]: like `HybridCache::get`'s, its first poll reads L1 and
/// hands a hit straight back. L1 is read with the view's prefix (and its precomputed digest)
/// beside the caller's key, so a hit never builds the namespaced key; a miss builds it once,
/// for the lookup in Redis.
struct TenantGetFuture<'c, 'k, V> {
    view: &'c TenantCache<V>,
    key: &'k str,
    started: bool,
    miss: Option<MissFuture<V>>,
}

impl<V> Future for TenantGetFuture<'_, '_, V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Output = Result<Option<V>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if !this.started {
            this.started = true;
            let lookup = TenantLookup {
                prefix: &this.view.prefix,
                digest: this.view.digest,
                key: this.key,
            };
            let hit = this.view.cache.l1_poll_by(&lookup, &mut this.miss);
            if hit.is_ready() {
                return hit;
            }
            // L1 only holds keys checked on write; a miss checks the caller's key before
            // anything reaches Redis (the prefix would make "" look valid).
            if let Err(error) = validate_key(this.key) {
                this.miss = None;
                return Poll::Ready(Err(error));
            }
        }
        match &mut this.miss {
            Some(miss) => miss.as_mut().poll(cx),
            None => Poll::Ready(Err(crate::Error::invalid(
                "poll",
                "the future of TenantCache::get was polled after it completed",
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_fixed_length_and_glob_free() {
        let tenant = TenantId::new();
        let prefix = prefix_of(&tenant);
        assert_eq!(prefix_str(&prefix), format!("t:{tenant}:"));
        assert!(!prefix_str(&prefix).contains(['*', '?', '[', ']', '\\']));
    }

    #[test]
    fn keys_are_built_inline_when_short_and_on_the_heap_when_long() {
        let prefix = prefix_of(&TenantId::new());
        let short = TenantKey::new(&prefix, "org:1");
        assert!(matches!(short, TenantKey::Inline(..)));
        assert_eq!(short.as_str(), owned_key(&prefix, "org:1"));
        let long_key = "k".repeat(INLINE_KEY_LEN);
        let long = TenantKey::new(&prefix, &long_key);
        assert!(matches!(long, TenantKey::Heap(_)));
        assert_eq!(long.as_str(), owned_key(&prefix, &long_key));
    }
}
