use neo_core::{
    CountryCode, DomainName, EmailAddress, Error, HttpsUrl, Metadata, MetadataLimits, Slug,
};
use serde_json::json;

fn reason(err: &Error) -> String {
    err.to_string()
}

#[test]
fn slug_accepts_valid_and_says_what_is_wrong() {
    for ok in ["abc", "acme-corp", "a1b2c3", "x-y-z", &"a".repeat(64)] {
        assert_eq!(Slug::parse(ok).unwrap().as_str(), ok);
    }
    let cases = [
        ("ab", "must be 3-64 characters, got 2"),
        ("Acme", "must be lowercase"),
        ("-acme", "must not start with a hyphen"),
        ("acme-", "must not end with a hyphen"),
        ("ac--me", "two hyphens in a row"),
        ("ac me", "character ' ' at position 2"),
        ("admin", "reserved word"),
        ("émile", "character 'é'"),
    ];
    for (input, expected) in cases {
        let msg = reason(&Slug::parse(input).unwrap_err());
        assert!(msg.starts_with("invalid slug: "), "{msg}");
        assert!(msg.contains(expected), "{input:?}: {msg}");
    }
    assert!(Slug::parse(&"a".repeat(65)).is_err());
    assert!(Slug::parse_with_reserved("admin", &["billing"]).is_ok());
    assert!(Slug::parse_with_reserved("billing", &["billing"]).is_err());
    for word in Slug::RESERVED {
        assert!(Slug::parse(word).is_err(), "{word}");
    }
    // A host's reserved word longer than any default one is still refused.
    let long = "our-very-own-reserved-route";
    assert!(Slug::parse(long).is_ok());
    assert!(Slug::parse_with_reserved(long, &["billing", long]).is_err());
}

#[test]
fn slugify_derives_a_valid_slug() {
    assert_eq!(Slug::slugify("Acme Corp").unwrap().as_str(), "acme-corp");
    assert_eq!(
        Slug::slugify("--Über  Straße!!").unwrap().as_str(),
        "uber-strasse"
    );
    assert_eq!(
        Slug::slugify(&"Long name ".repeat(20))
            .unwrap()
            .as_str()
            .len(),
        64
    );
    assert!(Slug::slugify("!!").is_err());
}

