//! Backward-compatibility checks between schema versions.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use vigie_core::compat::{self, CompatError, IncompatibilityKind};

fn v1() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": false,
        "required": ["id", "sex"],
        "properties": {
            "id": {"type": "string"},
            "sex": {"type": "string", "enum": ["Female", "Male", "Unknown"]},
            "count": {"type": "integer"},
            "note": {"type": "string"},
            "place": {
                "type": "object",
                "required": ["state"],
                "properties": {
                    "state": {"type": "string"},
                    "county": {"type": "string"}
                }
            },
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}}
        }
    })
}

/// `v1()` with `change` applied to it.
fn v2(change: impl FnOnce(&mut Value)) -> Value {
    let mut schema = v1();
    change(&mut schema);
    schema
}

fn rendered(old: &Value, new: &Value) -> Vec<String> {
    compat::check(old, new)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn identical_versions_are_compatible() {
    assert!(compat::check(&v1(), &v1()).is_empty());
}

#[test]
fn compatible_changes_pass() {
    let changes: Vec<(&str, Value)> = vec![
        (
            "optional field added",
            v2(|s| s["properties"]["extra"] = json!({"type": "string"})),
        ),
        (
            "enum widened",
            v2(|s| s["properties"]["sex"]["enum"] = json!(["Female", "Male", "Unknown", "Other"])),
        ),
        (
            "integer widened to nullable",
            v2(|s| s["properties"]["count"]["type"] = json!(["integer", "null"])),
        ),
        (
            "integer widened to number",
            v2(|s| s["properties"]["count"]["type"] = json!("number")),
        ),
        (
            "type constraint dropped",
            v2(|s| s["properties"]["note"] = json!({})),
        ),
        ("requirement dropped", v2(|s| s["required"] = json!(["id"]))),
        (
            "enum dropped",
            v2(|s| {
                s["properties"]["sex"]
                    .as_object_mut()
                    .unwrap()
                    .remove("enum");
            }),
        ),
        (
            "nested optional field added",
            v2(|s| s["properties"]["place"]["properties"]["zip"] = json!({"type": "string"})),
        ),
        (
            "item enum widened",
            v2(|s| s["properties"]["tags"]["items"]["enum"] = json!(["a", "b", "c"])),
        ),
    ];
    for (why, new) in changes {
        assert_eq!(rendered(&v1(), &new), Vec::<String>::new(), "{why}");
    }
}

#[test]
fn incompatible_changes_are_detected() {
    let changes: Vec<(&str, Value, &str)> = vec![
        (
            "field removed",
            v2(|s| drop(s["properties"].as_object_mut().unwrap().remove("note"))),
            "/properties/note: property removed",
        ),
        (
            "field retyped",
            v2(|s| s["properties"]["sex"]["type"] = json!("integer")),
            "/properties/sex: type changed from string to integer",
        ),
        (
            "number narrowed to integer",
            v2(|s| s["properties"]["count"]["type"] = json!("number")),
            "",
        ),
        (
            "nullable narrowed",
            v2(|s| s["properties"]["note"]["type"] = json!(["string", "null"])),
            "",
        ),
        (
            "required field added",
            v2(|s| s["required"] = json!(["id", "sex", "count"])),
            "/properties/count: property became required",
        ),
        (
            "new field added as required",
            v2(|s| {
                s["properties"]["extra"] = json!({"type": "string"});
                s["required"] = json!(["id", "sex", "extra"]);
            }),
            "/properties/extra: property became required",
        ),
        (
            "enum narrowed",
            v2(|s| s["properties"]["sex"]["enum"] = json!(["Female", "Male"])),
            "/properties/sex: enum lost \"Unknown\"",
        ),
        (
            "enum introduced",
            v2(|s| s["properties"]["note"]["enum"] = json!(["x"])),
            "/properties/note: enum introduced on a value that was unrestricted",
        ),
        (
            "nested field removed",
            v2(|s| {
                drop(
                    s["properties"]["place"]["properties"]
                        .as_object_mut()
                        .unwrap()
                        .remove("county"),
                )
            }),
            "/properties/place/properties/county: property removed",
        ),
        (
            "nested field required",
            v2(|s| s["properties"]["place"]["required"] = json!(["state", "county"])),
            "/properties/place/properties/county: property became required",
        ),
        (
            "item enum narrowed",
            v2(|s| s["properties"]["tags"]["items"]["enum"] = json!(["a"])),
            "/properties/tags/items: enum lost \"b\"",
        ),
        (
            "item retyped",
            v2(|s| s["properties"]["tags"]["items"]["type"] = json!("integer")),
            "/properties/tags/items: type changed from string to integer",
        ),
    ];
    for (why, new, expected) in changes {
        // Some rows test the reverse direction: the "new" schema is the
        // wider one, so checking it back against v1 must fail.
        let problems = if expected.is_empty() {
            rendered(&new, &v1())
        } else {
            rendered(&v1(), &new)
        };
        assert_eq!(problems.len(), 1, "{why}: {problems:?}");
        if !expected.is_empty() {
            assert_eq!(problems[0], expected, "{why}");
        }
    }
}

#[test]
fn kinds_carry_details() {
    let new = v2(|s| s["properties"]["count"]["type"] = json!(["string", "null"]));
    let problems = compat::check(&v1(), &new);
    assert_eq!(
        problems[0].kind,
        IncompatibilityKind::Retyped {
            from: "integer".to_owned(),
            to: "[null, string]".to_owned()
        }
    );
    assert_eq!(problems[0].path, "/properties/count");
    assert_eq!(problems[0].kind.as_str(), "retyped");
}

fn write(dir: &Path, name: &str, schema: &Value) {
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(schema).unwrap()).unwrap();
}

