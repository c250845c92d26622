use neo_core::{CountMode, CursorRequest, PageRequest, PaginationConfig};

#[test]
fn limits_are_clamped_and_defaulted() {
    let config = PaginationConfig {
        default_limit: 25,
        max_limit: 100,
        max_offset: 1_000,
    };
    assert_eq!(PageRequest::new(0, None, &config).limit(), 25);
    assert_eq!(PageRequest::new(0, Some(0), &config).limit(), 1);
    assert_eq!(PageRequest::new(0, Some(10_000), &config).limit(), 100);
    assert_eq!(PageRequest::new(5_000, Some(10), &config).offset(), 1_000);
    let counted = PageRequest::new(0, Some(10), &config).with_count(CountMode::Estimated);
    assert_eq!(counted.count(), CountMode::Estimated);
    let first: CursorRequest<(String, u64)> = CursorRequest::first(Some(500), &config);
    assert_eq!((first.limit(), first.position()), (100, None));
    let next = CursorRequest::after(("b".to_owned(), 2), Some(3), &config);
    assert_eq!(next.position(), Some(&("b".to_owned(), 2)));
}

#[test]
fn a_zero_max_limit_still_returns_one_row_pages() {
    let config = PaginationConfig {
        max_limit: 0,
        ..PaginationConfig::default()
    };
    assert_eq!(config.clamp_limit(Some(7)), 1);
}

#[test]
fn config_deserializes_with_defaults_for_missing_fields() {
    let config: PaginationConfig = serde_json::from_str(r#"{"max_limit": 500}"#).unwrap();
    assert_eq!(
        config,
        PaginationConfig {
            max_limit: 500,
            ..PaginationConfig::default()
        }
    );
}
