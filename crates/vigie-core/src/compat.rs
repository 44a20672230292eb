//! Backward-compatibility check between versions of one schema.
//!
//! A new version is compatible with an old one when every document the old
//! version accepts is still accepted, so that consumers moved to the new
//! version keep reading what producers on the old one write. The check is
//! structural and deliberately conservative about what it looks at: removed
//! properties, changed types, newly required properties and narrowed
//! enumerations, recursively through `properties` and `items`. Tightened
//! patterns or bounds are not detected.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::envelope::is_dotted_name;

/// How a new schema version breaks documents valid under an old one.
#[derive(Debug, Clone, PartialEq)]
pub enum IncompatibilityKind {
    /// A property of the old version is gone.
    Removed,
    /// The set of accepted JSON types shrank.
    Retyped {
        /// Types accepted before, e.g. `string` or `[integer, null]`.
        from: String,
        /// Types accepted now.
        to: String,
    },
    /// A property that was optional (or absent) is now required.
    AddedRequired,
    /// An enumeration lost values.
    NarrowedEnum {
        /// The values no longer accepted.
        lost: Vec<Value>,
    },
    /// A value that was unrestricted is now limited to an enumeration.
    EnumIntroduced,
}

impl IncompatibilityKind {
    /// Short stable label of the kind, for reports.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Removed => "removed",
            Self::Retyped { .. } => "retyped",
            Self::AddedRequired => "added_required",
            Self::NarrowedEnum { .. } => "narrowed_enum",
            Self::EnumIntroduced => "enum_introduced",
        }
    }
}

/// One incompatibility, located by a JSON pointer into the schemas.
#[derive(Debug, Clone, PartialEq)]
pub struct Incompatibility {
    /// JSON pointer to the affected subschema, e.g. `/properties/age_group`.
    pub path: String,
    /// What changed.
    pub kind: IncompatibilityKind,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        match &self.kind {
            IncompatibilityKind::Removed => write!(f, "{path}: property removed"),
            IncompatibilityKind::Retyped { from, to } => {
                write!(f, "{path}: type changed from {from} to {to}")
            }
            IncompatibilityKind::AddedRequired => write!(f, "{path}: property became required"),
            IncompatibilityKind::NarrowedEnum { lost } => {
                let lost: Vec<String> = lost.iter().map(Value::to_string).collect();
                write!(f, "{path}: enum lost {}", lost.join(", "))
            }
            IncompatibilityKind::EnumIntroduced => {
                write!(
                    f,
                    "{path}: enum introduced on a value that was unrestricted"
                )
            }
        }
    }
}

/// The JSON types a subschema admits; `None` when it does not restrict them.
fn types(schema: &Value) -> Option<BTreeSet<&str>> {
    match schema {
        Value::Bool(true) => None,
        Value::Bool(false) => Some(BTreeSet::new()),
        Value::Object(map) => match map.get("type") {
            Some(Value::String(t)) => Some(BTreeSet::from([t.as_str()])),
            Some(Value::Array(ts)) => Some(ts.iter().filter_map(Value::as_str).collect()),
            _ => None,
        },
        _ => None,
    }
}

fn describe(types: Option<&BTreeSet<&str>>) -> String {
    match types {
        None => "any".to_owned(),
        Some(set) if set.len() == 1 => set.iter().copied().collect(),
        Some(set) => format!("[{}]", set.iter().copied().collect::<Vec<_>>().join(", ")),
    }
}

/// Whether every type in `old` is still accepted by `new`; `number` covers
/// `integer` because every integer is a number.
fn covers(new: Option<&BTreeSet<&str>>, old: Option<&BTreeSet<&str>>) -> bool {
    match (new, old) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(new), Some(old)) => old
            .iter()
            .all(|t| new.contains(t) || (*t == "integer" && new.contains("number"))),
    }
}

/// Escapes a property name for use in a JSON pointer (RFC 6901).
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn required(schema: &Value) -> BTreeSet<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn compare(old: &Value, new: &Value, path: &str, out: &mut Vec<Incompatibility>) {
    let mut push = |path: String, kind| out.push(Incompatibility { path, kind });

    let (old_types, new_types) = (types(old), types(new));
    if !covers(new_types.as_ref(), old_types.as_ref()) {
        push(
            path.to_owned(),
            IncompatibilityKind::Retyped {
                from: describe(old_types.as_ref()),
                to: describe(new_types.as_ref()),
            },
        );
    }

    match (
        old.get("enum").and_then(Value::as_array),
        new.get("enum").and_then(Value::as_array),
    ) {
        (Some(old_values), Some(new_values)) => {
            let lost: Vec<Value> = old_values
                .iter()
                .filter(|v| !new_values.contains(v))
                .cloned()
                .collect();
            if !lost.is_empty() {
                push(path.to_owned(), IncompatibilityKind::NarrowedEnum { lost });
            }
        }
        (None, Some(_)) => push(path.to_owned(), IncompatibilityKind::EnumIntroduced),
        _ => {}
    }

    let old_required = required(old);
    for name in required(new).difference(&old_required) {
        push(
            format!("{path}/properties/{}", escape(name)),
            IncompatibilityKind::AddedRequired,
        );
    }

    let new_properties = new.get("properties").and_then(Value::as_object);
    if let Some(old_properties) = old.get("properties").and_then(Value::as_object) {
        for (name, old_sub) in old_properties {
            let sub_path = format!("{path}/properties/{}", escape(name));
            match new_properties.and_then(|p| p.get(name)) {
                Some(new_sub) => compare(old_sub, new_sub, &sub_path, out),
                None => out.push(Incompatibility {
                    path: sub_path,
                    kind: IncompatibilityKind::Removed,
                }),
            }
        }
    }

    // A missing `items` admits anything, like an empty schema.
    let anything = Value::Bool(true);
    if let Some(new_items) = new.get("items") {
        let old_items = old.get("items").unwrap_or(&anything);
        compare(old_items, new_items, &format!("{path}/items"), out);
    }
}

