//! The names of the metrics this crate emits (the code emits through these constants) and
//! their catalogue entries; `docs/METRICS.md` lists every crate's, and neo-observe's
//! catalogue test checks that code, catalogue and document agree.

use neo_core::MetricDef;

/// Batches a `DataLoader` sent.
pub const LOADER_BATCHES_TOTAL: &str = "neo_batch_loader_batches_total";
/// Keys per `DataLoader` batch.
pub const LOADER_BATCH_SIZE_ITEMS: &str = "neo_batch_loader_batch_size_items";
/// Batches a `WriteBatcher` flushed, by outcome.
pub const WRITER_BATCHES_TOTAL: &str = "neo_batch_writer_batches_total";
/// Items per `WriteBatcher` flush.
pub const WRITER_BATCH_SIZE_ITEMS: &str = "neo_batch_writer_batch_size_items";
/// How long the first item of a flush waited.
pub const WRITER_LINGER_SECONDS: &str = "neo_batch_writer_linger_seconds";
/// Items a `WriteBatcher` flushed.
pub const WRITER_ITEMS_TOTAL: &str = "neo_batch_writer_items_total";
/// Round trips saved by batching (items minus batches).
pub const WRITER_ROUND_TRIPS_SAVED_TOTAL: &str = "neo_batch_writer_round_trips_saved_total";

/// Every metric of neo-batch.
pub const CATALOGUE: &[MetricDef] = &[
    MetricDef::counter(
        LOADER_BATCHES_TOTAL,
        "total",
        &[],
        "Batches a DataLoader sent.",
    ),
    MetricDef::histogram(
        LOADER_BATCH_SIZE_ITEMS,
        "items",
        &[],
        "Keys per DataLoader batch.",
    ),
    MetricDef::counter(
        WRITER_BATCHES_TOTAL,
        "total",
        &["outcome"],
        "Batches a WriteBatcher flushed, by outcome (ok, error).",
    ),
    MetricDef::histogram(
        WRITER_BATCH_SIZE_ITEMS,
        "items",
        &[],
        "Items per WriteBatcher flush.",
    ),
    MetricDef::histogram(
        WRITER_LINGER_SECONDS,
        "seconds",
        &[],
        "How long the first item of a flush waited.",
    ),
    MetricDef::counter(
        WRITER_ITEMS_TOTAL,
        "total",
        &[],
        "Items a WriteBatcher flushed.",
    ),
    MetricDef::counter(
        WRITER_ROUND_TRIPS_SAVED_TOTAL,
        "total",
        &[],
        "Round trips saved by batching.",
    ),
];
