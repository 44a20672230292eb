//! The schema registry on whole messages, as consumers see them.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Value, json};
use vigie_core::{SchemaRegistry, ValidationError, ValidationErrorKind};

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn registry() -> SchemaRegistry {
    SchemaRegistry::embedded().expect("embedded schemas compile")
}

fn good_message() -> Value {
    json!({
        "id": "f38efee5-95cd-563b-95fb-e9cb193aa9d7",
        "schema": "health.case",
        "schema_version": 1,
        "source": "cdc-case-surveillance",
        "occurred_at": "2020-11-01T00:00:00.000000Z",
        "ingested_at": "2024-05-01T06:30:00.000000Z",
        "data": {
            "row_id": "row-ab12.cd34_ef56",
            "case_month": "2020-11",
            "res_state": "CA",
            "age_group": "18 to 49 years",
            "sex": "Female",
            "race": "White",
            "ethnicity": "Hispanic/Latino",
            "case_positive_specimen_interval": 0,
            "case_onset_interval": null,
            "process": "Missing",
            "exposure_yn": "Missing",
            "current_status": "Laboratory-confirmed case",
            "symptom_status": "Symptomatic",
            "hosp_yn": "No",
            "icu_yn": "Missing",
            "death_yn": "No",
            "underlying_conditions_yn": "NA"
        }
    })
}

fn validate(message: &Value) -> Result<vigie_core::Envelope, ValidationError> {
    registry().validate(&serde_json::to_vec(message).unwrap())
}

#[test]
fn accepts_a_good_envelope() {
    let envelope = validate(&good_message()).expect("valid");
    assert_eq!(envelope.schema, "health.case");
    assert_eq!(envelope.data["res_state"], "CA");
    let case: vigie_core::Case = envelope.into_payload().unwrap().data;
    assert_eq!(case.res_state.as_str(), "CA");
}

#[test]
fn rejects_bad_json() {
    let err = registry()
        .validate(b"{\"id\": \"f38efee5\",\n  \"schema\": }")
        .unwrap_err();
    assert_eq!(err.kind(), ValidationErrorKind::InvalidJson);
    assert_eq!(err.kind().as_str(), "invalid_json");
    let ValidationError::InvalidJson { line, column, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((*line, *column), (2, 13));
    assert!(err.to_string().contains("line 2 column 13"), "{err}");

    assert_eq!(
        registry().validate(b"").unwrap_err().kind(),
        ValidationErrorKind::InvalidJson
    );
}

#[test]
fn rejects_an_envelope_without_id() {
    let mut message = good_message();
    message.as_object_mut().unwrap().remove("id");
    let err = validate(&message).unwrap_err();
    assert_eq!(err.kind(), ValidationErrorKind::EnvelopeViolation);
    assert_eq!(err.kind().as_str(), "envelope_violation");
    assert!(err.to_string().contains("\"id\""), "{err}");
}

#[test]
fn rejects_envelope_level_mistakes() {
    let cases = [
        ("id", json!("F38EFEE5-95CD-563B-95FB-E9CB193AA9D7"), "/id"),
        ("schema", json!("case"), "/schema"),
        ("schema_version", json!(0), "/schema_version"),
        ("source", json!("CDC"), "/source"),
        ("occurred_at", json!("2020-11-01"), "/occurred_at"),
        ("occurred_at", json!("2020-02-30T00:00:00Z"), "/occurred_at"),
        ("data", json!([]), "/data"),
        ("extra", json!(true), "(root)"),
    ];
    for (field, value, pointer) in cases {
        let mut message = good_message();
        message[field] = value;
        let err = validate(&message).unwrap_err();
        assert_eq!(
            err.kind(),
            ValidationErrorKind::EnvelopeViolation,
            "{field}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("envelope: {pointer}: ")),
            "{err}"
        );
    }
    assert_eq!(
        validate(&json!([1, 2])).unwrap_err().kind(),
        ValidationErrorKind::EnvelopeViolation
    );
}

#[test]
fn rejects_an_unknown_schema() {
    let mut message = good_message();
    message["schema"] = json!("health.nope");
    let err = validate(&message).unwrap_err();
    assert_eq!(err.kind(), ValidationErrorKind::UnknownSchema);
    assert_eq!(err.kind().as_str(), "unknown_schema");
    assert_eq!(err.to_string(), "unknown schema health.nope v1");

    let mut message = good_message();
    message["schema_version"] = json!(2);
    assert_eq!(
        validate(&message).unwrap_err().to_string(),
        "unknown schema health.case v2"
    );
}

#[test]
fn rejects_a_payload_violation_naming_the_pointer() {
    let mut message = good_message();
    message["data"]["age_group"] = json!("99 years");
    let err = validate(&message).unwrap_err();
    assert_eq!(err.kind(), ValidationErrorKind::SchemaViolation);
    assert_eq!(err.kind().as_str(), "schema_violation");
    let text = err.to_string();
    assert!(
        text.starts_with("schema health.case v1: /data/age_group: \"99 years\" is not one of"),
        "{text}"
    );
    assert_eq!(err.violations().len(), 1);
    assert_eq!(err.violations()[0].pointer, "/data/age_group");
}

#[test]
fn reports_at_most_three_violations() {
    let mut message = good_message();
    for field in ["sex", "race", "ethnicity", "process", "hosp_yn"] {
        message["data"][field] = json!("?");
    }
    let err = validate(&message).unwrap_err();
    let ValidationError::SchemaViolation {
        violations,
        truncated,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(violations.len(), 3);
    assert!(truncated);
    assert!(err.to_string().ends_with("; and more"), "{err}");
}

#[test]
fn formats_are_asserted() {
    let mut message = good_message();
    message["schema"] = json!("health.country_day");
    message["data"] = json!({
        "date_reported": "2021-02-29",
        "country_code": "FR",
        "country": "France",
        "who_region": "EURO",
        "new_cases": 1,
        "cumulative_cases": 1,
        "new_deaths": 0,
        "cumulative_deaths": 0
    });
    let err = validate(&message).unwrap_err();
    assert_eq!(err.kind(), ValidationErrorKind::SchemaViolation);
    assert!(err.to_string().contains("/data/date_reported"), "{err}");
}

/// Every schema file is compiled into the registry, under the name and
/// version its file name and `$id` both give.
#[test]
fn embeds_every_schema_file() {
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(schemas_dir()).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            schema["$id"],
            format!("https://vigie.health/schemas/{file}"),
            "$id of {file}"
        );
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert!(schema["title"].is_string(), "title of {file}");
        for (name, property) in schema["properties"].as_object().unwrap() {
            assert!(
                property["description"].is_string(),
                "description of {file} {name}"
            );
        }
        let (family, version) = vigie_core::compat::parse_file_name(&file).unwrap();
        if family != "envelope" {
            on_disk.insert((family.to_owned(), version));
        }
    }
    let embedded: BTreeSet<_> = registry()
        .schemas()
        .map(|(name, version)| (name.to_owned(), version))
        .collect();
    assert_eq!(embedded, on_disk);
    assert!(registry().contains("health.outbreak_news", 1));
}

