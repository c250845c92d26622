//! neo-resilience's overhead: a policy (closed breaker + retry) around a call that does nothing,
//! next to the bare call.

use crate::{Pair, now_or_never};
use neo_resilience::{Policy, ResilienceConfig};
use std::hint::black_box;

async fn no_op() -> Result<u64, neo_core::Error> {
    Ok(black_box(1))
}

/// The pairs of this module.
pub fn pairs() -> Vec<Pair> {
    // Closed breaker and retry; no timeout (a timer needs a runtime and is measured by tokio).
    let policy = Policy::new(&ResilienceConfig {
        timeout: None,
        ..ResilienceConfig::named("bench")
    })
    .unwrap_or_else(|e| panic!("bench policy: {e}"));
    vec![Pair {
        name: "resilience/breaker_and_retry_no_op",
        // The bound is absolute (under 1 µs), read from the `ours` column.
        target: None,
        per_iteration: None,
        raw_per_iteration: None,
        ours: Box::new(move || {
            black_box(now_or_never(policy.call(no_op)).is_ok());
        }),
        raw: Box::new(|| {
            black_box(now_or_never(no_op()).is_ok());
        }),
    }]
}
