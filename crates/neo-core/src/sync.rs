//! Synchronisation helpers the crates share.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking over the data of a holder that panicked.
///
/// The crates' mutexes guard maps, queues and counters that are written whole, so a panic
/// elsewhere never leaves them half-changed; refusing them afterwards would turn one failure
/// into many.
///
/// # Example
/// ```
/// let counter = std::sync::Mutex::new(1);
/// *neo_core::sync::lock(&counter) += 1;
/// assert_eq!(*neo_core::sync::lock(&counter), 2);
/// ```
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
