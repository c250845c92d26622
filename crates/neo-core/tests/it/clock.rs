use neo_core::{Clock, ManualClock, SystemClock};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn manual_clock_moves_only_when_told_and_clones_share_time() {
    let clock = ManualClock::new(chrono::DateTime::UNIX_EPOCH);
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    assert_eq!(shared.now(), chrono::DateTime::UNIX_EPOCH);
    clock.advance(Duration::from_millis(1500));
    assert_eq!(shared.now().timestamp_millis(), 1500);
    clock.advance(Duration::MAX);
    assert_eq!(shared.now(), chrono::DateTime::<chrono::Utc>::MAX_UTC);
}

#[test]
fn system_clock_follows_the_wall_clock() {
    let before = chrono::Utc::now();
    let now = SystemClock.now();
    assert!(now >= before && now <= chrono::Utc::now());
}
