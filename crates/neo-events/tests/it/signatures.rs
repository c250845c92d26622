use neo_core::{ErrorKind, HasErrorKind};
use neo_events::{SignatureError, Verifier, WebhookSecret, sign};
use proptest::prelude::*;
use std::process::Command;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW: i64 = 1_700_000_000;

/// The Python with `standardwebhooks` that `scripts/test` prepares (`NEO_TEST_PYTHON`).
fn reference_python() -> String {
    std::env::var("NEO_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "NEO_TEST_PYTHON is not set: run scripts/test, or `python3 -m venv target/pyenv && \
             target/pyenv/bin/pip install standardwebhooks==1.1.0` and set \
             NEO_TEST_PYTHON=target/pyenv/bin/python"
        )
    })
}

/// Runs the reference implementation: `sign ID TS BODY` prints its signature; `verify ID TS
/// SIGNATURE BODY` prints ok or the error.
fn reference(args: &[&str]) -> String {
    let script = r#"
import sys, datetime
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
secret = sys.argv[1]
wh = Webhook(secret)
if sys.argv[2] == "sign":
    ts = datetime.datetime.fromtimestamp(int(sys.argv[4]), tz=datetime.timezone.utc)
    print(wh.sign(sys.argv[3], ts, sys.argv[5]))
else:
    headers = {"webhook-id": sys.argv[3], "webhook-timestamp": sys.argv[4], "webhook-signature": sys.argv[5]}
    try:
        wh.verify(sys.argv[6], headers, json_parse=False)
        print("ok")
    except WebhookVerificationError as e:
        print("refused:", e)
"#;
    let output = Command::new(reference_python())
        .arg("-c")
        .arg(script)
        .arg(SECRET)
        .args(args)
        .output()
        .expect("run the reference python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn signatures_match_the_reference_implementation_both_ways() {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (id, body) in [
        ("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", r#"{"test": 2432232314}"#),
        (
            "msg_1",
            r#"{"type":"org.created","data":{"name":"Åcme ☃"}}"#,
        ),
        ("evt-with.dots", ""),
    ] {
        let ours = secret.sign(id, now, body.as_bytes());
        let theirs = reference(&["sign", id, &now.to_string(), body]);
        assert_eq!(ours, theirs, "{id}");
        // The reference accepts what we send...
        let headers = sign(&[&secret], id, now, body.as_bytes());
        assert_eq!(
            reference(&["verify", id, &now.to_string(), &headers.signature, body]),
            "ok"
        );
        // ...and refuses what we refuse.
        let tampered = reference(&[
            "verify",
            id,
            &now.to_string(),
            &headers.signature,
            "tampered",
        ]);
        assert!(tampered.starts_with("refused"), "{tampered}");
        assert!(
            Verifier::new(vec![secret.clone()])
                .verify_at(&headers, b"tampered", now)
                .is_err()
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
