use neo_core::{ErrorKind, HasErrorKind, TraceContext};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn traceparent_round_trips() {
    let tc = TraceContext::parse(TP).unwrap();
    assert_eq!(tc.traceparent(), TP);
    assert_eq!(tc.to_string(), TP);
    assert_eq!(tc.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(tc.span_id_hex(), "00f067aa0ba902b7");
    assert_eq!(
        tc.span_id(),
        [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
    );
    assert!(tc.sampled());
    assert_eq!(tc.tracestate(), None);
    let unsampled = TraceContext::parse(&TP.replace("-01", "-00")).unwrap();
    assert!(!unsampled.sampled());
    let built = TraceContext::new(tc.trace_id(), tc.span_id(), true).unwrap();
    assert_eq!(built, tc);
    // A later version may append fields; they are ignored.
    let later = TraceContext::parse(&format!("01{}-what-comes-next", &TP[2..])).unwrap();
    assert_eq!(later.trace_id(), tc.trace_id());
}

#[test]
fn bad_traceparents_are_typed_errors() {
    let bad = [
        "",
        "00",
        "garbage",
        // Uppercase hex.
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        // All-zero ids.
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        // Version ff, and version 00 with extra fields.
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        // Wrong separators, non-hex, multi-byte characters.
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        "0é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ];
    for text in bad {
        let error = TraceContext::parse(text).expect_err(text);
        assert_eq!(error.kind(), ErrorKind::Validation, "{text}");
        assert!(
            error.to_string().starts_with("invalid traceparent"),
            "{error}"
        );
    }
}

#[test]
fn tracestate_is_validated_and_kept() {
    let tc =
        TraceContext::from_headers(TP, Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")).unwrap();
    assert_eq!(
        tc.tracestate(),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );
    // Blank means absent.
    assert_eq!(
        TraceContext::from_headers(TP, Some("  "))
            .unwrap()
            .tracestate(),
        None
    );
    let too_long = format!("k={}", "v".repeat(600));
    let too_many = (0..40)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join(",");
    for bad in [
        "novalue",
        "=v",
        "Upper=v",
        "k=v\n",
        "k=vé",
        too_long.as_str(),
        too_many.as_str(),
    ] {
        let error = TraceContext::from_headers(TP, Some(bad)).expect_err(bad);
        assert_eq!(error.kind(), ErrorKind::Validation);
        assert!(
            error.to_string().starts_with("invalid tracestate"),
            "{error}"
        );
    }
}

#[test]
fn serde_form_is_the_two_headers_and_validates() {
    let tc = TraceContext::from_headers(TP, Some("congo=t61rcWkgMzE")).unwrap();
    let json = serde_json::to_value(&tc).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "traceparent": TP, "tracestate": "congo=t61rcWkgMzE" })
    );
    assert_eq!(serde_json::from_value::<TraceContext>(json).unwrap(), tc);
    let bare = serde_json::to_value(TraceContext::parse(TP).unwrap()).unwrap();
    assert_eq!(bare, serde_json::json!({ "traceparent": TP }));
    let refused =
        serde_json::from_value::<TraceContext>(serde_json::json!({ "traceparent": "00-zz" }));
    assert!(refused.is_err());
}

#[test]
fn nothing_is_captured_without_a_propagation() {
    assert_eq!(neo_core::trace::current(), None);
    // Does nothing, and does not panic.
    neo_core::trace::link_current(&TraceContext::parse(TP).unwrap());
}
