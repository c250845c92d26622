//! A typed, tiered cache for neo-commons: moka in process (L1), Redis shared (L2).
//!
//! One engine, [`HybridCache`], in four configurations that all implement the [`Cache`]
//! contract and pass the same contract tests:
//! [`memory`](HybridCache::memory) (moka only), [`redis`](HybridCache::redis) (Redis only),
//! [`tiered`](HybridCache::tiered) (both, with a pub/sub backplane that evicts other
//! instances' L1 copies), and [`in_memory`](HybridCache::in_memory) (a clock you control, for
//! your own unit tests).
//!
//! What it does for a caller:
//! - `get_or_load` runs the loader once for concurrent misses of a key (optionally once
//!   across instances, through a short Redis lock), remembers "not found" for `negative_ttl`,
//!   and refreshes hot keys before they expire (`eager_refresh`).
//! - Fail-safe: when the loader or Redis fails, the last known value is served up to
//!   `max_stale_age` past its expiry; after `soft_timeout` a slow load returns the stale
//!   value and finishes in the background; `hard_timeout` bounds every load.
//! - `get_or_load_many`: L1, then one MGET, then one batch loader call for the rest.
//! - Tags, SCAN-based pattern invalidation, `clear()` per named cache.
//! - Values are encoded with MessagePack by default (JSON or your own [`Codec`] on request),
//!   framed with a version byte and compressed (lz4; zstd with the feature) above a
//!   threshold; `max_payload_bytes` refuses oversized values.
//! - [`CacheStats`] and the `metrics` facade count hits and misses per tier, stale values
//!   served, coalesced callers, loads, evictions, invalidations and the compression ratio.
//!
//! Redis errors never reach callers unless `l2.fail_on_error` is set: the cache carries on
//! with L1, stale values and the loader, and skips Redis for `l2.retry_after`.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> neo_cache::Result<()> {
//! use neo_cache::{Cache, CacheConfig, EntryOptions, HybridCache};
//! use std::time::Duration;
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct Org { name: String }
//!
//! let orgs = HybridCache::<Org>::tiered(
//!     CacheConfig { ttl: Duration::from_secs(300), ..CacheConfig::named("orgs") },
//!     "redis://127.0.0.1:6379",
//! )?;
//! let org = orgs
//!     .get_or_load("org:42", || async {
//!         Ok::<_, std::io::Error>(Some(Org { name: "Acme".into() })) // from the database
//!     })
//!     .await?;
//! orgs.set("org:43", Org { name: "Globex".into() }, &EntryOptions::default().tag("tenant:7"))
//!     .await?;
//! orgs.invalidate_tag("tenant:7").await?; // every instance drops its copy
//! orgs.shutdown().await;
//! # let _ = org; Ok(()) }
//! ```

mod cache;
mod codec;
mod config;
mod error;
mod stats;

pub use cache::{Cache, EntryOptions, HybridCache, MAX_KEY_LEN, WarmReport};
pub use codec::{Codec, JsonCodec, MessagePackCodec};
pub use config::{
    BackplaneConfig, CacheConfig, Compression, DistributedLockConfig, FailSafeConfig, L1Config,
    L2Config,
};
pub use error::{BoxError, Error, Result};
pub use neo_redis::{RedisConfig, RedisConnections, redis_connections};
pub use stats::CacheStats;
