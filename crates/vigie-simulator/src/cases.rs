//! Simulated rows of the CDC "COVID-19 Case Surveillance Public Use Data
//! with Geography" data set, the high-volume US source.
//!
//! A row is a pure function of the seed and its index, so a stream of
//! millions of rows needs no state: any row can be regenerated alone, in any
//! order, on any machine. The distributions imitate the published data,
//! including its large share of unreported fields, and hospitalisation
//! genuinely depends on age and underlying conditions so that models trained
//! on the data have a signal to learn.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use vigie_core::health::{
    AgeGroup, Case, CaseMonth, CountyFips, CurrentStatus, Ethnicity, Process, Race, RowId, Sex,
    SmolStr, StateCode, StateFips, SymptomStatus, YesNo,
};

use crate::checked;
use crate::error::ConfigError;
use crate::geo::US_STATES;
use crate::sample::{Draw, Weighted, derive_key, splitmix64};

/// Domain of the per-row draws, see [`derive_key`].
const ROW_DOMAIN: u64 = 0x4341_5345_5f52_4f57;
/// Domain of the key that scrambles row ids.
const ROW_ID_DOMAIN: u64 = 0x4341_5345_5f49_4400;

/// How often county and county FIPS are suppressed for privacy.
const COUNTY_SUPPRESSED_PPM: u32 = 100_000;

/// Normal age mix (per thousand).
const AGES: &[(AgeGroup, u32)] = &[
    (AgeGroup::Age0To17, 120),
    (AgeGroup::Age18To49, 520),
    (AgeGroup::Age50To64, 200),
    (AgeGroup::Age65Plus, 140),
    (AgeGroup::Missing, 10),
    (AgeGroup::NA, 10),
];

/// Age mix under [`Drift::AgeShiftModerate`] (per thousand): against
/// [`AGES`], a population stability index of about 0.1.
const MODERATE_AGES: &[(AgeGroup, u32)] = &[
    (AgeGroup::Age0To17, 100),
    (AgeGroup::Age18To49, 420),
    (AgeGroup::Age50To64, 200),
    (AgeGroup::Age65Plus, 260),
    (AgeGroup::Missing, 10),
    (AgeGroup::NA, 10),
];

/// Age mix under [`Drift::AgeShiftOlder`] (per thousand).
const OLDER_AGES: &[(AgeGroup, u32)] = &[
    (AgeGroup::Age0To17, 80),
    (AgeGroup::Age18To49, 390),
    (AgeGroup::Age50To64, 210),
    (AgeGroup::Age65Plus, 300),
    (AgeGroup::Missing, 10),
    (AgeGroup::NA, 10),
];

const SEXES: &[(Sex, u32)] = &[
    (Sex::Female, 5100),
    (Sex::Male, 4700),
    (Sex::Unknown, 90),
    (Sex::Missing, 80),
    (Sex::NA, 20),
    (Sex::Other, 10),
];

/// The published data leaves race blank for about a third of cases.
const RACES: &[(Race, u32)] = &[
    (Race::White, 360),
    (Race::Black, 80),
    (Race::Asian, 30),
    (Race::MultipleOther, 50),
    (Race::AmericanIndianAlaskaNative, 10),
    (Race::NativeHawaiianPacificIslander, 3),
    (Race::Unknown, 97),
    (Race::Missing, 350),
    (Race::NA, 20),
];

const ETHNICITIES: &[(Ethnicity, u32)] = &[
    (Ethnicity::NonHispanicLatino, 400),
    (Ethnicity::HispanicLatino, 140),
    (Ethnicity::Unknown, 90),
    (Ethnicity::Missing, 350),
    (Ethnicity::NA, 20),
];

const PROCESSES: &[(Process, u32)] = &[
    (Process::Missing, 870),
    (Process::Unknown, 30),
    (Process::LaboratoryReported, 25),
    (Process::ClinicalEvaluation, 20),
    (Process::ProviderReported, 15),
    (Process::ContactTracing, 10),
    (Process::RoutineSurveillance, 10),
    (Process::Multiple, 10),
    (Process::Other, 5),
    (Process::OtherDetectionMethod, 2),
    (Process::RoutinePhysicalExamination, 1),
    (Process::NA, 2),
];

