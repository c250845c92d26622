//! Offset and keyset pagination requests and pages.
//!
//! Offset pages (`PageRequest`) are simple and allow jumping to page N; keyset pages
//! (`CursorRequest`) stay fast on large tables and do not skip or repeat rows when data
//! changes between requests. Counting is opt-in ([`CountMode`]).

use serde::{Deserialize, Serialize};

/// Limits applied to every page request.
///
/// # Example
/// ```
/// use neo_core::pagination::{PageRequest, PaginationConfig};
/// let config = PaginationConfig { max_limit: 50, ..PaginationConfig::default() };
/// assert_eq!(PageRequest::new(0, Some(500), &config).limit(), 50);
/// assert_eq!(PageRequest::new(0, None, &config).limit(), 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PaginationConfig {
    /// Page size when the caller gives none.
    pub default_limit: u32,
    /// Largest page size; larger requests are clamped to it.
    pub max_limit: u32,
    /// Largest offset; deeper offset pages are clamped to it (use keyset pages to go further).
    pub max_offset: u64,
}

impl Default for PaginationConfig {
    fn default() -> Self {
        PaginationConfig {
            default_limit: 20,
            max_limit: 100,
            max_offset: 100_000,
        }
    }
}

impl PaginationConfig {
    /// Clamps a requested page size into `1..=max_limit`, using `default_limit` for `None`.
    pub fn clamp_limit(&self, limit: Option<u32>) -> u32 {
        let max = self.max_limit.max(1);
        limit.unwrap_or(self.default_limit).clamp(1, max)
    }
}

/// Whether and how to count the total number of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountMode {
    /// Do not count (the cheapest; `has_next` still works).
    #[default]
    None,
    /// `count(*)`: exact, and costs a scan.
    Exact,
    /// The planner's estimate: instant, approximate, for big tables.
    Estimated,
}

/// An offset page request: `offset` rows skipped, at most `limit` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PageRequest {
    offset: u64,
    limit: u32,
    count: CountMode,
}

impl PageRequest {
    /// A request with `limit` clamped by `config` and `offset` capped at `config.max_offset`.
    pub fn new(offset: u64, limit: Option<u32>, config: &PaginationConfig) -> Self {
        PageRequest {
            offset: offset.min(config.max_offset),
            limit: config.clamp_limit(limit),
            count: CountMode::None,
        }
    }

    /// Asks for a total count.
    #[must_use]
    pub fn with_count(mut self, count: CountMode) -> Self {
        self.count = count;
        self
    }

    /// Rows to skip.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Most rows to return.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The counting mode asked for.
    pub fn count(&self) -> CountMode {
        self.count
    }
}

/// One offset page of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Rows skipped before this page.
    pub offset: u64,
    /// The page size asked for.
    pub limit: u32,
    /// Whether more rows follow.
    pub has_next: bool,
    /// Total rows, when counting was asked for.
    pub total: Option<u64>,
    /// Whether `total` is the planner's estimate rather than an exact count.
    pub total_is_estimate: bool,
}

/// A keyset page request: rows strictly after `after` (in sort order), at most `limit`.
///
/// `K` is the decoded position (typically `(sort_value, id)`); the opaque token handed to
/// clients is produced and checked by [`CursorCodec`](crate::CursorCodec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorRequest<K> {
    after: Option<K>,
    limit: u32,
}

impl<K> CursorRequest<K> {
    /// The first page.
    pub fn first(limit: Option<u32>, config: &PaginationConfig) -> Self {
        CursorRequest {
            after: None,
            limit: config.clamp_limit(limit),
        }
    }

    /// The page after `position`.
    pub fn after(position: K, limit: Option<u32>, config: &PaginationConfig) -> Self {
        CursorRequest {
            after: Some(position),
            limit: config.clamp_limit(limit),
        }
    }

    /// The position to continue after; `None` for the first page.
    pub fn position(&self) -> Option<&K> {
        self.after.as_ref()
    }

    /// Most rows to return.
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// One keyset page of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorPage<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// The opaque token for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}
