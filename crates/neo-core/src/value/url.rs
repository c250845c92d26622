use crate::{Error, Result};

const WHAT: &str = "https url";

/// An absolute `https://` URL with a host, no embedded credentials and no fragment, at most
/// 2048 characters: the shape of a webhook target or a logo link.
///
/// Whether the host may be reached (private or loopback addresses) is decided at connect
/// time by the HTTP client that uses it, after DNS resolution; this type only checks the text.
///
/// # Example
/// ```
/// use neo_core::HttpsUrl;
/// let url = HttpsUrl::parse("https://hooks.example.com/in?x=1")?;
/// assert_eq!(url.host(), "hooks.example.com");
/// assert!(HttpsUrl::parse("http://hooks.example.com").is_err());
/// assert!(HttpsUrl::parse("https://user:pw@hooks.example.com").is_err());
/// # Ok::<(), neo_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpsUrl(url::Url);

impl HttpsUrl {
    /// Longest accepted URL.
    pub const MAX_LEN: usize = 2048;

    /// Parses and checks a URL.
    ///
    /// # Errors
    /// [`Error::Invalid`] saying what is wrong; the URL text itself is not echoed, since it
    /// may carry a token.
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() > Self::MAX_LEN {
            return Err(Error::too_long(WHAT, Self::MAX_LEN, text.len()));
        }
        // The URL parser itself strips surrounding spaces and control characters.
        super::refuse_surrounding_whitespace(WHAT, text)?;
        let url =
            url::Url::parse(text).map_err(|e| Error::invalid(WHAT, format!("not a URL ({e})")))?;
        Self::from_url(url)
    }

    /// Checks an already parsed URL.
    ///
    /// # Errors
    /// As [`HttpsUrl::parse`].
    pub fn from_url(url: url::Url) -> Result<Self> {
        if url.scheme() != "https" {
            return Err(Error::invalid(
                WHAT,
                format!("scheme must be https, got {:?}", url.scheme()),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Error::invalid(WHAT, "must have a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid(
                WHAT,
                "must not embed credentials; send them in a header",
            ));
        }
        if url.fragment().is_some() {
            return Err(Error::invalid(WHAT, "must not have a #fragment"));
        }
        if url.as_str().len() > Self::MAX_LEN {
            return Err(Error::too_long(WHAT, Self::MAX_LEN, url.as_str().len()));
        }
        Ok(HttpsUrl(url))
    }

    /// The normalised URL text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The host (domain or IP literal).
    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    /// The parsed URL.
    pub fn as_url(&self) -> &url::Url {
        &self.0
    }
}

/// Shows scheme, host and path only: query strings often carry tokens.
impl std::fmt::Debug for HttpsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let query = if self.0.query().is_some() { "?…" } else { "" };
        write!(
            f,
            "HttpsUrl(https://{}{}{query})",
            self.host(),
            self.0.path()
        )
    }
}

super::string_value_impls!(HttpsUrl);
