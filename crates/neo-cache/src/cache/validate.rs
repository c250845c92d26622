//! Checks on names, keys, patterns and configuration, before anything is sent; glob matching.

use crate::config::CacheConfig;
use crate::{Error, Result};

/// Longest accepted key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

pub(super) fn validate_config(config: &CacheConfig) -> Result<()> {
    validate_name("cache name", &config.name).map_err(|e| Error::Config(e.to_string()))?;
    if config
        .key_prefix
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '?' | '[' | ']' | '\\'))
    {
        return Err(Error::Config(format!(
            "key_prefix {:?} may not hold whitespace or glob characters",
            config.key_prefix
        )));
    }
    if config.ttl.is_zero() || config.hard_timeout.is_zero() {
        return Err(Error::Config(
            "ttl and hard_timeout must be greater than zero".into(),
        ));
    }
    if config.l1.capacity == 0 {
        return Err(Error::Config("l1.capacity must be at least 1".into()));
    }
    if !(0.0..1.0).contains(&config.eager_refresh) {
        return Err(Error::Config("eager_refresh must be in [0.0, 1.0)".into()));
    }
    Ok(())
}

pub(super) fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("key", "the key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid(
            "key",
            format!("{} bytes, at most {MAX_KEY_LEN}", key.len()),
        ));
    }
    if key.bytes().any(|b| b.is_ascii_control()) {
        return Err(Error::invalid("key", "control characters are not allowed"));
    }
    Ok(())
}

pub(super) fn validate_name(what: &'static str, name: &str) -> Result<()> {
    neo_core::validate_resource_name(what, name).map_err(Error::rejected)
}

pub(super) fn validate_pattern(pattern: &str) -> Result<()> {
    validate_key(pattern)?;
    if pattern.contains(['[', ']', '\\']) {
        return Err(Error::invalid(
            "pattern",
            "only * and ? are supported (no [ ] or \\)",
        ));
    }
    Ok(())
}

pub(super) fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `*` matches any run, `?` one character; the same rules Redis applies to these two.
pub(super) fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob() {
        assert!(glob_match("org:*", "org:1"));
        assert!(glob_match("*:1", "org:1"));
        assert!(glob_match("o?g:*", "org:42"));
        assert!(!glob_match("org:?", "org:42"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acd"));
    }
}
