//! The environment layer: `VIGIE__KAFKA__BROKERS=a:9092` sets `kafka.brokers`.
//!
//! Built by hand rather than with figment's `Env` provider for two reasons:
//! tests pass an explicit list of variables instead of mutating the process
//! environment, and errors must name the one variable that set a key, which
//! figment's provider-level metadata cannot do.

use std::collections::BTreeSet;
use std::ffi::OsString;

use figment::value::{Dict, Value};

use crate::error::{ConfigError, Origin};
use crate::tree;

/// The environment variables with the prefix, as one dictionary.
#[derive(Debug, Default)]
pub(crate) struct EnvLayer {
    pub(crate) dict: Dict,
    /// Each variable's key path and name, sorted by name.
    pub(crate) vars: Vec<(Vec<String>, String)>,
}

impl EnvLayer {
    /// The variable that set `path`, one that set a prefix of it, or one that
    /// set something below it (when `path` is a table).
    pub(crate) fn var_for(&self, path: &[String]) -> Option<&str> {
        self.vars
            .iter()
            .find(|(key, _)| path.starts_with(key))
            .or_else(|| self.vars.iter().find(|(key, _)| key.starts_with(path)))
            .map(|(_, var)| var.as_str())
    }
}

/// The variable name that would set `path`.
pub(crate) fn var_name(prefix: &str, separator: &str, path: &[String]) -> String {
    let keys: Vec<String> = path.iter().map(|seg| seg.to_uppercase()).collect();
    format!("{prefix}{}", keys.join(separator))
}

/// Collects the variables whose name starts with `prefix` (ASCII
/// case-insensitively, like figment's `Env::prefixed`).
///
/// Values are parsed like figment's `Env` does (`5` is an integer, `true` a
/// boolean, `[a,b]` an array, `"5"` the string `5`), except for the keys in
/// `raw_keys` (secrets and their `_file` paths), kept verbatim so that a
/// password such as `0123` is not turned into the number 123.
pub(crate) fn collect(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    prefix: &str,
    separator: &str,
    raw_keys: &BTreeSet<Vec<String>>,
) -> Result<EnvLayer, ConfigError> {
    let mut matching: Vec<(String, OsString)> = Vec::new();
    for (name, value) in vars {
        let lossy = name.to_string_lossy();
        let has_prefix = lossy
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix));
        if !has_prefix {
            continue;
        }
        let Some(name) = name.to_str() else {
            return Err(ConfigError::InvalidEnv {
                var: lossy.into_owned(),
                message: "the variable name is not valid UTF-8".to_owned(),
            });
        };
        matching.push((name.to_owned(), value));
    }
    // The process environment has no stable order; sorting makes conflicts
    // and error messages deterministic.
    matching.sort_by(|a, b| a.0.cmp(&b.0));

    let mut layer = EnvLayer::default();
    for (name, value) in matching {
        let rest = name[prefix.len()..].to_owned();
        let path: Vec<String> = rest.split(separator).map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::InvalidEnv {
                var: name,
                message: format!(
                    "cannot make a key from `{rest}`: \
                     segments separated by `{separator}` must not be empty"
                ),
            });
        }
        let Some(raw) = value.to_str() else {
            return Err(ConfigError::InvalidEnv {
                var: name,
                message: "the value is not valid UTF-8".to_owned(),
            });
        };
        let value = if raw_keys.contains(&path) {
            Value::from(raw.to_owned())
        } else {
            match raw.parse::<Value>() {
                Ok(value) => value,
                Err(never) => match never {},
            }
        };
        if tree::insert(&mut layer.dict, &path, value).is_err() {
            let other = layer.var_for(&path).map_or_else(String::new, str::to_owned);
            return Err(ConfigError::DuplicateKey {
                origin: Origin::Env { var: name },
                key: tree::render(&path, |_| false),
                other: Origin::Env { var: other },
            });
        }
        layer.vars.push((path, name));
    }
    Ok(layer)
}
