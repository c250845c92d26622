//! The engine behind every configuration, one module per concern:
//!
//! | module | holds |
//! |---|---|
//! | `api` | the [`Cache`] contract, [`HybridCache`]'s constructors and its implementation of it |
//! | `hybrid` | [`HybridCache`]'s shared state and the helpers every part uses |
//! | `get` | `get`'s own future (first poll reads L1), the L1 hit paths, the L1 → L2 lookup |
//! | `many` | `get_or_load_many`: L1, one MGET, one loader call |
//! | `store` | writes: encoding, TTLs, filling L1 |
//! | `flight` | single flight (per process and across instances), eager refresh |
//! | `fail_safe` | loads in their own task, soft and hard timeouts, serving stale values |
//! | `invalidate` | removing keys, tags, patterns, everything |
//! | `tenant` | [`TenantCache`], one tenant's view (keys `t:{tenant}:{key}`), `invalidate_tenant` |
//! | `backplane` | the pub/sub task that applies other instances' invalidations |
//! | `l1`, `l2` | the two tiers: moka entries, and Redis calls |
//! | `admission` | which keys read from Redis enter a full L1 (seen before) |
//! | `sticky` | one server's connections: a call keeps to the previous call's while it is idle |
//! | `cluster` | L2 on a Redis Cluster: calls split by hash slot, one pipeline per node |
//! | `clock`, `options`, `validate` | the time freshness reads, per-write options, input checks |

mod admission;
mod api;
mod backplane;
mod clock;
mod cluster;
mod fail_safe;
mod flight;
mod get;
mod hybrid;
mod invalidate;
mod l1;
mod l2;
mod many;
mod offboard;
mod options;
mod sticky;
mod store;
mod tenant;
mod validate;

pub use api::Cache;
pub use hybrid::HybridCache;
pub use options::{EntryOptions, WarmReport};
pub use tenant::TenantCache;
pub use validate::MAX_KEY_LEN;
