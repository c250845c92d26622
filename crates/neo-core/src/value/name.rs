//! The rule for names that become part of Redis keys, lock names and channels.

use crate::{Error, Result};

/// Longest resource name, in bytes.
pub const MAX_RESOURCE_NAME_LEN: usize = 256;

/// What a resource name may hold, for error messages.
pub const RESOURCE_NAME_RULE: &str = "use 1-256 of a-z A-Z 0-9 _ - : .";

/// Whether `name` is a valid resource name (a cache name, a tag, a lock or election name):
/// 1 to 256 of `a-z A-Z 0-9 _ - : .`, so it is safe inside a Redis key or channel.
///
/// # Example
/// ```
/// use neo_core::is_resource_name;
/// assert!(is_resource_name("orgs:v2.billing"));
/// assert!(!is_resource_name("two words"));
/// assert!(!is_resource_name(""));
/// ```
pub fn is_resource_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_RESOURCE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'))
}

/// Checks that `name` is a resource name ([`is_resource_name`]); the one check neo-cache
/// (cache names, tags) and neo-coord (lock, election and rate-limit names) share, each mapping
/// the error into its own.
///
/// # Errors
/// [`Error::Invalid`] with `what` and a reason that quotes `name` and states the rule.
///
/// # Example
/// ```
/// use neo_core::validate_resource_name;
/// assert!(validate_resource_name("tag", "tenant:7").is_ok());
/// let error = validate_resource_name("tag", "two words").unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "invalid tag: \"two words\": use 1-256 of a-z A-Z 0-9 _ - : ."
/// );
/// ```
pub fn validate_resource_name(what: &'static str, name: &str) -> Result<()> {
    if is_resource_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            format!("{name:?}: {RESOURCE_NAME_RULE}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_RESOURCE_NAME_LEN, validate_resource_name};
    use crate::Error;

    #[test]
    fn names_of_the_allowed_characters_and_length_pass() {
        for name in [
            "a",
            "orgs:v2.billing",
            "tenant_7-eu",
            &"x".repeat(MAX_RESOURCE_NAME_LEN),
        ] {
            assert_eq!(validate_resource_name("name", name), Ok(()), "{name}");
        }
    }

    #[test]
    fn other_names_are_refused_saying_what_and_why() {
        let too_long = "x".repeat(MAX_RESOURCE_NAME_LEN + 1);
        for name in [
            "",
            "two words",
            "star*",
            "new\nline",
            "ünï",
            too_long.as_str(),
        ] {
            match validate_resource_name("lock name", name) {
                Err(Error::Invalid { what, reason }) => {
                    assert_eq!(what, "lock name");
                    assert!(reason.starts_with(&format!("{name:?}: ")), "{reason}");
                    assert!(
                        reason.ends_with("use 1-256 of a-z A-Z 0-9 _ - : ."),
                        "{reason}"
                    );
                }
                other => panic!("{name:?} gave {other:?}"),
            }
        }
    }
}
