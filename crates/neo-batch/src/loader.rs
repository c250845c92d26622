//! The data loader: concurrent single loads become one batch call.

use crate::{BoxError, Error};
use futures_util::future::BoxFuture;
use neo_core::HasErrorKind;
use serde::Deserialize;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Data loader settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LoaderConfig {
    /// How long the first `load` of a batch waits for others to join it. Zero: the batch
    /// goes on the scheduler's next turn, once every load already started has joined (the
    /// lowest latency, for loads issued together such as a `join_all`).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A batch is sent at once when it reaches this many distinct keys.
    pub max_batch: usize,
    /// Remember loaded values for the loader's lifetime (one request), so a key is loaded
    /// at most once per loader.
    pub cache: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            window: Duration::ZERO,
            max_batch: 500,
            cache: true,
        }
    }
}

type Reply<V> = oneshot::Sender<Result<Option<V>, Error>>;
/// The loader's own maps hash with foldhash (seeded per process), not SipHash: hashing is a
/// good part of each key's cost in a batch.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type Batch<K, V> = (Vec<K>, Map<K, Waiters<V>>);

/// Everyone waiting for one key: the first inline (the usual case, no allocation), any
/// others after it.
struct Waiters<V> {
    first: Reply<V>,
    more: Vec<Reply<V>>,
}
type BatchFn<K, V> =
    dyn Fn(Vec<K>) -> BoxFuture<'static, Result<HashMap<K, V>, Error>> + Send + Sync;

struct Pending<K, V> {
    keys: Vec<K>,
    waiters: Map<K, Waiters<V>>,
    /// Bumped every time a batch is taken, so a window timer only sends its own batch.
    generation: u64,
}

struct Inner<K, V> {
    config: LoaderConfig,
    batch: Arc<BatchFn<K, V>>,
    pending: Mutex<Pending<K, V>>,
    cache: Mutex<Map<K, Option<V>>>,
}

/// Coalesces concurrent `load(key)` calls into one call of a batch function.
///
/// Make one loader per request (or per tenant and request): its cache lives and dies with it,
/// so two tenants never read each other's values through it.
///
/// # Example
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use neo_batch::{DataLoader, LoaderConfig};
/// use std::collections::HashMap;
///
/// let loader = DataLoader::new(LoaderConfig::default(), |ids: Vec<u32>| async move {
///     // One query for every id asked for in the window: SELECT ... WHERE id = ANY($1)
///     Ok::<_, neo_core::Error>(ids.into_iter().map(|id| (id, format!("user {id}"))).collect::<HashMap<_, _>>())
/// })
/// .unwrap();
/// let (a, b) = tokio::join!(loader.load(1), loader.load(2)); // one batch call
/// assert_eq!(a.unwrap().as_deref(), Some("user 1"));
/// assert_eq!(b.unwrap().as_deref(), Some("user 2"));
/// # }
/// ```
pub struct DataLoader<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for DataLoader<K, V> {
    fn clone(&self) -> Self {
        DataLoader {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> std::fmt::Debug for DataLoader<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

use neo_core::sync::lock;

impl<K, V> DataLoader<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A loader calling `batch` with the distinct keys of each window. Keys the batch leaves
    /// out load as `None`; keys it adds are ignored.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero `max_batch`.
    pub fn new<F, Fut, E>(config: LoaderConfig, batch: F) -> Result<Self, Error>
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, E>> + Send + 'static,
        E: Into<BoxError> + HasErrorKind + Send + 'static,
    {
        if config.max_batch == 0 {
            return Err(Error::Config("loader.max_batch must be at least 1".into()));
        }
        let batch: Arc<BatchFn<K, V>> = Arc::new(move |keys: Vec<K>| {
            let size = keys.len();
            let call = batch(keys);
            Box::pin(async move { call.await.map_err(|e| Error::batch(size, e)) })
        });
        Ok(DataLoader {
            inner: Arc::new(Inner {
                config,
                batch,
                pending: Mutex::new(Pending {
                    keys: Vec::new(),
                    waiters: Map::default(),
                    generation: 0,
                }),
                cache: Mutex::new(Map::default()),
            }),
        })
    }

    /// The value for `key` (`None` when the batch function did not return it).
    ///
    /// # Errors
    /// [`Error::Batch`] when the batch holding `key` failed (every caller of that batch gets
    /// it), [`Error::Shutdown`] when the runtime dropped the batch.
    pub async fn load(&self, key: K) -> Result<Option<V>, Error> {
        if self.inner.config.cache
            && let Some(value) = lock(&self.inner.cache).get(&key)
        {
            return Ok(value.clone());
        }
        let (reply, answer) = oneshot::channel();
        let full = {
            let mut pending = lock(&self.inner.pending);
            self.enqueue(&mut pending, key, reply)
        };
        if let Some(batch) = full {
            self.spawn_dispatch(batch);
        }
        answer.await.unwrap_or(Err(Error::Shutdown))
    }

    /// Loads several keys, in order: the same as concurrent `load`s (coalesced with any
    /// other loads of the window), registered under one lock.
    ///
    /// # Errors
    /// As [`Self::load`], per key.
    pub async fn load_many(&self, keys: Vec<K>) -> Vec<Result<Option<V>, Error>> {
        let mut results: Vec<Option<Result<Option<V>, Error>>> = vec![None; keys.len()];
        let mut answers = Vec::with_capacity(keys.len());
        let mut full = Vec::new();
        {
            let cache = self.inner.config.cache.then(|| lock(&self.inner.cache));
            let mut pending = lock(&self.inner.pending);
            pending.keys.reserve(keys.len());
            pending.waiters.reserve(keys.len());
            for (i, key) in keys.into_iter().enumerate() {
                if let Some(value) = cache.as_ref().and_then(|c| c.get(&key)) {
                    results[i] = Some(Ok(value.clone()));
                    continue;
                }
                let (reply, answer) = oneshot::channel();
                answers.push((i, answer));
                full.extend(self.enqueue(&mut pending, key, reply));
            }
        }
        for batch in full {
            self.spawn_dispatch(batch);
        }
        for (i, answer) in answers {
            results[i] = Some(answer.await.unwrap_or(Err(Error::Shutdown)));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::Shutdown)))
            .collect()
    }

