//! Time as a dependency: the system clock in production, a manual clock in tests.

use chrono::{DateTime, Utc};
use std::fmt;
use std::sync::{Arc, Mutex};

/// A source of the current time.
///
/// Components that make decisions on time (TTLs, leases, retry schedules) take an
/// `Arc<dyn Clock>` so tests can move time forward without sleeping.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
///
/// # Example
/// ```
/// use neo_core::{Clock, ManualClock};
/// use std::time::Duration;
/// let clock = ManualClock::new(chrono::DateTime::UNIX_EPOCH);
/// let start = clock.now();
/// clock.advance(Duration::from_secs(90));
/// assert_eq!((clock.now() - start).num_seconds(), 90);
/// ```
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// Sets the time.
    pub fn set(&self, now: DateTime<Utc>) {
        *self.lock() = now;
    }

    /// Moves time forward by `by` (saturating at the largest representable time).
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.lock();
        let delta = chrono::TimeDelta::from_std(by).unwrap_or(chrono::TimeDelta::MAX);
        *now = now
            .checked_add_signed(delta)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A panic while holding this lock cannot leave the time half-written.
        crate::sync::lock(&self.0)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new(Utc::now())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock").field(&self.now()).finish()
    }
}
