use super::DomainName;
use crate::{Error, Result};

const WHAT: &str = "email address";

/// An email address `local@domain`: a dot-atom local part (no quoted forms) of at most 64
/// bytes and a [`DomainName`] (IDNA-normalised to ASCII), 254 bytes in all.
///
/// The local part keeps its case; the domain is lowercased.
///
/// # Example
/// ```
/// use neo_core::EmailAddress;
/// let e = EmailAddress::parse("Jane.Doe+news@Example.COM")?;
/// assert_eq!(e.as_str(), "Jane.Doe+news@example.com");
/// assert_eq!(e.local_part(), "Jane.Doe+news");
/// assert_eq!(e.domain(), "example.com");
/// assert!(EmailAddress::parse("jane@").is_err());
/// # Ok::<(), neo_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    text: String,
    at: usize,
}

impl EmailAddress {
    /// Longest accepted address (RFC 5321 path limit less the angle brackets).
    pub const MAX_LEN: usize = 254;
    /// Longest accepted local part.
    pub const MAX_LOCAL_LEN: usize = 64;

    /// Parses an email address.
    ///
    /// # Errors
    /// [`Error::Invalid`] saying which part is wrong and why, also for leading or trailing
    /// whitespace (the text is not trimmed).
    pub fn parse(text: &str) -> Result<Self> {
        super::refuse_surrounding_whitespace(WHAT, text)?;
        if text.len() > Self::MAX_LEN * 4 {
            return Err(Error::invalid(
                WHAT,
                format!("{} bytes is too long", text.len()),
            ));
        }
        let Some((local, domain)) = text.rsplit_once('@') else {
            return Err(Error::invalid(WHAT, "must contain '@'"));
        };
        check_local_part(local)?;
        let domain = DomainName::parse(domain).map_err(|e| match e {
            Error::Invalid { reason, .. } => Error::invalid(WHAT, format!("domain part: {reason}")),
            other => other,
        })?;
        let text = format!("{local}@{}", domain.as_str());
        if text.len() > Self::MAX_LEN {
            return Err(Error::too_long(WHAT, Self::MAX_LEN, text.len()));
        }
        Ok(EmailAddress {
            at: local.len(),
            text,
        })
    }

    /// The whole address.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The part before `@`.
    pub fn local_part(&self) -> &str {
        &self.text[..self.at]
    }

    /// The (ASCII, lowercase) domain after `@`.
    pub fn domain(&self) -> &str {
        &self.text[self.at + 1..]
    }
}

fn check_local_part(local: &str) -> Result<()> {
    if local.is_empty() {
        return Err(Error::invalid(WHAT, "local part before '@' is empty"));
    }
    if local.len() > EmailAddress::MAX_LOCAL_LEN {
        return Err(Error::invalid(
            WHAT,
            format!(
                "local part must be at most {} characters, got {}",
                EmailAddress::MAX_LOCAL_LEN,
                local.len()
            ),
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(Error::invalid(
            WHAT,
            "local part has a leading, trailing or double dot",
        ));
    }
    if let Some(bad) = local.chars().find(|&c| !is_atext(c) && c != '.') {
        return Err(Error::invalid(
            WHAT,
            format!("character {bad:?} is not allowed in the local part"),
        ));
    }
    Ok(())
}

/// RFC 5322 `atext`.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c)
}

super::string_value_impls!(EmailAddress);
