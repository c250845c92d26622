use crate::{Mode, coord, in_every_mode, sibling};
use neo_coord::Role;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

in_every_mode!(
    one_leader_at_a_time_with_increasing_epochs_and_fast_handover_on_resign,
    racing_candidates_never_share_an_epoch,
);

async fn one_leader_at_a_time_with_increasing_epochs_and_fast_handover_on_resign(mode: Mode) {
    let (env, a) = coord(mode, |c| c).await;
    let candidates: Vec<_> = (0..3)
        .map(|_| sibling(&env, &a).campaign("scheduler").unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let leader = loop {
        let leaders: Vec<usize> = (0..3)
            .filter(|i| matches!(candidates[*i].role(), Role::Leader { .. }))
            .collect();
        assert!(leaders.len() <= 1, "two leaders at once");
        if leaders.len() == 1 {
            break leaders[0];
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let Role::Leader { epoch: first_epoch } = candidates[leader].role() else {
        unreachable!()
    };

    // The leader resigns: another is elected with a higher epoch, well before the TTL.
    let mut candidates = candidates;
    let resigned = candidates.remove(leader);
    let resigned_at = Instant::now();
    resigned.resign().await;
    let (next, epoch) = loop {
        let leaders: Vec<(usize, u64)> = candidates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c.role() {
                Role::Leader { epoch } => Some((i, epoch)),
                Role::Follower => None,
            })
            .collect();
        assert!(leaders.len() <= 1);
        if let Some(found) = leaders.first() {
            break *found;
        }
        assert!(
            resigned_at.elapsed() < Duration::from_secs(2),
            "no handover"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(epoch > first_epoch);
    let _ = next;
}

async fn racing_candidates_never_share_an_epoch(mode: Mode) {
    let (env, a) = coord(mode, |c| neo_coord::CoordConfig {
        leader_ttl: Duration::from_millis(90),
        ..c
    })
    .await;
    // Candidates that keep resigning and rejoining, so leadership changes hands many times.
    let mut tasks = Vec::new();
    for id in 0..3 {
        let coord = sibling(&env, &a);
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let until = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < until {
                let mut candidacy = coord.campaign("race").unwrap();
                let changed =
                    tokio::time::timeout(Duration::from_millis(200), candidacy.changed()).await;
                if let Ok(Role::Leader { epoch }) = changed {
                    won.push((epoch, id));
                }
                candidacy.resign().await;
            }
            won
        }));
    }
    let mut by_epoch: HashMap<u64, Vec<usize>> = HashMap::new();
    for task in tasks {
        for (epoch, id) in task.await.unwrap() {
            by_epoch.entry(epoch).or_default().push(id);
        }
    }
    assert!(
        by_epoch.len() >= 5,
        "leadership changed hands {} times",
        by_epoch.len()
    );
    for (epoch, winners) in by_epoch {
        assert_eq!(winners.len(), 1, "epoch {epoch} won by {winners:?}");
    }
}
