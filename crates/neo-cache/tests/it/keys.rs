//! Keys, tags and patterns from anywhere: any text gets a value or a typed validation error,
//! never a panic, and a refused write stores nothing.

use neo_cache::{Cache, CacheConfig, EntryOptions, HybridCache};
use neo_core::{ErrorKind, HasErrorKind};
use proptest::prelude::*;

proptest! {
    #[test]
    fn any_key_tag_or_pattern_is_taken_or_refused_with_a_typed_error(text in any::<String>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let cache = HybridCache::<u32>::memory(CacheConfig::named("keys")).unwrap();
            let refused = |result: neo_cache::Result<()>| match result {
                Ok(()) => false,
                Err(error) => {
                    assert_eq!(error.kind(), ErrorKind::Validation, "{error}");
                    true
                }
            };
            let set = cache.set(&text, 1, &EntryOptions::default()).await;
            let key_refused = refused(set);
            let got = cache.get(&text).await;
            if key_refused {
                assert_eq!(got.unwrap_err().kind(), ErrorKind::Validation);
            } else {
                assert_eq!(got.unwrap(), Some(1));
            }
            let tagged = cache.set("k", 2, &EntryOptions::default().tag(text.clone())).await;
            if refused(tagged) {
                assert_eq!(cache.get("k").await.unwrap(), None, "a refused write stores nothing");
            }
            refused(cache.invalidate_tag(&text).await.map(|_| ()));
            refused(cache.invalidate_pattern(&text).await.map(|_| ()));
            refused(cache.remove_many(&[text.as_str()]).await);
        });
    }
}