const EXPOSURES: &[(YesNo, u32)] = &[
    (YesNo::Missing, 800),
    (YesNo::Yes, 130),
    (YesNo::Unknown, 40),
    (YesNo::NA, 20),
    (YesNo::No, 10),
];

const STATUSES: &[(CurrentStatus, u32)] = &[
    (CurrentStatus::LaboratoryConfirmed, 850),
    (CurrentStatus::Probable, 150),
];

const SYMPTOMS: &[(SymptomStatus, u32)] = &[
    (SymptomStatus::Symptomatic, 420),
    (SymptomStatus::Missing, 430),
    (SymptomStatus::Unknown, 80),
    (SymptomStatus::Asymptomatic, 50),
    (SymptomStatus::NA, 20),
];

/// Underlying conditions per age slot (see [`age_slot`]), per thousand, in
/// [`YES_NO`] order: mostly unreported, `Yes` commoner with age.
const UNDERLYING: [[u32; 5]; 6] = [
    [20, 100, 20, 300, 560],
    [60, 100, 20, 280, 540],
    [120, 70, 20, 270, 520],
    [180, 40, 20, 260, 500],
    [30, 30, 40, 400, 500],
    [30, 30, 40, 400, 500],
];

/// The order of the per-answer tables.
const YES_NO: [YesNo; 5] = [
    YesNo::Yes,
    YesNo::No,
    YesNo::Unknown,
    YesNo::Missing,
    YesNo::NA,
];

/// How much underlying conditions scale the hospitalisation risk, in
/// [`YES_NO`] order; unreported answers carry the average risk.
const UNDERLYING_RISK: [f64; 5] = [3.0, 0.6, 1.0, 1.0, 1.0];

/// Share of `hosp_yn = Yes` among all rows of each age slot, in ppm. The
/// per-row probabilities are scaled so that these marginals hold whatever
/// the mix of underlying conditions.
const HOSP_YES_PPM: [u32; 6] = [10_000, 30_000, 80_000, 200_000, 40_000, 40_000];

/// How `hosp_yn` goes unreported (per thousand); `None` is the reported
/// share, where the answer is drawn from the risk model.
const HOSP_REPORTING: &[(Option<YesNo>, u32)] = &[
    (Some(YesNo::Missing), 200),
    (Some(YesNo::Unknown), 80),
    (Some(YesNo::NA), 20),
    (None, 700),
];

/// Probabilities are capped so that even doubled risks leave some `No`.
const MAX_RISK_PPM: f64 = 950_000.0;

/// `icu_yn` given `hosp_yn` (see [`outcome_slot`]), per thousand.
const ICU: [&[(YesNo, u32)]; 3] = [
    &[
        (YesNo::Yes, 220),
        (YesNo::No, 420),
        (YesNo::Unknown, 60),
        (YesNo::Missing, 280),
        (YesNo::NA, 20),
    ],
    &[
        (YesNo::No, 300),
        (YesNo::Unknown, 50),
        (YesNo::Missing, 620),
        (YesNo::NA, 30),
    ],
    &[
        (YesNo::No, 30),
        (YesNo::Unknown, 70),
        (YesNo::Missing, 850),
        (YesNo::NA, 50),
    ],
];

/// Death risk of hospitalised cases per age slot, in ppm.
const DEATH_HOSPITALISED_PPM: [u32; 6] = [10_000, 30_000, 100_000, 250_000, 80_000, 80_000];
/// Death risk of other cases per age slot, in ppm.
const DEATH_OTHER_PPM: [u32; 6] = [100, 500, 3_000, 20_000, 2_000, 2_000];
/// Share of deaths actually reported as `Yes`.
const DEATH_REPORTED_PPM: u32 = 950_000;

/// `death_yn` of survivors given `hosp_yn` (see [`outcome_slot`]).
const SURVIVOR_DEATH_ANSWER: [&[(YesNo, u32)]; 3] = [
    &[
        (YesNo::No, 750),
        (YesNo::Unknown, 50),
        (YesNo::Missing, 200),
    ],
    &[
        (YesNo::No, 500),
        (YesNo::Unknown, 50),
        (YesNo::Missing, 430),
        (YesNo::NA, 20),
    ],
    &[
        (YesNo::No, 100),
        (YesNo::Unknown, 80),
        (YesNo::Missing, 770),
        (YesNo::NA, 50),
    ],
];

