//! The event id and the envelope's wire form.

use chrono::{TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;
use vigie_core::{Envelope, PayloadError, event_id};

#[test]
fn event_id_is_deterministic() {
    let a = event_id("who-covid", &["FR", "2023-06-11"]);
    assert_eq!(a, event_id("who-covid", &["FR", "2023-06-11"]));
    assert_eq!(a.get_version_num(), 5);
}

/// Pinned values, computed independently from the documented encoding:
/// if one changes, every id already in Kafka and in the databases changes.
#[test]
fn event_id_encoding_is_frozen() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "cdc-case-surveillance",
            &["row-ab12.cd34_ef56"],
            "f38efee5-95cd-563b-95fb-e9cb193aa9d7",
        ),
        (
            "who-covid",
            &["FR", "2023-06-11"],
            "46239cc6-a1d2-5c25-b435-1c10f1a427f0",
        ),
        (
            "who-don",
            &["https://www.who.int/emergencies/disease-outbreak-news/item/2024-DON501"],
            "c1c14d27-fca0-5d62-913f-f527a8cf3ce9",
        ),
        // Lengths are in bytes, not characters.
        ("s", &["é"], "8be51d9c-b575-535b-b62d-e13ae702314e"),
    ];
    for (source, key, expected) in cases {
        assert_eq!(
            event_id(source, key).to_string(),
            *expected,
            "{source} {key:?}"
        );
    }
}

#[test]
fn event_id_differs_when_any_input_differs() {
    let base = event_id("who-covid", &["FR", "2023-06-11"]);
    let variants = [
        event_id("who-covid-2", &["FR", "2023-06-11"]),
        event_id("who-covid", &["DE", "2023-06-11"]),
        event_id("who-covid", &["FR", "2023-06-12"]),
        event_id("who-covid", &["2023-06-11", "FR"]),
        event_id("who-covid", &["FR"]),
        event_id("who-covid", &["FR", "2023-06-11", ""]),
    ];
    for variant in variants {
        assert_ne!(variant, base);
    }
}

/// A plain join with the separator would make these collide; the length
/// prefixes keep them apart.
#[test]
fn event_id_is_unambiguous() {
    let pairs: &[(&str, &[&str], &str, &[&str])] = &[
        ("s", &["a\u{1f}b"], "s", &["a", "b"]),
        ("s", &[], "s", &[""]),
        ("s", &["", "a"], "s", &["a", ""]),
        ("s\u{1f}a", &[], "s", &["a"]),
        ("s", &["1:a"], "s", &["1", "a"]),
    ];
    for (source_a, key_a, source_b, key_b) in pairs {
        assert_ne!(
            event_id(source_a, key_a),
            event_id(source_b, key_b),
            "{source_a:?} {key_a:?} vs {source_b:?} {key_b:?}"
        );
    }
}

fn sample() -> Envelope {
    Envelope {
        id: Uuid::parse_str("46239cc6-a1d2-5c25-b435-1c10f1a427f0").unwrap(),
        schema: "health.country_day".to_owned(),
        schema_version: 1,
        source: "who-covid".to_owned(),
        occurred_at: Utc.with_ymd_and_hms(2023, 6, 11, 0, 0, 0).unwrap(),
        ingested_at: Utc.with_ymd_and_hms(2024, 5, 1, 6, 30, 15).unwrap()
            + chrono::TimeDelta::nanoseconds(123_456_789),
        upstream_updated_at: None,
        data: json!({"country_code": "FR"}),
    }
}

#[test]
fn timestamps_are_written_in_utc_with_microseconds() {
    let value: serde_json::Value =
        serde_json::from_slice(&sample().to_json_bytes().unwrap()).unwrap();
    assert_eq!(value["occurred_at"], "2023-06-11T00:00:00.000000Z");
    assert_eq!(value["ingested_at"], "2024-05-01T06:30:15.123456Z");
    assert_eq!(value["id"], "46239cc6-a1d2-5c25-b435-1c10f1a427f0");
}

#[test]
fn envelope_reads_what_the_schema_allows() {
    let mut value = serde_json::to_value(sample()).unwrap();
    value["occurred_at"] = json!("2023-06-11T02:00:00+02:00");
    value["schema_version"] = json!(1.0);
    let envelope: Envelope = serde_json::from_value(value).unwrap();
    assert_eq!(
        envelope.occurred_at,
        Utc.with_ymd_and_hms(2023, 6, 11, 0, 0, 0).unwrap()
    );
    assert_eq!(envelope.schema_version, 1);
}

#[test]
fn envelope_rejects_what_the_schema_rejects() {
    let good = serde_json::to_value(sample()).unwrap();
    let bad = [
        ("id", json!("46239CC6-A1D2-5C25-B435-1C10F1A427F0")),
        ("id", json!("{46239cc6-a1d2-5c25-b435-1c10f1a427f0}")),
        ("schema", json!("health")),
        ("schema", json!("Health.case")),
        ("schema_version", json!(0)),
        ("schema_version", json!("1")),
        ("source", json!("WHO")),
        ("source", json!("who_covid")),
        ("occurred_at", json!("2023-06-11 00:00:00Z")),
        ("occurred_at", json!("2023-06-11T00:00:00")),
        ("occurred_at", json!("2023-06-11")),
        ("upstream_updated_at", json!(null)),
        ("upstream_updated_at", json!("2024-01-01T00:00:00.001")),
        ("extra", json!(1)),
    ];
    for (field, value) in bad {
        let mut doc = good.clone();
        doc[field] = value.clone();
        assert!(
            serde_json::from_value::<Envelope>(doc).is_err(),
            "{field} = {value}"
        );
    }
}

#[test]
fn into_payload_checks_the_schema() {
    let err = sample()
        .into_payload::<vigie_core::Case>()
        .expect_err("a country_day envelope is not a case");
    assert!(matches!(err, PayloadError::WrongSchema { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "expected schema health.case v1, found health.country_day v1"
    );

    let err = sample()
        .into_payload::<vigie_core::CountryDay>()
        .expect_err("data is incomplete");
    assert!(matches!(err, PayloadError::Data(_)), "{err}");
}
