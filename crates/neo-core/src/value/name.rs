//! The rule for names that become part of Redis keys, lock names and channels.

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
