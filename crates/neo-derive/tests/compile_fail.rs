//! The derive's errors: each `tests/ui/*.rs` must fail to compile with the message in its
//! `.stderr`, at the offending field or attribute.

#[test]
fn derive_errors_point_at_the_offending_code() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