/// Baseline case weight per calendar month (January first): winters are
/// worse.
const SEASON: [u32; 12] = [5, 4, 3, 2, 1, 1, 2, 3, 3, 2, 3, 5];

/// Epidemic waves as `(year, month, height, half width in months)`, after
/// the US COVID-19 waves; months outside them follow [`SEASON`].
const WAVES: &[(u16, u8, u32, u32)] = &[
    (2020, 4, 4, 1),
    (2020, 7, 5, 1),
    (2021, 1, 12, 2),
    (2021, 9, 7, 1),
    (2022, 1, 20, 1),
    (2022, 7, 5, 1),
    (2022, 12, 4, 1),
    (2023, 8, 3, 1),
];

/// Alphabet of the simulated Socrata row ids (32 symbols, 5 bits each).
const ROW_ID_ALPHABET: &[u8; 32] = b"23456789abcdefghijkmnpqrstuvwxyz";
const ROW_ID_BITS: u32 = 60;
const ROW_ID_MASK: u64 = (1 << ROW_ID_BITS) - 1;

/// A change in the data from some row index on, to exercise drift
/// detection downstream. Rows before `from_index` are exactly the rows
/// without drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Drift {
    /// From row `from_index` on, cases are older: 65+ rises from about 14%
    /// to about 30% of rows, mostly at the expense of 18 to 49. Outcomes
    /// follow, since they depend on age.
    AgeShiftOlder {
        /// First row index affected.
        from_index: u64,
    },
    /// From row `from_index` on, 65+ rises from about 14% to about 26% of
    /// rows, at the expense of 0 to 49: a moderate drift, whose
    /// `age_group` population stability index is about 0.1.
    AgeShiftModerate {
        /// First row index affected.
        from_index: u64,
    },
    /// From row `from_index` on, the probability of hospitalisation doubles
    /// (capped at 95%) for residents of the listed states, whatever their
    /// age; deaths follow, since they depend on hospitalisation.
    HospitalisationDoubles {
        /// First row index affected.
        from_index: u64,
        /// USPS codes of the affected states, e.g. `"TX"`.
        states: Vec<String>,
    },
    /// From row `from_index` on, an outbreak: the moderate age shift of
    /// [`Drift::AgeShiftModerate`] (which the drift component sees in
    /// `age_group`) and hospitalisation doubling in the listed states as in
    /// [`Drift::HospitalisationDoubles`] (a change of the outcome, which
    /// only a model retrained on the new cases learns).
    Outbreak {
        /// First row index affected.
        from_index: u64,
        /// USPS codes of the states where hospitalisation doubles.
        states: Vec<String>,
    },
}

