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
                // Echoes of messages sent before this subscription will not come.
                inner.own_in_flight.store(0, Ordering::Relaxed);
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
                    // Borrowed, not copied: our own echo costs a prefix comparison.
                    let Some((origin, kind, payload)) = split_message(message.get_payload_bytes())
                    else {
                        continue;
                    };
                    if origin == inner.instance.as_bytes() {
                        let _ = inner.own_in_flight.fetch_update(
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                            |n| n.checked_sub(1),
                        );
                    } else {
                        HybridCache { inner }.apply_remote(kind, payload);
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

/// A message's origin, kind and payload (`{instance}\n{kind}\n{payload}`).
fn split_message(bytes: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (origin, rest) = split_line(bytes)?;
    let (kind, payload) = split_line(rest).unwrap_or((rest, &[]));
    Some((origin, kind, payload))
}

/// The bytes before the first newline, and those after it.
fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == b'\n')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

impl<V> HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    pub(super) fn apply_remote(&self, kind: &[u8], payload: &[u8]) {
        let Some(l1) = &self.inner.l1 else { return };
        let text = || String::from_utf8_lossy(payload);
        match kind {
            b"v" => self.apply_value(payload),
            b"k" => l1.remove(&text()),
            b"m" => text().split('\n').for_each(|k| l1.remove(k)),
            b"t" => {
                let tag = text().into_owned();
                l1.remove_if(move |_, e| e.has_tag(&tag));
            }
            b"p" => {
                let pattern = text().into_owned();
                l1.remove_if(move |k, _| glob_match(&pattern, k));
            }
            b"c" => l1.clear(),
            other => {
                tracing::warn!(cache = %self.inner.config.name, kind = %String::from_utf8_lossy(other), "unknown backplane message");
                return;
            }
        }
        self.inner.stats.invalidation(true);
    }

    /// Another instance wrote one entry and sent its stored bytes (`{key}\n{bytes}`): they
    /// replace this instance's L1 copy. The entry is only dropped instead when one of our
    /// own messages is still out (the value may be older than what we wrote), or when the
    /// bytes cannot be read or are no longer fresh.
    fn apply_value(&self, payload: &[u8]) {
        let Some(l1) = &self.inner.l1 else { return };
        let Some((key, bytes)) = split_line(payload) else {
            return;
        };
        let key = String::from_utf8_lossy(key);
        let now = self.now_ms();
        let ours_out = self.inner.own_in_flight.load(Ordering::Relaxed) > 0;
        match self.decode(bytes) {
            Ok((fresh_until, value)) if !ours_out && now < fresh_until => {
                self.fill_l1(&key, value, fresh_until, now, None);
            }
            Ok(_) => l1.remove(&key),
            Err(error) => {
                tracing::warn!(cache = %self.inner.config.name, key = %key, %error, "unreadable value in a backplane message; evicting");
                l1.remove(&key);
            }
        }
    }

    pub(super) async fn publish_invalidation(&self, kind: char, payload: &str) -> Result<()> {
        let Some(l2) = self.l2_available() else {
            return Ok(());
        };
        let message = self.message(kind, payload.as_bytes());
        if let Some((channel, message)) = self.announce(&message)
            && let Err(error) = l2.publish(channel, message).await
        {
            self.l2_failed(error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::split_message;
    use crate::codec::{Codec, MessagePackCodec, frame};
    use crate::{Cache, CacheConfig, Compression, EntryOptions, HybridCache};
    use neo_core::ManualClock;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    /// `{key}\n{stored bytes}` of `value`, fresh for a minute after the epoch.
    fn value_payload(key: &str, value: u32) -> Vec<u8> {
        let encoded = MessagePackCodec.encode(&value).expect("encode");
        let (bytes, _) = frame(Some(&encoded), 60_000, Compression::None, 1024).expect("frame");
        let mut payload = format!("{key}\n").into_bytes();
        payload.extend_from_slice(&bytes);
        payload
    }

    #[test]
    fn a_value_message_fills_l1_unless_one_of_ours_is_still_out() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let clock = ManualClock::new(chrono::DateTime::UNIX_EPOCH);
            let cache = HybridCache::<u32>::in_memory(
                CacheConfig::named("values"),
                Arc::new(clock.clone()),
            )
            .expect("a cache");
            cache
                .set("k", 1, &EntryOptions::default())
                .await
                .expect("set");

            cache.apply_remote(b"v", &value_payload("k", 2));
            assert_eq!(cache.get("k").await.expect("get"), Some(2), "applied");

            // One of our messages is out: the other value may be older than ours, so it
            // only evicts.
            cache.inner.own_in_flight.store(1, Ordering::Relaxed);
            cache.apply_remote(b"v", &value_payload("k", 3));
            assert_eq!(cache.get("k").await.expect("get"), None, "evicted");

            // Unreadable bytes evict too.
            cache.inner.own_in_flight.store(0, Ordering::Relaxed);
            cache
                .set("k", 4, &EntryOptions::default())
                .await
                .expect("set");
            cache.apply_remote(b"v", b"k\nnot a frame");
            assert_eq!(cache.get("k").await.expect("get"), None, "evicted");
            assert_eq!(cache.stats().remote_invalidations, 3);
        });
    }

    #[test]
    fn messages_split_into_origin_kind_and_binary_payload() {
        assert_eq!(
            split_message(b"me\nv\nkey\n\x00\n\xff"),
            Some((&b"me"[..], &b"v"[..], &b"key\n\x00\n\xff"[..]))
        );
        assert_eq!(
            split_message(b"me\nc"),
            Some((&b"me"[..], &b"c"[..], &b""[..]))
        );
        assert_eq!(split_message(b"no newline"), None);
    }
}
