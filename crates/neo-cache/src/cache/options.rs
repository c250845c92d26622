//! Per-write options and the warm-up report.

use std::time::Duration;

/// Per-write options: TTL override and tags.
///
/// # Example
/// ```
/// use neo_cache::EntryOptions;
/// use std::time::Duration;
/// let options = EntryOptions::default()
///     .ttl(Duration::from_secs(60))
///     .tag("org:42")
///     .tag("plan:pro");
/// assert_eq!(options.tags().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryOptions {
    pub(super) ttl: Option<Duration>,
    pub(super) tags: Vec<String>,
}

impl EntryOptions {
    /// Freshness of this entry instead of the cache's `ttl`.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Attaches a tag; [`Cache::invalidate_tag`](crate::Cache::invalidate_tag) removes every entry carrying it.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// The tags attached.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }
}

/// What [`HybridCache::warm`](crate::HybridCache::warm) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WarmReport {
    /// Keys now cached (loaded, or already fresh).
    pub cached: usize,
    /// Keys whose load failed.
    pub failed: usize,
}
