use crate::{Mode, coord, in_every_mode, sibling};
use neo_coord::Error;
use neo_core::{ErrorKind, HasErrorKind};
use neo_testkit::RedisServer;
use std::time::Duration;

in_every_mode!(the_limit_is_shared_across_instances_and_kept_per_key,);

async fn the_limit_is_shared_across_instances_and_kept_per_key(mode: Mode) {
    let (env, a) = coord(mode, |c| c).await;
    let b = sibling(&env, &a);
    let on_a = a.rate_limiter("api", 10, 3).unwrap();
    let on_b = b.rate_limiter("api", 10, 3).unwrap();
    // A burst of 3 between the two instances, then refusals.
    let mut allowed = 0;
    for i in 0..8 {
        let limiter = if i % 2 == 0 { &on_a } else { &on_b };
        if limiter.check("tenant-1").await.is_ok() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3);
    let err = on_a.check("tenant-1").await.unwrap_err();
    let Error::RateLimited { retry_after } = err else {
        panic!("{err}")
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_millis(100),
        "{retry_after:?}"
    );
    assert!(
        on_a.check("tenant-2").await.is_ok(),
        "another key has its own budget"
    );
    tokio::time::sleep(retry_after + Duration::from_millis(5)).await;
    assert!(on_b.check("tenant-1").await.is_ok());
    assert_eq!(
        a.rate_limiter("api", 0, 1).unwrap_err().kind(),
        ErrorKind::Validation
    );
}

#[tokio::test]
async fn calls_fail_as_unavailable_while_redis_is_down_and_recover_when_it_returns() {
    let mut server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .unwrap();
    let coord = neo_coord::Coordinator::connect(
        &server.url(),
        neo_coord::CoordConfig {
            timeout: Duration::from_millis(300),
            ..neo_coord::CoordConfig::default()
        },
    )
    .unwrap();
    coord.lock("x").await.unwrap().release().await.unwrap();
    server = tokio::task::spawn_blocking(move || {
        server.stop().unwrap();
        server
    })
    .await
    .unwrap();
    let err = coord.try_lock("x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let limiter = coord.rate_limiter("api", 10, 1).unwrap();
    assert_eq!(
        limiter.check("k").await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    let _server = tokio::task::spawn_blocking(move || {
        server.restart().unwrap();
        server
    })
    .await
    .unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        if let Ok(Some(guard)) = coord.try_lock("x").await {
            guard.release().await.unwrap();
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "locks work again after the restart");
}
