//! Who may use the console: the [`Authorizer`] the host supplies (a [`BearerToken`] by
//! default), and the CSRF token every form carries.

use axum::http::{HeaderMap, header};
use hmac::{Hmac, KeyInit, Mac};
use neo_core::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Someone the authorizer let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who it is (a user id, `operator`): the CSRF token is bound to it.
    pub subject: String,
}

impl Principal {
    /// A principal named `subject`.
    pub fn new(subject: impl Into<String>) -> Self {
        Principal {
            subject: subject.into(),
        }
    }
}

/// Decides who may use the console; the host supplies it (its own sessions, SSO, an API
/// gateway's header) or uses [`BearerToken`].
pub trait Authorizer: Send + Sync + 'static {
    /// The principal behind a request's headers, or `None` (the console answers 401).
    fn authorize(&self, headers: &HeaderMap) -> Option<Principal>;

    /// Exchanges a token typed into the console's login form for a cookie value that
    /// [`authorize`](Self::authorize) accepts; `None` refuses it (and is the default: no login
    /// form).
    fn login(&self, token: &str) -> Option<SecretString> {
        let _ = token;
        None
    }
}

/// The default authorizer: one shared secret token, sent as `Authorization: Bearer <token>`
/// or, after the login form, as the console's cookie. Compared in constant time.
pub struct BearerToken {
    token: SecretString,
    cookie_name: String,
    subject: String,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken")
            .field("cookie_name", &self.cookie_name)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl BearerToken {
    /// Accepts `token` (at least 16 characters) under the cookie `cookie_name`
    /// ([`ConsoleConfig::cookie_name`](crate::ConsoleConfig::cookie_name)); the principal is
    /// `operator`.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) for a token shorter than 16 characters.
    pub fn new(token: SecretString, cookie_name: impl Into<String>) -> crate::Result<Self> {
        if token.expose_secret().chars().count() < 16 {
            return Err(crate::Error::invalid(
                "bearer token",
                "must be at least 16 characters",
            ));
        }
        Ok(BearerToken {
            token,
            cookie_name: cookie_name.into(),
            subject: "operator".to_owned(),
        })
    }

    /// Names the principal it lets in (`operator` by default).
    #[must_use]
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    fn matches(&self, given: &str) -> bool {
        bool::from(
            given
                .as_bytes()
                .ct_eq(self.token.expose_secret().as_bytes()),
        )
    }
}

impl Authorizer for BearerToken {
    fn authorize(&self, headers: &HeaderMap) -> Option<Principal> {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| self.matches(t.trim()));
        let cookie = cookie(headers, &self.cookie_name).is_some_and(|t| self.matches(t));
        (bearer || cookie).then(|| Principal::new(self.subject.clone()))
    }

    fn login(&self, token: &str) -> Option<SecretString> {
        self.matches(token).then(|| self.token.clone())
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// Signs and checks the CSRF token of a principal: HMAC-SHA256 under the console's key (random
/// per process unless the host gives one) of the principal's subject. A page from another
/// site cannot read it, so it cannot make the browser post a form that carries it.
#[derive(Clone)]
pub(crate) struct Csrf {
    key: Vec<u8>,
}

impl std::fmt::Debug for Csrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csrf { .. }")
    }
}

impl Csrf {
    pub(crate) fn new(key: Vec<u8>) -> Self {
        Csrf { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }

    /// The token forms of `principal` carry.
    pub(crate) fn token(&self, principal: &Principal) -> String {
        let mut mac = self.mac();
        mac.update(b"neo-console csrf\0");
        mac.update(principal.subject.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `given` is `principal`'s token (constant time).
    pub(crate) fn check(&self, principal: &Principal, given: Option<&str>) -> bool {
        given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(self.token(principal).as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn token() -> BearerToken {
        BearerToken::new(SecretString::from("0123456789abcdef-secret"), "neo_console")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn bearer_header_or_cookie_let_in_and_nothing_else_does() {
        let auth = token();
        let mut headers = HeaderMap::new();
        assert_eq!(auth.authorize(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdef-secret"),
        );
        assert_eq!(auth.authorize(&headers), Some(Principal::new("operator")));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdef-secreT"),
        );
        assert_eq!(auth.authorize(&headers), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; neo_console=0123456789abcdef-secret"),
        );
        assert!(auth.authorize(&headers).is_some());
        assert!(BearerToken::new(SecretString::from("short"), "c").is_err());
    }

    #[test]
    fn csrf_tokens_differ_per_key_and_principal() {
        let a = Csrf::new(vec![1; 32]);
        let b = Csrf::new(vec![2; 32]);
        let p = Principal::new("operator");
        let t = a.token(&p);
        assert!(a.check(&p, Some(&t)));
        assert!(!b.check(&p, Some(&t)));
        assert!(!a.check(&Principal::new("other"), Some(&t)));
        assert!(!a.check(&p, None));
        assert!(!a.check(&p, Some("")));
    }
}
