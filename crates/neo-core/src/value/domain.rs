use crate::{Error, Result};

const WHAT: &str = "domain name";

/// A fully qualified DNS domain name, stored in its ASCII (punycode) lowercase form.
///
/// Unicode input is converted with IDNA (UTS #46); at least two labels are required, each
/// 1–63 characters of `[a-z0-9-]` not starting or ending with a hyphen, 253 characters in all.
/// IP addresses are refused. A single trailing dot is accepted and dropped. A public suffix
/// is not required (`example.internal` is fine).
///
/// # Example
/// ```
/// use neo_core::DomainName;
/// let d = DomainName::parse("Bücher.Example")?;
/// assert_eq!(d.as_str(), "xn--bcher-kva.example");
/// assert_eq!(d.to_unicode(), "bücher.example");
/// assert!(DomainName::parse("localhost").is_err());
/// assert!(DomainName::parse("10.0.0.1").is_err());
/// # Ok::<(), neo_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    /// Longest accepted name, in ASCII form.
    pub const MAX_LEN: usize = 253;
    /// Longest accepted label.
    pub const MAX_LABEL_LEN: usize = 63;

    /// Parses and normalises a domain name.
    ///
    /// # Errors
    /// [`Error::Invalid`] saying which rule the name breaks.
    pub fn parse(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(Error::invalid(WHAT, "must not be empty"));
        }
        super::refuse_surrounding_whitespace(WHAT, text)?;
        // Bound the work IDNA does on hostile input: no valid name is this long even in Unicode.
        if text.len() > Self::MAX_LEN * 4 {
            return Err(Error::invalid(
                WHAT,
                format!("{} bytes is too long", text.len()),
            ));
        }
        let text = text.strip_suffix('.').unwrap_or(text);
        let ascii = if text.is_ascii() {
            text.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii_strict(text)
                .map_err(|_| Error::invalid(WHAT, "not a valid internationalised domain name"))?
        };
        Self::check_ascii(&ascii)?;
        Ok(DomainName(ascii))
    }

    fn check_ascii(ascii: &str) -> Result<()> {
        if ascii.is_empty() {
            return Err(Error::invalid(WHAT, "must not be empty"));
        }
        if ascii.len() > Self::MAX_LEN {
            return Err(Error::too_long(WHAT, Self::MAX_LEN, ascii.len()));
        }
        let mut labels = 0;
        let mut last = "";
        for label in ascii.split('.') {
            labels += 1;
            if label.is_empty() {
                return Err(Error::invalid(
                    WHAT,
                    "has an empty label (two dots in a row or a leading dot)",
                ));
            }
            if label.len() > Self::MAX_LABEL_LEN {
                return Err(Error::invalid(
                    WHAT,
                    format!(
                        "label of {} characters exceeds {}",
                        label.len(),
                        Self::MAX_LABEL_LEN
                    ),
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(Error::invalid(
                    WHAT,
                    format!("label {label:?} starts or ends with a hyphen"),
                ));
            }
            if let Some(bad) = label
                .chars()
                .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
            {
                return Err(Error::invalid(
                    WHAT,
                    format!("character {bad:?} is not allowed in a domain name"),
                ));
            }
            last = label;
        }
        if labels < 2 {
            return Err(Error::invalid(
                WHAT,
                "must have at least two labels (like example.com)",
            ));
        }
        if last.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid(
                WHAT,
                "the last label is numeric: IP addresses are not domain names",
            ));
        }
        Ok(())
    }

    /// The ASCII (punycode) form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Unicode form, for display.
    pub fn to_unicode(&self) -> String {
        idna::domain_to_unicode(&self.0).0
    }

    /// Whether `self` is `other` or a subdomain of it.
    pub fn is_subdomain_of(&self, other: &DomainName) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.ends_with(other.as_str())
                && self.0.as_bytes()[self.0.len() - other.0.len() - 1] == b'.')
    }
}

super::string_value_impls!(DomainName);
