//! Proves that each payload type and its JSON Schema agree: every valid
//! sample passes the schema, deserialises, and re-serialises to something
//! the schema still accepts; every invalid sample is rejected by both.
//!
//! Adding a case is one line in one of the tables below.

use std::fmt::Debug;
use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use vigie_core::{Case, CaseScore, CountryDay, Envelope, OutbreakNews, Payload, SchemaRegistry};

fn registry() -> &'static SchemaRegistry {
    static REGISTRY: OnceLock<SchemaRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| SchemaRegistry::embedded().expect("embedded schemas compile"))
}

/// `base` with `field` set to `value`.
fn with(base: &Value, field: &str, value: Value) -> Value {
    let mut v = base.clone();
    v[field] = value;
    v
}

/// `base` without `field`.
fn without(base: &Value, field: &str) -> Value {
    let mut v = base.clone();
    v.as_object_mut()
        .expect("samples are objects")
        .remove(field);
    v
}

fn schema_accepts<T: Payload>(sample: &Value) -> Result<(), String> {
    registry()
        .validate_data(T::SCHEMA, T::VERSION, sample)
        .map_err(|e| e.to_string())
}

fn assert_valid<T: Payload + Debug + PartialEq>(samples: &[Value]) {
    let ingested = Utc.with_ymd_and_hms(2024, 5, 1, 6, 30, 0).unwrap();
    for sample in samples {
        schema_accepts::<T>(sample).unwrap_or_else(|e| panic!("schema rejects {sample}: {e}"));
        let typed: T = serde_json::from_value(sample.clone())
            .unwrap_or_else(|e| panic!("type rejects {sample}: {e}"));
        let back = serde_json::to_value(&typed).unwrap();
        schema_accepts::<T>(&back)
            .unwrap_or_else(|e| panic!("schema rejects re-serialised {back}: {e}"));
        let again: T = serde_json::from_value(back).unwrap();
        assert_eq!(again, typed);

        // The same value survives the whole trip through an envelope.
        let envelope = Envelope::new("test-source", typed, ingested);
        let bytes = envelope.to_json_bytes().unwrap();
        let checked = registry()
            .validate(&bytes)
            .unwrap_or_else(|e| panic!("registry rejects envelope of {sample}: {e}"));
        assert_eq!(checked.into_payload::<T>().unwrap(), envelope);
        // The typed fast path accepts it too, with the same value.
        let event = registry()
            .parse(&bytes)
            .unwrap_or_else(|e| panic!("parse rejects envelope of {sample}: {e}"));
        assert_eq!(event.id(), envelope.id);
        assert_eq!(
            serde_json::to_vec(&envelope).unwrap(),
            match &event {
                vigie_core::Event::Case(e) => serde_json::to_vec(e).unwrap(),
                vigie_core::Event::CountryDay(e) => serde_json::to_vec(e).unwrap(),
                vigie_core::Event::OutbreakNews(e) => serde_json::to_vec(e).unwrap(),
                vigie_core::Event::CaseScore(e) => serde_json::to_vec(e).unwrap(),
                vigie_core::Event::Other(_) => panic!("{} has a type", T::SCHEMA),
            }
        );
    }
}

fn assert_invalid<T: Payload + Debug>(samples: &[(&str, Value)]) {
    for (why, sample) in samples {
        assert!(
            schema_accepts::<T>(sample).is_err(),
            "schema accepts {why}: {sample}"
        );
        if let Ok(typed) = serde_json::from_value::<T>(sample.clone()) {
            panic!("type accepts {why}: {sample} as {typed:?}");
        }
        // In an envelope, the typed fast path refuses it with the schema's
        // own diagnosis.
        let message = serde_json::json!({
            "id": "6f1c7c1e-3b8a-5d2e-9c4f-0a1b2c3d4e5f",
            "schema": T::SCHEMA,
            "schema_version": T::VERSION,
            "source": "test-source",
            "occurred_at": "2024-05-01T00:00:00Z",
            "ingested_at": "2024-05-01T06:30:00Z",
            "data": sample,
        });
        let bytes = serde_json::to_vec(&message).unwrap();
        let err = registry().parse(&bytes).expect_err(why);
        let reference = registry().validate(&bytes).expect_err(why);
        assert_eq!(err.kind(), reference.kind(), "{why}: {err}");
        assert_eq!(err.to_string(), reference.to_string(), "{why}");
    }
}