#[test]
fn registry_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SchemaRegistry>();
}

fn parse(message: &Value) -> Result<vigie_core::Event, ValidationError> {
    registry().parse(&serde_json::to_vec(message).unwrap())
}

#[test]
fn a_nul_character_is_refused_as_unstorable_and_an_escaped_backslash_is_not_one() {
    let mut message = good_message();
    message["data"]["res_county"] = json!("Los\u{0}Angeles");
    let err = parse(&message).unwrap_err();
    assert_eq!(err.kind(), ValidationErrorKind::Unstorable, "{err}");
    assert!(err.to_string().contains("NUL character"), "{err}");
    // `\\u0000` is a backslash followed by the text `u0000`: storable.
    message["data"]["res_county"] = json!("Los\\u0000Angeles");
    let text = serde_json::to_string(&message).unwrap();
    assert!(text.contains(r"Los\\u0000Angeles"), "{text}");
    let vigie_core::Event::Case(case) = registry().parse(text.as_bytes()).expect("storable") else {
        panic!("a case")
    };
    assert_eq!(case.data.res_county.as_deref(), Some(r"Los\u0000Angeles"));
}

#[test]
fn dates_outside_years_1_to_9999_are_refused_as_unstorable_naming_the_field() {
    for (pointer, value) in [
        ("/data/case_month", json!("0000-01")),
        ("/occurred_at", json!("0000-12-31T00:00:00Z")),
        ("/ingested_at", json!("0000-01-01T00:00:00Z")),
    ] {
        let mut message = good_message();
        *message.pointer_mut(pointer).unwrap() = value.clone();
        let err = parse(&message).unwrap_err();
        assert_eq!(
            err.kind(),
            ValidationErrorKind::Unstorable,
            "{value}: {err}"
        );
        assert_eq!(err.violations()[0].pointer, pointer, "{err}");
        assert!(err.to_string().contains("storable years 1..=9999"), "{err}");
    }
    let mut message = good_message();
    message["data"]["case_month"] = json!("0001-01");
    parse(&message).expect("year 1 is storable");
}
