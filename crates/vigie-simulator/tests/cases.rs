//! Properties of the simulated CDC case rows: determinism, distributions,
//! drift scenarios.

use std::collections::HashSet;

use sha2::{Digest, Sha256};
use vigie_core::health::{AgeGroup, Case, CurrentStatus, Sex, YesNo};
use vigie_simulator::{CaseGenConfig, CaseGenerator, ConfigError, Drift};

fn generator(seed: u64, drift: Option<Drift>) -> CaseGenerator {
    CaseGenerator::new(CaseGenConfig {
        seed,
        start_month: (2020, 3),
        months: 36,
        drift,
    })
    .unwrap()
}

fn share(rows: &[Case], keep: impl Fn(&Case) -> bool) -> f64 {
    rows.iter().filter(|r| keep(r)).count() as f64 / rows.len() as f64
}

/// Share of `hosp_yn = Yes` among the rows `keep` selects.
fn hosp_rate(rows: &[Case], keep: impl Fn(&Case) -> bool) -> f64 {
    let selected: Vec<&Case> = rows.iter().filter(|r| keep(r)).collect();
    let yes = selected.iter().filter(|r| r.hosp_yn == YesNo::Yes).count();
    yes as f64 / selected.len() as f64
}

#[test]
fn rows_are_a_pure_function_of_seed_and_index() {
    let a = generator(7, None);
    let b = generator(7, None);
    let forwards: Vec<Case> = a.rows(0..500).collect();
    for index in (0..500u64).rev() {
        assert_eq!(b.row(index), forwards[index as usize]);
    }
    assert_eq!(a.row(u64::MAX - 3), b.row(u64::MAX - 3));
    assert_eq!(
        serde_json::to_string(&a.row(123_456_789)).unwrap(),
        serde_json::to_string(&b.row(123_456_789)).unwrap()
    );
}

#[test]
fn different_seeds_give_different_rows() {
    let a = generator(1, None);
    let b = generator(2, None);
    let differing = (0..200).filter(|&i| a.row(i) != b.row(i)).count();
    assert_eq!(differing, 200);
    let ids_a: HashSet<String> = a.rows(0..1000).map(|r| r.row_id.to_string()).collect();
    let ids_b: HashSet<String> = b.rows(0..1000).map(|r| r.row_id.to_string()).collect();
    assert_eq!(ids_a.len(), 1000, "row ids are unique");
    assert!(ids_a.is_disjoint(&ids_b));
}

/// Pins the data itself: if this fails, the generated data changed. That is
/// only acceptable as a deliberate decision (every consumer's fixtures and
/// every recorded experiment change with it); then update the fingerprint.
#[test]
fn data_is_pinned() {
    let generator = generator(42, None);
    let mut hasher = Sha256::new();
    for row in generator.rows(0..1000) {
        hasher.update(serde_json::to_vec(&row).unwrap());
        hasher.update(b"\n");
    }
    let fingerprint: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let first = serde_json::to_string(&generator.row(0)).unwrap();
    assert_eq!(first, FIRST_ROW, "row 0 changed");
    assert_eq!(fingerprint, FINGERPRINT, "rows 0..1000 changed");
}

const FIRST_ROW: &str = r#"{"row_id":"row-5nh6.4mai_dmcp","case_month":"2021-12","res_state":"NJ","state_fips_code":"34","age_group":"18 to 49 years","sex":"Female","race":"White","ethnicity":"Hispanic/Latino","case_positive_specimen_interval":null,"case_onset_interval":null,"process":"Missing","exposure_yn":"Missing","current_status":"Laboratory-confirmed case","symptom_status":"Symptomatic","hosp_yn":"Yes","icu_yn":"Missing","death_yn":"No","underlying_conditions_yn":"Missing"}"#;
const FINGERPRINT: &str = "61269aa7932dd905395ece498584c97f18b8adb562af3ea9132811655ad21937";

