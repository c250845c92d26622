use crate::{Error, Result};

const WHAT: &str = "slug";

/// A URL-safe identifier: lowercase `[a-z0-9-]`, 3–64 characters, no leading, trailing or
/// double hyphen, and not a reserved word.
///
/// # Example
/// ```
/// use neo_core::Slug;
/// let slug = Slug::parse("acme-corp")?;
/// assert_eq!(slug.as_str(), "acme-corp");
/// assert!(Slug::parse("Acme").is_err());
/// assert!(Slug::parse("admin").is_err()); // reserved
/// assert_eq!(Slug::slugify("  Ácme  Corp & Co. ")?.as_str(), "acme-corp-co");
/// # Ok::<(), neo_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

impl Slug {
    /// Shortest accepted slug.
    pub const MIN_LEN: usize = 3;
    /// Longest accepted slug.
    pub const MAX_LEN: usize = 64;
    /// Words refused by [`Slug::parse`] because they collide with routes or mean something else.
    pub const RESERVED: &'static [&'static str] = &[
        "about",
        "admin",
        "api",
        "app",
        "assets",
        "auth",
        "billing",
        "blog",
        "dashboard",
        "docs",
        "help",
        "login",
        "logout",
        "me",
        "new",
        "null",
        "oauth",
        "org",
        "orgs",
        "register",
        "root",
        "settings",
        "signin",
        "signup",
        "static",
        "status",
        "support",
        "system",
        "undefined",
        "www",
    ];

    /// Parses a slug, refusing the words in [`Slug::RESERVED`].
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the first rule the text breaks.
    pub fn parse(text: &str) -> Result<Self> {
        // No default reserved word is longer than `LONGEST_RESERVED`: a longer slug that is
        // well formed is not compared with any of them.
        if text.len() > LONGEST_RESERVED && well_formed(text) {
            return Ok(Slug(text.to_owned()));
        }
        Self::parse_with_reserved(text, Self::RESERVED)
    }

    /// Parses a slug with the host's own reserved words instead of the defaults.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the first rule the text breaks.
    pub fn parse_with_reserved(text: &str, reserved: &[&str]) -> Result<Self> {
        if well_formed(text) {
            if reserved.contains(&text) {
                return Err(Error::invalid(WHAT, format!("{text:?} is a reserved word")));
            }
            return Ok(Slug(text.to_owned()));
        }
        // Not a slug: the checks below, in order, name the first rule it breaks.
        super::refuse_surrounding_whitespace(WHAT, text)?;
        let len = text.len();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(Error::invalid(
                WHAT,
                format!(
                    "must be {}-{} characters, got {}",
                    Self::MIN_LEN,
                    Self::MAX_LEN,
                    text.chars().count()
                ),
            ));
        }
        let mut previous_hyphen = false;
        for (index, c) in text.char_indices() {
            match c {
                'a'..='z' | '0'..='9' => previous_hyphen = false,
                '-' if index == 0 => {
                    return Err(Error::invalid(WHAT, "must not start with a hyphen"));
                }
                '-' if previous_hyphen => {
                    return Err(Error::invalid(
                        WHAT,
                        "must not contain two hyphens in a row",
                    ));
                }
                '-' => previous_hyphen = true,
                'A'..='Z' => {
                    return Err(Error::invalid(WHAT, "must be lowercase"));
                }
                other => {
                    return Err(Error::invalid(
                        WHAT,
                        format!(
                            "character {other:?} at position {index} is not one of a-z, 0-9 or '-'"
                        ),
                    ));
                }
            }
        }
        if previous_hyphen {
            return Err(Error::invalid(WHAT, "must not end with a hyphen"));
        }
        if reserved.contains(&text) {
            return Err(Error::invalid(WHAT, format!("{text:?} is a reserved word")));
        }
        Ok(Slug(text.to_owned()))
    }

    /// Derives a slug from free text (a name in any script): transliterates to ASCII with
    /// [`deunicode`] (`Łódź` → `lodz`, `Dvořák` → `dvorak`, `北京` → `bei-jing`,
    /// `Москва` → `moskva`), lowercases, turns every run of other characters into one hyphen
    /// and cuts to [`Slug::MAX_LEN`].
    ///
    /// # Errors
    /// [`Error::Invalid`] when what is left is too short or reserved.
    pub fn slugify(text: &str) -> Result<Self> {
        let mut out = String::with_capacity(text.len().min(Self::MAX_LEN));
        let mut pending_hyphen = false;
        // Characters deunicode has no transliteration for become separators.
        for c in deunicode::deunicode_with_tofu_cow(text, "-").chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                if pending_hyphen && !out.is_empty() {
                    if out.len() + 1 >= Self::MAX_LEN {
                        break;
                    }
                    out.push('-');
                }
                pending_hyphen = false;
                out.push(c);
                if out.len() >= Self::MAX_LEN {
                    break;
                }
            } else {
                pending_hyphen = true;
            }
        }
        Self::parse(out.trim_end_matches('-'))
    }

    /// The slug text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Unwraps the text.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The length of the longest word of [`Slug::RESERVED`].
const LONGEST_RESERVED: usize = {
    let mut longest = 0;
    let mut at = 0;
    while at < Slug::RESERVED.len() {
        if Slug::RESERVED[at].len() > longest {
            longest = Slug::RESERVED[at].len();
        }
        at += 1;
    }
    longest
};

/// Whether `text` keeps every rule of a slug but the reserved words: [`Slug::MIN_LEN`] to
/// [`Slug::MAX_LEN`] bytes of `a-z`, `0-9` and `-`, no hyphen first, last or after another.
/// Two passes over the bytes without a branch per byte (the compiler vectorises them); the
/// checks of [`Slug::parse_with_reserved`] that follow a `false` name the rule broken (they
/// refuse exactly the texts this refuses).
fn well_formed(text: &str) -> bool {
    let bytes = text.as_bytes();
    if !(Slug::MIN_LEN..=Slug::MAX_LEN).contains(&bytes.len()) {
        return false;
    }
    let allowed = bytes.iter().fold(true, |ok, &b| {
        ok & (b.is_ascii_lowercase() | b.is_ascii_digit() | (b == b'-'))
    });
    let (head, tail) = (&bytes[..bytes.len() - 1], &bytes[1..]);
    let double_hyphen = head
        .iter()
        .zip(tail)
        .fold(false, |seen, (&a, &b)| seen | ((a == b'-') & (b == b'-')));
    allowed && !double_hyphen && bytes[0] != b'-' && bytes[bytes.len() - 1] != b'-'
}

super::string_value_impls!(Slug);
