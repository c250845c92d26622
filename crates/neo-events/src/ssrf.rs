//! The SSRF guard: webhook URLs must not reach the service's own network.
//!
//! Names are resolved by [`GuardedResolver`], which drops refused addresses at connect time
//! (so a name that resolves to a public address at creation and to `127.0.0.1` later is still
//! refused); IP literals never go through a resolver, so [`AddressPolicy::check_url`] checks
//! them before every request.

use crate::EventError;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which addresses webhook requests may connect to. Everything public is allowed; loopback and
/// private ranges only when allowed here; unspecified, multicast and broadcast never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct AddressPolicy {
    /// Allow `127.0.0.0/8` and `::1` (tests, a receiver on the same host).
    pub allow_loopback: bool,
    /// Allow private, shared (CGNAT), link-local and unique-local ranges, which include cloud
    /// metadata services such as `169.254.169.254`.
    pub allow_private: bool,
}

impl AddressPolicy {
    /// Whether a request may connect to `ip`.
    ///
    /// # Example
    /// ```
    /// use neo_events::AddressPolicy;
    /// let policy = AddressPolicy::default();
    /// assert!(policy.allows("93.184.216.34".parse().unwrap()));
    /// assert!(!policy.allows("169.254.169.254".parse().unwrap()));
    /// assert!(!policy.allows("::ffff:127.0.0.1".parse().unwrap()));
    /// ```
    pub fn allows(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.allows_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.allows_v4(v4),
                None => self.allows_v6(v6),
            },
        }
    }

    fn allows_v4(&self, ip: Ipv4Addr) -> bool {
        let [a, b, ..] = ip.octets();
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || a == 0 {
            return false;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        let shared = a == 100 && (64..128).contains(&b);
        if ip.is_private() || ip.is_link_local() || shared {
            return self.allow_private;
        }
        true
    }

    fn allows_v6(&self, ip: Ipv6Addr) -> bool {
        let first = ip.segments()[0];
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        let unique_local = first & 0xfe00 == 0xfc00;
        let link_local = first & 0xffc0 == 0xfe80;
        if unique_local || link_local {
            return self.allow_private;
        }
        true
    }

    /// Refuses a URL whose host is an IP literal this policy does not allow (names are
    /// checked when they are resolved).
    ///
    /// # Errors
    /// [`EventError::Invalid`] naming the refused address.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), EventError> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if self.allows(ip) {
            Ok(())
        } else {
            Err(refused(&ip.to_string()))
        }
    }
}

fn refused(target: &str) -> EventError {
    EventError::Invalid {
        what: "endpoint url",
        reason: format!(
            "{target} is a loopback, private, link-local or otherwise internal address; \
             allow it with AddressPolicy (allow_loopback / allow_private) if it is meant"
        ),
    }
}

/// A DNS resolver for reqwest that keeps only the addresses an [`AddressPolicy`] allows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardedResolver(pub(crate) AddressPolicy);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = resolved.filter(|a| policy.allows(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(refused(&host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_refused_unless_allowed() {
        let strict = AddressPolicy::default();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!strict.allows(refused.parse().unwrap()), "{refused}");
        }
        for allowed in ["93.184.216.34", "2606:4700::1111", "100.128.0.1"] {
            assert!(strict.allows(allowed.parse().unwrap()), "{allowed}");
        }
        let loopback = AddressPolicy {
            allow_loopback: true,
            ..AddressPolicy::default()
        };
        assert!(loopback.allows("127.0.0.1".parse().unwrap()));
        assert!(!loopback.allows("169.254.169.254".parse().unwrap()));
        let private = AddressPolicy {
            allow_private: true,
            ..AddressPolicy::default()
        };
        assert!(private.allows("10.0.0.1".parse().unwrap()));
        assert!(!private.allows("0.0.0.0".parse().unwrap()));
    }

    #[test]
    fn ip_literal_urls_are_checked() {
        let strict = AddressPolicy::default();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(strict.check_url(&url("https://[::1]:8443/hook")).is_err());
        assert!(strict.check_url(&url("http://127.0.0.1/hook")).is_err());
        assert!(strict.check_url(&url("https://example.com/hook")).is_ok());
    }
}
