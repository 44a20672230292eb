//! A string that never shows up in logs, debug output or rendered configs.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret prints as, whatever its value.
pub const REDACTED: &str = "***";

/// A secret configuration value (password, token, key).
///
/// It deserialises from a plain string, but serialises as `"***"` and prints
/// as `Secret(***)` in `Debug`, so dumping a configuration struct cannot leak
/// it. The only way to read it is [`Secret::expose`], which makes each use
/// easy to find in review.
///
/// A consequence: serialising then deserialising a config loses its secrets.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value, e.g. for tests or a value obtained outside the loader.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// `text` with the password of every URL in it (`scheme://user:password@…`)
/// replaced by [`REDACTED`]: for URLs shown in a rendered configuration, a
/// log line or an error message. Borrowed when there is none.
pub fn redact_url_passwords(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut done = 0;
    let mut from = 0;
    while let Some(i) = text[from..].find("://") {
        let start = from + i + 3;
        let end = text[start..]
            .find(|c: char| "/?#)\"' \t\r\n".contains(c))
            .map_or(text.len(), |j| start + j);
        from = end;
        let authority = &text[start..end];
        let Some(at) = authority.rfind('@') else {
            continue;
        };
        let Some(colon) = authority[..at].find(':') else {
            continue;
        };
        let (password_start, password_end) = (start + colon + 1, start + at);
        out.push_str(&text[done..password_start]);
        out.push_str(REDACTED);
        done = password_end;
    }
    if done == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(&text[done..]);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod url_tests {
    use super::redact_url_passwords as redact;

    #[test]
    fn a_urls_password_is_redacted_and_the_rest_kept() {
        assert_eq!(
            redact("postgres://u:hunter2@localhost/x"),
            "postgres://u:***@localhost/x"
        );
        assert_eq!(
            redact("postgres://u:p%40ss:w@db:5432/x?sslmode=require"),
            "postgres://u:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact("GET https://a:b@h/p failed; retry http://c:d@k"),
            "GET https://a:***@h/p failed; retry http://c:***@k"
        );
        assert_eq!(
            redact("error (for url (http://x:y@h))"),
            "error (for url (http://x:***@h))"
        );
    }

    #[test]
    fn text_without_a_password_is_borrowed_unchanged() {
        for text in [
            "postgres://u@localhost/x",
            "https://data.cdc.gov/resource/n8mc-b4w4.json?$where=a:b",
            "localhost:9092",
            "no url here: a@b",
            "",
        ] {
            let out = redact(text);
            assert!(matches!(out, std::borrow::Cow::Borrowed(_)), "{text}");
            assert_eq!(out, text);
        }
    }
}
