//! Reading a domain's TXT records for its verification: the [`DomainResolver`] trait and its
//! default, [`HickoryResolver`] (feature `dns`), bounded by [`DnsConfig`]: a timeout over the
//! whole lookup and limits on the answer's records and bytes, so a slow, huge or malformed
//! answer ends in a typed [`DomainRefusal`].

use crate::{DomainRefusal, OrgError};
use neo_core::DomainName;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

/// What a resolver returns: the TXT strings of a name (each record's strings joined).
pub type TxtFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, OrgError>> + Send + 'a>>;

/// Reads the TXT records of a domain. Implement it to check domains through another
/// resolver (a DNS-over-HTTPS service, a company resolver); the default is
/// [`HickoryResolver`].
pub trait DomainResolver: Send + Sync + 'static {
    /// The TXT records of `domain` (empty when it has none or does not exist).
    ///
    /// # Errors
    /// [`OrgError::Domain`] with [`DomainRefusal::Timeout`], [`DomainRefusal::TooLarge`] or
    /// [`DomainRefusal::Lookup`].
    fn txt_records<'a>(&'a self, domain: &'a DomainName) -> TxtFuture<'a>;
}

/// How domains are looked up. Load with the rest of the host's settings.
///
/// # Example
/// ```
/// let config: neo_orgs::DnsConfig =
///     serde_json::from_str(r#"{"nameservers": ["127.0.0.1:5353"], "timeout": "2s"}"#)?;
/// assert_eq!(config.timeout, std::time::Duration::from_secs(2));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsConfig {
    /// The servers to ask (UDP, then TCP for a truncated answer, on the same port); empty
    /// for the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Longest a whole lookup may take, retries included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Tries per server within the timeout.
    pub attempts: usize,
    /// Most TXT records an answer may hold.
    pub max_records: usize,
    /// Most bytes of TXT data an answer may hold, over all its records.
    pub max_bytes: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
            max_records: 64,
            max_bytes: 16 * 1024,
        }
    }
}

impl DnsConfig {
    /// Refuses the TXT strings of an answer beyond the limits.
    pub(crate) fn bounded(&self, records: Vec<String>) -> Result<Vec<String>, OrgError> {
        if records.len() > self.max_records {
            return Err(OrgError::Domain(DomainRefusal::TooLarge(format!(
                "{} TXT records, at most {}",
                records.len(),
                self.max_records
            ))));
        }
        let bytes: usize = records.iter().map(String::len).sum();
        if bytes > self.max_bytes {
            return Err(OrgError::Domain(DomainRefusal::TooLarge(format!(
                "{bytes} bytes of TXT data, at most {}",
                self.max_bytes
            ))));
        }
        Ok(records)
    }
}

#[cfg(feature = "dns")]
pub use hickory::HickoryResolver;

#[cfg(feature = "dns")]
mod hickory {
    use super::{DnsConfig, DomainResolver, TxtFuture};
    use crate::{DomainRefusal, OrgError};
    use hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    };
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::proto::rr::RData;
    use hickory_resolver::{Resolver, TokioResolver};
    use neo_core::DomainName;
    use std::time::Duration;

    /// The default [`DomainResolver`], on hickory-resolver: no cache (each check asks
    /// again), the configured servers or the system's, the whole lookup under
    /// [`DnsConfig::timeout`] and its answer within the limits.
    #[derive(Clone)]
    pub struct HickoryResolver {
        resolver: TokioResolver,
        config: DnsConfig,
    }

    impl std::fmt::Debug for HickoryResolver {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("HickoryResolver")
                .field("config", &self.config)
                .finish_non_exhaustive()
        }
    }

    impl HickoryResolver {
        /// A resolver with `config`.
        ///
        /// # Errors
        /// [`OrgError::Invalid`] for a zero timeout, attempts or limits, or when the
        /// system's configuration cannot be read (no servers configured).
        pub fn new(config: DnsConfig) -> Result<Self, OrgError> {
            if config.timeout.is_zero() || config.attempts == 0 || config.max_records == 0 {
                return Err(OrgError::invalid(
                    "dns config",
                    "timeout, attempts and max_records must be above zero",
                ));
            }
            let provider = TokioRuntimeProvider::default();
            let mut builder = if config.nameservers.is_empty() {
                Resolver::builder(provider)
                    .map_err(|e| OrgError::invalid("dns config", e.to_string()))?
            } else {
                let servers = config
                    .nameservers
                    .iter()
                    .map(|address| {
                        let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
                        udp.port = address.port();
                        tcp.port = address.port();
                        NameServerConfig::new(address.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                Resolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
            };
            let options = builder.options_mut();
            *options = ResolverOpts::default();
            // Each attempt gets its share of the whole timeout.
            options.timeout = config.timeout / u32::try_from(config.attempts).unwrap_or(1);
            options.attempts = config.attempts;
            options.cache_size = 0;
            options.positive_max_ttl = Some(Duration::ZERO);
            options.negative_max_ttl = Some(Duration::ZERO);
            options.use_hosts_file = ResolveHosts::Never;
            options.edns0 = true;
            let resolver = builder
                .build()
                .map_err(|e| OrgError::invalid("dns config", e.to_string()))?;
            Ok(HickoryResolver { resolver, config })
        }
    }

    impl DomainResolver for HickoryResolver {
        fn txt_records<'a>(&'a self, domain: &'a DomainName) -> TxtFuture<'a> {
            Box::pin(async move {
                // Fully qualified: no search domains appended.
                let name = format!("{}.", domain.as_str());
                let lookup =
                    tokio::time::timeout(self.config.timeout, self.resolver.txt_lookup(name))
                        .await
                        .map_err(|_| {
                            OrgError::Domain(DomainRefusal::Timeout(self.config.timeout))
                        })?;
                let lookup = match lookup {
                    Ok(lookup) => lookup,
                    Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                        return Ok(Vec::new());
                    }
                    Err(e) => {
                        return Err(OrgError::Domain(
                            if e.to_string().contains("timed out")
                                || matches!(e, hickory_resolver::net::NetError::Timeout)
                            {
                                DomainRefusal::Timeout(self.config.timeout)
                            } else {
                                DomainRefusal::Lookup(e.to_string())
                            },
                        ));
                    }
                };
                let mut records = Vec::new();
                for record in lookup.answers() {
                    if let RData::TXT(txt) = &record.data {
                        if records.len() >= self.config.max_records {
                            // Counted, not decoded: refused just below.
                            records.push(String::new());
                            continue;
                        }
                        let joined: Vec<u8> = txt
                            .txt_data
                            .iter()
                            .flat_map(|s| s.iter().copied())
                            .collect();
                        records.push(String::from_utf8_lossy(&joined).into_owned());
                    }
                }
                self.config.bounded(records)
            })
        }
    }
}
