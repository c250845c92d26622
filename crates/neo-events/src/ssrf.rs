//! The SSRF guard: webhook URLs must not reach the service's own network, nor any address the
//! IANA special-purpose registries call not globally reachable (see [`AddressPolicy`]).
//!
//! Names are resolved by [`GuardedResolver`], which drops refused addresses at connect time
//! (so a name that resolves to a public address at creation and to `127.0.0.1` later is still
//! refused); IP literals never go through a resolver, so [`AddressPolicy::check_url`] checks
//! them before every request.

use crate::EventError;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which addresses webhook requests may connect to.
///
/// Everything globally reachable is allowed. Loopback and private ranges are allowed only when
/// allowed here; every other range the IANA IPv4 and IPv6 Special-Purpose Address Registries
/// mark as not globally reachable is refused always: "this network" `0.0.0.0/8`, the IETF
/// protocol assignments `192.0.0.0/24` (but for the PCP and TURN anycast addresses `192.0.0.9`
/// and `192.0.0.10`), documentation (`192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`,
/// `2001:db8::/32`, `3fff::/20`), benchmarking (`198.18.0.0/15`, `2001:2::/48`), reserved
/// `240.0.0.0/4` and broadcast, the rest of `2001::/23` (but for its globally reachable
/// assignments), and IPv6 outside global unicast `2000::/3` (discard-only `100::/64`,
/// deprecated site-local `fec0::/10`, …); unspecified and multicast addresses too.
///
/// An IPv6 address that carries an IPv4 address is judged by the IPv4 address it reaches:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16` and Teredo `2001::/32` (both its server and its obfuscated client address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct AddressPolicy {
    /// Allow `127.0.0.0/8` and `::1` (tests, a receiver on the same host).
    pub allow_loopback: bool,
    /// Allow private, shared (CGNAT), link-local and unique-local ranges, which include cloud
    /// metadata services such as `169.254.169.254`, and the local-use NAT64 prefix
    /// `64:ff9b:1::/48` (when the IPv4 address in its last 32 bits is allowed too).
    pub allow_private: bool,
}

/// `ip` lies in `net/len`.
fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    ip.to_bits() & mask == u32::from_be_bytes(net) & mask
}

/// `ip` lies in `net/len`.
fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    ip.to_bits() & mask == Ipv6Addr::from(net).to_bits() & mask
}

/// The IPv4 address in bits `from..from + 32` of `ip`.
fn embedded_v4(ip: Ipv6Addr, from: u32) -> Ipv4Addr {
    // The cast keeps exactly the 32 bits shifted to the bottom.
    Ipv4Addr::from_bits((ip.to_bits() >> (96 - from)) as u32)
}

/// Special-purpose IPv4 blocks not globally reachable that std has no stable predicate for
/// (private, loopback, link-local, documentation, broadcast, multicast and unspecified are
/// judged with `Ipv4Addr`'s own).
const V4_NEVER: [([u8; 4], u32); 4] = [
    ([0, 0, 0, 0], 8),     // "this network" (RFC 791)
    ([192, 0, 0, 0], 24),  // IETF protocol assignments (RFC 6890), less the two below
    ([198, 18, 0, 0], 15), // benchmarking (RFC 2544)
    ([240, 0, 0, 0], 4),   // reserved (RFC 1112), with 255.255.255.255
];

/// The globally reachable assignments inside `192.0.0.0/24`: PCP and TURN anycast.
const V4_GLOBAL_IN_PROTOCOL_BLOCK: [Ipv4Addr; 2] =
    [Ipv4Addr::new(192, 0, 0, 9), Ipv4Addr::new(192, 0, 0, 10)];

