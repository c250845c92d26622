use neo_core::{ErrorKind, HasErrorKind};
use neo_events::{SignatureError, Verifier, WebhookSecret, sign};
use proptest::prelude::*;
use reqwest::header::{HeaderMap, HeaderValue};
use standardwebhooks::Webhook;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW: i64 = 1_700_000_000;

/// Published test vectors of the Standard Webhooks project (github.com/standard-webhooks/
/// standard-webhooks): (secret, webhook-id, webhook-timestamp, payload, webhook-signature).
const VECTORS: [(&str, &str, i64, &str, &str); 2] = [
    // libraries/go/webhook_test.go, TestWebhookSign.
    (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        r#"{"test": 2432232314}"#,
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ),
    // libraries/rust/src/lib.rs, test_sign.
    (
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        1_649_367_553,
        r#"{"email":"test@example.com","username":"test_user"}"#,
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
    ),
];

/// A signature from the same tests that matches none of their messages.
const FOREIGN_SIGNATURE: &str = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";

fn unix_now() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

/// The headers a receiver using the reference crate reads.
fn header_map(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (neo_events::HEADER_ID, id.to_owned()),
        (neo_events::HEADER_TIMESTAMP, timestamp.to_string()),
        (neo_events::HEADER_SIGNATURE, signature.to_owned()),
    ] {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    headers
}

#[test]
fn signatures_match_the_published_test_vectors() {
    for (secret, id, timestamp, body, expected) in VECTORS {
        let ours = WebhookSecret::parse(secret).unwrap();
        assert_eq!(ours.sign(id, timestamp, body.as_bytes()), expected, "{id}");
        assert_eq!(
            Webhook::new(secret)
                .unwrap()
                .sign(id, timestamp, body.as_bytes())
                .unwrap(),
            expected,
            "the reference crate agrees with its own vector"
        );
        let published = neo_events::SignedHeaders {
            id: id.to_owned(),
            timestamp,
            signature: expected.to_owned(),
        };
        let verifier = Verifier::new(vec![ours]);
        assert!(
            verifier
                .verify_at(&published, body.as_bytes(), timestamp)
                .is_ok()
        );
        let foreign = neo_events::SignedHeaders {
            signature: FOREIGN_SIGNATURE.to_owned(),
            ..published
        };
        assert_eq!(
            verifier.verify_at(&foreign, body.as_bytes(), timestamp),
            Err(SignatureError::Mismatch)
        );
    }
}

