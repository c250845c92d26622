//! The domains an organization claims, each verified by publishing its token.

use super::{OrgDomain, Organization, now};
use crate::OrgError;
use neo_core::DomainName;

impl Organization {
    /// Claims a domain; returns the token to publish for its verification.
    /// [`domains`](Organization::domains) stay sorted by name.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] when already claimed here or over [`MAX_DOMAINS`](crate::MAX_DOMAINS) domains;
    /// [`OrgError::Transition`] when archived or deleted.
    pub fn add_domain(&mut self, domain: DomainName) -> Result<String, OrgError> {
        self.writable()?;
        if self.domains.iter().any(|d| d.domain == domain) {
            return Err(OrgError::invalid(
                "domain",
                format!(
                    "{} is already claimed by this organization",
                    domain.as_str()
                ),
            ));
        }
        if self.domains.len() >= crate::MAX_DOMAINS as usize {
            return Err(OrgError::invalid(
                "domain",
                format!("at most {} domains per organization", crate::MAX_DOMAINS),
            ));
        }
        let token = format!("neo-verify={}", uuid::Uuid::new_v4().simple());
        let payload = serde_json::json!({ "domain": domain });
        // Kept in byte order of the name, as every read from the database returns them.
        let at = self
            .domains
            .partition_point(|d| d.domain.as_str() < domain.as_str());
        self.domains.insert(
            at,
            OrgDomain {
                domain,
                verification_token: token.clone(),
                verified_at: None,
            },
        );
        self.changed.domains = true;
        self.record("organization.domain_added", &payload)?;
        Ok(token)
    }

    /// Marks a claimed domain verified when `seen_token` is its token.
    ///
    /// # Errors
    /// [`OrgError::NotFound`] for an unclaimed domain; [`OrgError::Invalid`] for a wrong
    /// token; [`OrgError::Transition`] when archived or deleted.
    pub fn verify_domain(&mut self, domain: &DomainName, seen_token: &str) -> Result<(), OrgError> {
        self.writable()?;
        let claimed = self
            .domains
            .iter_mut()
            .find(|d| &d.domain == domain)
            .ok_or_else(|| OrgError::not_found("domain", domain.as_str()))?;
        if claimed.verification_token != seen_token {
            return Err(OrgError::invalid(
                "domain token",
                "does not match the token issued for this domain",
            ));
        }
        claimed.verified_at = Some(now());
        self.changed.domains = true;
        self.record(
            "organization.domain_verified",
            &serde_json::json!({ "domain": domain }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewOrganization;
    use neo_core::Slug;

    fn org() -> Organization {
        Organization::create(NewOrganization::new("Acme", Slug::parse("acme").unwrap())).unwrap()
    }

    #[test]
    fn domains_are_claimed_then_verified_with_their_token() {
        let mut o = org();
        let domain = DomainName::parse("acme.example").unwrap();
        let token = o.add_domain(domain.clone()).unwrap();
        assert!(o.add_domain(domain.clone()).is_err());
        assert!(o.verify_domain(&domain, "wrong").is_err());
        o.verify_domain(&domain, &token).unwrap();
        assert!(o.domains()[0].verified_at.is_some());
        let other = DomainName::parse("other.example").unwrap();
        assert!(matches!(
            o.verify_domain(&other, &token),
            Err(OrgError::NotFound { .. })
        ));
    }
}
