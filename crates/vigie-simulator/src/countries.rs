//! Simulated WHO COVID-19 global daily data: one row per country per day,
//! with the quirks of the real file that consumers must handle (blank
//! cells, negative corrections) and cumulative counts that stay consistent
//! with them.
//!
//! Everything a day adds is a pure function of the seed, the country and the
//! day; the cumulative counts are the running sums of those additions from
//! day 0, so a day can be regenerated alone at the cost of replaying the days
//! before it.

use std::ops::Range;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use vigie_core::health::{CountryCode, CountryDay, WhoRegion};

use crate::checked;
use crate::error::ConfigError;
use crate::sample::{Draw, derive_key};

/// Domain of the per-country, per-day draws.
const DAY_DOMAIN: u64 = 0x5748_4f5f_4441_5953;
/// Domain of the per-country epidemic parameters.
const PARAMS_DOMAIN: u64 = 0x5748_4f5f_5041_524d;

/// Cases per million inhabitants per day between waves.
const BASELINE_PER_MILLION: f64 = 10.0;
/// How often WHO leaves a day's cells blank.
const BLANK_PPM: u32 = 15_000;
/// How often a day brings a correction of earlier over-counts.
const CORRECTION_PPM: u32 = 3_000;

/// The countries simulated: ISO 3166-1 alpha-2 code, name as WHO writes it,
/// WHO region, population in millions. The first eight cover every region,
/// so that small simulations still do.
const COUNTRIES: &[(&str, &str, WhoRegion, f64)] = &[
    ("US", "United States of America", WhoRegion::Amro, 331.0),
    ("FR", "France", WhoRegion::Euro, 65.3),
    ("CH", "Switzerland", WhoRegion::Euro, 8.7),
    ("IN", "India", WhoRegion::Searo, 1380.0),
    ("BR", "Brazil", WhoRegion::Amro, 212.6),
    ("ZA", "South Africa", WhoRegion::Afro, 59.3),
    ("EG", "Egypt", WhoRegion::Emro, 102.3),
    ("CN", "China", WhoRegion::Wpro, 1411.8),
    ("DE", "Germany", WhoRegion::Euro, 83.2),
    ("GB", "The United Kingdom", WhoRegion::Euro, 67.1),
    ("IT", "Italy", WhoRegion::Euro, 59.6),
    ("ES", "Spain", WhoRegion::Euro, 47.4),
    ("PL", "Poland", WhoRegion::Euro, 37.9),
    ("NL", "Netherlands (Kingdom of the)", WhoRegion::Euro, 17.4),
    ("BE", "Belgium", WhoRegion::Euro, 11.6),
    ("SE", "Sweden", WhoRegion::Euro, 10.4),
    ("PT", "Portugal", WhoRegion::Euro, 10.3),
    ("RU", "Russian Federation", WhoRegion::Euro, 145.9),
    ("TR", "Türkiye", WhoRegion::Euro, 84.3),
    ("UA", "Ukraine", WhoRegion::Euro, 44.1),
    (
        "XK",
        "Kosovo (in accordance with UN Security Council resolution 1244 (1999))",
        WhoRegion::Euro,
        1.8,
    ),
    ("MX", "Mexico", WhoRegion::Amro, 128.9),
    ("CA", "Canada", WhoRegion::Amro, 38.0),
    ("AR", "Argentina", WhoRegion::Amro, 45.4),
    ("CO", "Colombia", WhoRegion::Amro, 50.9),
    ("PE", "Peru", WhoRegion::Amro, 33.0),
    ("CL", "Chile", WhoRegion::Amro, 19.1),
    ("ID", "Indonesia", WhoRegion::Searo, 273.5),
    ("TH", "Thailand", WhoRegion::Searo, 69.8),
    ("BD", "Bangladesh", WhoRegion::Searo, 164.7),
    ("NP", "Nepal", WhoRegion::Searo, 29.1),
    ("LK", "Sri Lanka", WhoRegion::Searo, 21.4),
    ("NG", "Nigeria", WhoRegion::Afro, 206.1),
    ("KE", "Kenya", WhoRegion::Afro, 53.8),
    ("ET", "Ethiopia", WhoRegion::Afro, 115.0),
    (
        "CD",
        "Democratic Republic of the Congo",
        WhoRegion::Afro,
        89.6,
    ),
    ("IR", "Iran (Islamic Republic of)", WhoRegion::Emro, 84.0),
    ("PK", "Pakistan", WhoRegion::Emro, 220.9),
    ("SA", "Saudi Arabia", WhoRegion::Emro, 34.8),
    ("MA", "Morocco", WhoRegion::Emro, 36.9),
    ("JP", "Japan", WhoRegion::Wpro, 125.8),
    ("KR", "Republic of Korea", WhoRegion::Wpro, 51.8),
    ("AU", "Australia", WhoRegion::Wpro, 25.7),
    ("PH", "Philippines", WhoRegion::Wpro, 109.6),
    ("VN", "Viet Nam", WhoRegion::Wpro, 97.3),
    ("NZ", "New Zealand", WhoRegion::Wpro, 5.1),
];

