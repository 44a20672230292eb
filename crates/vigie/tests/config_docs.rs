//! Every key that `vigie config check` prints with the embedded defaults is
//! documented in `docs/configuration.md`.
//!
//! The doc names a key by the section heading it sits under (`` ## `[kafka]` ``,
//! `` ### `[consumers.sinks.<name>]` ``) and the first column of a `| key |`
//! table (`linger_ms`, or a dotted `security.protocol`); `<name>` stands for
//! any one segment. A section heading documents the section itself, which is
//! what an empty section such as `[consumers.sinks.blackhole]` prints as
//! (a heading with `<name>` only introduces the sections it stands for).

mod common;

use common::vigie;

use std::collections::BTreeSet;

/// The keys of `vigie config check`'s output (TOML), in full dotted form:
/// every `key = value`, and every section printed without keys or
/// subsections (`[kafka.producer.extra]`). The entries of an array of
/// tables (`[[topics]]`) all give the same keys (`topics.name`).
fn printed_keys(toml: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut sections = BTreeSet::new();
    let mut section: Vec<String> = Vec::new();
    for line in toml.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with([' ', '\t', ']', '#']) {
            // Blank, a comment, or the continuation of a multi-line array.
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[').trim_end_matches(']');
            section = split_dotted(header);
            sections.insert(section.join("."));
        } else if let Some((key, _value)) = line.split_once(" = ") {
            let mut path = section.clone();
            path.extend(split_dotted(key));
            keys.insert(path.join("."));
        } else {
            panic!("unexpected line in `vigie config check`'s output: {line:?}");
        }
    }
    let empty_sections: Vec<String> = sections
        .iter()
        .filter(|s| {
            let below = format!("{s}.");
            !keys.iter().chain(&sections).any(|k| k.starts_with(&below))
        })
        .cloned()
        .collect();
    keys.extend(empty_sections);
    keys
}

/// `a."b.c".d` as `["a", "b.c", "d"]`.
fn split_dotted(key: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in key.trim().chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c => parts.last_mut().expect("one part at least").push(c),
        }
    }
    parts.into_iter().map(|p| p.trim().to_owned()).collect()
}

/// The text of each `` `code span` `` of `text`.
fn code_spans(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// The keys `docs/configuration.md` documents, as dotted patterns in
/// which `<name>` stands for any one segment.
fn documented_keys(markdown: &str) -> Vec<String> {
    let mut documented = Vec::new();
    let mut section: Option<String> = None;
    // Inside a table: whether its header row's first column is `key`.
    let mut table: Option<bool> = None;
    for line in markdown.lines() {
        if line.starts_with('#') {
            section = code_spans(line)
                .find(|s| s.starts_with('['))
                .map(|s| s.trim_matches(['[', ']']).to_owned());
            // `[consumers.sinks.<name>]` introduces the sinks' sections;
            // each one still needs a heading or keys of its own.
            documented.extend(section.clone().filter(|s| !s.contains('<')));
            table = None;
        } else if let Some(row) = line.strip_prefix('|') {
            let first = row.split('|').next().unwrap_or("").trim();
            match table {
                None => table = Some(first == "key"),
                Some(_) if first.starts_with("---") => {}
                Some(true) => {
                    if let Some(section) = &section {
                        documented.extend(code_spans(first).map(|key| format!("{section}.{key}")));
                    }
                }
                Some(false) => {}
            }
        } else {
            table = None;
        }
    }
    documented
}

/// Whether `key` matches one of the `documented` patterns.
fn is_documented(key: &str, documented: &[String]) -> bool {
    let key: Vec<&str> = key.split('.').collect();
    documented.iter().any(|pattern| {
        let pattern: Vec<&str> = pattern.split('.').collect();
        pattern.len() == key.len()
            && pattern
                .iter()
                .zip(&key)
                .all(|(p, k)| p == k || (p.starts_with('<') && p.ends_with('>')))
    })
}

/// The keys of `printed` that `markdown` does not document.
fn undocumented(printed: &BTreeSet<String>, markdown: &str) -> Vec<String> {
    let documented = documented_keys(markdown);
    printed
        .iter()
        .filter(|k| !is_documented(k, &documented))
        .cloned()
        .collect()
}

/// `vigie config check` on the embedded defaults alone.
fn default_config() -> String {
    let out = vigie().args(["config", "check"]).output().unwrap();
    assert!(
        out.status.success(),
        "vigie config check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn configuration_md() -> String {
    let path = vigie_testkit::repo_root().join("docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_key_config_check_prints_is_documented() {
    let printed = printed_keys(&default_config());
    // The parser sees the keys of every section, and the empty ones.
    for key in [
        "kafka.brokers",
        "kafka.producer.extra",
        "consumers.sinks.postgres.url",
        "consumers.sinks.blackhole",
        "producers.http.user_agent",
        "producers.sources.cdc_cases.options",
        "topics.partitions",
    ] {
        assert!(printed.contains(key), "{key} not in {printed:?}");
    }
    let missing = undocumented(&printed, &configuration_md());
    assert!(
        missing.is_empty(),
        "`vigie config check` prints keys that docs/configuration.md does not \
         document (a row in the `| key |` table under the section's heading):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn a_key_missing_from_the_doc_is_reported() {
    let printed = printed_keys(&default_config());
    let doc = configuration_md();
    let without = |row: &str| {
        assert!(doc.contains(row), "docs/configuration.md has no {row:?}");
        doc.lines()
            .filter(|l| !l.starts_with(row))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        undocumented(&printed, &without("| `pool_size` |")),
        ["consumers.sinks.postgres.pool_size"]
    );
    assert_eq!(
        undocumented(&printed, &without("| `http.retry_after_max_s` |")),
        ["producers.http.retry_after_max_s"]
    );
    assert_eq!(
        undocumented(&printed, &without("### `[consumers.sinks.blackhole]`")),
        ["consumers.sinks.blackhole"]
    );
}
