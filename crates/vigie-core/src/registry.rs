//! The schema registry: compiled validators for the envelope and every
//! payload schema, and the validation every consumer runs on raw messages
//! before trusting them.
//!
//! Failures carry a [`ValidationErrorKind`] whose labels are stable, since
//! they are used as metric labels and dead-letter reason codes.

use std::collections::BTreeMap;
use std::fmt;

use jsonschema::{Draft, Validator};
use serde_json::Value;

use crate::compat::parse_file_name;
use crate::envelope::{Envelope, is_dotted_name};

/// Family name of the envelope schema file.
const ENVELOPE_FAMILY: &str = "envelope";

/// The only envelope version this build understands.
const ENVELOPE_VERSION: u32 = 1;

/// At most this many problems are reported per message: the first few are
/// enough to diagnose it, and the report goes into headers and logs.
const MAX_VIOLATIONS: usize = 3;

/// Validator messages quote the offending instance, which may be large.
const MAX_MESSAGE_CHARS: usize = 300;

/// The schema files built into the binary, so that every service validates
/// against the same contract without reading files at run time.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "envelope.v1.json",
        include_str!("../../../schemas/envelope.v1.json"),
    ),
    (
        "health.case.v1.json",
        include_str!("../../../schemas/health.case.v1.json"),
    ),
    (
        "health.country_day.v1.json",
        include_str!("../../../schemas/health.country_day.v1.json"),
    ),
    (
        "health.outbreak_news.v1.json",
        include_str!("../../../schemas/health.outbreak_news.v1.json"),
    ),
    (
        "health.case_score.v1.json",
        include_str!("../../../schemas/health.case_score.v1.json"),
    ),
    (
        "health.drift_report.v1.json",
        include_str!("../../../schemas/health.drift_report.v1.json"),
    ),
];

/// Compiled validators for the envelope and every payload schema, keyed by
/// schema name and version.
///
/// Building one compiles every schema, so build it once and share it (it is
/// `Send + Sync`; wrap it in an `Arc`).
pub struct SchemaRegistry {
    envelope: Validator,
    data: BTreeMap<(String, u32), Validator>,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("schemas", &self.data.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why the registry could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file name is not `<family>.v<N>.json`, or names a payload family
    /// that no envelope could refer to.
    #[error("schema file name {file:?} is not <family>.v<N>.json with a dotted family name")]
    BadFileName {
        /// The file name.
        file: String,
    },
    /// A file is not JSON.
    #[error("schema file {file}: invalid JSON: {source}")]
    InvalidJson {
        /// The file name.
        file: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A file is JSON but not a valid draft 2020-12 schema.
    #[error("schema file {file}: not a valid JSON Schema: {message}")]
    InvalidSchema {
        /// The file name.
        file: String,
        /// What the schema compiler reported.
        message: String,
    },
    /// Two files describe the same schema and version.
    #[error("schema file {file}: {family} v{version} is defined twice")]
    Duplicate {
        /// The second file name.
        file: String,
        /// Schema family.
        family: String,
        /// Version.
        version: u32,
    },
    /// The envelope schema is missing or is a version this build does not know.
    #[error("expected exactly the envelope schema envelope.v1.json, found {found:?}")]
    Envelope {
        /// Envelope versions that were found.
        found: Vec<u32>,
    },
}

/// The kind of a [`ValidationError`], with stable short labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValidationErrorKind {
    /// The message is not JSON.
    InvalidJson,
    /// The message is JSON but not a valid envelope.
    EnvelopeViolation,
    /// The envelope names a schema and version the registry does not have.
    UnknownSchema,
    /// The payload does not satisfy its schema.
    SchemaViolation,
    /// The event is valid but holds a value no store can keep: a NUL
    /// character in a string, or a date outside years 1 to 9999.
    Unstorable,
}

impl ValidationErrorKind {
    /// Every kind, e.g. to pre-register metric label values.
    pub const ALL: [ValidationErrorKind; 5] = [
        Self::InvalidJson,
        Self::EnvelopeViolation,
        Self::UnknownSchema,
        Self::SchemaViolation,
        Self::Unstorable,
    ];

    /// Stable label: `invalid_json`, `envelope_violation`, `unknown_schema`,
    /// `schema_violation` or `unstorable`. Dashboards and dead-letter consumers depend on
    /// these; do not rename them.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::EnvelopeViolation => "envelope_violation",
            Self::UnknownSchema => "unknown_schema",
            Self::SchemaViolation => "schema_violation",
            Self::Unstorable => "unstorable",
        }
    }
}

