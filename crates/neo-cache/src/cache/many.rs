//! Batch reads (`get_or_load_many`): L1, then one MGET for the rest, then one loader call
//! for what is still missing.

use super::hybrid::HybridCache;
use super::options::EntryOptions;
use super::validate::validate_key;
use crate::{BoxError, Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl<V> HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    pub(super) async fn load_many<F, Fut, E>(
        &self,
        keys: &[String],
        loader: F,
    ) -> Vec<Result<Option<V>>>
    where
        F: FnOnce(Vec<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<String, V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let mut results: Vec<Option<Result<Option<V>>>> = vec![None; keys.len()];
        let mut stale: HashMap<&str, Option<V>> = HashMap::new();
        let now = self.now_ms();
        let epoch = self.inner.epoch.load(Ordering::Relaxed);
        let fail_safe = self.inner.config.fail_safe.enabled;
        for (i, key) in keys.iter().enumerate() {
            if let Err(error) = validate_key(key) {
                results[i] = Some(Err(error));
                continue;
            }
            let Some(entry) = self.inner.l1.as_ref().and_then(|l1| l1.get(key)) else {
                if self.inner.l1.is_some() {
                    self.inner.stats.l1(false);
                }
                continue;
            };
            if entry.is_fresh(now, epoch) {
                self.inner.stats.l1(true);
                results[i] = Some(Ok(entry.value.clone()));
            } else {
                self.inner.stats.l1(false);
                if fail_safe && now < entry.stale_until_ms {
                    stale.insert(key, entry.value.clone());
                }
            }
        }
        // The positions still unresolved, in input order. A key asked for twice is read twice
        // from Redis: cheaper than hashing every key to find the rare repeat.
        let mut missing: Vec<(usize, &str)> = results
            .iter()
            .enumerate()
            .filter(|(_, result)| result.is_none())
            .map(|(i, _)| (i, keys[i].as_str()))
            .collect();
        if let (Some(l2), false) = (self.l2_available(), missing.is_empty()) {
            let names: Vec<&str> = missing.iter().map(|&(_, key)| key).collect();
            match l2.mget(&self.inner.namespace, &names).await {
                Ok(values) => {
                    let mut still = Vec::new();
                    for (&(i, key), bytes) in missing.iter().zip(values) {
                        match bytes.map(|b| self.decode(&b)) {
                            Some(Ok((fresh_until, value))) if now < fresh_until => {
                                self.fill_l1_from(key, &value, fresh_until, now);
                                results[i] = Some(Ok(value));
                            }
                            Some(Ok((_, value))) => {
                                if fail_safe {
                                    stale.entry(key).or_insert(value);
                                }
                                still.push((i, key));
                            }
                            _ => still.push((i, key)),
                        }
                    }
                    let misses = still.len() as u64;
                    self.inner
                        .stats
                        .l2_counts(missing.len() as u64 - misses, misses);
                    missing = still;
                }
                Err(error) => {
                    if let Err(error) = self.l2_failed(error) {
                        for &(i, _) in &missing {
                            results[i] = Some(Err(error.clone()));
                        }
                        missing.clear();
                    }
                }
            }
        }
        if !missing.is_empty() {
            // The loader is asked for each key once.
            let mut asked: HashSet<&str, foldhash::fast::RandomState> =
                HashSet::with_capacity_and_hasher(
                    missing.len(),
                    foldhash::fast::RandomState::default(),
                );
            let wanted: Vec<String> = missing
                .iter()
                .filter(|&&(_, key)| asked.insert(key))
                .map(|&(_, key)| key.to_owned())
                .collect();
            let started = Instant::now();
            let loaded =
                tokio::time::timeout(self.inner.config.hard_timeout, loader(wanted.clone())).await;
            let ok = matches!(loaded, Ok(Ok(_)));
            self.inner.stats.load(started.elapsed(), ok);
            match loaded {
                Ok(Ok(mut found)) => {
                    for &(i, key) in &missing {
                        results[i] = Some(Ok(found.get(key).cloned()));
                    }
                    let entries: Vec<(String, Option<V>)> = wanted
                        .into_iter()
                        .map(|key| {
                            let value = found.remove(&key);
                            (key, value)
                        })
                        .collect();
                    if !found.is_empty() {
                        tracing::warn!(cache = %self.inner.config.name, extra = found.len(), "batch loader returned keys that were not asked for; ignored");
                    }
                    if let Err(error) = self.store(entries, &EntryOptions::default()).await {
                        tracing::warn!(cache = %self.inner.config.name, %error, "loaded values not cached");
                    }
                }
                failed => {
                    let error = match failed {
                        Ok(Err(error)) => Error::Loader {
                            key: wanted.join(","),
                            source: Arc::new(error.into()),
                        },
                        _ => Error::LoaderTimeout {
                            key: wanted.join(","),
                            after: self.inner.config.hard_timeout,
                        },
                    };
                    for &(i, key) in &missing {
                        let outcome = match stale.get(key) {
                            Some(value) => {
                                self.inner.stats.stale_served();
                                Ok(value.clone())
                            }
                            None => Err(error.clone()),
                        };
                        results[i] = Some(outcome);
                    }
                }
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(None))).collect()
    }
}
