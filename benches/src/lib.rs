//! Bench pairs: each hot path of neo-commons next to the raw driver (or hand-written code)
//! doing the same work, measured in the same process so the ratio holds on a noisy machine.
//!
//! A [`Pair`] is registered once and used twice: by the criterion benches in `benches/` and
//! by the `compare` binary, which prints `name  ours  raw  ratio  target`.
//!
//! # Adding rows
//! Write a module with a `pub fn pairs() -> Vec<Pair>` (see [`core`]) and add it to
//! [`all_pairs`]. For async work, build the runtime and fixtures outside the closures and
//! `block_on` inside them; keep setup out of the measured closure.

pub mod batch;
pub mod cache;
pub mod cache_cluster;
pub mod coord;
pub mod core;
pub mod curves;
pub mod db;
pub mod derived;
pub mod events;
pub mod fair;
pub mod flaky;
mod measure;
pub mod orgs;
pub mod orgs_members;
pub mod pooler;
pub mod queue;
pub mod queue_peers;
pub mod replica;
pub mod report;
pub mod resilience;
pub mod tenancy;
pub mod tenant_scale;
pub mod webhooks_sealed;

pub use measure::{Measurement, Settings, compare};

/// A measured operation: ours and the raw baseline doing the same work.
pub struct Pair {
    /// Row name, `area/operation`.
    pub name: &'static str,
    /// The largest acceptable `ours / raw` ratio, when an issue sets one.
    pub target: Option<f64>,
    /// Rows (or items) one iteration of `ours` handles, when throughput is worth printing.
    pub per_iteration: Option<u64>,
    /// Items one iteration of `raw` handles, when it differs from `ours` (a slow baseline run
    /// on fewer items): the ratio is then per item.
    pub raw_per_iteration: Option<u64>,
    /// One iteration of our implementation.
    pub ours: Box<dyn FnMut()>,
    /// One iteration of the baseline.
    pub raw: Box<dyn FnMut()>,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("name", &self.name)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Unwraps a bench step's result, panicking with its error: a bench that cannot set up or
/// run its work must stop, not report a figure.
///
/// # Panics
/// When `result` is an error.
pub fn check<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("bench step failed: {e}"))
}

/// Polls a future that completes without waiting (an L1 hit, a no-op call) without an
/// executor, so a synchronous baseline is not charged for a runtime.
///
/// # Panics
/// When the future would wait.
pub fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("the measured future should complete without waiting"),
    }
}

/// The runtime of the async pairs and probes: multi-threaded, two workers (this machine has
/// two cores).
pub fn runtime() -> tokio::runtime::Runtime {
    check(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    )
}

/// Runs each side of each pair once: the modules' tests, which check that every pair works
/// against a real server.
pub fn run_each_once(pairs: impl IntoIterator<Item = Pair>) {
    for mut pair in pairs {
        (pair.ours)();
        (pair.raw)();
    }
}

/// A module's pairs, built only when asked for (some need a server).
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// The prefix of the group's pair names (`core`, `db`).
    pub name: &'static str,
    /// Builds the pairs (starting what they need).
    pub build: fn() -> Vec<Pair>,
}

/// Every group, in report order.
pub fn groups() -> Vec<Group> {
    vec![
        Group {
            name: "core",
            build: core::pairs,
        },
        Group {
            name: "db",
            build: db::pairs,
        },
        Group {
            name: "db",
            build: derived::pairs,
        },
        Group {
            name: "cache",
            build: cache::pairs,
        },
        Group {
            name: "resilience",
            build: resilience::pairs,
        },
        Group {
            name: "batch",
            build: batch::pairs,
        },
        Group {
            name: "queue",
            build: queue::pairs,
        },
        Group {
            name: "db",
            build: pooler::db_pairs,
        },
        Group {
            name: "db",
            build: tenancy::pairs,
        },
        Group {
            name: "queue",
            build: pooler::queue_pairs,
        },
        Group {
            name: "coord",
            build: coord::pairs,
        },
        Group {
            name: "events",
            build: events::pairs,
        },
        Group {
            name: "orgs",
            build: orgs::pairs,
        },
        Group {
            name: "webhooks",
            build: webhooks_sealed::pairs,
        },
        Group {
            name: "replica",
            build: replica::pairs,
        },
    ]
}

/// Every registered pair.
pub fn all_pairs() -> Vec<Pair> {
    groups().into_iter().flat_map(|g| (g.build)()).collect()
}