#[test]
fn slugify_transliterates_names_in_any_script() {
    let cases = [
        ("Łódź Software", "lodz-software"),                    // Polish
        ("Dvořák & Co", "dvorak-co"),                          // Czech
        ("Škoda Auto", "skoda-auto"),                          // Czech
        ("Müller Straßenbau GmbH", "muller-strassenbau-gmbh"), // German
        ("İstanbul Çiçek Ağacı", "istanbul-cicek-agaci"),      // Turkish
        ("Αθήνα Λογισμικό", "athena-logismiko"),               // Greek
        ("Москва Групп", "moskva-grupp"),                      // Cyrillic
        ("北京", "bei-jing"),                                  // Chinese
        ("東京テクノロジー", "dong-jing-tekunorozi"),          // Japanese (kanji + katakana)
        ("さくら", "sakura"),                                  // Japanese hiragana
    ];
    for (name, expected) in cases {
        let slug = Slug::slugify(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(slug.as_str(), expected, "{name:?}");
        assert!(Slug::parse(slug.as_str()).is_ok());
    }
    // A cut at MAX_LEN never leaves a trailing hyphen, whatever the script.
    let long = Slug::slugify(&"Łódź ".repeat(40)).unwrap();
    assert!(long.as_str().len() <= Slug::MAX_LEN);
    assert!(!long.as_str().ends_with('-'));
    // Characters without a transliteration (private use) are separators.
    assert_eq!(
        Slug::slugify("\u{E000}Rocket\u{E001}Labs\u{E002}")
            .unwrap()
            .as_str(),
        "rocket-labs"
    );
}

#[test]
fn string_values_refuse_surrounding_whitespace() {
    type Parse = fn(&str) -> Result<(), Error>;
    let inputs: [(&str, Parse); 5] = [
        ("a@b.com", |t| EmailAddress::parse(t).map(drop)),
        ("example.com", |t| DomainName::parse(t).map(drop)),
        ("acme-corp", |t| Slug::parse(t).map(drop)),
        ("DE", |t| CountryCode::parse(t).map(drop)),
        ("https://example.com/hook", |t| HttpsUrl::parse(t).map(drop)),
    ];
    for (valid, parse) in inputs {
        assert!(parse(valid).is_ok(), "{valid:?}");
        for padded in [
            format!("{valid} "),
            format!(" {valid}"),
            format!("\t{valid}\n"),
        ] {
            let msg = reason(&parse(&padded).unwrap_err());
            assert!(
                msg.contains("leading or trailing whitespace"),
                "{padded:?}: {msg}"
            );
        }
    }
}

#[test]
fn email_normalises_domain_and_refuses_bad_parts() {
    let e = EmailAddress::parse("a.b+c@Sub.Example.ORG").unwrap();
    assert_eq!(e.as_str(), "a.b+c@sub.example.org");
    let idn = EmailAddress::parse("info@bücher.de").unwrap();
    assert_eq!(idn.domain(), "xn--bcher-kva.de");
    let cases = [
        ("plain", "must contain '@'"),
        ("@example.com", "local part before '@' is empty"),
        (".a@example.com", "leading, trailing or double dot"),
        ("a..b@example.com", "leading, trailing or double dot"),
        ("a b@example.com", "character ' '"),
        ("a@localhost", "at least two labels"),
        ("a@-x.com", "starts or ends with a hyphen"),
    ];
    for (input, expected) in cases {
        let msg = reason(&EmailAddress::parse(input).unwrap_err());
        assert!(msg.starts_with("invalid email address: "), "{msg}");
        assert!(msg.contains(expected), "{input:?}: {msg}");
    }
    let long_local = format!("{}@example.com", "a".repeat(65));
    assert!(reason(&EmailAddress::parse(&long_local).unwrap_err()).contains("at most 64"));
}

#[test]
fn domain_names_are_idna_aware() {
    assert_eq!(
        DomainName::parse("Example.COM.").unwrap().as_str(),
        "example.com"
    );
    assert_eq!(
        DomainName::parse("münchen.de").unwrap().as_str(),
        "xn--mnchen-3ya.de"
    );
    assert_eq!(
        DomainName::parse("xn--mnchen-3ya.de").unwrap().to_unicode(),
        "münchen.de"
    );
    assert!(DomainName::parse("corp.internal").is_ok());
    for (input, expected) in [
        ("", "must not be empty"),
        ("com", "at least two labels"),
        ("a..com", "empty label"),
        ("192.168.0.1", "IP addresses"),
        ("under_score.com", "character '_'"),
    ] {
        let msg = reason(&DomainName::parse(input).unwrap_err());
        assert!(msg.contains(expected), "{input:?}: {msg}");
    }
    let long_label = format!("{}.com", "a".repeat(64));
    assert!(reason(&DomainName::parse(&long_label).unwrap_err()).contains("exceeds 63"));
    let long_name = vec!["abcdefghij"; 30].join(".");
    assert!(reason(&DomainName::parse(&long_name).unwrap_err()).contains("at most 253"));
    let parent = DomainName::parse("example.com").unwrap();
    assert!(
        DomainName::parse("a.example.com")
            .unwrap()
            .is_subdomain_of(&parent)
    );
    assert!(
        !DomainName::parse("badexample.com")
            .unwrap()
            .is_subdomain_of(&parent)
    );
}

#[test]
fn country_codes_are_the_assigned_ones() {
    assert_eq!(CountryCode::ALL.len(), 249);
    assert!(
        CountryCode::ALL.windows(2).all(|w| w[0] < w[1]),
        "list must stay sorted"
    );
    assert_eq!(CountryCode::parse("de").unwrap().as_str(), "DE");
    assert_eq!(
        format!("{:?}", CountryCode::parse("US").unwrap()),
        "CountryCode(US)"
    );
    assert!(reason(&CountryCode::parse("XX").unwrap_err()).contains("not an assigned"));
    assert!(reason(&CountryCode::parse("DEU").unwrap_err()).contains("two letters"));
    assert!(CountryCode::parse("D1").is_err());
}

#[test]
fn https_urls_refuse_other_schemes_and_credentials() {
    let url = HttpsUrl::parse("https://hooks.example.com/path?token=secret").unwrap();
    assert_eq!(url.host(), "hooks.example.com");
    let debug = format!("{url:?}");
    assert!(
        !debug.contains("secret"),
        "query must not reach Debug: {debug}"
    );
    for (input, expected) in [
        ("http://example.com", "scheme must be https"),
        ("https://u:p@example.com", "credentials"),
        ("https://example.com/#frag", "fragment"),
        ("not a url", "not a URL"),
    ] {
        let msg = reason(&HttpsUrl::parse(input).unwrap_err());
        assert!(msg.contains(expected), "{input:?}: {msg}");
        assert!(!msg.contains("u:p"), "credentials echoed: {msg}");
    }
    assert!(HttpsUrl::parse(&format!("https://example.com/{}", "a".repeat(2100))).is_err());
}

#[test]
fn metadata_enforces_each_limit() {
    let limits = MetadataLimits {
        max_bytes: 64,
        max_depth: 2,
        max_keys: 3,
        max_key_len: 8,
    };
    assert!(Metadata::new(json!({"a": {"b": 1}}), &limits).is_ok());
    let depth = Metadata::new(json!({"a": {"b": {"c": 1}}}), &limits).unwrap_err();
    assert_eq!(depth.to_string(), "metadata depth limit exceeded: 3 > 2");
    let keys = Metadata::new(json!({"a": 1, "b": 2, "c": {"d": 1}}), &limits).unwrap_err();
    assert_eq!(keys.to_string(), "metadata key count limit exceeded: 4 > 3");
    let size = Metadata::new(json!({"a": "x".repeat(100)}), &limits).unwrap_err();
    assert!(
        size.to_string().starts_with("metadata size limit exceeded"),
        "{size}"
    );
    let key = Metadata::new(json!({"waytoolongkey": 1}), &limits).unwrap_err();
    assert!(key.to_string().contains("exceeds 8"), "{key}");
    assert!(Metadata::new(json!([1, 2]), &limits).is_err());
    assert!(Metadata::new(json!({"": 1}), &limits).is_err());
    let arrays = Metadata::new(json!({"a": [[1]]}), &limits).unwrap_err();
    assert!(arrays.to_string().contains("depth"), "{arrays}");
}

#[test]
fn metadata_merge_is_deep_and_leaves_the_original_alone_on_error() {
    let limits = MetadataLimits {
        max_keys: 4,
        ..MetadataLimits::default()
    };
    let base = Metadata::new(
        json!({"plan": {"tier": "pro", "seats": 5}, "x": 1}),
        &limits,
    )
    .unwrap();
    let merged = base
        .merge(&json!({"plan": {"seats": 9}, "x": null}), &limits)
        .unwrap();
    assert_eq!(
        merged.into_value(),
        json!({"plan": {"tier": "pro", "seats": 9}})
    );
    let too_many = base.merge(&json!({"y": 1, "z": 2}), &limits).unwrap_err();
    assert!(too_many.to_string().contains("key count"), "{too_many}");
    assert_eq!(base.as_map().len(), 2, "the original is unchanged");
    assert!(base.merge(&json!("not an object"), &limits).is_err());
}

#[test]
fn value_objects_deserialize_through_their_constructor() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code, reason = "fields are only deserialized")]
    struct Org {
        slug: Slug,
        email: EmailAddress,
        country: CountryCode,
        domain: DomainName,
        site: HttpsUrl,
        metadata: Metadata,
    }
    let ok = json!({"slug": "acme", "email": "a@acme.io", "country": "fr", "domain": "acme.io",
                    "site": "https://acme.io", "metadata": {"k": "v"}});
    let org: Org = serde_json::from_value(ok.clone()).unwrap();
    assert_eq!(org.country.as_str(), "FR");
    let mut bad = ok;
    bad["slug"] = json!("Bad Slug");
    let err = serde_json::from_value::<Org>(bad).unwrap_err();
    assert!(err.to_string().contains("invalid slug"), "{err}");
    let slug: Slug = serde_json::from_str("\"acme\"").unwrap();
    assert_eq!(serde_json::to_string(&slug).unwrap(), "\"acme\"");
}
