use super::*;
use crate::Error;
use neo_core::{ErrorKind, ExposeSecret, HasErrorKind};

const KEY_1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // "0123456789abcdef" twice
const KEY_2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="; // "fedcba9876543210" twice

fn config(current: &str, keys: &[(&str, &str)]) -> SealConfig {
    SealConfig {
        current_key_id: current.into(),
        keys: keys
            .iter()
            .map(|(id, key)| ((*id).to_owned(), SecretString::from(*key)))
            .collect(),
        ..SealConfig::default()
    }
}

fn sealer(current: &str, keys: &[(&str, &str)]) -> Sealer {
    Sealer::from_config(&config(current, keys)).unwrap()
}

const ROW: Binding<'static> = Binding {
    table: "webhook_endpoints",
    column: "secrets",
    row: "row-1",
};

fn seal_problem(error: Error) -> (String, SealProblem) {
    match error {
        Error::Seal { key_id, problem } => (key_id, problem),
        other => panic!("expected a seal error, got {other:?}"),
    }
}

#[tokio::test]
async fn round_trip_bytes_and_text() {
    let s = sealer("k1", &[("k1", KEY_1)]);
    let sealed = s.seal(b"whsec_plain", &ROW).await.unwrap();
    assert_eq!(sealed[0], SEALED_VERSION);
    assert!(!sealed.windows(11).any(|w| w == b"whsec_plain"));
    assert_eq!(&*s.open(&sealed, &ROW).await.unwrap(), b"whsec_plain");

    let text = s.seal_text("bearer-token", &ROW).await.unwrap();
    assert!(Sealer::is_sealed_text(&text));
    assert!(!text.contains("bearer-token"));
    assert_eq!(
        s.open_text(&text, &ROW).await.unwrap().expose_secret(),
        "bearer-token"
    );
    // Two seals of one value differ (fresh nonce), both open.
    let again = s.seal_text("bearer-token", &ROW).await.unwrap();
    assert_ne!(text, again);
    assert_eq!(
        s.open_text(&again, &ROW).await.unwrap().expose_secret(),
        "bearer-token"
    );
    // A clone shares the cache and opens it too.
    assert_eq!(
        s.clone()
            .open_text(&text, &ROW)
            .await
            .unwrap()
            .expose_secret(),
        "bearer-token"
    );
}

#[tokio::test]
async fn a_value_moved_to_another_row_or_column_does_not_open() {
    let s = sealer("k1", &[("k1", KEY_1)]);
    let sealed = s.seal(b"secret", &ROW).await.unwrap();
    for other in [
        Binding {
            row: "row-2",
            ..ROW
        },
        Binding {
            column: "headers",
            ..ROW
        },
        Binding {
            table: "other",
            ..ROW
        },
    ] {
        let (key_id, problem) = seal_problem(s.open(&sealed, &other).await.unwrap_err());
        assert_eq!((key_id.as_str(), problem), ("k1", SealProblem::DoesNotOpen));
    }
    // An altered byte does not open either.
    let mut altered = sealed.clone();
    *altered.last_mut().unwrap() ^= 1;
    let (_, problem) = seal_problem(s.open(&altered, &ROW).await.unwrap_err());
    assert_eq!(problem, SealProblem::DoesNotOpen);
}

#[tokio::test]
async fn an_unknown_or_different_key_is_a_typed_error_naming_the_key_id() {
    let sealed = sealer("k1", &[("k1", KEY_1)])
        .seal_text("secret", &ROW)
        .await
        .unwrap();

    let error = sealer("k2", &[("k2", KEY_2)])
        .open_text(&sealed, &ROW)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Configuration);
    let message = error.to_string();
    assert!(message.contains("\"k1\""), "{message}");
    assert!(!message.contains("secret\""), "{message}");
    assert_eq!(
        seal_problem(error),
        ("k1".to_owned(), SealProblem::UnknownKey)
    );

    // The same id with other key material.
    let error = sealer("k1", &[("k1", KEY_2)])
        .open_text(&sealed, &ROW)
        .await
        .unwrap_err();
    assert_eq!(
        seal_problem(error),
        ("k1".to_owned(), SealProblem::WrongKey)
    );

    // Garbage is malformed, not a panic.
    let error = sealer("k1", &[("k1", KEY_1)])
        .open_text("sealed:AQ", &ROW)
        .await
        .unwrap_err();
    assert!(matches!(seal_problem(error).1, SealProblem::Malformed(_)));
}