impl fmt::Display for ValidationErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One way in which a document fails a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer to the failing value in the message (`""` for the whole
    /// message; payload pointers start with `/data`).
    pub pointer: String,
    /// What the validator reported.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "(root)"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.message)
    }
}

/// Displays the first violations, noting that there were more.
struct ViolationList<'a>(&'a [Violation], bool);

impl fmt::Display for ViolationList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, violation) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{violation}")?;
        }
        if self.1 {
            f.write_str("; and more")?;
        }
        Ok(())
    }
}

/// Why a message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The message is not JSON.
    #[error("invalid JSON: {message}")]
    InvalidJson {
        /// Line of the error, from 1.
        line: usize,
        /// Column of the error, from 1.
        column: usize,
        /// The parser's message, including the position.
        message: String,
    },
    /// The message does not satisfy the envelope schema.
    #[error("envelope: {}", ViolationList(.violations, *.truncated))]
    EnvelopeViolation {
        /// The first few violations.
        violations: Vec<Violation>,
        /// Whether there were more than those listed.
        truncated: bool,
    },
    /// The envelope names a schema and version the registry does not have.
    #[error("unknown schema {schema} v{version}")]
    UnknownSchema {
        /// Schema name from the envelope.
        schema: String,
        /// Version from the envelope.
        version: u32,
    },
    /// The event is valid, but a value in it cannot be stored.
    #[error("schema {schema} v{version}: {violation}")]
    Unstorable {
        /// Schema name from the envelope.
        schema: String,
        /// Version from the envelope.
        version: u32,
        /// The value and why no store can keep it.
        violation: Violation,
    },
    /// The payload does not satisfy its schema.
    #[error("schema {schema} v{version}: {}", ViolationList(.violations, *.truncated))]
    SchemaViolation {
        /// Schema name from the envelope.
        schema: String,
        /// Version from the envelope.
        version: u32,
        /// The first few violations.
        violations: Vec<Violation>,
        /// Whether there were more than those listed.
        truncated: bool,
    },
}

impl ValidationError {
    /// The kind of failure, for metrics and dead-letter reason codes.
    pub fn kind(&self) -> ValidationErrorKind {
        match self {
            Self::InvalidJson { .. } => ValidationErrorKind::InvalidJson,
            Self::EnvelopeViolation { .. } => ValidationErrorKind::EnvelopeViolation,
            Self::UnknownSchema { .. } => ValidationErrorKind::UnknownSchema,
            Self::SchemaViolation { .. } => ValidationErrorKind::SchemaViolation,
            Self::Unstorable { .. } => ValidationErrorKind::Unstorable,
        }
    }

    /// The schema violations, empty for the kinds that have none.
    pub fn violations(&self) -> &[Violation] {
        match self {
            Self::EnvelopeViolation { violations, .. }
            | Self::SchemaViolation { violations, .. } => violations,
            Self::Unstorable { violation, .. } => std::slice::from_ref(violation),
            Self::InvalidJson { .. } | Self::UnknownSchema { .. } => &[],
        }
    }
}

fn compile(file: &str, text: &str) -> Result<Validator, RegistryError> {
    let schema: Value =
        serde_json::from_str(text).map_err(|source| RegistryError::InvalidJson {
            file: file.to_owned(),
            source,
        })?;
    // Formats are asserted, not just annotated, so that impossible dates and
    // malformed URIs are caught here exactly as the Rust types catch them.
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| RegistryError::InvalidSchema {
            file: file.to_owned(),
            message: e.to_string(),
        })
}

fn truncate(mut message: String) -> String {
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(cut);
        message.push('…');
    }
    message
}

/// Collects the first violations of `instance`, with pointers prefixed by
/// `prefix` so that they point into the whole message.
fn violations(
    validator: &Validator,
    instance: &Value,
    prefix: &str,
) -> Option<(Vec<Violation>, bool)> {
    if validator.is_valid(instance) {
        return None;
    }
    let mut errors = validator.iter_errors(instance);
    let found: Vec<Violation> = errors
        .by_ref()
        .take(MAX_VIOLATIONS)
        .map(|e| Violation {
            pointer: format!("{prefix}{}", e.instance_path()),
            message: truncate(e.to_string()),
        })
        .collect();
    let truncated = errors.next().is_some();
    Some((found, truncated))
}

impl SchemaRegistry {
    /// Builds the registry from the schema files compiled into this crate.
    ///
    /// # Errors
    ///
    /// Only if a built-in schema is broken, which the crate's tests rule out.
    pub fn embedded() -> Result<Self, RegistryError> {
        Self::from_sources(EMBEDDED.iter().copied())
    }

