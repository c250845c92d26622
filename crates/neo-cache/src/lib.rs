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
//! - A value read from Redis fills L1; once L1 is full, only on the key's second read, so
//!   keys read once do not churn it (moka's admission would refuse most of them anyway).
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
//! # Where Redis is: one server, TLS, a Redis Cluster, Redis Sentinel
//!
//! [`HybridCache::redis`] and [`HybridCache::tiered`] take a URL (`redis://`, or `rediss://`
//! trusting the public roots). [`HybridCache::redis_on`] and [`HybridCache::tiered_on`] take
//! a [`RedisConfig`] (serde, or `NEO_REDIS_*` with neo-redis' `env` feature): one server,
//! TLS with a CA file and a client certificate, a Redis Cluster by its seed nodes, or the
//! master Redis Sentinel names (followed across failovers: a call that finds the master gone
//! makes the next one ask the sentinels again, and the backplane resubscribes on the master
//! named at that time, treating its L1 as stale, as after any reconnection); conflicting
//! settings are refused with an error naming them. Pool size and timeouts come
//! from [`L2Config`] either way.
//!
//! ```no_run
//! # async fn demo() -> neo_cache::Result<()> {
//! use neo_cache::{CacheConfig, HybridCache, RedisConfig};
//! let tls = RedisConfig::new("rediss://cache.internal:6380")
//!     .tls_ca_file("/etc/ssl/redis-ca.pem")
//!     .tls_client_cert("/etc/ssl/app.pem", "/etc/ssl/app.key");
//! let cluster = RedisConfig::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
//! let orgs = HybridCache::<String>::tiered_on(CacheConfig::named("orgs"), &cluster)?;
//! let users = HybridCache::<String>::redis_on(CacheConfig::named("users"), &tls)?;
//! let sentinel = RedisConfig::sentinel(["redis://10.0.0.5:26379", "redis://10.0.0.6:26379"], "main");
//! let plans = HybridCache::<String>::tiered_on(CacheConfig::named("plans"), &sentinel)?;
//! # let _ = (orgs, users, plans);
//! # Ok(()) }
//! ```
//!
//! ## On a Redis Cluster
//!
//! Every operation works on a cluster, and no `MOVED`, `ASK` or `CROSSSLOT` reaches a caller:
//! - **Single keys** (`get`, a tag's SMEMBERS, the single-flight lock and its Lua release,
//!   whose one key is the lock, the backplane's PUBLISH) go through redis-rs' cluster
//!   connection, which routes by slot and follows redirections.
//! - **Many keys** (`get_or_load_many`'s MGET, `set` with its tags, writes of a batch load,
//!   `remove_many`, a tag's and a pattern's deletes) are grouped by hash slot (one MGET or DEL
//!   per slot: never a multi-slot command), the slot groups by node (one pipeline per node,
//!   the nodes in parallel: a batch of 100 keys on three masters is three round trips that
//!   overlap, never one per key). The grouping uses a slot map the cache reads with
//!   `CLUSTER SLOTS`; after a failover or a resharding, a node answers what it no longer
//!   serves with `MOVED`/`ASK`/`TRYAGAIN`, and those commands (or all of a node's, if its
//!   connection failed) are sent again one by one through redis-rs' routing, which follows
//!   the redirection; the map is read again on the next call.
//! - **Pattern invalidation and `clear`** SCAN every master (the masters read afresh for each
//!   call, so a promoted replica is included) and delete what they find, slot by slot.
//! - **Keys are not rewritten.** The slot of a key is computed from the exact bytes stored
//!   (`{key_prefix}{name}:{key}`) by Redis' own rule, so `{`, `}`, `*`, `:` and spaces in your
//!   keys cannot send a command to the wrong node: a `{…}` in a key only chooses its slot
//!   (keys sharing one share a slot, which you may use on purpose), and a pattern's `*`/`?`
//!   are globs while the same characters inside a stored key are plain text to SCAN.
//!
//! **Tags.** A tag is one Redis set, `{key_prefix}{name}#tag:{tag}`, holding the stored keys
//! of its entries; it lives in its own slot, while its entries live in theirs. Writing an
//! entry puts its SET on the entry's node and the set's SADD and expiry (at least the entry's
//! lifetime) on the set's node, in the same per-node pipelines. Invalidating reads the one
//! set (a single-slot SMEMBERS), deletes the members slot by slot and then the set. No hash
//! tag is needed to keep this correct: the set is never used with another key in one command,
//! and putting entries under a tag's hash tag would pile a tag's entries onto one node and
//! break entries with more than one tag.
//!
//! **The backplane** uses regular pub/sub, not sharded (`SPUBLISH`): a cluster delivers a
//! `PUBLISH` sent to any node to the subscribers of every node, so an instance subscribes on
//! any live seed node and moves to the next one when it fails, with nothing to discover.
//! A named cache has one channel, so sharded pub/sub would put all of a cache's messages on
//! the one shard owning the channel's slot anyway, and its subscribers would have to follow
//! that shard through failovers; the cost of regular pub/sub is that every node relays every
//! message, one per write or invalidation, which is small next to the writes themselves.
//!
//! **After a failover** (a master lost, its replica promoted): calls on the lost master's
//! slots fail until the promotion (about `cluster-node-timeout` plus an election) and are
//! then sent to the new master; meanwhile callers are served from L1, stale values
//! (fail-safe) and the loader, and the cache skips Redis for `l2.retry_after` after each
//! error. Replication is asynchronous, so the new master may lack the last writes the old one
//! acknowledged. What could then be stale, and until when:
//! - an entry whose last `set` was lost: Redis serves the value before it (or nothing, and
//!   the loader runs) until that older entry expires (its TTL, and for fail-safe reads its
//!   `max_stale_age`); instances that got the backplane message reread Redis, so they see the
//!   older value too;
//! - an entry whose `remove`/invalidation was lost: it is back in Redis until its TTL;
//! - a tag membership that was lost (an entry written with a tag just before the loss):
//!   invalidating the tag misses that entry, which then lives until its TTL;
//! - an instance subscribed on the lost node reconnects to another one and treats all of its
//!   L1 as stale (it rereads Redis), so it misses no invalidation; an instance on a live node
//!   keeps its L1, and a message published to the lost node just before it died may not have
//!   been relayed: that entry stays in its L1 until `l1.ttl` (or the entry's TTL).
//!
//! Short TTLs (and `l1.ttl`) bound all of these; invalidate again after a failover where a
//! lost removal matters.
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
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `zstd` | zstd compression (lz4 is always available and the default) |
//! | `env` | `CacheConfig::from_env()` (reads `NEO_CACHE_*`) |

mod cache;
mod codec;
mod config;
mod error;
pub mod metric_names;
mod stats;

pub use cache::{Cache, EntryOptions, HybridCache, MAX_KEY_LEN, TenantCache, WarmReport};
pub use codec::{Codec, JsonCodec, MessagePackCodec};
pub use config::{
    BackplaneConfig, CacheConfig, Compression, DistributedLockConfig, FailSafeConfig, L1Config,
    L2Config,
};
pub use error::{BoxError, Error, Result};
pub use neo_redis::{RedisConfig, RedisConnections, redis_connections};
pub use stats::CacheStats;