#[test]
fn check_dir_passes_a_compatible_family() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test.thing.v1.json", &v1());
    write(
        dir.path(),
        "test.thing.v2.json",
        &v2(|s| s["properties"]["extra"] = json!({"type": "string"})),
    );
    write(
        dir.path(),
        "test.thing.v3.json",
        &v2(|s| {
            s["properties"]["extra"] = json!({"type": "string"});
            s["properties"]["more"] = json!({"type": "integer"});
        }),
    );
    std::fs::write(dir.path().join("README.md"), "not a schema").unwrap();

    let reports = compat::check_dir(dir.path()).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].family, "test.thing");
    assert_eq!(reports[0].versions, [1, 2, 3]);
    assert!(reports[0].is_compatible(), "{}", reports[0]);
}

#[test]
fn check_dir_fails_an_incompatible_family() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test.thing.v1.json", &v1());
    write(
        dir.path(),
        "test.thing.v2.json",
        &v2(|s| s["properties"]["extra"] = json!({"type": "string"})),
    );
    write(
        dir.path(),
        "test.thing.v3.json",
        &v2(|s| drop(s["properties"].as_object_mut().unwrap().remove("note"))),
    );
    write(dir.path(), "other.v1.json", &v1());

    let reports = compat::check_dir(dir.path()).unwrap();
    let families: Vec<_> = reports.iter().map(|r| r.family.as_str()).collect();
    assert_eq!(families, ["other", "test.thing"]);
    assert!(reports[0].is_compatible());

    let mut problems: Vec<_> = reports[1]
        .problems
        .iter()
        .map(|(old, new, p)| (*old, *new, p.to_string()))
        .collect();
    problems.sort();
    assert_eq!(
        problems,
        [
            (1, 3, "/properties/note: property removed".to_owned()),
            (2, 3, "/properties/extra: property removed".to_owned()),
            (2, 3, "/properties/note: property removed".to_owned()),
        ]
    );
    assert!(
        reports[1]
            .to_string()
            .contains("v1 -> v3: /properties/note: property removed")
    );
}

#[test]
fn check_dir_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test.thing.v1.json", &v1());
    std::fs::write(dir.path().join("test.thing.v2.json"), "{ not json").unwrap();
    let err = compat::check_dir(dir.path()).unwrap_err();
    assert!(matches!(err, CompatError::InvalidJson { .. }), "{err}");
    assert!(err.to_string().contains("test.thing.v2.json"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test-thing.json", &v1());
    let err = compat::check_dir(dir.path()).unwrap_err();
    assert!(matches!(err, CompatError::BadFileName { .. }), "{err}");
    assert!(err.to_string().contains("test-thing.json"), "{err}");

    let missing = dir.path().join("missing");
    assert!(matches!(
        compat::check_dir(&missing),
        Err(CompatError::Io { .. })
    ));
}

#[test]
fn the_real_schemas_are_compatible() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let reports = compat::check_dir(&dir).unwrap();
    let families: Vec<_> = reports.iter().map(|r| r.family.as_str()).collect();
    for expected in [
        "envelope",
        "health.case",
        "health.country_day",
        "health.outbreak_news",
    ] {
        assert!(families.contains(&expected), "{expected} in {families:?}");
    }
    for report in &reports {
        assert!(report.is_compatible(), "{report}");
    }
}
