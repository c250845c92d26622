//! neo-coord's lock against the raw Redis round trip it is built on.

use crate::{Pair, check};
use neo_coord::{CoordConfig, Coordinator};
use std::hint::black_box;
use std::rc::Rc;

/// The pairs of this module on the Redis at `url`.
pub fn pairs_on(url: &str) -> Vec<Pair> {
    let rt = Rc::new(check(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    ));
    let _guard = rt.enter();
    let coord = check(Coordinator::connect(
        url,
        CoordConfig {
            key_prefix: format!("bench{}:", std::process::id()),
            ..CoordConfig::default()
        },
    ));
    // One multiplexed connection: a SET NX is then exactly one round trip (a deadpool-redis
    // checkout would add a `PING` round trip to it).
    let conn = crate::cache::raw_multiplexed(&rt, url);
    let key = format!("bench{}:raw-lock", std::process::id());
    let rt_raw = Rc::clone(&rt);
    vec![Pair {
        name: "coord/lock_acquire_release",
        // At most 2.5 times one raw SET NX round trip. Ours is two (acquire and release).
        target: Some(2.5),
        per_iteration: None,
        raw_per_iteration: None,
        ours: Box::new(move || {
            rt.block_on(async {
                let guard =
                    check(coord.try_lock("bench").await).unwrap_or_else(|| panic!("lock taken"));
                check(guard.release().await);
            });
        }),
        raw: Box::new(move || {
            // One SET NX round trip (the key stays; SET NX costs the same either way).
            let mut conn = conn.clone();
            let set: Option<String> = rt_raw.block_on(async {
                check(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg("token")
                        .arg("NX")
                        .arg("PX")
                        .arg(10_000)
                        .query_async(&mut conn)
                        .await,
                )
            });
            black_box(set);
        }),
    }]
}

/// The pairs of this module, on the bench Redis.
pub fn pairs() -> Vec<Pair> {
    pairs_on(&crate::cache::bench_redis_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_pair_runs_on_a_real_redis() {
        let rt = check(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        );
        let redis = rt.block_on(neo_testkit::redis());
        crate::run_each_once(pairs_on(redis.url()));
    }
}