#[test]
fn distributions_are_roughly_as_published() {
    let rows: Vec<Case> = generator(11, None).rows(0..50_000).collect();
    let age = |group: AgeGroup| share(&rows, |r| r.age_group == group);
    for (group, expected) in [
        (AgeGroup::Age0To17, 0.12),
        (AgeGroup::Age18To49, 0.52),
        (AgeGroup::Age50To64, 0.20),
        (AgeGroup::Age65Plus, 0.14),
        (AgeGroup::Missing, 0.01),
        (AgeGroup::NA, 0.01),
    ] {
        let found = age(group);
        assert!((found - expected).abs() < 0.012, "{group}: {found}");
    }
    let female = share(&rows, |r| r.sex == Sex::Female);
    let male = share(&rows, |r| r.sex == Sex::Male);
    assert!((female - 0.51).abs() < 0.015, "{female}");
    assert!((male - 0.47).abs() < 0.015, "{male}");
    let confirmed = share(&rows, |r| {
        r.current_status == CurrentStatus::LaboratoryConfirmed
    });
    assert!((confirmed - 0.85).abs() < 0.015, "{confirmed}");
    let suppressed = share(&rows, |r| r.res_county.is_none());
    assert!((suppressed - 0.10).abs() < 0.01, "{suppressed}");
    let no_interval = share(&rows, |r| r.case_onset_interval.is_none());
    assert!(no_interval > 0.6, "{no_interval}");
    for row in &rows {
        for interval in [row.case_onset_interval, row.case_positive_specimen_interval]
            .into_iter()
            .flatten()
        {
            assert!((-5..=30).contains(&interval), "{interval}");
        }
        assert_eq!(row.res_county.is_some(), row.county_fips_code.is_some());
        let state_fips = row.state_fips_code.as_ref().unwrap().as_str();
        if let Some(county) = &row.county_fips_code {
            assert!(county.as_str().starts_with(state_fips));
        }
    }
    // Most process values are unreported, as in the real data.
    let process_missing = share(&rows, |r| r.process.as_str() == "Missing");
    assert!(process_missing > 0.8, "{process_missing}");
}

#[test]
fn hospitalisation_depends_on_age_and_conditions() {
    let rows: Vec<Case> = generator(12, None).rows(0..50_000).collect();
    let by_age = |group: AgeGroup| hosp_rate(&rows, |r| r.age_group == group);
    let (young, adult, older, old) = (
        by_age(AgeGroup::Age0To17),
        by_age(AgeGroup::Age18To49),
        by_age(AgeGroup::Age50To64),
        by_age(AgeGroup::Age65Plus),
    );
    assert!((old - 0.20).abs() < 0.02, "65+: {old}");
    assert!((older - 0.08).abs() < 0.015, "50-64: {older}");
    assert!((adult - 0.03).abs() < 0.006, "18-49: {adult}");
    assert!((young - 0.01).abs() < 0.006, "0-17: {young}");
    assert!(old > 3.0 * adult);

    let with = hosp_rate(&rows, |r| r.underlying_conditions_yn == YesNo::Yes);
    let without = hosp_rate(&rows, |r| r.underlying_conditions_yn == YesNo::No);
    assert!(with > 3.0 * without, "{with} vs {without}");
    // Within one age group too, so that the signal is not age alone.
    let old_with = hosp_rate(&rows, |r| {
        r.age_group == AgeGroup::Age65Plus && r.underlying_conditions_yn == YesNo::Yes
    });
    let old_without = hosp_rate(&rows, |r| {
        r.age_group == AgeGroup::Age65Plus && r.underlying_conditions_yn == YesNo::No
    });
    assert!(old_with > 2.0 * old_without, "{old_with} vs {old_without}");

    // ICU and deaths are rarer and follow hospitalisation.
    let icu = share(&rows, |r| r.icu_yn == YesNo::Yes);
    let died = share(&rows, |r| r.death_yn == YesNo::Yes);
    let hosp = share(&rows, |r| r.hosp_yn == YesNo::Yes);
    assert!(icu < hosp && died < hosp, "{icu} {died} {hosp}");
    assert!(
        rows.iter()
            .all(|r| r.icu_yn != YesNo::Yes || r.hosp_yn == YesNo::Yes)
    );
    let died_hosp = share(&rows, |r| {
        r.death_yn == YesNo::Yes && r.hosp_yn == YesNo::Yes
    }) / hosp;
    assert!(died_hosp > 5.0 * died, "{died_hosp} vs {died}");
}

#[test]
fn states_follow_population() {
    let rows: Vec<Case> = generator(13, None).rows(0..50_000).collect();
    let count = |code: &str| rows.iter().filter(|r| r.res_state.as_str() == code).count();
    let (ca, tx, wy) = (count("CA"), count("TX"), count("WY"));
    assert!(ca > 20 * wy, "CA {ca}, WY {wy}");
    assert!(ca > tx && tx > wy);
    let states: HashSet<&str> = rows.iter().map(|r| r.res_state.as_str()).collect();
    assert_eq!(states.len(), 52, "50 states, DC and PR all appear");
    let la = rows
        .iter()
        .find(|r| r.res_county.as_deref() == Some("LOS ANGELES"))
        .unwrap();
    assert_eq!(la.county_fips_code.as_ref().unwrap().as_str(), "06037");
    assert_eq!(la.state_fips_code.as_ref().unwrap().as_str(), "06");
}

