//! Every generated record, wrapped in its envelope, passes the schema
//! registry exactly as a consumer would check it.

use chrono::{NaiveDate, TimeZone, Utc};
use vigie_core::SchemaRegistry;
use vigie_simulator::{
    CaseGenConfig, CaseGenerator, CountryDayGenerator, DEFAULT_BASE_URL, Drift, NewsGenerator,
    case_envelope, country_day_envelopes, news_envelope,
};

fn ingested_at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

#[test]
fn case_rows_pass_the_registry() {
    let registry = SchemaRegistry::embedded().unwrap();
    let plain = CaseGenerator::new(CaseGenConfig {
        seed: 21,
        start_month: (2020, 1),
        months: 48,
        drift: None,
    })
    .unwrap();
    let drifted = CaseGenerator::new(CaseGenConfig {
        seed: 22,
        start_month: (2020, 3),
        months: 36,
        drift: Some(Drift::AgeShiftOlder { from_index: 5_000 }),
    })
    .unwrap();
    for generator in [&plain, &drifted] {
        for index in 0..10_000 {
            let envelope = case_envelope(generator, index, ingested_at());
            assert_eq!(envelope.source, "cdc-cases");
            let bytes = envelope.to_json_bytes().unwrap();
            let checked = registry
                .validate(&bytes)
                .unwrap_or_else(|e| panic!("row {index}: {e}"));
            assert_eq!(checked.id, envelope.id);
        }
    }
}

#[test]
fn country_days_pass_the_registry() {
    let registry = SchemaRegistry::embedded().unwrap();
    let start = NaiveDate::from_ymd_opt(2020, 1, 3).unwrap();
    let generator =
        CountryDayGenerator::new(31, start, CountryDayGenerator::AVAILABLE_COUNTRIES).unwrap();
    let mut checked = 0;
    for day in 0..60 {
        for envelope in country_day_envelopes(&generator, day, ingested_at()) {
            assert_eq!(envelope.source, "who-covid");
            let bytes = envelope.to_json_bytes().unwrap();
            registry
                .validate(&bytes)
                .unwrap_or_else(|e| panic!("day {day}: {e}"));
            checked += 1;
        }
    }
    assert_eq!(checked, 60 * CountryDayGenerator::AVAILABLE_COUNTRIES);
}

#[test]
fn articles_and_revisions_pass_the_registry() {
    let registry = SchemaRegistry::embedded().unwrap();
    let generator = NewsGenerator::new(41, DEFAULT_BASE_URL).unwrap();
    for index in 0..200 {
        for revision in 0..3 {
            let envelope = news_envelope(&generator, index, revision, ingested_at());
            assert_eq!(envelope.source, "who-don");
            let bytes = envelope.to_json_bytes().unwrap();
            registry
                .validate(&bytes)
                .unwrap_or_else(|e| panic!("article {index} revision {revision}: {e}"));
        }
    }
}
