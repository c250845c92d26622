//! neo-core's parsers and cursors against hand-rolled, regex-free code doing the same checks.

use crate::Pair;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use neo_core::{CursorCodec, EmailAddress, OrganizationId, Slug};
use std::hint::black_box;

const SLUG: &str = "acme-corp-international";
const EMAIL: &str = "jane.doe+news@mail.example.com";
const CURSOR_KEY: [u8; 32] = [7; 32];

/// The pairs of this module.
pub fn pairs() -> Vec<Pair> {
    let id_text = OrganizationId::new().to_string();
    let id_text_raw = id_text.clone();
    let codec = CursorCodec::new(CURSOR_KEY.to_vec()).unwrap_or_else(|e| panic!("bench key: {e}"));
    let position = ("acme-corp".to_owned(), 42_i64);
    let raw_position = position.clone();
    vec![
        Pair {
            name: "core/slug_parse",
            target: None,
            per_iteration: None,
            raw_per_iteration: None,
            ours: Box::new(|| {
                black_box(Slug::parse(black_box(SLUG)).is_ok());
            }),
            raw: Box::new(|| {
                black_box(raw_slug_ok(black_box(SLUG)).then(|| SLUG.to_owned()));
            }),
        },
        Pair {
            name: "core/email_parse",
            target: None,
            per_iteration: None,
            raw_per_iteration: None,
            ours: Box::new(|| {
                black_box(EmailAddress::parse(black_box(EMAIL)).is_ok());
            }),
            raw: Box::new(|| {
                black_box(raw_email_ok(black_box(EMAIL)).then(|| EMAIL.to_ascii_lowercase()));
            }),
        },
        Pair {
            name: "core/id_parse",
            target: None,
            per_iteration: None,
            raw_per_iteration: None,
            ours: Box::new(move || {
                black_box(OrganizationId::parse(black_box(&id_text)).is_ok());
            }),
            raw: Box::new(move || {
                black_box(uuid::Uuid::try_parse(black_box(&id_text_raw)).is_ok());
            }),
        },
        Pair {
            name: "core/id_new",
            target: None,
            per_iteration: None,
            raw_per_iteration: None,
            ours: Box::new(|| {
                black_box(OrganizationId::new());
            }),
            raw: Box::new(|| {
                black_box(uuid::Uuid::now_v7());
            }),
        },
        Pair {
            name: "core/cursor_round_trip",
            target: None,
            per_iteration: None,
            raw_per_iteration: None,
            ours: Box::new(move || {
                let token = codec.encode(black_box(&position)).unwrap_or_default();
                black_box(codec.decode::<(String, i64)>(&token).is_ok());
            }),
            raw: Box::new(move || {
                let token = raw_cursor_encode(black_box(&raw_position));
                black_box(raw_cursor_decode(&token).is_some());
            }),
        },
    ]
}

/// The slug rules, written the way a hand-rolled check would be.
pub fn raw_slug_ok(s: &str) -> bool {
    let b = s.as_bytes();
    (3..=64).contains(&b.len())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !s.contains("--")
        && !["admin", "api", "www"].contains(&s)
}

/// A hand-rolled email check: split at `@`, check both sides' characters and lengths.
pub fn raw_email_ok(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-.".contains(&c))
        && domain.len() <= 253
        && domain.split('.').count() >= 2
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

type HmacSha256 = Hmac<sha2::Sha256>;

fn mac() -> HmacSha256 {
    <HmacSha256 as hmac::KeyInit>::new_from_slice(&CURSOR_KEY)
        .unwrap_or_else(|_| unreachable!("any key length"))
}

/// JSON + HMAC-SHA256 + base64url by hand: what a service would write without `CursorCodec`.
pub fn raw_cursor_encode(position: &(String, i64)) -> String {
    let mut buf = serde_json::to_vec(position).unwrap_or_default();
    let mut m = mac();
    m.update(&buf);
    buf.extend_from_slice(&m.finalize().into_bytes()[..16]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The matching hand-written decode.
pub fn raw_cursor_decode(token: &str) -> Option<(String, i64)> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    let (payload, tag) = raw.split_at(raw.len().checked_sub(16)?);
    let mut m = mac();
    m.update(payload);
    m.verify_truncated_left(tag).ok()?;
    serde_json::from_slice(payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The baselines must do the same work: accept and refuse the same inputs as ours.
    #[test]
    fn baselines_agree_with_ours() {
        for s in [
            SLUG, "ab", "-abc", "abc-", "a--b", "Abc", "admin", "abc_def",
        ] {
            assert_eq!(raw_slug_ok(s), Slug::parse(s).is_ok(), "slug {s:?}");
        }
        for e in [
            EMAIL,
            "a@b",
            "@x.io",
            "a..b@x.io",
            "a@-x.io",
            ".a@x.io",
            "a b@x.io",
        ] {
            assert_eq!(
                raw_email_ok(e),
                EmailAddress::parse(e).is_ok(),
                "email {e:?}"
            );
        }
        let position = ("x".to_owned(), 1);
        assert_eq!(
            raw_cursor_decode(&raw_cursor_encode(&position)),
            Some(position)
        );
    }

    #[test]
    fn every_pair_runs_and_reports_a_ratio() {
        let settings = crate::Settings {
            sample_time: std::time::Duration::from_micros(200),
            samples: 3,
        };
        for mut pair in crate::all_pairs() {
            let m = crate::compare(&mut pair, settings);
            assert!(m.ours_ns > 0.0 && m.raw_ns > 0.0, "{}", m.name);
            assert!(m.ratio().is_finite());
        }
    }
}