#[test]
fn case_months_follow_the_waves() {
    let generator = generator(14, None);
    let rows: Vec<Case> = generator.rows(0..30_000).collect();
    let months = generator.case_months();
    assert_eq!(months.len(), 36);
    assert!(rows.iter().all(|r| months.contains(&r.case_month)));
    let in_month = |text: &str| {
        rows.iter()
            .filter(|r| r.case_month.to_string() == text)
            .count()
    };
    assert!(in_month("2022-01") > 3 * in_month("2021-05"));
    assert!(in_month("2020-03") > 0);
    assert!(in_month("2023-02") > 0);
}

#[test]
fn age_shift_applies_from_its_index_only() {
    let from = 20_000;
    let base = generator(15, None);
    let drifted = generator(15, Some(Drift::AgeShiftOlder { from_index: from }));
    for index in (0..from).step_by(7) {
        assert_eq!(base.row(index), drifted.row(index));
    }
    let before: Vec<Case> = drifted.rows(0..from).collect();
    let after: Vec<Case> = drifted.rows(from..from + 30_000).collect();
    let old = |rows: &[Case]| share(rows, |r| r.age_group == AgeGroup::Age65Plus);
    assert!((old(&before) - 0.14).abs() < 0.015, "{}", old(&before));
    assert!((old(&after) - 0.30).abs() < 0.015, "{}", old(&after));
    // Outcomes follow the older mix.
    assert!(hosp_rate(&after, |_| true) > 1.3 * hosp_rate(&before, |_| true));
}

#[test]
fn hospitalisation_doubles_in_listed_states_from_its_index_only() {
    let from = 30_000;
    let states = ["CA", "TX", "NY", "FL"];
    let base = generator(16, None);
    let drifted = generator(
        16,
        Some(Drift::HospitalisationDoubles {
            from_index: from,
            states: states.iter().map(|s| (*s).to_owned()).collect(),
        }),
    );
    for index in 0..from {
        assert_eq!(base.row(index), drifted.row(index));
    }
    let listed = |r: &Case| states.contains(&r.res_state.as_str());
    let after_base: Vec<Case> = base.rows(from..from + 60_000).collect();
    let after_drift: Vec<Case> = drifted.rows(from..from + 60_000).collect();
    for (plain, changed) in after_base.iter().zip(&after_drift) {
        if !listed(plain) {
            assert_eq!(plain, changed, "other states are untouched");
        }
    }
    let plain_rate = hosp_rate(&after_base, listed);
    let drifted_rate = hosp_rate(&after_drift, listed);
    let ratio = drifted_rate / plain_rate;
    assert!(
        (1.7..2.3).contains(&ratio),
        "{plain_rate} -> {drifted_rate}"
    );
}

#[test]
fn bad_configurations_are_refused() {
    let config = |start_month, months, drift| CaseGenConfig {
        seed: 0,
        start_month,
        months,
        drift,
    };
    assert_eq!(
        CaseGenerator::new(config((2020, 0), 3, None)).unwrap_err(),
        ConfigError::StartMonth {
            year: 2020,
            month: 0
        }
    );
    assert_eq!(
        CaseGenerator::new(config((2020, 3), 0, None)).unwrap_err(),
        ConfigError::NoMonths
    );
    let drift = Drift::HospitalisationDoubles {
        from_index: 0,
        states: vec!["CA".to_owned(), "ZZ".to_owned()],
    };
    assert_eq!(
        CaseGenerator::new(config((2020, 3), 3, Some(drift))).unwrap_err(),
        ConfigError::UnknownState("ZZ".to_owned())
    );
    assert!(CaseGenerator::new(CaseGenConfig::default()).is_ok());
}

#[test]
fn drift_configuration_round_trips_through_json() {
    let config = CaseGenConfig {
        seed: 3,
        start_month: (2021, 1),
        months: 12,
        drift: Some(Drift::HospitalisationDoubles {
            from_index: 1_000,
            states: vec!["TX".to_owned()],
        }),
    };
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["drift"]["kind"], "hospitalisation_doubles");
    let back: CaseGenConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, config);
    assert_eq!(config.drift.unwrap().from_index(), 1_000);
}

#[test]
fn two_hundred_thousand_rows_generate() {
    let generator = generator(17, None);
    let mut hospitalised = 0u64;
    for row in generator.rows(0..200_000) {
        hospitalised += u64::from(row.hosp_yn == YesNo::Yes);
    }
    assert!(hospitalised > 0);
}

/// The producers' hand-written envelope writer gives serde_json's bytes on
/// the simulated stream, whatever the row.
#[test]
fn case_envelopes_are_encoded_as_serde_writes_them() {
    let generator = generator(11, None);
    let at = chrono::Utc::now();
    for index in 0..20_000 {
        let env = vigie_simulator::case_envelope(&generator, index, at);
        let fast = env.encode().unwrap();
        let serde = env.to_json_bytes().unwrap();
        assert!(
            fast == serde,
            "row {index}:\n{}\n{}",
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&serde)
        );
    }
}
