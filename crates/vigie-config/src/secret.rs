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
