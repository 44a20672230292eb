//! Writes the committed seed corpus, fuzz/corpus/<target>/, from the
//! templates of src/lib.rs: a valid envelope of every payload schema, a few
//! valid variants, and invalid messages of every kind of refusal.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seeds
//!
//! Each seed is checked against what it is meant to be (valid, or refused
//! with a given kind), so a schema change that turns one is noticed here.

use std::path::Path;

use vigie_core::ValidationErrorKind::{
    self, EnvelopeViolation, InvalidJson, SchemaViolation, UnknownSchema, Unstorable,
};
use vigie_fuzz::{ENVELOPE, TEMPLATES, Template, payload_input, registry};

/// A message of the template with one slot replaced, by name.
fn with(t: &Template, slot: &str, value: &str) -> Vec<u8> {
    let index = (0..t.slots())
        .find(|i| t.slot_name(*i) == slot)
        .unwrap_or_else(|| panic!("{} has no field {slot}", t.schema));
    t.message(Some(index), value.as_bytes())
}

fn main() -> std::io::Result<()> {
    let [case, country_day, outbreak_news, case_score] = &TEMPLATES;
    let mut messages: Vec<(String, Vec<u8>, Option<ValidationErrorKind>)> = Vec::new();
    for t in &TEMPLATES {
        messages.push((format!("{}.valid", t.schema), t.message(None, b""), None));
    }
    let mut add = |name: &str, bytes: Vec<u8>, kind: Option<ValidationErrorKind>| {
        messages.push((name.to_owned(), bytes, kind));
    };
    // Valid variants.
    add("case.no-county", with(case, "res_county", ""), None);
    add(
        "case.no-state-fips",
        with(case, "state_fips_code", ""),
        None,
    );
    add(
        "case.interval-float",
        with(case, "case_onset_interval", "-3.0"),
        None,
    );
    add(
        "case.escaped-county",
        with(case, "res_county", r#""DO\u00d1A \"A\" \\ NA""#),
        None,
    );
    add(
        "country-day.null-cases",
        with(country_day, "new_cases", "null"),
        None,
    );
    add(
        "country-day.big-count",
        with(country_day, "cumulative_cases", "9007199254740991"),
        None,
    );
    add(
        "outbreak-news.no-country",
        with(outbreak_news, "countries", "[]"),
        None,
    );
    add("case-score.one", with(case_score, "score", "1"), None);
    add(
        "case-score.offset",
        with(
            case_score,
            "scored_at",
            r#""2026-11-28T13:00:00.1234567+01:00""#,
        ),
        None,
    );
    add(
        "envelope.offset-nanos",
        with(
            case,
            "ingested_at",
            r#""2024-05-01t08:30:15.123456789+02:00""#,
        ),
        None,
    );
    add(
        "envelope.version-float",
        with(country_day, "schema_version", "1.0"),
        None,
    );
    // Refused, one of each kind.
    add("invalid.empty", Vec::new(), Some(InvalidJson));
    add(
        "invalid.truncated",
        case.message(None, b"")[..40].to_vec(),
        Some(InvalidJson),
    );
    add(
        "invalid.trailing",
        [case.message(None, b""), b"}".to_vec()].concat(),
        Some(InvalidJson),
    );
    add("invalid.array", b"[]".to_vec(), Some(EnvelopeViolation));
    add(
        "invalid.no-data",
        with(case, "data", ""),
        Some(EnvelopeViolation),
    );
    add(
        "invalid.upper-id",
        with(case, "id", r#""46239CC6-A1D2-5C25-B435-1C10F1A427F0""#),
        Some(EnvelopeViolation),
    );
    add(
        "invalid.leap-second",
        with(case, "occurred_at", r#""2016-12-31T23:59:60Z""#),
        Some(EnvelopeViolation),
    );
    add(
        "invalid.version-0",
        with(case, "schema_version", "0"),
        Some(EnvelopeViolation),
    );
    add(
        "invalid.unknown-schema",
        with(case, "schema", r#""health.unknown""#),
        Some(UnknownSchema),
    );
    add(
        "invalid.version-2",
        with(outbreak_news, "schema_version", "2"),
        Some(UnknownSchema),
    );
    add(
        "invalid.case-sex",
        with(case, "sex", r#""X""#),
        Some(SchemaViolation),
    );
    add(
        "invalid.case-month",
        with(case, "case_month", r#""2020-13""#),
        Some(SchemaViolation),
    );
    add(
        "invalid.case-null-county",
        with(case, "res_county", "null"),
        Some(SchemaViolation),
    );
    add(
        "invalid.country-day-negative",
        with(country_day, "cumulative_deaths", "-1"),
        Some(SchemaViolation),
    );
    add(
        "invalid.country-day-unsafe",
        with(country_day, "new_cases", "9007199254740992"),
        Some(SchemaViolation),
    );
    add(
        "invalid.outbreak-news-url",
        with(outbreak_news, "url", r#""ftp://who.int/x""#),
        Some(SchemaViolation),
    );
    add(
        "invalid.outbreak-news-hash",
        with(outbreak_news, "content_hash", r#""ea71""#),
        Some(SchemaViolation),
    );
    add(
        "invalid.case-score-high",
        with(case_score, "score", "1.5"),
        Some(SchemaViolation),
    );
    add(
        "invalid.case-score-data",
        with(case_score, "data", "{}"),
        Some(SchemaViolation),
    );
    add(
        "invalid.nul",
        with(case, "res_county", r#""LOS\u0000ANGELES""#),
        Some(Unstorable),
    );
    add(
        "invalid.year-0",
        with(country_day, "date_reported", r#""0000-06-11""#),
        Some(Unstorable),
    );
    add(
        "invalid.year-0-utc",
        with(case, "occurred_at", r#""0001-01-01T00:30:00+01:00""#),
        Some(Unstorable),
    );
    add(
        "invalid.duplicate-key",
        with(
            case,
            "id",
            r#""46239cc6-a1d2-5c25-b435-1c10f1a427f0","id":"46239cc6-a1d2-5c25-b435-1c10f1a427f0""#,
        ),
        Some(SchemaViolation),
    );

    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in ["parse", "validate"] {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes, kind) in &messages {
            let got = registry().parse(bytes).err().map(|e| e.kind());
            assert_eq!(got, *kind, "{name}: {}", String::from_utf8_lossy(bytes));
            std::fs::write(dir.join(name), bytes)?;
        }
    }

    // The payload target: every slot of every template with its valid
    // value, then each slot dropped and the payload replaced by `{}`.
    let dir = corpus.join("payload");
    std::fs::create_dir_all(&dir)?;
    for (ti, t) in TEMPLATES.iter().enumerate() {
        let short = t.schema.trim_start_matches("health.").replace('_', "-");
        for slot in 0..t.slots() {
            let name = t.slot_name(slot);
            std::fs::write(
                dir.join(format!("{short}.{name}")),
                payload_input(ti, slot, &t.value(slot)),
            )?;
        }
        let first = ENVELOPE.len();
        std::fs::write(
            dir.join(format!("{short}.drop-{}", t.slot_name(first))),
            payload_input(ti, first, b""),
        )?;
        // Valid but unstorable: a NUL character in a free-text field, an
        // instant in year 0 once in UTC.
        let text = ["res_county", "country", "title", "model_name"][ti];
        let nul_slot = (first..t.slots())
            .find(|slot| t.slot_name(*slot) == text)
            .expect("a free-text field");
        let mut nul = t.value(nul_slot);
        nul.splice(2..2, *b"\\u0000");
        let year_0 = ENVELOPE.iter().position(|(name, _)| *name == "occurred_at");
        let year_0 = year_0.expect("occurred_at");
        for (name, slot, value) in [
            ("nul", nul_slot, nul),
            ("year-0", year_0, br#""0001-01-01T00:30:00+01:00""#.to_vec()),
        ] {
            let message = t.message(Some(slot), &value);
            let kind = registry().parse(&message).err().map(|e| e.kind());
            assert_eq!(
                kind,
                Some(Unstorable),
                "{}",
                String::from_utf8_lossy(&message)
            );
            std::fs::write(
                dir.join(format!("{short}.unstorable-{name}")),
                payload_input(ti, slot, &value),
            )?;
        }
        std::fs::write(
            dir.join(format!("{short}.data-empty")),
            payload_input(ti, t.slots() - 1, b"{}"),
        )?;
    }
    println!("seed corpus written to {}", corpus.display());
    Ok(())
}