impl Drift {
    /// First row index affected.
    pub fn from_index(&self) -> u64 {
        match self {
            Self::AgeShiftOlder { from_index }
            | Self::AgeShiftModerate { from_index }
            | Self::HospitalisationDoubles { from_index, .. }
            | Self::Outbreak { from_index, .. } => *from_index,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseGenConfig {
    /// Seed of the whole data set; the same seed always gives the same rows.
    pub seed: u64,
    /// First case month as `(year, month)`, e.g. `(2020, 3)`.
    pub start_month: (u16, u8),
    /// Number of case months rows are spread over, at least 1.
    pub months: u32,
    /// Optional change in the data from some row on.
    pub drift: Option<Drift>,
}

impl Default for CaseGenConfig {
    /// Three years from March 2020, seed 0, no drift.
    fn default() -> Self {
        Self {
            seed: 0,
            start_month: (2020, 3),
            months: 36,
            drift: None,
        }
    }
}

/// One state with its checked codes ready to clone into rows.
struct StateSlot {
    code: StateCode,
    fips: StateFips,
    counties: Vec<(SmolStr, CountyFips)>,
    county_pick: Weighted<usize>,
}

/// Generator of CDC case rows.
///
/// [`row`](Self::row) is a pure function of the seed and the index: the same
/// pair gives the same row, byte for byte, on every machine and in every
/// build of this algorithm. Changing the algorithm or its tables (in this
/// module or in the geography) changes the data, and the golden test of
/// this crate exists to make that a deliberate decision.
pub struct CaseGenerator {
    config: CaseGenConfig,
    key: [u8; 32],
    row_id_key: u64,
    states: Vec<StateSlot>,
    state_pick: Weighted<usize>,
    months: Vec<CaseMonth>,
    month_pick: Weighted<usize>,
    ages: Weighted<AgeGroup>,
    sexes: Weighted<Sex>,
    races: Weighted<Race>,
    ethnicities: Weighted<Ethnicity>,
    processes: Weighted<Process>,
    exposures: Weighted<YesNo>,
    statuses: Weighted<CurrentStatus>,
    symptoms: Weighted<SymptomStatus>,
    underlying: Vec<Weighted<YesNo>>,
    hosp_reporting: Weighted<Option<YesNo>>,
    /// Hospitalisation risk in ppm by age slot and underlying answer.
    hosp_ppm: [[u32; 5]; 6],
    /// The same under [`Drift::HospitalisationDoubles`].
    hosp_doubled_ppm: [[u32; 5]; 6],
    icu: Vec<Weighted<YesNo>>,
    survivor_death: Vec<Weighted<YesNo>>,
    /// First index and age mix of an age drift.
    age_shift: Option<(u64, Weighted<AgeGroup>)>,
    /// First index and, per state slot, whether hospitalisation doubles.
    hosp_double: Option<(u64, Vec<bool>)>,
}

impl fmt::Debug for CaseGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaseGenerator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CaseGenerator {
    /// Builds the generator, computing every weight table once.
    ///
    /// # Errors
    ///
    /// If the start month is not a month, `months` is 0, the months run past
    /// 9999-12, or a drift scenario names an unknown state.
    pub fn new(config: CaseGenConfig) -> Result<Self, ConfigError> {
        let months = case_months(config.start_month, config.months)?;
        let month_pick = Weighted::new(
            months
                .iter()
                .enumerate()
                .map(|(i, m)| (i, month_weight(*m))),
        );

        let states: Vec<StateSlot> = US_STATES
            .iter()
            .map(|s| StateSlot {
                code: checked(s.code),
                fips: checked(s.fips),
                counties: s
                    .counties
                    .iter()
                    .map(|c| (SmolStr::new(c.name), checked(c.fips)))
                    .collect(),
                county_pick: Weighted::new(
                    s.counties
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (i, u64::from(c.population_k))),
                ),
            })
            .collect();
        let state_pick = Weighted::new(
            US_STATES
                .iter()
                .enumerate()
                .map(|(i, s)| (i, u64::from(s.population_k))),
        );

        // Per state slot, whether it is one of `states`.
        let affected = |states: &[String]| -> Result<Vec<bool>, ConfigError> {
            let mut affected = vec![false; US_STATES.len()];
            for code in states {
                let slot = US_STATES
                    .iter()
                    .position(|s| s.code == code)
                    .ok_or_else(|| ConfigError::UnknownState(code.clone()))?;
                affected[slot] = true;
            }
            Ok(affected)
        };
        let mut age_shift = None;
        let mut hosp_double = None;
        match &config.drift {
            None => {}
            Some(Drift::AgeShiftOlder { from_index }) => {
                age_shift = Some((*from_index, Weighted::of(OLDER_AGES)));
            }
            Some(Drift::AgeShiftModerate { from_index }) => {
                age_shift = Some((*from_index, Weighted::of(MODERATE_AGES)));
            }
            Some(Drift::HospitalisationDoubles { from_index, states }) => {
                hosp_double = Some((*from_index, affected(states)?));
            }
            Some(Drift::Outbreak { from_index, states }) => {
                age_shift = Some((*from_index, Weighted::of(MODERATE_AGES)));
                hosp_double = Some((*from_index, affected(states)?));
            }
        }

        Ok(Self {
            key: derive_key(config.seed, ROW_DOMAIN),
            row_id_key: splitmix64(config.seed ^ ROW_ID_DOMAIN),
            states,
            state_pick,
            months,
            month_pick,
            ages: Weighted::of(AGES),
            sexes: Weighted::of(SEXES),
            races: Weighted::of(RACES),
            ethnicities: Weighted::of(ETHNICITIES),
            processes: Weighted::of(PROCESSES),
            exposures: Weighted::of(EXPOSURES),
            statuses: Weighted::of(STATUSES),
            symptoms: Weighted::of(SYMPTOMS),
            underlying: UNDERLYING
                .iter()
                .map(|weights| Weighted::new(YES_NO.into_iter().zip(weights.map(u64::from))))
                .collect(),
            hosp_reporting: Weighted::of(HOSP_REPORTING),
            hosp_ppm: hospitalisation_risk(1.0),
            hosp_doubled_ppm: hospitalisation_risk(2.0),
            icu: ICU.iter().map(|t| Weighted::of(t)).collect(),
            survivor_death: SURVIVOR_DEATH_ANSWER
                .iter()
                .map(|t| Weighted::of(t))
                .collect(),
            age_shift,
            hosp_double,
            config,
        })
    }

    /// The configuration the generator was built from.
    pub fn config(&self) -> &CaseGenConfig {
        &self.config
    }

    /// The case months rows are spread over, in order.
    pub fn case_months(&self) -> &[CaseMonth] {
        &self.months
    }

    /// The row at `index`, a pure function of the seed and `index`.
    ///
    /// Row ids are unique for indices below 2^60.
    pub fn row(&self, index: u64) -> Case {
        let mut d = Draw::new(&self.key, index);
        // The order of the draws below is part of the data: reordering them
        // changes every row.
        let state_slot = self.state_pick.pick(&mut d);
        let state = &self.states[state_slot];
        let county = if d.chance(COUNTY_SUPPRESSED_PPM) {
            None
        } else {
            Some(&state.counties[state.county_pick.pick(&mut d)])
        };
        let case_month = self.months[self.month_pick.pick(&mut d)];
        let ages = match &self.age_shift {
            Some((from, shifted)) if index >= *from => shifted,
            _ => &self.ages,
        };
        let age_group = ages.pick(&mut d);
        let age = age_slot(age_group);
        let sex = self.sexes.pick(&mut d);
        let race = self.races.pick(&mut d);
        let ethnicity = self.ethnicities.pick(&mut d);
        let case_positive_specimen_interval = interval(&mut d, 350_000);
        let case_onset_interval = interval(&mut d, 250_000);
        let process = self.processes.pick(&mut d);
        let exposure_yn = self.exposures.pick(&mut d);
        let current_status = self.statuses.pick(&mut d);
        let symptom_status = self.symptoms.pick(&mut d);
        let underlying = self.underlying[age].pick(&mut d);

        let doubled = matches!(&self.hosp_double, Some((from, states)) if index >= *from && states[state_slot]);
        let hosp_yn = match self.hosp_reporting.pick(&mut d) {
            Some(unreported) => unreported,
            None => {
                let risk = if doubled {
                    &self.hosp_doubled_ppm
                } else {
                    &self.hosp_ppm
                };
                if d.chance(risk[age][answer_slot(underlying)]) {
                    YesNo::Yes
                } else {
                    YesNo::No
                }
            }
        };
        let outcome = outcome_slot(hosp_yn);
        let icu_yn = self.icu[outcome].pick(&mut d);
        let mut death_ppm = if hosp_yn == YesNo::Yes {
            DEATH_HOSPITALISED_PPM[age]
        } else {
            DEATH_OTHER_PPM[age]
        };
        if icu_yn == YesNo::Yes {
            death_ppm = (death_ppm * 2).min(MAX_RISK_PPM as u32);
        }
        let death_yn = if d.chance(death_ppm) {
            if d.chance(DEATH_REPORTED_PPM) {
                YesNo::Yes
            } else {
                YesNo::Missing
            }
        } else {
            self.survivor_death[outcome].pick(&mut d)
        };

        Case {
            row_id: checked::<RowId>(row_id_text(self.row_id_key, index)),
            case_month,
            res_state: state.code.clone(),
            state_fips_code: Some(state.fips.clone()),
            res_county: county.map(|(name, _)| name.clone()),
            county_fips_code: county.map(|(_, fips)| fips.clone()),
            age_group,
            sex,
            race,
            ethnicity,
            case_positive_specimen_interval,
            case_onset_interval,
            process,
            exposure_yn,
            current_status,
            symptom_status,
            hosp_yn,
            icu_yn,
            death_yn,
            underlying_conditions_yn: underlying,
        }
    }

    /// The rows of `range`, in index order.
    pub fn rows(&self, range: Range<u64>) -> impl Iterator<Item = Case> {
        range.map(|index| self.row(index))
    }

    /// The `row_id` of row `index`, without generating the rest of the row.
    pub(crate) fn row_id(&self, index: u64) -> String {
        row_id_text(self.row_id_key, index)
    }

    /// A number in the order of the row ids: `row_id(a) < row_id(b)` if
    /// and only if `row_id_order(a) < row_id_order(b)` (ids are written 5
    /// bits a symbol, most significant first, in an ascending alphabet).
    pub(crate) fn row_id_order(&self, index: u64) -> u64 {
        row_id_bits(self.row_id_key, index)
    }
}

fn case_months(start: (u16, u8), count: u32) -> Result<Vec<CaseMonth>, ConfigError> {
    let (year, month) = start;
    let invalid = ConfigError::StartMonth { year, month };
    CaseMonth::new(year, month).map_err(|_| invalid)?;
    if count == 0 {
        return Err(ConfigError::NoMonths);
    }
    let first = u64::from(year) * 12 + u64::from(month - 1);
    let last = first + u64::from(count - 1);
    if last / 12 > 9999 {
        return Err(ConfigError::MonthsOutOfRange);
    }
    (first..=last)
        .map(|abs| {
            // Both fit: the year is at most 9999, the month at most 12.
            CaseMonth::new((abs / 12) as u16, (abs % 12) as u8 + 1)
                .map_err(|_| ConfigError::MonthsOutOfRange)
        })
        .collect()
}

/// Relative number of cases in `month`: the season plus any wave near it.
fn month_weight(month: CaseMonth) -> u64 {
    let at = i64::from(month.year()) * 12 + i64::from(month.month()) - 1;
    let mut weight = SEASON[usize::from(month.month() - 1)];
    for &(year, peak_month, height, half_width) in WAVES {
        let peak = i64::from(year) * 12 + i64::from(peak_month) - 1;
        let distance = at.abs_diff(peak);
        if distance <= u64::from(half_width) {
            // A triangle: full height at the peak, falling off linearly.
            weight += height * (half_width + 1 - distance as u32) / (half_width + 1);
        }
    }
    u64::from(weight)
}

/// Position of an age group in the per-age tables.
const fn age_slot(age: AgeGroup) -> usize {
    match age {
        AgeGroup::Age0To17 => 0,
        AgeGroup::Age18To49 => 1,
        AgeGroup::Age50To64 => 2,
        AgeGroup::Age65Plus => 3,
        AgeGroup::Missing => 4,
        AgeGroup::NA => 5,
    }
}

/// Position of an answer in [`YES_NO`].
const fn answer_slot(answer: YesNo) -> usize {
    match answer {
        YesNo::Yes => 0,
        YesNo::No => 1,
        YesNo::Unknown => 2,
        YesNo::Missing => 3,
        YesNo::NA => 4,
    }
}

/// Position of a `hosp_yn` answer in the outcome tables: hospitalised, not,
/// unreported.
const fn outcome_slot(hosp: YesNo) -> usize {
    match hosp {
        YesNo::Yes => 0,
        YesNo::No => 1,
        YesNo::Unknown | YesNo::Missing | YesNo::NA => 2,
    }
}

/// Hospitalisation risk (ppm) of a reported case by age slot and underlying
/// answer, scaled by `factor`.
///
/// Dividing by the age group's mean risk multiplier keeps each age group's
/// overall `Yes` share at [`HOSP_YES_PPM`]; dividing by the reported share
/// accounts for the rows whose answer is never drawn.
fn hospitalisation_risk(factor: f64) -> [[u32; 5]; 6] {
    let reported: u32 = HOSP_REPORTING
        .iter()
        .filter(|(answer, _)| answer.is_none())
        .map(|(_, w)| w)
        .sum();
    let total: u32 = HOSP_REPORTING.iter().map(|(_, w)| w).sum();
    let reported_share = f64::from(reported) / f64::from(total);
    let mut table = [[0u32; 5]; 6];
    for (age, row) in table.iter_mut().enumerate() {
        let weights = UNDERLYING[age];
        let weight_total: u32 = weights.iter().sum();
        let mean_risk = weights
            .iter()
            .zip(UNDERLYING_RISK)
            .map(|(&w, risk)| f64::from(w) * risk)
            .sum::<f64>()
            / f64::from(weight_total);
        for (cell, risk) in row.iter_mut().zip(UNDERLYING_RISK) {
            let ppm = f64::from(HOSP_YES_PPM[age]) / reported_share * risk / mean_risk * factor;
            *cell = ppm.min(MAX_RISK_PPM).round() as u32;
        }
    }
    table
}

/// A week interval: absent for most rows, else mostly 0, sometimes a few
/// weeks either way.
fn interval(d: &mut Draw, present_ppm: u32) -> Option<i32> {
    if !d.chance(present_ppm) {
        return None;
    }
    let weeks = match d.below(100) {
        0..65 => 0,
        65..85 => d.between(1, 3),
        85..95 => d.between(-5, -1),
        _ => d.between(4, 30),
    };
    // Always within -5..=30.
    Some(weeks as i32)
}

/// A Socrata-style row id, `row-xxxx.xxxx_xxxx`, unique for each index below
/// 2^60: the index goes through a keyed bijection of 60-bit values, then is
/// written 5 bits per symbol.
fn row_id_text(key: u64, index: u64) -> String {
    let x = row_id_bits(key, index);
    let mut id = String::with_capacity(18);
    id.push_str("row-");
    for symbol in 0..12 {
        match symbol {
            4 => id.push('.'),
            8 => id.push('_'),
            _ => {}
        }
        let shift = ROW_ID_BITS - 5 * (symbol + 1);
        id.push(char::from(ROW_ID_ALPHABET[((x >> shift) & 31) as usize]));
    }
    id
}

/// The 60 bits a row id writes: `index` through the keyed bijection.
fn row_id_bits(key: u64, index: u64) -> u64 {
    let mut x = (index ^ key) & ROW_ID_MASK;
    // Each step is a bijection on 60-bit values: xor with a right shift of
    // itself, and multiplication by an odd constant modulo 2^60.
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9) & ROW_ID_MASK;
    x ^= x >> 32;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb) & ROW_ID_MASK;
    x ^= x >> 29;
    x
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn row_ids_are_unique_and_shaped() {
        let key = splitmix64(9);
        let mut seen = HashSet::new();
        for index in 0..100_000 {
            let id = row_id_text(key, index);
            assert_eq!(id.len(), 18);
            assert!(id.starts_with("row-"));
            assert_eq!(&id[8..9], ".");
            assert_eq!(&id[13..14], "_");
            assert!(seen.insert(id));
        }
        // The high end of the index range too.
        let top = ROW_ID_MASK;
        assert_ne!(row_id_text(key, top), row_id_text(key, top - 1));
    }

