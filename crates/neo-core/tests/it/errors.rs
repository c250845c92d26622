use neo_core::{Error, ErrorKind, HasErrorKind};
use std::collections::BTreeSet;

#[test]
fn kinds_have_unique_labels_and_sensible_statuses() {
    let labels: BTreeSet<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(labels.len(), ErrorKind::ALL.len());
    for kind in ErrorKind::ALL {
        assert_eq!(kind.to_string(), kind.as_str());
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("\"{}\"", kind.as_str()));
        assert!((400..600).contains(&kind.http_status()));
    }
    let retryable: Vec<_> = ErrorKind::ALL
        .into_iter()
        .filter(|k| k.is_retryable())
        .collect();
    assert_eq!(
        retryable,
        [
            ErrorKind::RateLimited,
            ErrorKind::Unavailable,
            ErrorKind::Timeout
        ]
    );
}

#[test]
fn core_errors_are_send_sync_static_and_classified() {
    fn assert_bounds<T: std::error::Error + Send + Sync + 'static>() {}
    assert_bounds::<Error>();
    let err = Error::Config("x".into());
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(!err.is_not_found());
    let display = neo_core::Slug::parse("A").unwrap_err().to_string();
    assert!(
        display.chars().next().unwrap().is_lowercase() && !display.ends_with('.'),
        "{display}"
    );
}