    /// Adds a waiter; starts the window with the batch's first key; returns the batch when
    /// it reached `max_batch` (to be sent at once, outside the lock).
    fn enqueue(&self, pending: &mut Pending<K, V>, key: K, reply: Reply<V>) -> Option<Batch<K, V>> {
        let first = pending.keys.is_empty();
        match pending.waiters.entry(key) {
            Entry::Occupied(mut waiters) => waiters.get_mut().more.push(reply),
            Entry::Vacant(slot) => {
                pending.keys.push(slot.key().clone());
                slot.insert(Waiters {
                    first: reply,
                    more: Vec::new(),
                });
            }
        }
        if pending.keys.len() >= self.inner.config.max_batch {
            return Some(take(pending));
        }
        if first {
            let loader = self.clone();
            let generation = pending.generation;
            let window = self.inner.config.window;
            tokio::spawn(async move {
                if window.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(window).await;
                }
                let batch = {
                    let mut pending = lock(&loader.inner.pending);
                    (pending.generation == generation && !pending.keys.is_empty())
                        .then(|| take(&mut pending))
                };
                if let Some(batch) = batch {
                    loader.dispatch(batch).await;
                }
            });
        }
        None
    }

    fn spawn_dispatch(&self, batch: Batch<K, V>) {
        let loader = self.clone();
        tokio::spawn(async move { loader.dispatch(batch).await });
    }

    /// Forgets cached values (e.g. after a write in the same request).
    pub fn clear_cache(&self) {
        lock(&self.inner.cache).clear();
    }

    async fn dispatch(&self, (keys, waiters): Batch<K, V>) {
        let size = keys.len();
        metrics::counter!(crate::metric_names::LOADER_BATCHES_TOTAL).increment(1);
        metrics::histogram!(crate::metric_names::LOADER_BATCH_SIZE_ITEMS).record(size as f64);
        let result = (self.inner.batch)(keys).await;
        match result {
            Ok(mut values) => {
                let mut cache = self.inner.config.cache.then(|| lock(&self.inner.cache));
                if let Some(cache) = cache.as_mut() {
                    cache.reserve(waiters.len());
                }
                for (key, Waiters { first, more }) in waiters {
                    let value = values.remove(&key);
                    for reply in more {
                        let _ = reply.send(Ok(value.clone()));
                    }
                    if let Some(cache) = cache.as_mut() {
                        cache.insert(key, value.clone());
                    }
                    let _ = first.send(Ok(value));
                }
            }
            Err(error) => {
                tracing::warn!(size, %error, "data loader batch failed");
                for Waiters { first, more } in waiters.into_values() {
                    for reply in std::iter::once(first).chain(more) {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}

fn take<K, V>(pending: &mut Pending<K, V>) -> Batch<K, V> {
    pending.generation += 1;
    (
        std::mem::take(&mut pending.keys),
        std::mem::take(&mut pending.waiters),
    )
}