#[test]
fn signatures_match_the_reference_crate_both_ways() {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let reference = Webhook::new(SECRET).unwrap();
    let verifier = Verifier::new(vec![secret.clone()]);
    // The reference crate checks timestamps against the clock: sign with the current time.
    let now = unix_now();
    for (id, body) in [
        ("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", r#"{"test": 2432232314}"#),
        (
            "msg_1",
            r#"{"type":"org.created","data":{"name":"Åcme ☃"}}"#,
        ),
        ("evt-with.dots", ""),
    ] {
        let ours = secret.sign(id, now, body.as_bytes());
        let theirs = reference.sign(id, now, body.as_bytes()).unwrap();
        assert_eq!(ours, theirs, "{id}");
        // The reference accepts what we send, alone or among the signatures of a rotation...
        let headers = sign(&[&secret], id, now, body.as_bytes());
        reference
            .verify(body.as_bytes(), &header_map(id, now, &headers.signature))
            .unwrap();
        let rotating = sign(
            &[&WebhookSecret::generate(), &secret],
            id,
            now,
            body.as_bytes(),
        );
        reference
            .verify(body.as_bytes(), &header_map(id, now, &rotating.signature))
            .unwrap();
        // ...and refuses what we refuse.
        let tampered = header_map(id, now, &headers.signature);
        assert!(matches!(
            reference.verify(b"tampered", &tampered),
            Err(standardwebhooks::WebhookError::InvalidSignature)
        ));
        assert!(verifier.verify_at(&headers, b"tampered", now).is_err());
        // We accept what the reference signs.
        let signed_by_reference = neo_events::SignedHeaders {
            id: id.to_owned(),
            timestamp: now,
            signature: theirs,
        };
        assert!(
            verifier
                .verify_at(&signed_by_reference, body.as_bytes(), now)
                .is_ok()
        );
    }
}

#[test]
fn rotation_sends_several_signatures_and_either_secret_verifies() {
    let old = WebhookSecret::parse(SECRET).unwrap();
    let new = WebhookSecret::generate();
    let headers = sign(&[&new, &old], "msg_1", NOW, b"{}");
    assert_eq!(headers.signature.split(' ').count(), 2);
    assert!(
        Verifier::new(vec![old.clone()])
            .verify_at(&headers, b"{}", NOW)
            .is_ok()
    );
    assert!(
        Verifier::new(vec![new.clone()])
            .verify_at(&headers, b"{}", NOW)
            .is_ok()
    );
    assert_eq!(
        Verifier::new(vec![WebhookSecret::generate()]).verify_at(&headers, b"{}", NOW),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn stale_or_future_timestamps_and_bad_headers_are_refused() {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let verifier = Verifier::new(vec![secret.clone()]);
    for offset in [-301, 301] {
        let headers = sign(&[&secret], "m", NOW + offset, b"{}");
        let err = verifier.verify_at(&headers, b"{}", NOW).unwrap_err();
        assert!(
            matches!(
                err,
                SignatureError::Stale {
                    tolerance_secs: 300,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Unauthorized);
    }
    let headers = sign(&[&secret], "m", NOW + 299, b"{}");
    assert!(verifier.verify_at(&headers, b"{}", NOW).is_ok());
    let err = verifier
        .verify_headers(Some("m"), Some("not a number"), Some("v1,x"), b"{}")
        .unwrap_err();
    assert_eq!(err, SignatureError::BadHeader("webhook-timestamp"));
    assert_eq!(
        verifier
            .verify_headers(None, Some("1"), Some("v1,x"), b"")
            .unwrap_err()
            .kind(),
        ErrorKind::Validation
    );
    // A v2 or unprefixed signature never matches.
    let mut wrong_scheme = headers.clone();
    wrong_scheme.signature = headers.signature.replace("v1,", "v2,");
    assert_eq!(
        verifier.verify_at(&wrong_scheme, b"{}", NOW),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn secrets_are_validated_and_never_shown() {
    for bad in [
        "",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_!!!",
        "whsec_c2hvcnQ=",
    ] {
        let err = WebhookSecret::parse(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{bad:?}");
        assert!(!err.to_string().contains(bad) || bad.is_empty());
    }
    let secret = WebhookSecret::parse(SECRET).unwrap();
    assert!(!format!("{secret:?}").contains("MfKQ"));
    assert_eq!(WebhookSecret::parse(&secret.expose()).unwrap(), secret);
}

proptest! {
    #[test]
    fn any_change_to_id_timestamp_or_body_breaks_the_signature(
        id in "[a-zA-Z0-9_]{1,40}",
        body in proptest::collection::vec(any::<u8>(), 0..200),
        flip in 0usize..200,
    ) {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let verifier = Verifier::new(vec![secret.clone()]);
        let headers = sign(&[&secret], &id, NOW, &body);
        prop_assert!(verifier.verify_at(&headers, &body, NOW).is_ok());
        if !body.is_empty() {
            let mut changed = body.clone();
            changed[flip % body.len()] ^= 1;
            prop_assert!(verifier.verify_at(&headers, &changed, NOW).is_err());
        }
        let mut other = headers.clone();
        other.id.push('x');
        prop_assert!(verifier.verify_at(&other, &body, NOW).is_err());
        let mut later = headers.clone();
        later.timestamp += 1;
        prop_assert!(verifier.verify_at(&later, &body, NOW).is_err());
    }
}

proptest! {
    /// Every parser of the crate takes any text: a value or a typed validation error, never a
    /// panic; a receiver's verifier refuses any headers it did not sign.
    #[test]
    fn parsers_and_the_verifier_take_any_text(
        text in any::<String>(),
        id in proptest::option::of(any::<String>()),
        timestamp in proptest::option::of(any::<String>()),
        signature in proptest::option::of(any::<String>()),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        // A secret is configuration: a bad one is a configuration error.
        if let Err(error) = WebhookSecret::parse(&text) {
            prop_assert_eq!(error.kind(), ErrorKind::Configuration);
        }
        for result in [
            neo_events::DomainEvent::new(&text, "organization", "id", &1).map(|_| ()),
            neo_events::DomainEvent::new("organization.created", &text, "id", &1).map(|_| ()),
            neo_events::DomainEvent::new("organization.created", "organization", &text, &1).map(|_| ()),
        ] {
            if let Err(error) = result {
                prop_assert_eq!(error.kind(), ErrorKind::Validation);
            }
        }
        let verifier = Verifier::new(vec![WebhookSecret::parse(SECRET).unwrap()]);
        prop_assert!(verifier
            .verify_headers(id.as_deref(), timestamp.as_deref(), signature.as_deref(), &body)
            .is_err());
    }
}
