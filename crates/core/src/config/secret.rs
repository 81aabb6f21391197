//! A credential that never prints itself.

use std::fmt;

/// A credential: printed and logged only as `****`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The credential itself, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"****\"")
    }
}

/// A URL that may carry a password (`redis://user:password@host`): read and written
/// as the URL itself, shown anywhere else (`config check`, `Debug`, errors) with the
/// password as `****`.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL itself, for the one place that connects with it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password (if any) replaced by `****`; a URL that does not parse
    /// is not shown at all.
    pub fn masked(&self) -> String {
        match reqwest::Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("****"));
                }
                url.to_string()
            }
            Err(_) => "(not a URL; not shown)".into(),
        }
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        SecretUrl::new(url)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.masked())
    }
}
