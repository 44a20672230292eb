//! Walking and editing figment dictionaries by key path.
//!
//! Paths are lists of segments as figment reports them in errors: table keys,
//! and decimal indices for array elements.

use figment::value::{Dict, Value};

/// The value at `path`, descending through tables and array indices.
pub(crate) fn get<'a>(dict: &'a Dict, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut current = dict.get(first)?;
    for seg in rest {
        current = child(current, seg)?;
    }
    Some(current)
}

fn child<'a>(value: &'a Value, seg: &str) -> Option<&'a Value> {
    match value {
        Value::Dict(_, dict) => dict.get(seg),
        Value::Array(_, items) => items.get(seg.parse::<usize>().ok()?),
        _ => None,
    }
}

/// Whether this layer decides the value at `path` once layers are merged.
///
/// Merging replaces anything that is not a table whole, so a layer that sets
/// a scalar or an array at a prefix of `path` owns everything below it.
pub(crate) fn defines(dict: &Dict, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return !dict.is_empty();
    };
    let Some(mut current) = dict.get(first) else {
        return false;
    };
    for seg in rest {
        match current {
            Value::Dict(_, dict) => match dict.get(seg.as_str()) {
                Some(next) => current = next,
                None => return false,
            },
            Value::Array(_, items) => match seg.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(next) => current = next,
                None => return true,
            },
            _ => return true,
        }
    }
    true
}

/// Removes the value at `path`, going through tables only.
pub(crate) fn remove(dict: &mut Dict, path: &[String]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut current = dict;
    for seg in parents {
        match current.get_mut(seg.as_str())? {
            Value::Dict(_, next) => current = next,
            _ => return None,
        }
    }
    current.remove(last.as_str())
}

/// Sets `value` at `path`, creating tables on the way.
///
/// Returns `Err(())` without changing anything if something is already set at
/// `path`, at a prefix of it (as a non-table), or below it, since in one
/// layer that can only be a duplicate.
pub(crate) fn insert(dict: &mut Dict, path: &[String], value: Value) -> Result<(), ()> {
    let Some((last, parents)) = path.split_last() else {
        return Err(());
    };
    let mut current = dict;
    for seg in parents {
        let entry = current
            .entry(seg.clone())
            .or_insert_with(|| Value::from(Dict::new()));
        match entry {
            Value::Dict(_, next) => current = next,
            _ => return Err(()),
        }
    }
    if current.contains_key(last.as_str()) {
        return Err(());
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// Renders a path the way an operator would write it in TOML:
/// `kafka.brokers`, `sinks[2].topic`, `topics."a.b"`.
///
/// `is_array` tells whether the value at a prefix is an array, so that a
/// numeric segment is shown as an index rather than as a table key.
pub(crate) fn render(path: &[String], is_array: impl Fn(&[String]) -> bool) -> String {
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        if i > 0 && seg.parse::<usize>().is_ok() && is_array(&path[..i]) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
            continue;
        }
        if i > 0 {
            out.push('.');
        }
        if is_bare_key(seg) {
            out.push_str(seg);
        } else {
            out.push_str(&format!("{seg:?}"));
        }
    }
    out
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Splits a dotted key given by the application (e.g. a secret key) into
/// segments, normalised like file keys.
pub(crate) fn split_dotted(key: &str) -> Vec<String> {
    key.split('.')
        .map(|seg| normalise_key(seg.trim()))
        .collect()
}

/// Key normalisation shared by every layer: kebab-case is accepted as an
/// alias of snake_case.
pub(crate) fn normalise_key(key: &str) -> String {
    key.replace('-', "_")
}
