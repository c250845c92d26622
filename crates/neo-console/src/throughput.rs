//! Queue throughput over the last minutes, from what PostgreSQL already counts: the rows
//! inserted into and deleted from each queue's `jobs` table (`pg_stat_user_tables.n_tup_ins`
//! and `n_tup_del`). An enqueue inserts a row and an acknowledgement deletes it, so the
//! difference between two samples is the jobs enqueued and finished in between.
//!
//! Nothing is written on the queue's hot path: the console reads one catalog view per
//! sample ([`ConsoleConfig::throughput_sample`](crate::ConsoleConfig)) in a task of its own.
//! What that costs in accuracy: deletes also count discarded, cancelled-and-pruned and
//! retention-pruned jobs; the server publishes a backend's counts when its transaction ends
//! (within about a second, up to a minute under contention); each console instance keeps its
//! own samples in memory (none before it started, none of another instance's); a statistics
//! reset shows as a sample of nothing.

use neo_db::Db;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// One sample of a queue's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub(crate) at: chrono::DateTime<chrono::Utc>,
    pub(crate) inserted: i64,
    pub(crate) deleted: i64,
}

/// Jobs enqueued and finished per second between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    /// The end of the interval.
    pub(crate) at: chrono::DateTime<chrono::Utc>,
    pub(crate) seconds: f64,
    pub(crate) enqueued: i64,
    pub(crate) finished: i64,
}

/// The samples of every queue the console shows, the oldest first, at most `kept` each.
#[derive(Debug)]
pub(crate) struct Throughput {
    schemas: Vec<String>,
    kept: usize,
    samples: Mutex<Vec<VecDeque<Sample>>>,
}

impl Throughput {
    pub(crate) fn new(schemas: Vec<String>, kept: usize) -> Self {
        let samples = Mutex::new(vec![VecDeque::new(); schemas.len()]);
        Throughput {
            schemas,
            kept: kept.max(2),
            samples,
        }
    }

    /// Reads every queue's counters now and keeps them.
    pub(crate) async fn sample(&self, db: &Db) -> crate::Result<()> {
        let mut conn = db.statement_connection().await?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT schemaname::text, n_tup_ins, n_tup_del FROM pg_catalog.pg_stat_user_tables \
             WHERE relname = 'jobs' AND schemaname = ANY($1)",
        )
        .persistent(false)
        .bind(&self.schemas)
        .fetch_all(&mut *conn)
        .await?;
        conn.finish().await?;
        let at = chrono::Utc::now();
        let mut samples = neo_core::sync::lock(&self.samples);
        for (schema, inserted, deleted) in rows {
            if let Some(i) = self.schemas.iter().position(|s| *s == schema) {
                let kept = &mut samples[i];
                kept.push_back(Sample {
                    at,
                    inserted,
                    deleted,
                });
                while kept.len() > self.kept {
                    kept.pop_front();
                }
            }
        }
        Ok(())
    }

    /// The rates between consecutive samples of `schema`, the oldest first (a counter that
    /// went back, after a statistics reset, counts as nothing).
    pub(crate) fn rates(&self, schema: &str) -> Vec<Rate> {
        let Some(i) = self.schemas.iter().position(|s| s == schema) else {
            return Vec::new();
        };
        let samples = neo_core::sync::lock(&self.samples);
        let kept: Vec<Sample> = samples[i].iter().copied().collect();
        drop(samples);
        kept.windows(2)
            .map(|w| Rate {
                at: w[1].at,
                seconds: (w[1].at - w[0].at).as_seconds_f64().max(1e-3),
                enqueued: (w[1].inserted - w[0].inserted).max(0),
                finished: (w[1].deleted - w[0].deleted).max(0),
            })
            .collect()
    }

    /// Samples every `every` until the console is dropped (`this` can no longer be
    /// upgraded). A failed sample is logged and the next one tried.
    pub(crate) async fn run(this: Weak<Throughput>, db: Db, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(throughput) = this.upgrade() else {
                return;
            };
            if let Err(error) = throughput.sample(&db).await {
                tracing::warn!(%error, "console throughput sample failed");
            }
        }
    }

    /// Starts [`run`](Self::run) on the current tokio runtime; without one, nothing is sampled
    /// (and the chart says so).
    pub(crate) fn spawn(this: &Arc<Throughput>, db: &Db, every: Duration) -> bool {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(Self::run(Arc::downgrade(this), db.clone(), every));
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_differences_per_second_and_a_reset_counts_nothing() {
        let t = Throughput::new(vec!["q".into()], 3);
        let start = chrono::Utc::now();
        {
            let mut samples = neo_core::sync::lock(&t.samples);
            for (s, ins, del) in [(0, 10, 5), (10, 30, 25), (20, 40, 45), (30, 2, 1)] {
                samples[0].push_back(Sample {
                    at: start + chrono::Duration::seconds(s),
                    inserted: ins,
                    deleted: del,
                });
                while samples[0].len() > t.kept {
                    samples[0].pop_front();
                }
            }
        }
        let rates = t.rates("q");
        assert_eq!(rates.len(), 2, "three samples kept, two intervals");
        assert_eq!((rates[0].enqueued, rates[0].finished), (10, 20));
        assert!((rates[0].seconds - 10.0).abs() < 1e-9);
        assert_eq!(
            (rates[1].enqueued, rates[1].finished),
            (0, 0),
            "after a reset"
        );
        assert!(t.rates("other").is_empty());
    }
}