/// The globally reachable assignments inside `2001::/23` (IETF protocol assignments).
const V6_GLOBAL_IN_PROTOCOL_BLOCK: [([u16; 8], u32); 7] = [
    ([0x2001, 1, 0, 0, 0, 0, 0, 1], 128), // PCP anycast (RFC 7723)
    ([0x2001, 1, 0, 0, 0, 0, 0, 2], 128), // TURN anycast (RFC 8155)
    ([0x2001, 1, 0, 0, 0, 0, 0, 3], 128), // DNS-SD SRP anycast (RFC 9665)
    ([0x2001, 3, 0, 0, 0, 0, 0, 0], 32),  // AMT (RFC 7450)
    ([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48), // AS112-v6 (RFC 7535)
    ([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28), // ORCHIDv2 (RFC 7343)
    ([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28), // drone remote ID DETs (RFC 9374)
];

/// Special-purpose IPv6 blocks inside `2000::/3` not globally reachable (`2001::/23` apart).
const V6_NEVER: [([u16; 8], u32); 2] = [
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation (RFC 3849)
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),     // documentation (RFC 9637)
];

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
    /// assert!(!policy.allows("64:ff9b::a9fe:a9fe".parse().unwrap())); // NAT64 to 169.254.169.254
    /// ```
    pub fn allows(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.allows_v4(v4),
            IpAddr::V6(v6) => self.allows_v6(v6),
        }
    }

    fn allows_v4(&self, ip: Ipv4Addr) -> bool {
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return false;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        let shared = in_v4(ip, [100, 64, 0, 0], 10); // RFC 6598; `is_shared` is unstable
        if ip.is_private() || ip.is_link_local() || shared {
            return self.allow_private;
        }
        if ip.is_documentation() {
            return false;
        }
        if V4_GLOBAL_IN_PROTOCOL_BLOCK.contains(&ip) {
            return true;
        }
        !V4_NEVER.iter().any(|&(net, len)| in_v4(ip, net, len))
    }

    fn allows_v6(&self, ip: Ipv6Addr) -> bool {
        if let Some(v4) = ip.to_ipv4_mapped() {
            return self.allows_v4(v4);
        }
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        // IPv4-compatible `::a.b.c.d` (deprecated, RFC 4291) and NAT64's well-known prefix
        // (RFC 6052) carry the IPv4 address in their last 32 bits.
        if in_v6(ip, [0; 8], 96) || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
            return self.allows_v4(embedded_v4(ip, 96));
        }
        // NAT64's local-use prefix (RFC 8215) is domain-local, like a unique-local address;
        // a network using it as its /96 puts the IPv4 address in the last 32 bits.
        if in_v6(ip, [0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48) {
            return self.allow_private && self.allows_v4(embedded_v4(ip, 96));
        }
        // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 for the site at A.B.C.D.
        if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
            return self.allows_v4(embedded_v4(ip, 16));
        }
        // Teredo (RFC 4380): the server's address in bits 32..64, the client's in the last
        // 32 bits with every bit flipped.
        if in_v6(ip, [0x2001, 0, 0, 0, 0, 0, 0, 0], 32) {
            let server = embedded_v4(ip, 32);
            let client = Ipv4Addr::from_bits(!embedded_v4(ip, 96).to_bits());
            return self.allows_v4(server) && self.allows_v4(client);
        }
        if ip.is_unique_local() || ip.is_unicast_link_local() {
            return self.allow_private;
        }
        // Outside global unicast everything is reserved by the IETF, not reachable.
        if !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
            return false;
        }
        if in_v6(ip, [0x2001, 0, 0, 0, 0, 0, 0, 0], 23) {
            return V6_GLOBAL_IN_PROTOCOL_BLOCK
                .iter()
                .any(|&(net, len)| in_v6(ip, net, len));
        }
        !V6_NEVER.iter().any(|&(net, len)| in_v6(ip, net, len))
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
    use reqwest::dns::Resolve;
    use std::str::FromStr;

    /// What an address needs from the policy.
    #[derive(Debug, Clone, Copy)]
    enum Needs {
        /// Allowed by every policy.
        Nothing,
        Loopback,
        Private,
        /// Private space reaching loopback (local-use NAT64 to 127.0.0.1).
        Both,
        /// Refused by every policy.
        Never,
    }
    use Needs::{Both, Loopback, Never, Nothing, Private};

    /// Every range of the IANA special-purpose registries (first and last address), the
    /// addresses that carry IPv4 in IPv6, and public neighbours on each side.
    const TABLE: &[(&str, Needs)] = &[
        // IPv4 special-purpose registry.
        ("0.0.0.0", Never),
        ("0.255.255.255", Never),
        ("10.0.0.0", Private),
        ("10.255.255.255", Private),
        ("100.64.0.0", Private),
        ("100.127.255.255", Private),
        ("127.0.0.0", Loopback),
        ("127.255.255.255", Loopback),
        ("169.254.0.0", Private),
        ("169.254.255.255", Private),
        ("172.16.0.0", Private),
        ("172.31.255.255", Private),
        ("192.0.0.0", Never),
        ("192.0.0.7", Never),
        ("192.0.0.8", Never),
        ("192.0.0.9", Nothing),
        ("192.0.0.10", Nothing),
        ("192.0.0.11", Never),
        ("192.0.0.170", Never),
        ("192.0.0.171", Never),
        ("192.0.0.255", Never),
        ("192.0.2.0", Never),
        ("192.0.2.255", Never),
        ("192.31.196.0", Nothing),
        ("192.52.193.255", Nothing),
        ("192.88.99.0", Nothing),
        ("192.168.0.0", Private),
        ("192.168.255.255", Private),
        ("192.175.48.0", Nothing),
        ("198.18.0.0", Never),
        ("198.19.255.255", Never),
        ("198.51.100.0", Never),
        ("198.51.100.255", Never),
        ("203.0.113.0", Never),
        ("203.0.113.255", Never),
        ("224.0.0.0", Never),
        ("239.255.255.255", Never),
        ("240.0.0.0", Never),
        ("255.255.255.254", Never),
        ("255.255.255.255", Never),
        // Public IPv4 next to them.
        ("1.0.0.0", Nothing),
        ("9.255.255.255", Nothing),
        ("11.0.0.0", Nothing),
        ("100.63.255.255", Nothing),
        ("100.128.0.0", Nothing),
        ("126.255.255.255", Nothing),
        ("128.0.0.0", Nothing),
        ("169.253.255.255", Nothing),
        ("172.15.255.255", Nothing),
        ("172.32.0.0", Nothing),
        ("191.255.255.255", Nothing),
        ("192.0.1.0", Nothing),
        ("192.0.3.0", Nothing),
        ("192.167.255.255", Nothing),
        ("192.169.0.0", Nothing),
        ("198.17.255.255", Nothing),
        ("198.20.0.0", Nothing),
        ("198.51.99.255", Nothing),
        ("198.51.101.0", Nothing),
        ("203.0.112.255", Nothing),
        ("203.0.114.0", Nothing),
        ("223.255.255.255", Nothing),
        // IPv6 special-purpose registry.
        ("::", Never),
        ("::1", Loopback),
        ("::ffff:0.0.0.0", Never),
        ("::ffff:255.255.255.255", Never),
        ("::ffff:127.0.0.1", Loopback),
        ("::ffff:10.0.0.1", Private),
        ("::ffff:169.254.169.254", Private),
        ("::ffff:192.0.2.1", Never),
        ("::ffff:8.8.8.8", Nothing),
        ("::0.0.0.2", Never),
        ("::255.255.255.255", Never),
        ("::127.0.0.1", Loopback),
        ("::10.0.0.1", Private),
        ("::198.18.0.1", Never),
        ("::8.8.8.8", Nothing),
        ("64:ff9b::", Never),
        ("64:ff9b::ffff:ffff", Never),
        ("64:ff9b::127.0.0.1", Loopback),
        ("64:ff9b::10.0.0.1", Private),
        ("64:ff9b::169.254.169.254", Private),
        ("64:ff9b::203.0.113.1", Never),
        ("64:ff9b::8.8.8.8", Nothing),
        ("64:ff9b:1::", Never),
        ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Never),
        ("64:ff9b:1::8.8.8.8", Private),
        ("64:ff9b:1::10.0.0.1", Private),
        ("64:ff9b:1::127.0.0.1", Both),
        ("100::", Never),
        ("100::ffff:ffff:ffff:ffff", Never),
        ("100:0:0:1::", Never),
        // Teredo: server 0.0.0.0, client !0 = 255.255.255.255; then all ones.
        ("2001::", Never),
        ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Never),
        // Server 8.8.8.8; client 1.2.3.4 / 127.0.0.1 / 10.0.0.1, each bit flipped.
        ("2001:0:808:808::fefd:fcfb", Nothing),
        ("2001:0:808:808::80ff:fffe", Loopback),
        ("2001:0:808:808::f5ff:fffe", Private),
        // Server 10.0.0.1 or 192.0.2.1, client 1.2.3.4.
        ("2001:0:a00:1::fefd:fcfb", Private),
        ("2001:0:c000:201::fefd:fcfb", Never),
        ("2001:1::", Never),
        ("2001:1::1", Nothing),
        ("2001:1::2", Nothing),
        ("2001:1::3", Nothing),
        ("2001:1::4", Never),
        ("2001:2::", Never),
        ("2001:2:0:ffff:ffff:ffff:ffff:ffff", Never),
        ("2001:3::", Nothing),
        ("2001:3:ffff:ffff:ffff:ffff:ffff:ffff", Nothing),
        ("2001:4:112::", Nothing),
        ("2001:4:112:ffff:ffff:ffff:ffff:ffff", Nothing),
        ("2001:4:113::", Never),
        ("2001:10::", Never),
        ("2001:1f:ffff:ffff:ffff:ffff:ffff:ffff", Never),
        ("2001:20::", Nothing),
        ("2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", Nothing),
        ("2001:30::", Nothing),
        ("2001:3f:ffff:ffff:ffff:ffff:ffff:ffff", Nothing),
        ("2001:40::", Never),
        ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", Never),
        ("2001:db8::", Never),
        ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Never),
        // 6to4: 0.0.0.0 and 255.255.255.255, then 127.0.0.1, 10.0.0.1, 8.8.8.8.
        ("2002::", Never),
        ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Never),
        ("2002:7f00:1::", Loopback),
        ("2002:a00:1::1", Private),
        ("2002:808:808::1", Nothing),
        ("2620:4f:8000::", Nothing),
        ("2620:4f:8000:ffff:ffff:ffff:ffff:ffff", Nothing),
        ("3fff::", Never),
        ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", Never),
        ("5f00::", Never),
        ("5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Never),
        ("fc00::", Private),
        ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Private),
        ("fd00:ec2::254", Private),
        ("fe80::", Private),
        ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Private),
        ("fec0::", Never),
        ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Never),
        ("ff00::", Never),
        ("ff02::1", Never),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Never),
        ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Never),
        ("4000::", Never),
        // Public IPv6 next to them.
        ("2000::", Nothing),
        ("2001:200::", Nothing),
        ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", Nothing),
        ("2001:db9::", Nothing),
        ("2003::", Nothing),
        ("2606:4700::1111", Nothing),
        ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Nothing),
        ("3fff:1000::", Nothing),
    ];

    /// The four policies and whether each allows an address that needs `needs`.
    fn policies(needs: Needs) -> [(AddressPolicy, bool); 4] {
        let policy = |allow_loopback, allow_private| AddressPolicy {
            allow_loopback,
            allow_private,
        };
        let (loopback, private) = match needs {
            Nothing => (Some(false), Some(false)),
            Loopback => (Some(true), Some(false)),
            Private => (Some(false), Some(true)),
            Both => (Some(true), Some(true)),
            Never => (None, None),
        };
        let allowed = |l: bool, p: bool| {
            loopback.is_some_and(|need| l || !need) && private.is_some_and(|need| p || !need)
        };
        [(false, false), (true, false), (false, true), (true, true)]
            .map(|(l, p)| (policy(l, p), allowed(l, p)))
    }

    fn url_for(ip: IpAddr) -> reqwest::Url {
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        reqwest::Url::parse(&format!("https://{host}:8443/hook")).unwrap()
    }

    #[test]
    fn every_special_purpose_range_is_judged_at_validation() {
        let mut checked = 0;
        for &(address, needs) in TABLE {
            let ip: IpAddr = address.parse().unwrap();
            for (policy, allowed) in policies(needs) {
                assert_eq!(policy.allows(ip), allowed, "{address} with {policy:?}");
                let checked_url = policy.check_url(&url_for(ip));
                assert_eq!(
                    checked_url.is_ok(),
                    allowed,
                    "URL of {address} with {policy:?}"
                );
                if let Err(error) = checked_url {
                    assert!(error.to_string().contains("internal address"), "{error}");
                }
                checked += 1;
            }
        }
        assert_eq!(checked, TABLE.len() * 4);
    }

    /// The function reqwest calls before each connection to a name, given each address as the
    /// name (the system resolver answers a numeric name with that address, no DNS involved).
    #[tokio::test]
    async fn every_special_purpose_range_is_judged_at_connect_time() {
        for &(address, needs) in TABLE {
            let ip: IpAddr = address.parse().unwrap();
            for (policy, allowed) in policies(needs) {
                let name = reqwest::dns::Name::from_str(address).unwrap();
                let resolved = GuardedResolver(policy).resolve(name).await;
                match resolved {
                    Ok(addrs) => {
                        let ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                        assert!(allowed, "{address} resolved to {ips:?} with {policy:?}");
                        assert_eq!(ips, vec![ip], "{address}");
                    }
                    Err(error) => {
                        assert!(!allowed, "{address} refused with {policy:?}: {error}");
                        assert!(error.to_string().contains("internal address"), "{error}");
                    }
                }
            }
        }
    }

    #[test]
    fn names_are_left_to_the_resolver() {
        let strict = AddressPolicy::default();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(strict.check_url(&url("https://example.com/hook")).is_ok());
        assert!(strict.check_url(&url("http://127.0.0.1/hook")).is_err());
    }

    #[tokio::test]
    async fn a_name_resolving_only_to_loopback_is_refused_at_connect_time() {
        let name = || reqwest::dns::Name::from_str("localhost").unwrap();
        let refused = GuardedResolver(AddressPolicy::default())
            .resolve(name())
            .await;
        assert!(refused.is_err());
        let loopback = AddressPolicy {
            allow_loopback: true,
            ..AddressPolicy::default()
        };
        let allowed: Vec<SocketAddr> = GuardedResolver(loopback)
            .resolve(name())
            .await
            .unwrap()
            .collect();
        assert!(!allowed.is_empty() && allowed.iter().all(|a| a.ip().is_loopback()));
    }
}
