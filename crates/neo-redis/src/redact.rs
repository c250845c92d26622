//! URLs as they may be shown: without their password.

/// `url` with whatever stands between `://` and `@` (user and password) replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(
            redact_url("redis://app:s3cret@cache:6379/2"),
            "redis://***@cache:6379/2"
        );
        assert_eq!(
            redact_url("rediss://:s3cret@cache:6379"),
            "rediss://***@cache:6379"
        );
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
    }
}