/// Every value of every `enum` in the schema is accepted by the type too,
/// so a vocabulary cannot drift between the two.
fn assert_enums_agree<T: Payload + Debug>(base: &Value) {
    let file = format!(
        "{}/../../schemas/{}.v{}.json",
        env!("CARGO_MANIFEST_DIR"),
        T::SCHEMA,
        T::VERSION
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut checked = 0;
    for (field, property) in schema["properties"].as_object().unwrap() {
        let Some(values) = property["enum"].as_array() else {
            continue;
        };
        for value in values {
            let sample = with(base, field, value.clone());
            schema_accepts::<T>(&sample).unwrap();
            serde_json::from_value::<T>(sample)
                .unwrap_or_else(|e| panic!("type rejects {field} = {value}: {e}"));
            checked += 1;
        }
        let wrong = with(base, field, json!("Not a value"));
        assert!(schema_accepts::<T>(&wrong).is_err());
        assert!(serde_json::from_value::<T>(wrong).is_err());
    }
    assert!(checked > 0);
}

fn case_base() -> Value {
    json!({
        "row_id": "row-ab12.cd34_ef56",
        "case_month": "2020-11",
        "res_state": "CA",
        "state_fips_code": "6",
        "res_county": "LOS ANGELES",
        "county_fips_code": "6037",
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
    })
}

#[test]
fn case_samples_agree() {
    let b = case_base();
    let suppressed = json!({
        "row_id": "row-9xk2~tq7m.p4fz",
        "case_month": "2022-01",
        "res_state": "WY",
        "age_group": "NA",
        "sex": "NA",
        "race": "NA",
        "ethnicity": "NA",
        "process": "NA",
        "exposure_yn": "NA",
        "current_status": "Probable Case",
        "symptom_status": "NA",
        "hosp_yn": "NA",
        "icu_yn": "NA",
        "death_yn": "NA",
        "underlying_conditions_yn": "NA"
    });
    assert_valid::<Case>(&[
        b.clone(),
        suppressed.clone(),
        with(&suppressed, "case_onset_interval", json!(null)),
        with(&b, "case_positive_specimen_interval", json!(-1)),
        with(&b, "case_onset_interval", json!(2.0)),
        with(&b, "case_onset_interval", json!(i32::MAX)),
        with(&b, "state_fips_code", json!("06")),
        with(&b, "county_fips_code", json!("01001")),
        with(&b, "res_county", json!("")),
        with(&b, "case_month", json!("2023-12")),
    ]);
    assert_invalid::<Case>(&[
        ("missing row_id", without(&b, "row_id")),
        ("missing case_month", without(&b, "case_month")),
        ("missing hosp_yn", without(&b, "hosp_yn")),
        ("unknown field", with(&b, "case_count", json!(1))),
        ("empty row_id", with(&b, "row_id", json!(""))),
        ("month 13", with(&b, "case_month", json!("2021-13"))),
        ("month 00", with(&b, "case_month", json!("2021-00"))),
        ("unpadded month", with(&b, "case_month", json!("2021-3"))),
        (
            "full date as month",
            with(&b, "case_month", json!("2021-03-01")),
        ),
        ("month as number", with(&b, "case_month", json!(202103))),
        ("lower-case state", with(&b, "res_state", json!("ca"))),
        ("three-letter state", with(&b, "res_state", json!("CAL"))),
        (
            "three-digit state FIPS",
            with(&b, "state_fips_code", json!("106")),
        ),
        (
            "non-digit state FIPS",
            with(&b, "state_fips_code", json!("6a")),
        ),
        ("numeric state FIPS", with(&b, "state_fips_code", json!(6))),
        ("null state FIPS", with(&b, "state_fips_code", json!(null))),
        ("null county", with(&b, "res_county", json!(null))),
        (
            "short county FIPS",
            with(&b, "county_fips_code", json!("603")),
        ),
        (
            "long county FIPS",
            with(&b, "county_fips_code", json!("060370")),
        ),
        (
            "unknown age group",
            with(&b, "age_group", json!("99 years")),
        ),
        (
            "age group casing",
            with(&b, "age_group", json!("0 - 17 Years")),
        ),
        ("sex casing", with(&b, "sex", json!("female"))),
        (
            "race spelling",
            with(&b, "race", json!("Black or African American")),
        ),
        (
            "unknown status",
            with(&b, "current_status", json!("Confirmed")),
        ),
        ("yes/no as bool", with(&b, "death_yn", json!(true))),
        ("null yes/no", with(&b, "icu_yn", json!(null))),
        (
            "interval as text",
            with(&b, "case_onset_interval", json!("3")),
        ),
        (
            "fractional interval",
            with(&b, "case_onset_interval", json!(1.5)),
        ),
        (
            "interval out of range",
            with(&b, "case_onset_interval", json!(2_147_483_648_i64)),
        ),
        ("not an object", json!(["row-ab12.cd34_ef56"])),
    ]);
    assert_enums_agree::<Case>(&b);
}

fn country_day_base() -> Value {
    json!({
        "date_reported": "2020-01-03",
        "country_code": "AF",
        "country": "Afghanistan",
        "who_region": "EMRO",
        "new_cases": null,
        "cumulative_cases": 0,
        "new_deaths": null,
        "cumulative_deaths": 0
    })
}

#[test]
fn country_day_samples_agree() {
    let b = country_day_base();
    let correction = json!({
        "date_reported": "2023-06-11",
        "country_code": "FR",
        "country": "France",
        "who_region": "EURO",
        "new_cases": -1253,
        "cumulative_cases": 38_997_490,
        "new_deaths": -4,
        "cumulative_deaths": 167_985
    });
    assert_valid::<CountryDay>(&[
        b.clone(),
        correction.clone(),
        with(
            &correction,
            "country",
            json!("Kosovo (in accordance with UN Security Council resolution 1244 (1999))"),
        ),
        with(
            &with(&correction, "country_code", json!("XK")),
            "new_cases",
            json!(0),
        ),
        with(&b, "country", json!("Côte d’Ivoire")),
        with(&b, "date_reported", json!("2020-02-29")),
        with(&b, "new_cases", json!(5.0)),
        with(&b, "cumulative_cases", json!(9_007_199_254_740_991_i64)),
        with(&b, "who_region", json!("OTHER")),
    ]);
    assert_invalid::<CountryDay>(&[
        ("missing new_cases", without(&b, "new_cases")),
        (
            "missing cumulative_deaths",
            without(&b, "cumulative_deaths"),
        ),
        ("missing country_code", without(&b, "country_code")),
        ("unknown field", with(&b, "iso3", json!("AFG"))),
        (
            "impossible date",
            with(&b, "date_reported", json!("2021-02-29")),
        ),
        (
            "unpadded date",
            with(&b, "date_reported", json!("2021-2-1")),
        ),
        (
            "timestamp as date",
            with(&b, "date_reported", json!("2020-01-03T00:00:00Z")),
        ),
        (
            "slashed date",
            with(&b, "date_reported", json!("03/01/2020")),
        ),
        ("lower-case code", with(&b, "country_code", json!("af"))),
        ("alpha-3 code", with(&b, "country_code", json!("AFG"))),
        ("blank code", with(&b, "country_code", json!(""))),
        ("blank country", with(&b, "country", json!(""))),
        ("unknown region", with(&b, "who_region", json!("EUR"))),
        ("region casing", with(&b, "who_region", json!("Other"))),
        (
            "negative cumulative",
            with(&b, "cumulative_cases", json!(-1)),
        ),
        (
            "null cumulative",
            with(&b, "cumulative_deaths", json!(null)),
        ),
        ("fractional count", with(&b, "new_cases", json!(1.5))),
        ("count as text", with(&b, "new_cases", json!("12"))),
        ("blank cell as text", with(&b, "new_deaths", json!(""))),
        (
            "count too large",
            with(&b, "cumulative_cases", json!(9_007_199_254_740_992_i64)),
        ),
        ("not an object", json!(null)),
    ]);
    assert_enums_agree::<CountryDay>(&b);
}

fn outbreak_news_base() -> Value {
    json!({
        "url": "https://www.who.int/emergencies/disease-outbreak-news/item/2024-DON501",
        "title": "Avian Influenza A(H5N1) - Cambodia",
        "published_on": "2024-02-12",
        "disease": "Avian influenza A(H5N1)",
        "countries": ["Cambodia"],
        "summary": "On 9 February 2024, the International Health Regulations National Focal Point for Cambodia notified WHO of a laboratory-confirmed case of human infection with avian influenza A(H5N1).",
        "content_hash": "ea716a682db936bf4e211ca61ffdafdfcb087ea7845f94d991ed53fbf73e039e"
    })
}

#[test]
fn outbreak_news_samples_agree() {
    let b = outbreak_news_base();
    assert_valid::<OutbreakNews>(&[
        b.clone(),
        json!({
            "url": "http://www.who.int/csr/don/archive/year/2019/en/?page=2#top",
            "title": "Mpox – multi-country external situation report",
            "published_on": "2019-12-31",
            "disease": "Mpox",
            "countries": [],
            "summary": "",
            "content_hash": "9dbb7d4f89e518dd418b771ad2c1beb3ffd87ec8b45a4bcca44d9c8e3cada439"
        }),
        with(
            &b,
            "countries",
            json!(["Rwanda", "Côte d’Ivoire", "Türkiye"]),
        ),
    ]);
    assert_invalid::<OutbreakNews>(&[
        ("missing url", without(&b, "url")),
        ("missing countries", without(&b, "countries")),
        ("missing content_hash", without(&b, "content_hash")),
        ("unknown field", with(&b, "region", json!("WPRO"))),
        (
            "ftp url",
            with(&b, "url", json!("ftp://ftp.who.int/don/2024.txt")),
        ),
        (
            "url without scheme",
            with(&b, "url", json!("www.who.int/emergencies")),
        ),
        (
            "upper-case scheme",
            with(&b, "url", json!("HTTPS://www.who.int/")),
        ),
        (
            "url with a space",
            with(&b, "url", json!("https://www.who.int/disease outbreak")),
        ),
        ("empty title", with(&b, "title", json!(""))),
        (
            "impossible date",
            with(&b, "published_on", json!("2024-02-30")),
        ),
        (
            "date with time",
            with(&b, "published_on", json!("2024-02-12T10:00:00Z")),
        ),
        ("empty disease", with(&b, "disease", json!(""))),
        (
            "countries as text",
            with(&b, "countries", json!("Cambodia")),
        ),
        ("empty country", with(&b, "countries", json!([""]))),
        ("country as number", with(&b, "countries", json!([116]))),
        ("null summary", with(&b, "summary", json!(null))),
        (
            "upper-case hash",
            with(
                &b,
                "content_hash",
                json!("EA716A682DB936BF4E211CA61FFDAFDFCB087EA7845F94D991ED53FBF73E039E"),
            ),
        ),
        (
            "short hash",
            with(
                &b,
                "content_hash",
                json!("ea716a682db936bf4e211ca61ffdafdfcb087ea7845f94d991ed53fbf73e039"),
            ),
        ),
        ("not an object", json!("Avian Influenza A(H5N1) - Cambodia")),
    ]);
}

#[test]
fn payloads_fill_the_envelope() {
    let ingested = Utc.with_ymd_and_hms(2024, 5, 1, 6, 30, 0).unwrap();

    let case: Case = serde_json::from_value(case_base()).unwrap();
    assert_eq!(case.natural_key(), ["row-ab12.cd34_ef56"]);
    assert_eq!(case.partition_key(), "CA");
    let envelope = Envelope::new("cdc-case-surveillance", case, ingested);
    assert_eq!(envelope.schema, "health.case");
    assert_eq!(envelope.schema_version, 1);
    assert_eq!(
        envelope.occurred_at,
        Utc.with_ymd_and_hms(2020, 11, 1, 0, 0, 0).unwrap()
    );
    assert_eq!(envelope.ingested_at, ingested);
    assert_eq!(
        envelope.id,
        vigie_core::event_id("cdc-case-surveillance", &["row-ab12.cd34_ef56"])
    );

    let day: CountryDay = serde_json::from_value(country_day_base()).unwrap();
    assert_eq!(day.natural_key(), ["AF", "2020-01-03"]);
    assert_eq!(day.partition_key(), "AF");
    assert_eq!(
        day.occurred_at(),
        Utc.with_ymd_and_hms(2020, 1, 3, 0, 0, 0).unwrap()
    );

    let news: OutbreakNews = serde_json::from_value(outbreak_news_base()).unwrap();
    let url = "https://www.who.int/emergencies/disease-outbreak-news/item/2024-DON501";
    assert_eq!(news.natural_key(), [url]);
    assert_eq!(news.partition_key(), url);
    assert_eq!(
        news.occurred_at(),
        Utc.with_ymd_and_hms(2024, 2, 12, 0, 0, 0).unwrap()
    );
}

fn case_score_base() -> Value {
    json!({
        "case_event_id": "04c7e04a-8d54-5b70-9d40-e4b580a8f36e",
        "model_name": "hosp_risk",
        "model_version": "1.0.0",
        "score": 0.0731,
        "scored_at": "2026-11-28T12:00:00.123456Z"
    })
}

#[test]
fn case_score_samples_agree() {
    let b = case_score_base();
    assert_valid::<CaseScore>(&[
        b.clone(),
        with(&b, "score", json!(0)),
        with(&b, "score", json!(1.0)),
        with(&b, "scored_at", json!("2026-11-28T13:00:00+01:00")),
    ]);
    assert_invalid::<CaseScore>(&[
        ("missing score", without(&b, "score")),
        ("missing case id", without(&b, "case_event_id")),
        ("unknown field", with(&b, "label", json!(1))),
        ("score above 1", with(&b, "score", json!(1.5))),
        ("negative score", with(&b, "score", json!(-0.1))),
        ("score as text", with(&b, "score", json!("0.5"))),
        (
            "upper-case uuid",
            with(
                &b,
                "case_event_id",
                json!("04C7E04A-8D54-5B70-9D40-E4B580A8F36E"),
            ),
        ),
        ("not a uuid", with(&b, "case_event_id", json!("case-1"))),
        ("empty model name", with(&b, "model_name", json!(""))),
        ("date only", with(&b, "scored_at", json!("2026-11-28"))),
    ]);
}