    #[test]
    fn row_id_order_is_the_order_of_the_id_text() {
        assert!(ROW_ID_ALPHABET.is_sorted());
        let key = splitmix64(3);
        let mut rows: Vec<(u64, String)> = (0..5_000)
            .map(|index| (row_id_bits(key, index), row_id_text(key, index)))
            .collect();
        rows.sort_unstable();
        assert!(rows.windows(2).all(|w| w[0].1 < w[1].1));
    }

    #[test]
    fn risk_table_keeps_age_marginals() {
        let table = hospitalisation_risk(1.0);
        for (age, row) in table.iter().enumerate() {
            let weights = UNDERLYING[age];
            let total: u32 = weights.iter().sum();
            let mean: f64 = row
                .iter()
                .zip(weights)
                .map(|(&p, w)| f64::from(p) * f64::from(w))
                .sum::<f64>()
                / f64::from(total);
            let marginal = mean * 0.7;
            let target = f64::from(HOSP_YES_PPM[age]);
            assert!((marginal - target).abs() / target < 0.01, "age slot {age}");
        }
    }

    #[test]
    fn months_are_validated() {
        assert_eq!(
            case_months((2020, 13), 3),
            Err(ConfigError::StartMonth {
                year: 2020,
                month: 13
            })
        );
        assert_eq!(case_months((2020, 3), 0), Err(ConfigError::NoMonths));
        assert_eq!(
            case_months((9999, 11), 3),
            Err(ConfigError::MonthsOutOfRange)
        );
        let months = case_months((2020, 11), 3).unwrap();
        let text: Vec<String> = months.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["2020-11", "2020-12", "2021-01"]);
    }

    #[test]
    fn waves_make_some_months_busier() {
        let jan_2022 = month_weight(CaseMonth::new(2022, 1).unwrap());
        let may_2021 = month_weight(CaseMonth::new(2021, 5).unwrap());
        assert!(jan_2022 > 4 * may_2021, "{jan_2022} vs {may_2021}");
    }
}
