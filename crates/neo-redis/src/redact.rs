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

/// `host:port` of a node URL, for errors that name nodes (never user or password).
pub(crate) fn node_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
mod tests {
    use super::{node_address, redact_url};

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
        assert_eq!(
            node_address("rediss://u:p@w@node-1:7000/0?x=1"),
            "node-1:7000"
        );
        assert_eq!(node_address("redis://node-2:7001"), "node-2:7001");
    }
}
