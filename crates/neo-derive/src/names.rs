//! Compile-time checks of the names a record writes into SQL: the rules of neo-db's
//! `quote_identifier`, so a bad name fails the build at its attribute instead of at run time.

use syn::LitStr;

/// PostgreSQL truncates identifiers longer than this many bytes (neo-db's `MAX_IDENTIFIER_LEN`).
const MAX_IDENTIFIER_LEN: usize = 63;

/// Checks that `name` is 1 to 63 bytes of `a-z`, `0-9` and `_`, not starting with a digit.
pub(crate) fn check_identifier(name: &LitStr, what: &str) -> syn::Result<()> {
    let value = name.value();
    let problem = if value.is_empty() {
        Some("is empty".to_owned())
    } else if value.len() > MAX_IDENTIFIER_LEN {
        Some(format!(
            "is {} bytes long; PostgreSQL names are at most {MAX_IDENTIFIER_LEN}",
            value.len()
        ))
    } else if value.as_bytes()[0].is_ascii_digit() {
        Some("starts with a digit".to_owned())
    } else {
        value
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
            .map(|bad| {
                let hint = if bad.is_ascii_uppercase() {
                    " (use lowercase: PostgreSQL folds unquoted names to lowercase)"
                } else {
                    ""
                };
                format!("contains {bad:?}; only a-z, 0-9 and _ are allowed{hint}")
            })
    };
    match problem {
        Some(problem) => Err(syn::Error::new_spanned(
            name,
            format!("{what} name {value:?} {problem}"),
        )),
        None => Ok(()),
    }
}
