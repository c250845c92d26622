//! Invalidation: removing keys, tagged entries, keys matching a pattern, or the whole named
//! cache, in L1, in Redis and (through the backplane) in other instances' L1.

use super::hybrid::HybridCache;
use super::validate::{escape_glob, glob_match, validate_key, validate_name, validate_pattern};
use crate::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

impl<V> HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Removes `keys` from both tiers in one Redis round trip, and from every other
    /// instance's L1 with one backplane message.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad key (nothing is removed then); a Redis error only when
    /// the cache is configured to surface them.
    ///
    /// # Example
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> neo_cache::Result<()> {
    /// use neo_cache::{Cache, CacheConfig, EntryOptions, HybridCache};
    /// let cache = HybridCache::<u32>::memory(CacheConfig::named("counts"))?;
    /// cache.set("a", 1, &EntryOptions::default()).await?;
    /// cache.set("b", 2, &EntryOptions::default()).await?;
    /// cache.remove_many(&["a", "b"]).await?;
    /// assert_eq!(cache.get("a").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn remove_many<K: AsRef<str> + Sync>(&self, keys: &[K]) -> Result<()> {
        keys.iter().try_for_each(|key| validate_key(key.as_ref()))?;
        if keys.is_empty() {
            return Ok(());
        }
        for key in keys {
            if let Some(l1) = &self.inner.l1 {
                l1.remove(key.as_ref());
            }
            self.inner.stats.invalidation(false);
        }
        if let Some(l2) = self.l2_available() {
            let names: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
            let message = self.message('m', names.join("\n").as_bytes());
            let publish = self.announce(&message);
            let stored: Vec<String> = names.iter().map(|key| self.redis_key(key)).collect();
            if let Err(error) = l2.delete(&stored, publish).await {
                self.l2_failed(error)?;
            }
        }
        Ok(())
    }

    pub(super) async fn remove_tagged(&self, tag: &str) -> Result<u64> {
        validate_name("tag", tag)?;
        if let Some(l1) = &self.inner.l1 {
            let owned = tag.to_owned();
            l1.remove_if(move |_, e| e.has_tag(&owned));
        }
        self.inner.stats.invalidation(false);
        let mut removed = 0;
        if let Some(l2) = self.l2_available() {
            let set = self.tag_key(tag);
            let outcome = async {
                let members = l2.members(&set).await?;
                // Other instances may hold these entries without their tags (read from
                // Redis), so they are told the keys, not the tag.
                let keys: Vec<&str> = members
                    .iter()
                    .filter_map(|m| m.strip_prefix(self.inner.namespace.as_str()))
                    .collect();
                if let Some(l1) = &self.inner.l1 {
                    keys.iter().for_each(|k| l1.remove(k));
                }
                let message = self.message('m', keys.join("\n").as_bytes());
                let publish = if keys.is_empty() {
                    None
                } else {
                    self.announce(&message)
                };
                let mut doomed = members.clone();
                doomed.push(set.clone());
                let deleted = l2.delete(&doomed, publish).await?;
                Ok::<_, Error>(deleted.saturating_sub(1))
            }
            .await;
            match outcome {
                Ok(n) => removed = n,
                Err(error) => self.l2_failed(error)?,
            }
        }
        Ok(removed)
    }

    pub(super) async fn remove_matching(&self, pattern: &str) -> Result<u64> {
        validate_pattern(pattern)?;
        if let Some(l1) = &self.inner.l1 {
            let owned = pattern.to_owned();
            l1.remove_if(move |k, _| glob_match(&owned, k));
        }
        self.inner.stats.invalidation(false);
        let mut removed = 0;
        if let Some(l2) = self.l2_available() {
            match l2.scan_delete(&self.redis_key(pattern)).await {
                Ok(n) => removed = n,
                Err(error) => self.l2_failed(error)?,
            }
            self.publish_invalidation('p', pattern).await?;
        }
        Ok(removed)
    }

    pub(super) async fn remove_all(&self) -> Result<u64> {
        if let Some(l1) = &self.inner.l1 {
            l1.clear();
        }
        self.inner.stats.invalidation(false);
        let mut removed = 0;
        if let Some(l2) = self.l2_available() {
            let everything = format!("{}*", escape_glob(&self.inner.namespace));
            match l2.scan_delete(&everything).await {
                Ok(n) => removed = n,
                Err(error) => self.l2_failed(error)?,
            }
            self.publish_invalidation('c', "").await?;
        }
        Ok(removed)
    }
}
