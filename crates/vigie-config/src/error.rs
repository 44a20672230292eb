//! Errors of the loader, and where a configuration value came from.
//!
//! Every error names the dotted key and the layer that set it (with the line
//! for TOML text), because "invalid type" without a location is useless to an
//! operator facing a config assembled from three layers.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The layer (and the place inside it) that set a configuration value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The TOML defaults embedded in the program.
    Defaults {
        /// 1-based line in the defaults text, when it could be found.
        line: Option<usize>,
    },
    /// The TOML config file.
    File {
        /// The path as given to [`Loader::file`](crate::Loader::file).
        path: PathBuf,
        /// 1-based line in the file, when it could be found.
        line: Option<usize>,
    },
    /// One environment variable.
    Env {
        /// The variable's name, e.g. `VIGIE__KAFKA__BROKERS`.
        var: String,
    },
    /// A secret read from the file named by a `<key>_file` setting.
    SecretFile {
        /// The dotted `<key>_file` key that named the file.
        key: String,
        /// The secret file's path.
        path: PathBuf,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Defaults { line } => {
                f.write_str("embedded defaults")?;
                write_line(f, *line)
            }
            Origin::File { path, line } => {
                write!(f, "config file {}", path.display())?;
                write_line(f, *line)
            }
            Origin::Env { var } => write!(f, "environment variable {var}"),
            Origin::SecretFile { key, path } => {
                write!(f, "secret file {} (from `{key}`)", path.display())
            }
        }
    }
}

fn write_line(f: &mut fmt::Formatter<'_>, line: Option<usize>) -> fmt::Result {
    match line {
        Some(line) => write!(f, ", line {line}"),
        None => Ok(()),
    }
}

/// Why the configuration could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        /// The path as given to the loader.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// The defaults or the config file are not valid TOML.
    #[error("{origin}{}: TOML syntax error: {message}", column_suffix(*column))]
    Syntax {
        /// The TOML text and the line of the error.
        origin: Origin,
        /// 1-based column of the error, when known.
        column: Option<usize>,
        /// The parser's description of the problem.
        message: String,
    },

    /// A key that the configuration structs do not declare: usually a typo.
    #[error("{}unknown key `{key}` ({})", origin_prefix(origin.as_ref()), expected_list(expected))]
    UnknownKey {
        /// Where the key was set; `None` only if no layer could be found,
        /// which would be a bug in the loader.
        origin: Option<Origin>,
        /// The full dotted key, e.g. `kafka.batch_sise`.
        key: String,
        /// The keys allowed in the same table.
        expected: Vec<String>,
    },

    /// A value of the wrong type or out of the allowed range.
    #[error("{}invalid value for `{key}`: {message}", origin_prefix(origin.as_ref()))]
    InvalidValue {
        /// Where the value was set; `None` only for the document root.
        origin: Option<Origin>,
        /// The full dotted key.
        key: String,
        /// What was wrong, e.g. `invalid type: found string "abc", expected u64`.
        message: String,
    },

    /// A required key that no layer sets.
    #[error(
        "missing key `{key}`: set it in the config file or with the environment variable {env_var}"
    )]
    MissingKey {
        /// The full dotted key.
        key: String,
        /// The environment variable that would set it.
        env_var: String,
    },

    /// A secret set in the config file, which is refused so that secrets
    /// never end up in version control or world-readable files.
    #[error(
        "{origin}: `{key}` is a secret and must not be set in the config file; \
         set the environment variable {env_var} or `{key}_file` (a path to a file holding it)"
    )]
    SecretInFile {
        /// Where the file set it.
        origin: Origin,
        /// The dotted secret key.
        key: String,
        /// The environment variable to use instead.
        env_var: String,
    },

    /// The file named by a `<key>_file` setting could not be read.
    #[error("{origin}: cannot read secret file {} for `{key}`: {source}", path.display())]
    SecretFile {
        /// Where the `<key>_file` setting was made.
        origin: Origin,
        /// The dotted `<key>_file` key.
        key: String,
        /// The secret file's path, after resolution.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// The same key is set twice in one layer, e.g. as `batch-size` and
    /// `batch_size`, or by two environment variables.
    #[error("{origin}: `{key}` is set more than once (also by {other})")]
    DuplicateKey {
        /// One of the places setting it.
        origin: Origin,
        /// The dotted key.
        key: String,
        /// The other place setting it.
        other: Origin,
    },

    /// An environment variable with the prefix whose name is not a valid key
    /// path, or whose value is not UTF-8.
    #[error("environment variable {var}: {message}")]
    InvalidEnv {
        /// The variable's name (lossily converted if not UTF-8).
        var: String,
        /// What was wrong.
        message: String,
    },

    /// The configuration could not be rendered as TOML.
    #[error("cannot render the configuration as TOML: {message}")]
    Render {
        /// The serializer's description of the problem.
        message: String,
    },
}

fn column_suffix(column: Option<usize>) -> String {
    column.map(|c| format!(", column {c}")).unwrap_or_default()
}

fn origin_prefix(origin: Option<&Origin>) -> String {
    origin.map(|o| format!("{o}: ")).unwrap_or_default()
}

fn expected_list(expected: &[String]) -> String {
    if expected.is_empty() {
        "no keys are allowed here".to_owned()
    } else {
        format!("expected one of: {}", expected.join(", "))
    }
}
