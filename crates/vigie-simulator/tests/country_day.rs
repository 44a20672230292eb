//! Properties of the simulated WHO daily country rows: consistent
//! cumulative counts through blanks and corrections, and days that can be
//! regenerated alone.

use chrono::NaiveDate;
use vigie_core::health::CountryDay;
use vigie_simulator::{ConfigError, CountryDayGenerator};

fn start() -> NaiveDate {
    NaiveDate::from_ymd_opt(2020, 1, 3).unwrap()
}

#[test]
fn cumulative_counts_follow_the_daily_ones() {
    let generator =
        CountryDayGenerator::new(5, start(), CountryDayGenerator::AVAILABLE_COUNTRIES).unwrap();
    let days: Vec<Vec<CountryDay>> = generator.days(0..400).collect();
    let (mut blanks, mut corrections) = (0, 0);
    for (day, rows) in days.iter().enumerate() {
        assert_eq!(rows.len(), generator.countries());
        for (slot, row) in rows.iter().enumerate() {
            assert_eq!(row.date_reported, generator.date(day as u32));
            let (previous_cases, previous_deaths) = match day {
                0 => (0, 0),
                _ => {
                    let previous = &days[day - 1][slot];
                    assert_eq!(previous.country_code, row.country_code);
                    (previous.cumulative_cases, previous.cumulative_deaths)
                }
            };
            for (new, previous, cumulative) in [
                (row.new_cases, previous_cases, row.cumulative_cases),
                (row.new_deaths, previous_deaths, row.cumulative_deaths),
            ] {
                match new {
                    None => {
                        blanks += 1;
                        assert_eq!(cumulative, previous);
                    }
                    Some(n) => {
                        if n < 0 {
                            corrections += 1;
                        }
                        assert_eq!(cumulative as i64, previous as i64 + n);
                    }
                }
            }
        }
    }
    assert!(blanks > 0, "some cells are blank");
    assert!(corrections > 0, "some days correct earlier counts");
    let us_total = days[399][0].cumulative_cases;
    assert!(us_total > 1_000_000, "{us_total}");
}

#[test]
fn a_day_can_be_regenerated_alone() {
    let generator = CountryDayGenerator::new(6, start(), 10).unwrap();
    let walked: Vec<Vec<CountryDay>> = generator.days(0..90).collect();
    for day in [0u32, 1, 45, 89] {
        assert_eq!(generator.day(day), walked[day as usize]);
    }
    let tail: Vec<Vec<CountryDay>> = generator.days(80..90).collect();
    assert_eq!(tail, walked[80..90]);
    let again = CountryDayGenerator::new(6, start(), 10).unwrap();
    assert_eq!(again.day(45), walked[45]);
    let other = CountryDayGenerator::new(7, start(), 10).unwrap();
    assert_ne!(other.day(45), walked[45]);
}

#[test]
fn countries_are_real_who_entries() {
    let generator = CountryDayGenerator::new(8, start(), 8).unwrap();
    let rows = generator.day(0);
    let us = &rows[0];
    assert_eq!(us.country_code.as_str(), "US");
    assert_eq!(us.country, "United States of America");
    assert_eq!(us.who_region.as_str(), "AMRO");
    let regions: std::collections::HashSet<_> = rows.iter().map(|r| r.who_region).collect();
    assert_eq!(regions.len(), 6);
}

#[test]
fn bad_configurations_are_refused() {
    assert!(matches!(
        CountryDayGenerator::new(1, start(), 0),
        Err(ConfigError::Countries { .. })
    ));
    assert!(matches!(
        CountryDayGenerator::new(1, start(), CountryDayGenerator::AVAILABLE_COUNTRIES + 1),
        Err(ConfigError::Countries { .. })
    ));
    let far = NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap();
    assert_eq!(
        CountryDayGenerator::new(1, far, 3).unwrap_err(),
        ConfigError::StartDate(far)
    );
}

/// Pins the data: if this fails, the generated rows changed, which must be a
/// deliberate decision (then update the fingerprint).
#[test]
fn data_is_pinned() {
    use sha2::{Digest, Sha256};
    let generator = CountryDayGenerator::new(42, start(), 12).unwrap();
    let mut hasher = Sha256::new();
    for rows in generator.days(0..30) {
        hasher.update(serde_json::to_vec(&rows).unwrap());
    }
    let fingerprint: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        fingerprint,
        "8b8299d5380deccffa53ca31e732992cd575690054ce5f962e7ea9ab9f5db444"
    );
}
