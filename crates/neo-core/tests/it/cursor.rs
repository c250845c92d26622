use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use neo_core::{CursorCodec, CursorErrorReason, Error, ErrorKind, HasErrorKind};

const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
const OTHER: &[u8; 32] = b"fedcba9876543210fedcba9876543210";

fn codec() -> CursorCodec {
    CursorCodec::new(KEY.to_vec()).unwrap()
}

#[test]
fn round_trips_a_position() {
    let token = codec().encode(&("2026-01-01", 7_i64)).unwrap();
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    let back: (String, i64) = codec().decode(&token).unwrap();
    assert_eq!(back, ("2026-01-01".to_owned(), 7));
}

#[test]
fn every_single_byte_change_is_detected() {
    let token = codec().encode(&("acme", 1_u32)).unwrap();
    let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    for i in 0..raw.len() {
        let mut tampered = raw.clone();
        tampered[i] ^= 0x01;
        let text = URL_SAFE_NO_PAD.encode(&tampered);
        let err = codec().decode::<(String, u32)>(&text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Validation);
        assert!(
            matches!(
                err,
                Error::Cursor(
                    CursorErrorReason::BadSignature | CursorErrorReason::UnsupportedVersion(_)
                )
            ),
            "byte {i}: {err:?}"
        );
    }
}

#[test]
fn another_key_is_refused_and_rotation_keeps_old_cursors_valid() {
    let old = CursorCodec::new(OTHER.to_vec()).unwrap();
    let token = old.encode(&5_u8).unwrap();
    assert_eq!(
        codec().decode::<u8>(&token).unwrap_err(),
        Error::Cursor(CursorErrorReason::BadSignature)
    );
    let rotated = CursorCodec::with_previous_keys(KEY.to_vec(), vec![OTHER.to_vec()]).unwrap();
    assert_eq!(rotated.decode::<u8>(&token).unwrap(), 5);
    assert_eq!(
        codec()
            .decode::<u8>(&rotated.encode(&6_u8).unwrap())
            .unwrap(),
        6
    );
}

#[test]
fn malformed_versioned_and_mistyped_cursors_are_told_apart() {
    let c = codec();
    assert_eq!(
        c.decode::<u8>("!!!").unwrap_err(),
        Error::Cursor(CursorErrorReason::Malformed)
    );
    assert_eq!(
        c.decode::<u8>("").unwrap_err(),
        Error::Cursor(CursorErrorReason::Malformed)
    );
    assert_eq!(
        c.decode::<u8>(&"A".repeat(5000)).unwrap_err(),
        Error::Cursor(CursorErrorReason::Malformed)
    );
    let mut raw = URL_SAFE_NO_PAD.decode(c.encode(&1_u8).unwrap()).unwrap();
    raw[0] = 9;
    assert_eq!(
        c.decode::<u8>(&URL_SAFE_NO_PAD.encode(&raw)).unwrap_err(),
        Error::Cursor(CursorErrorReason::UnsupportedVersion(9))
    );
    let token = c.encode(&"text").unwrap();
    assert_eq!(
        c.decode::<u64>(&token).unwrap_err(),
        Error::Cursor(CursorErrorReason::BadPayload)
    );
    assert_eq!(
        c.decode::<u8>("x").unwrap_err().to_string(),
        "invalid cursor: not a cursor issued by this service"
    );
}

#[test]
fn short_keys_are_a_configuration_error_and_keys_stay_out_of_debug() {
    let err = CursorCodec::new(b"short".to_vec()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("at least 32 bytes"));
    let debug = format!("{:?}", codec());
    assert!(!debug.contains("0123456789"), "{debug}");
}
