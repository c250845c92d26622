//! [`TenantResolver`] and the three provided resolvers.

use axum::http::{HeaderName, header, request::Parts};
use neo_core::TenantId;

use crate::Error;

/// Finds the tenant a request is for, from its method, URI and headers.
///
/// [`TenantLayer`](super::TenantLayer) calls it once per request. A host replaces the provided
/// resolvers with its own (a JWT claim, a slug looked up in a table it already loaded, ...) by
/// implementing this trait. Return [`Error::MissingTenant`] when the request names no tenant
/// and [`Error::InvalidTenant`] when it names one that is not a valid [`TenantId`]; the layer
/// answers 404 and 400 respectively.
pub trait TenantResolver: Send + Sync + 'static {
    /// The tenant `parts` is for.
    ///
    /// # Errors
    /// [`Error::MissingTenant`] or [`Error::InvalidTenant`].
    fn resolve(&self, parts: &Parts) -> Result<TenantId, Error>;
}

fn parse(text: &str, location: impl FnOnce() -> String) -> Result<TenantId, Error> {
    TenantId::parse(text).map_err(|error| Error::InvalidTenant {
        location: location(),
        reason: error.to_string(),
    })
}

/// Reads the tenant id from a request header (default `x-tenant-id`).
#[derive(Debug, Clone)]
pub struct HeaderResolver {
    name: HeaderName,
}

impl HeaderResolver {
    /// The header neo-commons reads by default.
    pub const DEFAULT_HEADER: &'static str = "x-tenant-id";

    /// Reads the tenant from header `name`.
    pub fn new(name: HeaderName) -> Self {
        HeaderResolver { name }
    }

    fn location(&self) -> String {
        format!("header {}", self.name)
    }
}

impl Default for HeaderResolver {
    fn default() -> Self {
        HeaderResolver::new(HeaderName::from_static(Self::DEFAULT_HEADER))
    }
}

impl TenantResolver for HeaderResolver {
    fn resolve(&self, parts: &Parts) -> Result<TenantId, Error> {
        let Some(value) = parts.headers.get(&self.name) else {
            return Err(Error::MissingTenant {
                location: self.location(),
            });
        };
        let text = value.to_str().map_err(|_| Error::InvalidTenant {
            location: self.location(),
            reason: "the header value is not visible ASCII".to_owned(),
        })?;
        parse(text.trim(), || self.location())
    }
}

/// Reads the tenant id from one segment of the request path.
///
/// Segments are the non-empty parts of the path between `/`s, counted from 0 on the path the
/// layer sees (apply the layer on the outer router if handlers are nested): position 1 of
/// `/t/0190…/orgs` is `0190…`.
#[derive(Debug, Clone, Copy)]
pub struct PathSegmentResolver {
    position: usize,
}

impl PathSegmentResolver {
    /// Reads the tenant from segment `position` (0-based).
    pub const fn new(position: usize) -> Self {
        PathSegmentResolver { position }
    }
}

impl TenantResolver for PathSegmentResolver {
    fn resolve(&self, parts: &Parts) -> Result<TenantId, Error> {
        let location = || format!("path segment {}", self.position);
        match parts
            .uri
            .path()
            .split('/')
            .filter(|segment| !segment.is_empty())
            .nth(self.position)
        {
            Some(segment) => parse(segment, location),
            None => Err(Error::MissingTenant {
                location: location(),
            }),
        }
    }
}

/// Reads the tenant id from the subdomain of a base domain: with base `api.example.com`, the
/// host `0190….api.example.com` is tenant `0190…`.
///
/// The host comes from the `Host` header, or from the URI's authority (HTTP/2); a port is
/// ignored and the comparison is case-insensitive. A host that is the base domain itself or
/// not under it names no tenant; anything before the base that is not one tenant id (more
/// labels, a slug) is invalid.
#[derive(Debug, Clone)]
pub struct SubdomainResolver {
    /// `.` followed by the base domain, lowercase.
    suffix: String,
}

impl SubdomainResolver {
    /// Reads the tenant from subdomains of `base_domain` (e.g. `api.example.com`).
    pub fn new(base_domain: &str) -> Self {
        SubdomainResolver {
            suffix: format!(".{}", base_domain.trim_matches('.').to_ascii_lowercase()),
        }
    }

    fn location(&self) -> String {
        format!("the subdomain of {}", &self.suffix[1..])
    }
}

impl TenantResolver for SubdomainResolver {
    fn resolve(&self, parts: &Parts) -> Result<TenantId, Error> {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .or_else(|| parts.uri.host())
            .unwrap_or_default();
        // Drop a port (hosts here are names, never bracketed IPv6 literals under a domain).
        let host = host.rsplit_once(':').map_or(host, |(name, _port)| name);
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match host.strip_suffix(&self.suffix) {
            Some(sub) if !sub.is_empty() => parse(sub, || self.location()),
            _ => Err(Error::MissingTenant {
                location: self.location(),
            }),
        }
    }
}