/// Lists what in `new` rejects documents that `old` accepts; empty when
/// `new` is backward compatible with `old`.
pub fn check(old: &Value, new: &Value) -> Vec<Incompatibility> {
    let mut out = Vec::new();
    compare(old, new, "", &mut out);
    out
}

/// Splits a schema file name `<family>.v<N>.json` into family and version.
///
/// The family is lower-case dotted words (`health.case`, `envelope`); the
/// version is a positive integer without leading zeros.
pub fn parse_file_name(name: &str) -> Option<(&str, u32)> {
    let (family, version) = name.strip_suffix(".json")?.rsplit_once(".v")?;
    if !is_dotted_name(family, 0)
        || version.starts_with('0')
        || !version.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((family, version.parse().ok()?))
}

/// Every version of one schema family and the incompatibilities found
/// between them.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyReport {
    /// Family name, e.g. `health.case`.
    pub family: String,
    /// Versions found, ascending.
    pub versions: Vec<u32>,
    /// `(old version, new version, problem)` for each pair checked.
    pub problems: Vec<(u32, u32, Incompatibility)>,
}

impl FamilyReport {
    /// Whether every version is compatible with every earlier one.
    pub fn is_compatible(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for FamilyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versions: Vec<String> = self.versions.iter().map(|v| format!("v{v}")).collect();
        write!(f, "{} ({})", self.family, versions.join(", "))?;
        if self.problems.is_empty() {
            return f.write_str(": compatible");
        }
        for (old, new, problem) in &self.problems {
            write!(f, "\n  v{old} -> v{new}: {problem}")?;
        }
        Ok(())
    }
}

/// Why a schema directory could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CompatError {
    /// The directory or a file in it could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `.json` file is not named `<family>.v<N>.json`.
    #[error("schema file name {file:?} is not <family>.v<N>.json")]
    BadFileName {
        /// The file name.
        file: String,
    },
    /// A schema file is not JSON.
    #[error("schema file {file}: invalid JSON: {source}")]
    InvalidJson {
        /// The file name.
        file: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// Checks every schema family in `dir`: each version against every earlier
/// version of the same family.
///
/// Every `.json` file in `dir` must be named `<family>.v<N>.json` (the
/// envelope included, as family `envelope`); other files and
/// subdirectories are ignored. Families come out sorted by name.
///
/// # Errors
///
/// If the directory cannot be read, or a `.json` file has a bad name or is
/// not JSON; the error names the file.
pub fn check_dir(dir: &Path) -> Result<Vec<FamilyReport>, CompatError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CompatError::Io { path, source }
    };
    let mut families: BTreeMap<String, BTreeMap<u32, Value>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().is_none_or(|ext| ext != "json") || !path.is_file() {
            continue;
        }
        let file = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (family, version) = parse_file_name(&file)
            .ok_or_else(|| CompatError::BadFileName { file: file.clone() })?;
        let family = family.to_owned();
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let schema = serde_json::from_str(&text)
            .map_err(|source| CompatError::InvalidJson { file, source })?;
        families.entry(family).or_default().insert(version, schema);
    }

    Ok(families
        .into_iter()
        .map(|(family, schemas)| {
            let mut problems = Vec::new();
            for (new_version, new) in &schemas {
                for (old_version, old) in schemas.range(..new_version) {
                    problems.extend(
                        check(old, new)
                            .into_iter()
                            .map(|p| (*old_version, *new_version, p)),
                    );
                }
            }
            FamilyReport {
                family,
                versions: schemas.keys().copied().collect(),
                problems,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(
            parse_file_name("health.case.v1.json"),
            Some(("health.case", 1))
        );
        assert_eq!(parse_file_name("envelope.v12.json"), Some(("envelope", 12)));
        for bad in [
            "health.case.json",
            "health.case.v0.json",
            "health.case.v01.json",
            "health.case.v1.yaml",
            "Health.case.v1.json",
            "health.case.v1a.json",
            "health.case.v.json",
            ".v1.json",
            "health.case.v99999999999.json",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pointers_are_escaped() {
        assert_eq!(escape("a/b~c"), "a~1b~0c");
    }

    #[test]
    fn type_sets() {
        let t = |v: Value| types(&v).map(|s| s.into_iter().map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(
            t(serde_json::json!({"type": "string"})),
            Some(vec!["string".to_owned()])
        );
        assert_eq!(t(serde_json::json!({})), None);
        assert_eq!(t(serde_json::json!(false)), Some(vec![]));
    }
}
