//! TOML text (the embedded defaults or the config file) turned into a
//! figment dictionary, and the line where a given key is defined.
//!
//! The text is parsed with toml's spanned document parser rather than figment's
//! own TOML provider because figment keeps no positions: the spans are what
//! let an error say "line 7" however the key was written (`[table]` header,
//! `[[array]]` element, dotted key or inline table).

use std::collections::BTreeMap;
use std::path::PathBuf;

use figment::value::{Dict, Value};
use toml::de::{DeTable, DeValue};

use crate::error::{ConfigError, Origin};
use crate::tree;

/// Which TOML text this is, to build [`Origin`]s for it.
#[derive(Debug, Clone)]
pub(crate) enum TomlSource {
    Defaults,
    File(PathBuf),
}

impl TomlSource {
    pub(crate) fn origin(&self, line: Option<usize>) -> Origin {
        match self {
            TomlSource::Defaults => Origin::Defaults { line },
            TomlSource::File(path) => Origin::File {
                path: path.clone(),
                line,
            },
        }
    }
}

/// Parses `text` into a dictionary, with keys normalised by
/// [`tree::normalise_key`].
pub(crate) fn parse(text: &str, source: &TomlSource) -> Result<Dict, ConfigError> {
    let doc = DeTable::parse(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let (line, column) = line_col(text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError::Syntax {
            origin: source.origin(line),
            column,
            message: e.message().trim().to_owned(),
        }
    })?;
    let converter = Converter { text, source };
    converter.table(doc.get_ref(), &mut KeyPath::default())
}

/// The path being converted, remembering which segments are array indices
/// so that errors render `sinks[1].topic`.
#[derive(Default)]
struct KeyPath {
    segs: Vec<String>,
    is_index: Vec<bool>,
}

impl KeyPath {
    fn push(&mut self, seg: String, is_index: bool) {
        self.segs.push(seg);
        self.is_index.push(is_index);
    }

    fn pop(&mut self) {
        self.segs.pop();
        self.is_index.pop();
    }

    fn render(&self) -> String {
        tree::render(&self.segs, |prefix| self.is_index[prefix.len()])
    }
}

struct Converter<'t> {
    text: &'t str,
    source: &'t TomlSource,
}

impl Converter<'_> {
    fn line(&self, offset: usize) -> Option<usize> {
        Some(line_col(self.text, offset).0)
    }

    fn table(&self, table: &DeTable<'_>, path: &mut KeyPath) -> Result<Dict, ConfigError> {
        let mut dict = Dict::new();
        // Line of each normalised key, to report `a-b` and `a_b` both set.
        let mut lines: BTreeMap<String, Option<usize>> = BTreeMap::new();
        for (key, value) in table.iter() {
            let name = tree::normalise_key(key.get_ref());
            let line = self.line(key.span().start);
            path.push(name.clone(), false);
            if let Some(first) = lines.get(&name) {
                return Err(ConfigError::DuplicateKey {
                    origin: self.source.origin(line),
                    key: path.render(),
                    other: self.source.origin(*first),
                });
            }
            let converted = self.value(value.get_ref(), value.span().start, path)?;
            path.pop();
            lines.insert(name.clone(), line);
            dict.insert(name, converted);
        }
        Ok(dict)
    }

    fn value(
        &self,
        value: &DeValue<'_>,
        offset: usize,
        path: &mut KeyPath,
    ) -> Result<Value, ConfigError> {
        let invalid = |message: String, path: &KeyPath| ConfigError::InvalidValue {
            origin: Some(self.source.origin(self.line(offset))),
            key: path.render(),
            message,
        };
        Ok(match value {
            DeValue::String(s) => Value::from(s.to_string()),
            DeValue::Integer(int) => {
                let digits = int.as_str();
                if let Ok(n) = i64::from_str_radix(digits, int.radix()) {
                    Value::from(n)
                } else if let Ok(n) = u64::from_str_radix(digits, int.radix()) {
                    Value::from(n)
                } else {
                    return Err(invalid(format!("integer `{int}` is out of range"), path));
                }
            }
            DeValue::Float(float) => match float.as_str().parse::<f64>() {
                Ok(f) => Value::from(f),
                Err(_) => return Err(invalid(format!("invalid float `{float}`"), path)),
            },
            DeValue::Boolean(b) => Value::from(*b),
            // Datetimes become strings: the application parses them with the
            // type it wants (chrono, humantime...) from their RFC 3339 form.
            DeValue::Datetime(dt) => Value::from(dt.to_string()),
            DeValue::Array(items) => {
                let mut values = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    path.push(i.to_string(), true);
                    values.push(self.value(item.get_ref(), item.span().start, path)?);
                    path.pop();
                }
                Value::from(values)
            }
            DeValue::Table(table) => Value::from(self.table(table, path)?),
        })
    }
}

/// The 1-based line where the value at `path` is defined in `text`: the line
/// of its key, or of the deepest enclosing key that exists in the text.
///
/// `path` uses normalised keys, and array indices for array elements.
pub(crate) fn find_line(text: &str, path: &[String]) -> Option<usize> {
    let doc = DeTable::parse(text).ok()?;
    let mut offset = None;
    let root = DeValue::Table(doc.into_inner());
    let mut current = &root;
    for seg in path {
        let next = match current {
            DeValue::Table(table) => table
                .iter()
                .find(|(key, _)| tree::normalise_key(key.get_ref()) == *seg)
                .map(|(key, value)| (key.span().start, value.get_ref())),
            DeValue::Array(items) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .map(|item| (item.span().start, item.get_ref())),
            _ => None,
        };
        match next {
            Some((start, value)) => {
                offset = Some(start);
                current = value;
            }
            None => break,
        }
    }
    offset.map(|o| line_col(text, o).0)
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