/// One country with its checked code and seeded epidemic parameters.
struct CountrySlot {
    code: CountryCode,
    name: &'static str,
    region: WhoRegion,
    population_m: f64,
    /// Days from one wave peak to the next.
    period: u32,
    /// Offset of the waves, in days.
    phase: u32,
    /// Cases per million per day at a wave's peak, on top of the baseline.
    peak_per_million: f64,
    /// Share of cases that die.
    fatality: f64,
}

/// Running totals of one country.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    cases: u64,
    deaths: u64,
}

/// What one day adds for one country.
struct Increment {
    new_cases: Option<i64>,
    new_deaths: Option<i64>,
}

/// Generator of WHO daily country rows.
///
/// The same seed, start date and country count always give the same rows;
/// changing the algorithm or the country table changes the data.
#[derive(Debug)]
pub struct CountryDayGenerator {
    seed: u64,
    start: NaiveDate,
    key: [u8; 32],
    countries: Vec<CountrySlot>,
}

impl std::fmt::Debug for CountrySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code.as_str())
    }
}

impl CountryDayGenerator {
    /// Number of countries in the built-in table, the most a generator can
    /// simulate.
    pub const AVAILABLE_COUNTRIES: usize = COUNTRIES.len();

    /// A generator of `countries` countries (the first of the built-in
    /// table) whose day 0 is `start`.
    ///
    /// # Errors
    ///
    /// If `countries` is 0 or more than [`Self::AVAILABLE_COUNTRIES`], or
    /// `start` is outside the years 0 to 9999 that the schema's dates can
    /// write.
    pub fn new(seed: u64, start: NaiveDate, countries: usize) -> Result<Self, ConfigError> {
        if countries == 0 || countries > Self::AVAILABLE_COUNTRIES {
            return Err(ConfigError::Countries {
                requested: countries,
                available: Self::AVAILABLE_COUNTRIES,
            });
        }
        if !(0..=9999).contains(&start.year()) {
            return Err(ConfigError::StartDate(start));
        }
        let params_key = derive_key(seed, PARAMS_DOMAIN);
        let countries = COUNTRIES[..countries]
            .iter()
            .enumerate()
            .map(|(slot, &(code, name, region, population_m))| {
                let mut d = Draw::new(&params_key, slot as u64);
                let period = 80 + d.below(120) as u32;
                CountrySlot {
                    code: checked(code),
                    name,
                    region,
                    population_m,
                    period,
                    phase: d.below(u64::from(period)) as u32,
                    peak_per_million: 150.0 + 650.0 * d.unit(),
                    fatality: 0.004 + 0.016 * d.unit(),
                }
            })
            .collect();
        Ok(Self {
            seed,
            start,
            key: derive_key(seed, DAY_DOMAIN),
            countries,
        })
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The date of day 0.
    pub fn start(&self) -> NaiveDate {
        self.start
    }

    /// Number of countries, i.e. rows per day.
    pub fn countries(&self) -> usize {
        self.countries.len()
    }

    /// The date of day `day_index`.
    ///
    /// # Panics
    ///
    /// If the date falls after 9999-12-31.
    pub fn date(&self, day_index: u32) -> NaiveDate {
        self.start
            .checked_add_days(Days::new(u64::from(day_index)))
            .filter(|date| date.year() <= 9999)
            .unwrap_or_else(|| panic!("day {day_index} falls after 9999-12-31"))
    }

    /// The rows of day `day_index`, one per country in table order.
    ///
    /// This replays every day from day 0 to get the cumulative counts, so it
    /// costs `O(day_index × countries)` draws: use [`days`](Self::days) to
    /// walk through consecutive days.
    ///
    /// # Panics
    ///
    /// If the date falls after 9999-12-31.
    pub fn day(&self, day_index: u32) -> Vec<CountryDay> {
        let mut days = self.days(day_index..day_index.saturating_add(1));
        days.next().unwrap_or_default()
    }

    /// The rows of each day of `range`, in order, carrying the cumulative
    /// counts from one day to the next.
    ///
    /// Getting to `range.start` replays the days before it once, up front.
    ///
    /// # Panics
    ///
    /// If a date falls after 9999-12-31.
    pub fn days(&self, range: Range<u32>) -> impl Iterator<Item = Vec<CountryDay>> {
        let mut totals = vec![Totals::default(); self.countries.len()];
        for day_index in 0..range.start {
            let weekday = self.date(day_index).weekday();
            for (slot, total) in totals.iter_mut().enumerate() {
                self.advance(slot, day_index, weekday, total);
            }
        }
        range.map(move |day_index| {
            let date = self.date(day_index);
            let weekday = date.weekday();
            totals
                .iter_mut()
                .enumerate()
                .map(|(slot, total)| {
                    let step = self.advance(slot, day_index, weekday, total);
                    let country = &self.countries[slot];
                    CountryDay {
                        date_reported: date,
                        country_code: country.code.clone(),
                        country: country.name.to_owned(),
                        who_region: country.region,
                        new_cases: step.new_cases,
                        cumulative_cases: total.cases,
                        new_deaths: step.new_deaths,
                        cumulative_deaths: total.deaths,
                    }
                })
                .collect()
        })
    }

    /// Draws what day `day_index` adds for the country in `slot` and adds it
    /// to `totals`.
    fn advance(
        &self,
        slot: usize,
        day_index: u32,
        weekday: Weekday,
        totals: &mut Totals,
    ) -> Increment {
        let country = &self.countries[slot];
        // The stream packs the day and the country slot (below 2^16).
        let mut d = Draw::new(&self.key, (u64::from(day_index) << 16) | slot as u64);
        // Every draw is made whatever the outcome, in this order, so that
        // each keeps its meaning from day to day.
        let case_noise = 0.75 + 0.5 * d.unit();
        let cases_blank = d.chance(BLANK_PPM);
        let cases_corrected = d.chance(CORRECTION_PPM);
        let case_correction = d.unit();
        let death_noise = 0.5 + d.unit();
        let deaths_blank = d.chance(BLANK_PPM);
        let deaths_corrected = d.chance(CORRECTION_PPM);
        let death_correction = d.unit();

        // A triangular wave, squared to give sharper peaks than troughs.
        let position = f64::from((day_index % country.period + country.phase) % country.period)
            / f64::from(country.period);
        let wave = 1.0 - (2.0 * position - 1.0).abs();
        let expected = country.population_m
            * (BASELINE_PER_MILLION + country.peak_per_million * wave * wave)
            * reporting_rhythm(weekday);
        let expected_deaths = expected * country.fatality;

        let new_cases = step(
            &mut totals.cases,
            cases_blank,
            cases_corrected,
            // At most about two days' worth is taken back.
            (case_correction * (2.0 * expected + 10.0)).floor() as u64 + 1,
            (expected * case_noise).round() as u64,
        );
        let new_deaths = step(
            &mut totals.deaths,
            // WHO blanks deaths whenever it blanks cases.
            cases_blank || deaths_blank,
            deaths_corrected,
            (death_correction * (3.0 * expected_deaths + 3.0)).floor() as u64 + 1,
            (expected_deaths * death_noise).round() as u64,
        );
        Increment {
            new_cases,
            new_deaths,
        }
    }
}

/// Applies one day to a running total: a blank cell adds nothing, a
/// correction takes back up to `correction` (never below zero), otherwise
/// `count` is added.
fn step(total: &mut u64, blank: bool, corrected: bool, correction: u64, count: u64) -> Option<i64> {
    if blank {
        None
    } else if corrected && *total > 0 {
        let taken = correction.min(*total);
        *total -= taken;
        // Daily counts stay far below i64::MAX.
        Some(-(taken as i64))
    } else {
        *total += count;
        Some(count as i64)
    }
}

/// Fewer reports at weekends, a catch-up on Mondays.
fn reporting_rhythm(weekday: Weekday) -> f64 {
    match weekday {
        Weekday::Mon => 1.25,
        Weekday::Sat => 0.75,
        Weekday::Sun => 0.6,
        Weekday::Tue | Weekday::Wed | Weekday::Thu | Weekday::Fri => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut codes = HashSet::new();
        for &(code, name, _, population) in COUNTRIES {
            assert!(codes.insert(code), "{code} twice");
            assert!(code.parse::<CountryCode>().is_ok(), "{code}");
            assert!(!name.is_empty());
            assert!(population > 0.0);
        }
        let regions: HashSet<_> = COUNTRIES[..8].iter().map(|c| c.2).collect();
        assert_eq!(regions.len(), 6, "the first eight cover every region");
    }

    #[test]
    fn steps_never_go_below_zero() {
        let mut total = 5;
        assert_eq!(step(&mut total, false, true, 9, 100), Some(-5));
        assert_eq!(total, 0);
        // Nothing left to correct: the day counts normally.
        assert_eq!(step(&mut total, false, true, 9, 100), Some(100));
        assert_eq!(step(&mut total, true, false, 9, 100), None);
        assert_eq!(total, 100);
    }
}
