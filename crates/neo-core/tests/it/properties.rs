//! Property tests: every parser round-trips what it accepts and never panics on anything.

use neo_core::{
    CountryCode, CursorCodec, DomainName, EmailAddress, HttpsUrl, Metadata, MetadataLimits,
    OrganizationId, Slug,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic(text in any::<String>()) {
        let _ = Slug::parse(&text);
        let _ = Slug::slugify(&text);
        let _ = EmailAddress::parse(&text);
        let _ = DomainName::parse(&text);
        let _ = CountryCode::parse(&text);
        let _ = HttpsUrl::parse(&text);
        let _ = OrganizationId::parse(&text);
        let _ = neo_core::is_resource_name(&text);
        let codec = CursorCodec::new(vec![7; 32]).unwrap();
        let _ = codec.decode::<serde_json::Value>(&text);
        let _ = serde_json::from_str::<serde_json::Value>(&text)
            .map(|v| Metadata::new(v, &MetadataLimits::default()));
    }

    #[test]
    fn slug_round_trips(text in "[a-z0-9]{1,10}(-[a-z0-9]{1,10}){0,4}") {
        if let Ok(slug) = Slug::parse(&text) {
            prop_assert_eq!(slug.as_str(), text.as_str());
            prop_assert_eq!(Slug::parse(slug.as_str()).unwrap(), slug);
        } else {
            prop_assert!(text.len() < 3 || Slug::RESERVED.contains(&text.as_str()));
        }
    }

    #[test]
    fn slug_accepts_exactly_what_its_rules_describe(
        text in "[a-z0-9\\- Aé_]{0,6}|[a-z0-9\\-]{0,70}|[a-z0-9\\-]{2,66}[ Aé_]?"
    ) {
        // The rules spelled out char by char, independently of the parser's byte scan.
        let chars: Vec<char> = text.chars().collect();
        let well_formed = (Slug::MIN_LEN..=Slug::MAX_LEN).contains(&text.len())
            && chars.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            && chars.first() != Some(&'-')
            && chars.last() != Some(&'-')
            && !text.contains("--");
        let reserved = Slug::RESERVED.contains(&text.as_str());
        prop_assert_eq!(Slug::parse(&text).is_ok(), well_formed && !reserved, "{:?}", text);
        prop_assert_eq!(Slug::parse_with_reserved(&text, &[]).is_ok(), well_formed, "{:?}", text);
    }

    #[test]
    fn slugify_output_is_a_valid_slug(text in any::<String>()) {
        if let Ok(slug) = Slug::slugify(&text) {
            prop_assert_eq!(Slug::parse(slug.as_str()).unwrap(), slug);
        }
    }

    #[test]
    fn email_round_trips(local in "[a-zA-Z0-9_+-]{1,20}(\\.[a-z0-9]{1,8}){0,2}", domain in "[a-z][a-z0-9]{0,15}\\.[a-z]{2,6}") {
        let text = format!("{local}@{domain}");
        let email = EmailAddress::parse(&text).unwrap();
        prop_assert_eq!(email.as_str(), text.as_str());
        prop_assert_eq!(EmailAddress::parse(email.as_str()).unwrap(), email);
    }

    #[test]
    fn domain_parse_is_idempotent(text in "\\PC{1,40}\\.[a-z]{2,5}") {
        if let Ok(domain) = DomainName::parse(&text) {
            prop_assert_eq!(DomainName::parse(domain.as_str()).unwrap(), domain.clone());
            prop_assert_eq!(DomainName::parse(&domain.to_unicode()).unwrap(), domain);
        }
    }

    #[test]
    fn country_codes_round_trip(index in 0..CountryCode::ALL.len()) {
        let code = CountryCode::ALL[index];
        let parsed = CountryCode::parse(&code.to_lowercase()).unwrap();
        prop_assert_eq!(parsed.as_str(), code);
    }

    #[test]
    fn https_urls_round_trip(host in "[a-z]{1,10}\\.[a-z]{2,5}", path in "(/[a-z0-9]{1,8}){0,3}") {
        let url = HttpsUrl::parse(&format!("https://{host}{path}")).unwrap();
        prop_assert_eq!(HttpsUrl::parse(url.as_str()).unwrap(), url);
    }

    #[test]
    fn ids_round_trip(_n in 0..100u8) {
        let id = OrganizationId::new();
        prop_assert_eq!(OrganizationId::parse(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn cursors_round_trip(name in any::<String>(), n in any::<i64>()) {
        let codec = CursorCodec::new(vec![1; 32]).unwrap();
        let token = codec.encode(&(name.clone(), n)).unwrap();
        prop_assert_eq!(codec.decode::<(String, i64)>(&token).unwrap(), (name, n));
    }

    #[test]
    fn metadata_merge_never_exceeds_limits(
        base in proptest::collection::btree_map("[a-z]{1,4}", any::<i32>(), 0..10),
        patch in proptest::collection::btree_map("[a-z]{1,4}", any::<Option<i32>>(), 0..10),
    ) {
        let limits = MetadataLimits { max_keys: 8, ..MetadataLimits::default() };
        if let Ok(meta) = Metadata::new(serde_json::to_value(&base).unwrap(), &limits) {
            match meta.merge(&serde_json::to_value(&patch).unwrap(), &limits) {
                Ok(merged) => prop_assert!(merged.as_map().len() <= 8),
                Err(e) => prop_assert!(e.to_string().contains("key count")),
            }
        }
    }
}