#[tokio::test]
async fn a_second_key_keeps_old_values_opening_and_seals_new_ones() {
    let old = sealer("k1", &[("k1", KEY_1)]);
    let before = old.seal_text("old value", &ROW).await.unwrap();

    let rotated = sealer("k2", &[("k1", KEY_1), ("k2", KEY_2)]);
    assert_eq!(
        rotated
            .open_text(&before, &ROW)
            .await
            .unwrap()
            .expose_secret(),
        "old value"
    );
    let after = rotated.seal_text("new value", &ROW).await.unwrap();
    let bytes = URL_SAFE_NO_PAD
        .decode(after.strip_prefix(SEALED_TEXT_PREFIX).unwrap())
        .unwrap();
    assert_eq!(Parts::parse(&bytes).unwrap().key_id, "k2");
    assert_eq!(Sealer::key_id_of_text(&after).as_deref(), Some("k2"));
    assert_eq!(Sealer::key_id_of_text(&before).as_deref(), Some("k1"));
    assert_eq!(Sealer::key_id_of_text("whsec_abc"), None);
    assert_eq!(
        rotated
            .open_text(&after, &ROW)
            .await
            .unwrap()
            .expose_secret(),
        "new value"
    );
    // The old configuration does not hold k2.
    let error = old.open_text(&after, &ROW).await.unwrap_err();
    assert_eq!(
        seal_problem(error),
        ("k2".to_owned(), SealProblem::UnknownKey)
    );
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let error = Sealer::from_config(&config("k1", &[("k1", "c2hvcnQ=")])).unwrap_err();
    let (key_id, problem) = seal_problem(error);
    assert_eq!(key_id, "k1");
    assert!(matches!(problem, SealProblem::Provider(why) if why.contains("not 32")));
    let error = Sealer::from_config(&config("k9", &[("k1", KEY_1)])).unwrap_err();
    assert_eq!(
        seal_problem(error),
        ("k9".to_owned(), SealProblem::UnknownKey)
    );
}

#[test]
fn debug_shows_no_key_material() {
    let config = config("k1", &[("k1", KEY_1), ("k2", KEY_2)]);
    let s = Sealer::from_config(&config).unwrap();
    for shown in [format!("{config:?}"), format!("{s:?}")] {
        assert!(shown.contains("k1") && shown.contains("k2"), "{shown}");
        assert!(!shown.contains(KEY_1) && !shown.contains(KEY_2), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}

#[tokio::test]
async fn data_keys_are_cached_not_unwrapped_per_value() {
    #[derive(Debug)]
    struct Counting {
        inner: StaticKeyProvider,
        unwraps: std::sync::atomic::AtomicUsize,
        wraps: std::sync::atomic::AtomicUsize,
    }
    impl KeyProvider for Counting {
        fn current_key_id(&self) -> &str {
            self.inner.current_key_id()
        }
        fn wrap<'a>(
            &'a self,
            id: &'a str,
            key: &'a [u8],
        ) -> futures_util::future::BoxFuture<'a, Result<Vec<u8>>> {
            self.wraps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.wrap(id, key)
        }
        fn unwrap<'a>(
            &'a self,
            id: &'a str,
            wrapped: &'a [u8],
        ) -> futures_util::future::BoxFuture<'a, Result<Zeroizing<Vec<u8>>>> {
            self.unwraps
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.unwrap(id, wrapped)
        }
    }
    let provider = Arc::new(Counting {
        inner: StaticKeyProvider::from_config(&config("k1", &[("k1", KEY_1)])).unwrap(),
        unwraps: 0.into(),
        wraps: 0.into(),
    });
    let writer = Sealer::new(provider.clone(), 16);
    let mut sealed = Vec::new();
    for i in 0..50 {
        let row = i.to_string();
        sealed.push((
            row.clone(),
            writer
                .seal_text(&format!("v{i}"), &Binding { row: &row, ..ROW })
                .await
                .unwrap(),
        ));
    }
    // Another process's sealer (a fresh cache) unwraps the shared data key once.
    let reader = Sealer::new(provider.clone(), 16);
    for (i, (row, text)) in sealed.iter().enumerate() {
        let open = reader
            .open_text(text, &Binding { row, ..ROW })
            .await
            .unwrap();
        assert_eq!(open.expose_secret(), format!("v{i}"));
    }
    assert_eq!(provider.wraps.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        provider.unwraps.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn seal_and_open_cost_microseconds() {
    let s = sealer("k1", &[("k1", KEY_1)]);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let _ = s.seal_text(secret, &ROW).await.unwrap();
    let rounds = 2_000u32;
    let started = std::time::Instant::now();
    let mut last = String::new();
    for _ in 0..rounds {
        last = s.seal_text(secret, &ROW).await.unwrap();
    }
    let seal = started.elapsed() / rounds;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        assert_eq!(
            s.open_text(&last, &ROW).await.unwrap().expose_secret(),
            secret
        );
    }
    let open = started.elapsed() / rounds;
    tracing::info!(?seal, ?open, "seal_text/open_text per value");
    // Debug builds on a loaded machine: a generous bound that still catches a per-value
    // key-provider call or key derivation.
    assert!(
        seal < std::time::Duration::from_millis(2),
        "seal took {seal:?}"
    );
    assert!(
        open < std::time::Duration::from_millis(2),
        "open took {open:?}"
    );
}

