//! The time freshness checks read: a process-wide tick, or a test clock.

use neo_core::Clock;
use std::sync::atomic::{AtomicU64, Ordering};

/// How often the `neo-cache-clock` thread refreshes the time that freshness checks read.
const CLOCK_TICK: std::time::Duration = std::time::Duration::from_millis(2);

/// Unix milliseconds as of the last tick of the `neo-cache-clock` thread: one atomic load on
/// the L1 hit path instead of a clock read, at most [`CLOCK_TICK`] (plus scheduling delay) old,
/// which is precise enough for cache freshness. The thread starts with the first read and
/// lives as long as the process; if it cannot start, every read asks the clock itself.
#[inline]
pub(super) fn system_now_ms() -> u64 {
    static RECENT_MS: AtomicU64 = AtomicU64::new(0);
    static TICKER: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let recent = RECENT_MS.load(Ordering::Relaxed);
    if recent != 0 {
        return recent;
    }
    TICKER.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("neo-cache-clock".to_owned())
            .spawn(|| {
                loop {
                    RECENT_MS.store(precise_now_ms(), Ordering::Relaxed);
                    std::thread::sleep(CLOCK_TICK);
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start the neo-cache-clock thread; reading the clock on every lookup");
        }
    });
    precise_now_ms()
}

/// Unix milliseconds of a test clock, out of line: the calendar arithmetic would otherwise
/// sit in (and grow) every L1 hit.
#[cold]
#[inline(never)]
pub(super) fn clock_now_ms(clock: &dyn Clock) -> u64 {
    u64::try_from(clock.now().timestamp_millis()).unwrap_or(0)
}

/// Unix milliseconds from a monotonic clock anchored to the wall clock once per process, so
/// freshness never moves backwards when the wall clock is adjusted.
fn precise_now_ms() -> u64 {
    static ANCHOR: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    let (start, unix_ms) = ANCHOR.get_or_init(|| {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        (std::time::Instant::now(), unix_ms)
    });
    unix_ms + u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
