//! Vigie's layered configuration loader.
//!
//! Each binary embeds its defaults as TOML and declares its configuration as
//! serde structs (with `#[serde(deny_unknown_fields)]`, so that a typo is an
//! error rather than a silently ignored setting). [`Loader`] merges, later
//! winning:
//!
//! 1. the embedded defaults;
//! 2. an optional TOML config file (kebab-case keys accepted);
//! 3. environment variables: `VIGIE__KAFKA__BROKERS=host:9092` sets
//!    `kafka.brokers`;
//! 4. secrets read from files named by `<key>_file` settings.
//!
//! Errors ([`ConfigError`]) name the dotted key, the layer that set it (with
//! the line in a file, or the environment variable) and what was wrong.
//!
//! Secrets are [`Secret`] values: they never print, and the config file may
//! not hold them (see [`Loader::secret_keys`]). [`redacted_toml`] renders an
//! effective configuration for display with every secret masked.
//!
//! ```
//! use serde::Deserialize;
//! use vigie_config::{Loader, Secret};
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     kafka: Kafka,
//! }
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Kafka {
//!     brokers: String,
//!     sasl_password: Option<Secret>,
//! }
//!
//! let config: Config = Loader::new("[kafka]\nbrokers = \"localhost:9092\"\n")
//!     .env_vars([("VIGIE__KAFKA__SASL_PASSWORD", "hunter2")])
//!     .secret_keys(["kafka.sasl_password"])
//!     .load()?;
//! assert_eq!(config.kafka.brokers, "localhost:9092");
//! assert_eq!(config.kafka.sasl_password.unwrap().expose(), "hunter2");
//! # Ok::<(), vigie_config::ConfigError>(())
//! ```

mod env;
mod error;
mod loader;
mod secret;
mod toml_text;
mod tree;

use serde::Serialize;

pub use error::{ConfigError, Origin};
pub use loader::{DEFAULT_ENV_PREFIX, ENV_SEPARATOR, Loader};
pub use secret::{REDACTED, Secret, redact_url_passwords};

/// Renders an effective configuration as TOML, for `vigie config check` and
/// startup logs. [`Secret`] values render as `"***"`, and so does the
/// password of a URL written in any string (`postgres://u:***@db/x`).
pub fn redacted_toml<T: Serialize>(config: &T) -> Result<String, ConfigError> {
    let render = |e: &dyn std::fmt::Display| ConfigError::Render {
        message: e.to_string(),
    };
    let mut value = toml::Value::try_from(config).map_err(|e| render(&e))?;
    redact_strings(&mut value);
    toml::to_string_pretty(&value).map_err(|e| render(&e))
}

/// Redacts the URL passwords of every string in `value`.
fn redact_strings(value: &mut toml::Value) {
    match value {
        toml::Value::String(s) => {
            if let std::borrow::Cow::Owned(r) = redact_url_passwords(s) {
                *s = r;
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact_strings),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| redact_strings(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