#[tokio::test]
async fn keys_change_at_run_time_and_only_old_keys_retire() {
    let s = sealer("k1", &[("k1", KEY_1)]);
    let before = s.seal_text("old value", &ROW).await.unwrap();
    let clone = s.clone();
    let both =
        StaticKeyProvider::from_config(&config("k2", &[("k1", KEY_1), ("k2", KEY_2)])).unwrap();
    s.replace_provider(Arc::new(both));
    // Every clone sees the new keys: new values under k2, old ones still open.
    assert_eq!(clone.current_key_id(), "k2");
    let after = clone.seal_text("new value", &ROW).await.unwrap();
    assert_eq!(Sealer::key_id_of_text(&after).as_deref(), Some("k2"));
    assert_eq!(
        clone
            .open_text(&before, &ROW)
            .await
            .unwrap()
            .expose_secret(),
        "old value"
    );
    // The current key is not retired; an unknown one is named.
    let (key_id, problem) = seal_problem(s.retire_key("k2").await.unwrap_err());
    assert_eq!(key_id, "k2");
    assert!(matches!(problem, SealProblem::Provider(why) if why.contains("current")));
    assert_eq!(
        seal_problem(s.retire_key("k9").await.unwrap_err()),
        ("k9".to_owned(), SealProblem::UnknownKey)
    );
    // Retired, k1 values no longer open (not even from the cache).
    s.retire_key("k1").await.unwrap();
    assert_eq!(
        seal_problem(clone.open_text(&before, &ROW).await.unwrap_err()),
        ("k1".to_owned(), SealProblem::UnknownKey)
    );
    assert_eq!(
        s.open_text(&after, &ROW).await.unwrap().expose_secret(),
        "new value"
    );
    let error = seal_error("k1", SealProblem::StillInUse { rows: 3 });
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert!(error.to_string().contains("\"k1\"") && error.to_string().contains("3 stored row"));
}

#[tokio::test]
async fn a_sealed_column_value_opens_for_its_binding_only_and_shows_no_plaintext() {
    let s = sealer("k1", &[("k1", KEY_1)]);
    let value = Sealed::seal(&s, &"4111-1111".to_owned(), &ROW)
        .await
        .unwrap();
    assert_eq!(value.key_id(), Some("k1"));
    assert_eq!(value.open(&s, &ROW).await.unwrap(), "4111-1111");
    let shown = format!("{value:?}");
    assert!(shown.contains("k1") && !shown.contains("4111"), "{shown}");
    let other = Binding {
        row: "row-2",
        ..ROW
    };
    assert_eq!(
        seal_problem(value.open(&s, &other).await.unwrap_err()).1,
        SealProblem::DoesNotOpen
    );
    // Re-sealing moves it to the current key, and is a no-op when it is there already.
    s.replace_provider(Arc::new(
        StaticKeyProvider::from_config(&config("k2", &[("k1", KEY_1), ("k2", KEY_2)])).unwrap(),
    ));
    let moved = value.reseal(&s, &ROW).await.unwrap();
    assert_eq!(moved.key_id(), Some("k2"));
    assert_eq!(moved.reseal(&s, &ROW).await.unwrap(), moved);
    assert_eq!(moved.open(&s, &ROW).await.unwrap(), "4111-1111");
    assert!(Sealed::<String>::from_bytes(b"not sealed".to_vec()).is_err());
    assert_eq!(
        Sealed::<String>::from_bytes(moved.as_bytes().to_vec()).unwrap(),
        moved
    );
}
