use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{Ident, MAX_IDENTIFIER_LEN, Schema, TableName, quote_identifier};
use proptest::prelude::*;

#[test]
fn accepts_plain_lowercase_names_and_quotes_them() {
    assert_eq!(quote_identifier("orders").unwrap(), "\"orders\"");
    assert_eq!(quote_identifier("_x9").unwrap(), "\"_x9\"");
    assert_eq!(Ident::new("a").unwrap().as_str(), "a");
    let longest = "a".repeat(MAX_IDENTIFIER_LEN);
    assert!(quote_identifier(&longest).is_ok());
    assert_eq!(
        TableName::parse("tenant_1.orders").unwrap().to_string(),
        "\"tenant_1\".\"orders\""
    );
}

#[test]
fn rejects_everything_else_with_a_reason() {
    let cases = [
        ("", "empty"),
        ("9lives", "digit"),
        ("Orders", "lowercase"),
        ("a b", "' '"),
        ("a\"b", "'\"'"),
        ("a;b", "';'"),
        ("naïve", "'ï'"),
        ("a-b", "'-'"),
    ];
    for (name, says) in cases {
        let err = quote_identifier(name).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Validation);
        assert!(err.to_string().contains(says), "{name:?}: {err}");
    }
    let err = quote_identifier(&"a".repeat(MAX_IDENTIFIER_LEN + 1)).unwrap_err();
    assert!(err.to_string().contains("64 bytes"), "{err}");
    assert!(TableName::parse("a.b.c").is_err());
    assert!(TableName::parse(".b").is_err());
    assert!(Schema::new("information_schema").is_err());
    assert!(Schema::new("pg_toast").is_err());
}

proptest! {
    #[test]
    fn quoted_output_is_always_a_safe_identifier(name in "\\PC{0,80}") {
        match quote_identifier(&name) {
            Ok(quoted) => {
                prop_assert_eq!(&quoted[1..quoted.len() - 1], name.as_str());
                prop_assert!(quoted[1..quoted.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            }
            Err(err) => prop_assert_eq!(err.kind(), ErrorKind::Validation),
        }
    }
}
