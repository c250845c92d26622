//! The backplane: a pub/sub channel per named cache on which instances tell each other which
//! L1 copies to drop; its subscriber task, and the messages this instance publishes.

use super::hybrid::{HybridCache, Inner};
use super::l1::lock;
use super::validate::glob_match;
use crate::{Error, Result};
use futures_util::StreamExt;
use neo_redis::Subscribers;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Starts the subscriber task of `inner` on the current tokio runtime, on its own connection
/// through `subscribers` (the next node after each lost connection: on a Redis Cluster, every
/// node delivers every `PUBLISH`, so any live node will do; under Sentinel, the master named
/// at that time).
pub(super) fn start<V>(inner: &Arc<Inner<V>>, subscribers: Subscribers) -> Result<()>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::Config("a tiered cache with a backplane must be built inside a tokio runtime".into())
    })?;
    let task = runtime.spawn(backplane(Arc::downgrade(inner), subscribers));
    *lock(&inner.backplane) = Some(task);
    Ok(())
}

/// Subscribes to the cache's channel and applies other instances' invalidations; on every
/// (re)connection and disconnection, L1 entries become stale (they may have missed some).
async fn backplane<V>(cache: Weak<Inner<V>>, subscribers: Subscribers)
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let (channel, delay, mut shutdown) = match cache.upgrade() {
        Some(inner) => (
            inner.channel.clone(),
            inner.config.backplane.reconnect_delay,
            inner.shutdown.subscribe(),
        ),
        None => return,
    };
    let mut connections = 0_u64;
    let mut attempt = 0_usize;
    loop {
        let this_attempt = attempt;
        attempt += 1;
        let session = async {
            // Only logged (the loop retries), so the causes are kept as text.
            let client = subscribers
                .client(this_attempt)
                .await
                .map_err(|e| e.to_string())?;
            let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = shutdown.changed() => return,
            s = session => s,
        };
        match pubsub {
            Ok(pubsub) => {
                let Some(inner) = cache.upgrade() else { return };
                connections += 1;
                if connections > 1 {
                    inner.epoch.fetch_add(1, Ordering::Relaxed);
                }
                inner.backplane_connected.send_replace(connections);
                let (ping_every, ping_timeout) = (
                    delay.max(Duration::from_millis(100)) * 4,
                    inner.config.l2.timeout,
                );
                drop(inner);
                // The message stream does not always end when the connection drops, so the
                // subscription is also pinged; a failed ping means Redis is gone.
                let (mut sink, mut messages) = pubsub.split();
                let mut ping = tokio::time::interval(ping_every);
                ping.tick().await;
                loop {
                    let message = tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = ping.tick() => {
                            let alive = tokio::time::timeout(ping_timeout, sink.ping::<redis::Value>()).await;
                            if matches!(alive, Ok(Ok(_))) {
                                continue;
                            }
                            break;
                        }
                        m = messages.next() => m,
                    };
                    let Some(message) = message else { break };
                    let Some(inner) = cache.upgrade() else { return };
                    let text: String = message.get_payload().unwrap_or_default();
                    let mut parts = text.splitn(3, '\n');
                    let (Some(origin), Some(kind)) = (parts.next(), parts.next()) else {
                        continue;
                    };
                    if origin != inner.instance {
                        HybridCache { inner }.apply_remote(kind, parts.next().unwrap_or(""));
                    }
                }
                if let Some(inner) = cache.upgrade() {
                    inner.epoch.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(cache = %inner.config.name, "backplane lost redis; in-process entries are stale until it is back");
                }
            }
            Err(error) => {
                tracing::debug!(%error, "backplane could not subscribe; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

impl<V> HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    pub(super) fn apply_remote(&self, kind: &str, payload: &str) {
        let Some(l1) = &self.inner.l1 else { return };
        match kind {
            "k" => l1.remove(payload),
            "m" => payload.split('\n').for_each(|k| l1.remove(k)),
            "t" => {
                let tag = payload.to_owned();
                l1.remove_if(move |_, e| e.has_tag(&tag));
            }
            "p" => {
                let pattern = payload.to_owned();
                l1.remove_if(move |k, _| glob_match(&pattern, k));
            }
            "c" => l1.clear(),
            other => {
                tracing::warn!(cache = %self.inner.config.name, kind = other, "unknown backplane message");
                return;
            }
        }
        self.inner.stats.invalidation(true);
    }

    pub(super) async fn publish_invalidation(&self, kind: char, payload: &str) -> Result<()> {
        if !self.publishes() {
            return Ok(());
        }
        if let Some(l2) = self.l2_available()
            && let Err(error) = l2
                .publish(&self.inner.channel, &self.message(kind, payload))
                .await
        {
            self.l2_failed(error)?;
        }
        Ok(())
    }
}
