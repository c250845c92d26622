use crate::Failure;
use neo_batch::{DataLoader, Error, LoaderConfig};
use neo_core::{ErrorKind, HasErrorKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Calls = Arc<Mutex<Vec<Vec<u32>>>>;

fn loader(config: LoaderConfig, calls: &Calls) -> DataLoader<u32, String> {
    let calls = Arc::clone(calls);
    DataLoader::new(config, move |keys: Vec<u32>| {
        calls.lock().unwrap().push(keys.clone());
        async move {
            if keys.contains(&666) {
                return Err(Failure(ErrorKind::Unavailable));
            }
            // 404 is never found; the batch may also return keys nobody asked for.
            let mut found: HashMap<u32, String> = keys
                .into_iter()
                .filter(|k| *k != 404)
                .map(|k| (k, format!("v{k}")))
                .collect();
            found.insert(9999, "extra".into());
            Ok(found)
        }
    })
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn concurrent_loads_become_one_batch_with_duplicates_loaded_once() {
    let calls = Calls::default();
    let loader = loader(LoaderConfig::default(), &calls);
    let mut tasks = Vec::new();
    for i in 0..100_u32 {
        let loader = loader.clone();
        tasks.push(tokio::spawn(async move { loader.load(i % 50).await }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().unwrap(), Some(format!("v{}", i % 50)));
    }
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].len(), 50, "each key once");
}

#[tokio::test(start_paused = true)]
async fn missing_keys_are_none_and_a_failed_batch_fails_its_callers_only() {
    let calls = Calls::default();
    let loader = loader(
        LoaderConfig {
            cache: false,
            ..LoaderConfig::default()
        },
        &calls,
    );
    let results = loader.load_many(vec![1, 404, 2]).await;
    assert_eq!(results[0].as_ref().unwrap().as_deref(), Some("v1"));
    assert_eq!(results[1].as_ref().unwrap(), &None);

    let (bad, also_bad, bad_again) =
        tokio::join!(loader.load(666), loader.load(3), loader.load(666));
    let err = bad.unwrap_err();
    assert!(matches!(err, Error::Batch { size: 2, .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(also_bad.is_err(), "3 shared 666's batch");
    assert!(
        bad_again.is_err(),
        "every caller waiting for 666 hears of the failure"
    );
    // The next batch is unaffected.
    assert_eq!(loader.load(3).await.unwrap().as_deref(), Some("v3"));
}

#[tokio::test(start_paused = true)]
async fn a_window_gathers_loads_that_arrive_within_it() {
    let calls = Calls::default();
    let loader = loader(
        LoaderConfig {
            window: Duration::from_millis(20),
            ..LoaderConfig::default()
        },
        &calls,
    );
    let late = {
        let loader = loader.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            loader.load(2).await
        })
    };
    assert_eq!(loader.load(1).await.unwrap().as_deref(), Some("v1"));
    assert_eq!(late.await.unwrap().unwrap().as_deref(), Some("v2"));
    assert_eq!(*calls.lock().unwrap(), vec![vec![1, 2]]);
}

#[tokio::test(start_paused = true)]
async fn max_batch_splits_and_the_cache_serves_repeats() {
    let calls = Calls::default();
    let loader = loader(
        LoaderConfig {
            max_batch: 10,
            ..LoaderConfig::default()
        },
        &calls,
    );
    let results = loader.load_many((0..25).collect()).await;
    assert!(results.iter().all(Result::is_ok));
    let sizes: Vec<usize> = calls.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    // Cached for the loader's lifetime (one request).
    loader.load(3).await.unwrap();
    assert_eq!(calls.lock().unwrap().len(), 3);
    loader.clear_cache();
    loader.load(3).await.unwrap();
    assert_eq!(calls.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn invalid_settings_are_refused() {
    let calls = Calls::default();
    let bad = LoaderConfig {
        max_batch: 0,
        ..LoaderConfig::default()
    };
    let err = DataLoader::<u32, String>::new(bad, move |k: Vec<u32>| {
        calls.lock().unwrap().push(k);
        async { Ok::<HashMap<u32, String>, Failure>(HashMap::new()) }
    })
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("max_batch"), "{err}");
}
