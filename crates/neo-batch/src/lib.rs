//! In-process batching: fewer round trips without changing how callers write code.
//!
//! - [`DataLoader`]: concurrent `load(key)` calls within a short window (or up to a batch
//!   size) become one call of your batch function; duplicates are loaded once; each caller
//!   gets its own value or its batch's error; an optional cache lives as long as the loader
//!   (one request), so tenants never share it by accident.
//! - [`WriteBatcher`]: `submit(item)` resolves when the item's batch is flushed; flushes on
//!   size or linger (or, with a zero linger, at once with what is queued), a batch taken
//!   only when a flush slot is free, bounded queue with backpressure, flush on shutdown, a
//!   failed flush fails only its own items, per-item results
//!   ([`WriteBatcher::with_results`]), optional retry through neo-resilience, optional
//!   [`AimdController`] sizing.
//! - [`process_chunks`]: a stream processed in chunks with bounded concurrency and memory,
//!   results streamed out, a progress callback and per-chunk retry.
//!
//! Metrics: `neo_batch_loader_batches_total`, `neo_batch_loader_batch_size`,
//! `neo_batch_writer_batches_total{outcome}`, `neo_batch_writer_batch_size`,
//! `neo_batch_writer_linger_seconds`, `neo_batch_writer_items_total`,
//! `neo_batch_writer_round_trips_saved_total`.
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `env` | the loader and batcher configs from `NEO_BATCH_*` |

/// Loads a neo-batch config struct from environment variables with `prefix` over its
/// defaults (feature `env`): [`LoaderConfig`] from `NEO_BATCH_LOADER_*`, [`BatcherConfig`]
/// from `NEO_BATCH_WRITER_*` (e.g. `NEO_BATCH_WRITER_LINGER=10ms`,
/// `NEO_BATCH_WRITER_RETRY__MAX_ATTEMPTS=3`), [`ChunkConfig`] from `NEO_BATCH_CHUNKS_*`.
///
/// # Errors
/// [`Error::Config`] naming the variable that could not be parsed.
#[cfg(feature = "env")]
pub fn config_from_env<T: serde::de::DeserializeOwned>(prefix: &str) -> Result<T, Error> {
    neo_core::config::from_env(prefix).map_err(|e| Error::Config(e.to_string()))
}

/// The documented prefixes of [`config_from_env`].
pub mod env_prefix {
    /// [`LoaderConfig`](crate::LoaderConfig)
    pub const LOADER: &str = "NEO_BATCH_LOADER_";
    /// [`BatcherConfig`](crate::BatcherConfig)
    pub const WRITER: &str = "NEO_BATCH_WRITER_";
    /// [`ChunkConfig`](crate::ChunkConfig)
    pub const CHUNKS: &str = "NEO_BATCH_CHUNKS_";
}

mod chunks;
mod error;
mod loader;
pub mod metric_names;
mod writer;

pub use chunks::{ChunkConfig, Progress, process_chunks};
pub use error::{BoxError, Error};
pub use loader::{DataLoader, LoaderConfig};
pub use writer::{AimdConfig, AimdController, BatcherConfig, WriteBatcher};
