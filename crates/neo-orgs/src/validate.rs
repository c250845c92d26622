//! Checking tax ids: a trait a host implements (a registry lookup, a VIES call), called through
//! a circuit breaker and a timeout, with a format check as the default.

use crate::OrgError;
use neo_core::CountryCode;
use std::future::Future;
use std::pin::Pin;

/// The answer of a tax id check: a verdict, or the checker's own failure.
pub type TaxIdFuture<'a> = Pin<
    Box<dyn Future<Output = Result<bool, Box<dyn std::error::Error + Send + Sync>>> + Send + 'a>,
>;

/// Checks a tax id for a country. The service calls it on create and save through its
/// resilience policy (breaker, timeout), so a slow or failing registry fails fast.
///
/// # Example
/// ```
/// use neo_orgs::{TaxIdFuture, TaxIdValidator};
/// struct Registry;
/// impl TaxIdValidator for Registry {
///     fn check<'a>(&'a self, _country: Option<&'a neo_core::CountryCode>, tax_id: &'a str) -> TaxIdFuture<'a> {
///         Box::pin(async move { Ok(!tax_id.ends_with("000")) }) // ask the registry here
///     }
/// }
/// ```
pub trait TaxIdValidator: Send + Sync + 'static {
    /// Whether `tax_id` is valid for `country`.
    fn check<'a>(&'a self, country: Option<&'a CountryCode>, tax_id: &'a str) -> TaxIdFuture<'a>;
}

/// The default check: the shape of the id, with EU VAT numbers' country prefix when the
/// country is in the EU (`DE123456789`), otherwise 4 to 20 of `A-Z 0-9 - . /` with at least
/// two digits.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaxIdFormat;

const EU: &[&str] = &[
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

impl TaxIdFormat {
    /// The check itself, synchronous.
    pub fn is_valid(country: Option<&CountryCode>, tax_id: &str) -> bool {
        let id = tax_id.trim().to_ascii_uppercase();
        let shape_ok = (4..=20).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'/'))
            && id.bytes().filter(u8::is_ascii_digit).count() >= 2;
        match country.map(CountryCode::as_str) {
            // Greece's VAT prefix is EL.
            Some(code) if EU.contains(&code) => {
                let prefix = if code == "GR" { "EL" } else { code };
                shape_ok
                    && id.strip_prefix(prefix).is_some_and(|rest| {
                        (2..=12).contains(&rest.len())
                            && rest.bytes().all(|b| b.is_ascii_alphanumeric())
                    })
            }
            _ => shape_ok,
        }
    }
}

impl TaxIdValidator for TaxIdFormat {
    fn check<'a>(&'a self, country: Option<&'a CountryCode>, tax_id: &'a str) -> TaxIdFuture<'a> {
        let valid = TaxIdFormat::is_valid(country, tax_id);
        Box::pin(async move { Ok(valid) })
    }
}

/// Runs `validator` through `policy`: `Ok` for a valid id, [`OrgError::Invalid`] for an
/// invalid one, [`OrgError::Unavailable`] when the check failed, timed out or its breaker is
/// open.
pub(crate) async fn check_tax_id(
    validator: &dyn TaxIdValidator,
    policy: &neo_resilience::Policy,
    country: Option<&CountryCode>,
    tax_id: &str,
) -> Result<(), OrgError> {
    // A verdict is final and a failure is the registry's: neither is retried here.
    fn no_retry<E>(_: &E) -> neo_resilience::RetryDecision {
        neo_resilience::RetryDecision::Stop
    }
    match policy
        .call_with(no_retry, || validator.check(country, tax_id))
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(OrgError::invalid(
            "tax id",
            format!(
                "{:?} is not a valid tax id{}",
                tax_id.chars().take(32).collect::<String>(),
                country.map_or(String::new(), |c| format!(" for {}", c.as_str()))
            ),
        )),
        Err(error) => Err(OrgError::Unavailable(format!(
            "the tax id check failed: {error}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_check_knows_eu_vat_prefixes() {
        let de = CountryCode::parse("DE").unwrap();
        let gr = CountryCode::parse("GR").unwrap();
        let us = CountryCode::parse("US").unwrap();
        assert!(TaxIdFormat::is_valid(Some(&de), "DE123456789"));
        assert!(!TaxIdFormat::is_valid(Some(&de), "FR123456789"));
        assert!(TaxIdFormat::is_valid(Some(&gr), "EL123456789"));
        assert!(TaxIdFormat::is_valid(Some(&us), "12-3456789"));
        assert!(TaxIdFormat::is_valid(None, "AB-1234"));
        assert!(!TaxIdFormat::is_valid(None, "x"));
        assert!(!TaxIdFormat::is_valid(None, "ABCDEFG"));
        assert!(!TaxIdFormat::is_valid(None, "12'; DROP TABLE x"));
    }
}
