//! A small, honest timing loop for the `compare` report.

use crate::Pair;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Target duration of one sample.
    pub sample_time: Duration,
    /// Samples per side; the median is reported.
    pub samples: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sample_time: Duration::from_millis(10),
            samples: 41,
        }
    }
}

impl Settings {
    /// Fewer, shorter samples: for smoke runs.
    pub fn quick() -> Self {
        Settings {
            sample_time: Duration::from_millis(5),
            samples: 7,
        }
    }
}

/// The result for one pair.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Row name.
    pub name: &'static str,
    /// Median nanoseconds per iteration of ours.
    pub ours_ns: f64,
    /// Median nanoseconds per iteration of the baseline.
    pub raw_ns: f64,
    /// Median of the per-round ratios `ours / raw` (each round samples both sides back to
    /// back, so drift on a shared machine cancels out).
    pub paired_ratio: f64,
    /// The acceptable ratio, if any.
    pub target: Option<f64>,
    /// Whether the times are per item rather than per iteration.
    pub per_item: bool,
}

impl Measurement {
    /// `ours / raw`: the median of the per-round ratios.
    pub fn ratio(&self) -> f64 {
        self.paired_ratio
    }

    /// Whether the ratio meets its target; `None` when there is none.
    pub fn passed(&self) -> Option<bool> {
        self.target.map(|t| self.ratio() <= t)
    }
}

/// How many more rounds a pair whose target is within [`TIGHT_TARGET`] of 1 gets: a goal of a
/// few percent is smaller than the spread of 10 ms samples on a shared two-core machine, so its
/// median needs more rounds to settle (five times the rounds: the spread of a median shrinks
/// with the square root of their number).
pub(crate) const TIGHT_ROUNDS: usize = 5;

/// A target at most this far above 1 (e.g. 1.05) is tight (see [`TIGHT_ROUNDS`]).
pub(crate) const TIGHT_TARGET: f64 = 0.1;

/// Measures a pair: calibrates an iteration count per side, then takes interleaved samples
/// (ours, raw, ours, ...) so drift on a shared machine hits both sides alike; a pair with a
/// tight target gets `TIGHT_ROUNDS` times the rounds.
pub fn compare(pair: &mut Pair, settings: Settings) -> Measurement {
    let ours_iters = calibrate(&mut pair.ours, settings.sample_time);
    let raw_iters = calibrate(&mut pair.raw, settings.sample_time);
    let tight = pair
        .target
        .is_some_and(|t| t >= 1.0 && t - 1.0 <= TIGHT_TARGET);
    let rounds = settings.samples * if tight { TIGHT_ROUNDS } else { 1 };
    let mut ours = Vec::with_capacity(rounds);
    let mut raw = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Alternate which side goes first, so neither always follows the other's cache state.
        if round % 2 == 0 {
            ours.push(sample(&mut pair.ours, ours_iters));
            raw.push(sample(&mut pair.raw, raw_iters));
        } else {
            raw.push(sample(&mut pair.raw, raw_iters));
            ours.push(sample(&mut pair.ours, ours_iters));
        }
    }
    // A baseline measured on a different number of items is compared per item.
    let (ours_scale, raw_scale) = match (pair.per_iteration, pair.raw_per_iteration) {
        (Some(ours_items), Some(raw_items)) => (ours_items as f64, raw_items as f64),
        _ => (1.0, 1.0),
    };
    let ratios = ours
        .iter()
        .zip(&raw)
        .map(|(o, r)| (o / ours_scale) / (r / raw_scale).max(f64::MIN_POSITIVE))
        .collect();
    let (ours_ns, raw_ns) = (median(ours) / ours_scale, median(raw) / raw_scale);
    Measurement {
        name: pair.name,
        ours_ns,
        raw_ns,
        paired_ratio: median(ratios),
        target: pair.target,
        per_item: pair.raw_per_iteration.is_some(),
    }
}

fn calibrate(f: &mut Box<dyn FnMut()>, sample_time: Duration) -> u64 {
    // Warm up, then grow the count until one sample takes long enough to time reliably.
    let mut iters = 1_u64;
    loop {
        let start = Instant::now();
        for _ in 0..iters {
            f();
            black_box(());
        }
        let elapsed = start.elapsed();
        if elapsed >= sample_time / 2 || iters >= 1 << 30 {
            let per_iter = elapsed.as_secs_f64() / iters as f64;
            return ((sample_time.as_secs_f64() / per_iter.max(1e-12)) as u64).max(1);
        }
        iters *= 2;
    }
}

/// Nanoseconds per iteration over one sample.
fn sample(f: &mut Box<dyn FnMut()>, iters: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
        black_box(());
    }
    start.elapsed().as_secs_f64() * 1e9 / iters as f64
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