    /// Builds a registry from `(file name, contents)` pairs, the file names
    /// following `<family>.v<N>.json`. Exactly one must be `envelope.v1.json`.
    ///
    /// # Errors
    ///
    /// If a file name does not follow the pattern, a file is not a valid
    /// schema, a schema is given twice, or the envelope schema is missing.
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, RegistryError> {
        let mut envelopes = Vec::new();
        let mut envelope = None;
        let mut data = BTreeMap::new();
        for (file, text) in sources {
            let bad_name = || RegistryError::BadFileName {
                file: file.to_owned(),
            };
            let (family, version) = parse_file_name(file).ok_or_else(bad_name)?;
            if family == ENVELOPE_FAMILY {
                envelopes.push(version);
                if version == ENVELOPE_VERSION {
                    envelope = Some(compile(file, text)?);
                }
                continue;
            }
            if !is_dotted_name(family, 1) {
                return Err(bad_name());
            }
            let validator = compile(file, text)?;
            if data
                .insert((family.to_owned(), version), validator)
                .is_some()
            {
                return Err(RegistryError::Duplicate {
                    file: file.to_owned(),
                    family: family.to_owned(),
                    version,
                });
            }
        }
        match envelope {
            Some(envelope) if envelopes.len() == 1 => Ok(Self { envelope, data }),
            _ => Err(RegistryError::Envelope { found: envelopes }),
        }
    }

    /// The payload schemas known, as `(name, version)`, in order.
    pub fn schemas(&self) -> impl Iterator<Item = (&str, u32)> {
        self.data
            .keys()
            .map(|(name, version)| (name.as_str(), *version))
    }

    /// Whether the registry has this payload schema.
    pub fn contains(&self, schema: &str, version: u32) -> bool {
        self.data.contains_key(&(schema.to_owned(), version))
    }

    /// Checks a raw message: JSON, then the envelope, then the payload
    /// against the schema the envelope names.
    ///
    /// # Errors
    ///
    /// A [`ValidationError`] of the first failing step; see
    /// [`ValidationError::kind`].
    pub fn validate(&self, bytes: &[u8]) -> Result<Envelope<Value>, ValidationError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ValidationError::InvalidJson {
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            })?;
        if let Some((violations, truncated)) = violations(&self.envelope, &value, "") {
            return Err(ValidationError::EnvelopeViolation {
                violations,
                truncated,
            });
        }
        // The schema already vouched for the shape; this only fails where
        // the schema is looser than the Rust type, and then the envelope is
        // still at fault.
        let envelope: Envelope<Value> =
            serde_json::from_value(value).map_err(|e| ValidationError::EnvelopeViolation {
                violations: vec![Violation {
                    pointer: String::new(),
                    message: truncate(e.to_string()),
                }],
                truncated: false,
            })?;
        self.validate_data(&envelope.schema, envelope.schema_version, &envelope.data)?;
        Ok(envelope)
    }

    /// Checks a payload on its own against one schema, e.g. before a producer
    /// sends it. Pointers in the error start with `/data`, as in
    /// [`validate`](Self::validate).
    ///
    /// # Errors
    ///
    /// [`ValidationError::UnknownSchema`] or
    /// [`ValidationError::SchemaViolation`].
    pub fn validate_data(
        &self,
        schema: &str,
        version: u32,
        data: &Value,
    ) -> Result<(), ValidationError> {
        let validator = self
            .data
            .get(&(schema.to_owned(), version))
            .ok_or_else(|| ValidationError::UnknownSchema {
                schema: schema.to_owned(),
                version,
            })?;
        match violations(validator, data, "/data") {
            None => Ok(()),
            Some((violations, truncated)) => Err(ValidationError::SchemaViolation {
                schema: schema.to_owned(),
                version,
                violations,
                truncated,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable() {
        let labels: Vec<_> = ValidationErrorKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            labels,
            [
                "invalid_json",
                "envelope_violation",
                "unknown_schema",
                "schema_violation",
                "unstorable"
            ]
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let cut = truncate("é".repeat(MAX_MESSAGE_CHARS + 10));
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short".to_owned()), "short");
    }

    #[test]
    fn needs_exactly_one_envelope() {
        let (_, envelope) = EMBEDDED[0];
        assert!(matches!(
            SchemaRegistry::from_sources([]),
            Err(RegistryError::Envelope { .. })
        ));
        assert!(matches!(
            SchemaRegistry::from_sources([
                ("envelope.v1.json", envelope),
                ("envelope.v2.json", envelope)
            ]),
            Err(RegistryError::Envelope { .. })
        ));
        assert!(matches!(
            SchemaRegistry::from_sources([("envelope.v1.json", envelope), ("case.v1.json", "{}")]),
            Err(RegistryError::BadFileName { .. })
        ));
    }
}
