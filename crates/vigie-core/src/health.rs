//! Typed payloads of the public-health data sets, mirroring the
//! `health.*` JSON Schemas.
//!
//! Each type accepts exactly what its schema accepts: vocabularies are enums
//! carrying the data set's own strings, and every pattern the schema imposes
//! is checked while deserialising, so a value of these types always
//! serialises to a document its schema accepts (as long as code building one
//! by hand keeps numbers inside the schema's bounds).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
pub use smol_str::SmolStr;
use uuid::Uuid;

use crate::envelope::Payload;
use crate::wire;

/// A string that does not fit the pattern its field requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: expected {expected}")]
pub struct InvalidValue {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl InvalidValue {
    fn new(what: &'static str, value: &str, expected: &'static str) -> Self {
        // The offending value ends up in logs and dead-letter headers; a
        // bounded excerpt is enough to recognise it.
        let value = value.chars().take(80).collect();
        Self {
            what,
            value,
            expected,
        }
    }

    /// Name of the kind of value that was expected, e.g. `country code`.
    pub fn what(&self) -> &'static str {
        self.what
    }
}

/// Defines a closed vocabulary as an enum whose serde names are the data
/// set's own strings.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string this value is written as.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;

            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(InvalidValue::new(stringify!($name), s, "a value of the vocabulary")),
                }
            }
        }
    };
}

/// Defines a string newtype that only holds values passing `$check`. Up to
/// 23 bytes (codes, row ids) it is kept inline, not on the heap: a case
/// carries several.
macro_rules! checked_text {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal, $expected:literal, $check:expr
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(SmolStr);

        impl $name {
            /// The value as written on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;

            fn try_from(s: String) -> Result<Self, InvalidValue> {
                s.parse()
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;

            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                let check: fn(&str) -> bool = $check;
                if check(s) {
                    Ok(Self(SmolStr::new(s)))
                } else {
                    Err(InvalidValue::new($what, s, $expected))
                }
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0.into()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn all_digits(s: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn two_upper_letters(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// Whether `s` is a URI by the same rules the schema registry applies to the
/// `uri` format, so that the type and the registry cannot disagree.
fn is_uri(s: &str) -> bool {
    static URI: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    let validator = URI.get_or_init(|| {
        jsonschema::options()
            .should_validate_formats(true)
            .build(&serde_json::json!({ "type": "string", "format": "uri" }))
            .ok()
    });
    validator
        .as_ref()
        .is_some_and(|v| v.is_valid(&serde_json::Value::String(s.to_owned())))
}

checked_text! {
    /// Socrata row identifier (`:id`) of a CDC case row; never empty.
    RowId, "row id", "a non-empty string", |s| !s.is_empty()
}

checked_text! {
    /// Two-letter USPS state abbreviation, e.g. `CA`.
    StateCode, "state code", "two upper-case letters", two_upper_letters
}

checked_text! {
    /// State FIPS code as published: one or two digits.
    StateFips, "state FIPS code", "one or two digits", |s| all_digits(s, 1..=2)
}

checked_text! {
    /// County FIPS code as published: four or five digits.
    CountyFips, "county FIPS code", "four or five digits", |s| all_digits(s, 4..=5)
}

checked_text! {
    /// ISO 3166-1 alpha-2 country code as used by WHO (user-assigned codes
    /// such as `XK` included).
    CountryCode, "country code", "two upper-case letters", two_upper_letters
}

checked_text! {
    /// SHA-256 digest in lower-case hex.
    ContentHash, "content hash", "64 lower-case hex digits", |s| {
        s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl ContentHash {
    /// SHA-256 (lower-case hex) of an article's normalised text: title and
    /// summary with every run of whitespace made a single space and the ends
    /// trimmed, joined by a line feed. Whitespace-only changes therefore do
    /// not count as revisions; any other change does. The simulator and the
    /// scraper both hash with this, so their hashes agree.
    pub fn of_article(title: &str, summary: &str) -> Self {
        use sha2::{Digest, Sha256};
        fn normalised(hasher: &mut Sha256, text: &str) {
            for (i, word) in text.split_whitespace().enumerate() {
                if i > 0 {
                    hasher.update(b" ");
                }
                hasher.update(word.as_bytes());
            }
        }
        let mut hasher = Sha256::new();
        normalised(&mut hasher, title);
        hasher.update(b"\n");
        normalised(&mut hasher, summary);
        let mut hex = String::with_capacity(64);
        for byte in hasher.finalize() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
        }
        Self(hex.into())
    }
}

checked_text! {
    /// Absolute `http` or `https` URI.
    HttpUrl, "URL", "an absolute http(s) URI", |s| {
        (s.starts_with("http://") || s.starts_with("https://")) && is_uri(s)
    }
}

/// A calendar month written `YYYY-MM`, as the CDC data set reports cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct CaseMonth {
    // Field order gives chronological `Ord`.
    year: u16,
    month: u8,
}

impl CaseMonth {
    /// The month `month` (1 to 12) of `year` (0 to 9999).
    ///
    /// # Errors
    ///
    /// If either is out of range.
    pub fn new(year: u16, month: u8) -> Result<Self, InvalidValue> {
        if year <= 9999 && (1..=12).contains(&month) {
            Ok(Self { year, month })
        } else {
            Err(InvalidValue::new(
                "case month",
                &format!("{year}-{month}"),
                "a year from 0 to 9999 and a month from 1 to 12",
            ))
        }
    }

    /// `YYYY-MM`, on the stack: every case event carries one.
    fn text(self) -> [u8; 7] {
        let mut text = *b"0000-00";
        wire::write_digits(&mut text[..4], self.year.into());
        wire::write_digits(&mut text[5..], self.month.into());
        text
    }

    /// The year.
    pub fn year(self) -> u16 {
        self.year
    }

    /// The month, from 1 to 12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// The first day of the month.
    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year.into(), self.month.into(), 1).unwrap_or(NaiveDate::MIN)
    }
}

impl TryFrom<String> for CaseMonth {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, InvalidValue> {
        s.parse()
    }
}

impl FromStr for CaseMonth {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let invalid = || InvalidValue::new("case month", s, "YYYY-MM with a month from 01 to 12");
        let b = s.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !all_digits(&s[..4], 4..=4)
            || !all_digits(&s[5..], 2..=2)
        {
            return Err(invalid());
        }
        let year = s[..4].parse().map_err(|_| invalid())?;
        let month = s[5..].parse().map_err(|_| invalid())?;
        Self::new(year, month).map_err(|_| invalid())
    }
}

impl fmt::Display for CaseMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.text()).unwrap_or_default())
    }
}

impl From<CaseMonth> for String {
    fn from(value: CaseMonth) -> String {
        value.to_string()
    }
}

impl Serialize for CaseMonth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(&self.text()).unwrap_or_default())
    }
}

vocabulary! {
    /// A yes/no answer with the data set's codes for missing answers.
    YesNo {
        /// Yes.
        Yes = "Yes",
        /// No.
        No = "No",
        /// Reported as unknown.
        Unknown = "Unknown",
        /// Left blank by the reporting jurisdiction.
        Missing = "Missing",
        /// Not available from the reporting jurisdiction.
        NA = "NA",
    }
}

vocabulary! {
    /// Age group of a case.
    AgeGroup {
        /// 0 to 17 years.
        Age0To17 = "0 - 17 years",
        /// 18 to 49 years.
        Age18To49 = "18 to 49 years",
        /// 50 to 64 years.
        Age50To64 = "50 to 64 years",
        /// 65 years and over.
        Age65Plus = "65+ years",
        /// Left blank.
        Missing = "Missing",
        /// Not available.
        NA = "NA",
    }
}

vocabulary! {
    /// Sex of a case.
    Sex {
        /// Female.
        Female = "Female",
        /// Male.
        Male = "Male",
        /// Other.
        Other = "Other",
        /// Reported as unknown.
        Unknown = "Unknown",
        /// Left blank.
        Missing = "Missing",
        /// Not available.
        NA = "NA",
    }
}

vocabulary! {
    /// Race of a case, in the data set's categories.
    Race {
        /// American Indian/Alaska Native.
        AmericanIndianAlaskaNative = "American Indian/Alaska Native",
        /// Asian.
        Asian = "Asian",
        /// Black.
        Black = "Black",
        /// Multiple/Other.
        MultipleOther = "Multiple/Other",
        /// Native Hawaiian/Other Pacific Islander.
        NativeHawaiianPacificIslander = "Native Hawaiian/Other Pacific Islander",
        /// White.
        White = "White",
        /// Reported as unknown.
        Unknown = "Unknown",
        /// Left blank.
        Missing = "Missing",
        /// Not available.
        NA = "NA",
    }
}

vocabulary! {
    /// Ethnicity of a case.
    Ethnicity {
        /// Hispanic/Latino.
        HispanicLatino = "Hispanic/Latino",
        /// Non-Hispanic/Latino.
        NonHispanicLatino = "Non-Hispanic/Latino",
        /// Reported as unknown.
        Unknown = "Unknown",
        /// Left blank.
        Missing = "Missing",
        /// Not available.
        NA = "NA",
    }
}

vocabulary! {
    /// How a case was first identified.
    Process {
        /// Clinical evaluation.
        ClinicalEvaluation = "Clinical evaluation",
        /// Contact tracing of case patient.
        ContactTracing = "Contact tracing of case patient",
        /// Laboratory reported.
        LaboratoryReported = "Laboratory reported",
        /// Multiple.
        Multiple = "Multiple",
        /// Other.
        Other = "Other",
        /// Other detection method (specify).
        OtherDetectionMethod = "Other detection method (specify)",
        /// Provider reported.
        ProviderReported = "Provider reported",
        /// Routine physical examination.
        RoutinePhysicalExamination = "Routine physical examination",
        /// Routine surveillance.
        RoutineSurveillance = "Routine surveillance",
        /// Reported as unknown.
        Unknown = "Unknown",
        /// Left blank.
        Missing = "Missing",
        /// Not available.
        NA = "NA",
    }
}

vocabulary! {
    /// Case classification.
    CurrentStatus {
        /// Laboratory-confirmed case.
        LaboratoryConfirmed = "Laboratory-confirmed case",
        /// Probable case.
        Probable = "Probable Case",
    }
}

vocabulary! {
    /// Whether a case had symptoms.
    SymptomStatus {
        /// Asymptomatic.
        Asymptomatic = "Asymptomatic",
        /// Symptomatic.
        Symptomatic = "Symptomatic",
        /// Reported as unknown.
        Unknown = "Unknown",
        /// Left blank.
        Missing = "Missing",
        /// Not available.
        NA = "NA",
    }
}

vocabulary! {
    /// WHO region.
    WhoRegion {
        /// African Region.
        Afro = "AFRO",
        /// Region of the Americas.
        Amro = "AMRO",
        /// Eastern Mediterranean Region.
        Emro = "EMRO",
        /// European Region.
        Euro = "EURO",
        /// South-East Asia Region.
        Searo = "SEARO",
        /// Western Pacific Region.
        Wpro = "WPRO",
        /// Not a region: international conveyances and the like.
        Other = "OTHER",
    }
}

fn start_of_day(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// One row of the CDC "COVID-19 Case Surveillance Public Use Data with
/// Geography" data set (`health.case` v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Socrata row identifier; the natural key.
    pub row_id: RowId,
    /// Month of the earliest date related to the case.
    pub case_month: CaseMonth,
    /// State of residence.
    pub res_state: StateCode,
    /// State FIPS code, absent when not published.
    #[serde(
        default,
        deserialize_with = "wire::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub state_fips_code: Option<StateFips>,
    /// County of residence, absent when suppressed.
    #[serde(
        default,
        deserialize_with = "wire::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub res_county: Option<SmolStr>,
    /// County FIPS code, absent when suppressed.
    #[serde(
        default,
        deserialize_with = "wire::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub county_fips_code: Option<CountyFips>,
    /// Age group.
    pub age_group: AgeGroup,
    /// Sex.
    pub sex: Sex,
    /// Race.
    pub race: Race,
    /// Ethnicity.
    pub ethnicity: Ethnicity,
    /// Weeks between the earliest date and the first positive specimen.
    #[serde(default, deserialize_with = "wire::nullable_i32")]
    pub case_positive_specimen_interval: Option<i32>,
    /// Weeks between the earliest date and symptom onset.
    #[serde(default, deserialize_with = "wire::nullable_i32")]
    pub case_onset_interval: Option<i32>,
    /// How the case was first identified.
    pub process: Process,
    /// Known exposure in the 14 days before onset.
    pub exposure_yn: YesNo,
    /// Case classification.
    pub current_status: CurrentStatus,
    /// Whether the patient had symptoms.
    pub symptom_status: SymptomStatus,
    /// Hospitalised.
    pub hosp_yn: YesNo,
    /// Admitted to intensive care.
    pub icu_yn: YesNo,
    /// Died of the illness.
    pub death_yn: YesNo,
    /// Had underlying conditions.
    pub underlying_conditions_yn: YesNo,
}

impl Payload for Case {
    const SCHEMA: &'static str = "health.case";
    const VERSION: u32 = 1;

    fn natural_key(&self) -> Vec<String> {
        vec![self.row_id.to_string()]
    }

    fn event_id(&self, source: &str) -> Uuid {
        crate::event_id(source, &[self.row_id.as_str()])
    }

    /// The data set only gives the month, so the event is dated to its first
    /// day.
    fn occurred_at(&self) -> DateTime<Utc> {
        start_of_day(self.case_month.first_day())
    }

    /// Per state, so that one state's cases stay in order.
    fn partition_key(&self) -> String {
        self.res_state.to_string()
    }

    /// The bytes serde_json writes, field by field (the US stream carries
    /// millions of cases); `a_case_is_written_as_serde_writes_it` checks
    /// that they are the same.
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        use wire::{write_key as key, write_str as text};
        fn interval(out: &mut Vec<u8>, weeks: Option<i32>) {
            match weeks {
                Some(w) => out.extend_from_slice(itoa::Buffer::new().format(w).as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.push(b'{');
        key(out, "row_id", true);
        text(out, self.row_id.as_str());
        key(out, "case_month", false);
        out.push(b'"');
        out.extend_from_slice(&self.case_month.text());
        out.push(b'"');
        key(out, "res_state", false);
        text(out, self.res_state.as_str());
        if let Some(fips) = &self.state_fips_code {
            key(out, "state_fips_code", false);
            text(out, fips.as_str());
        }
        if let Some(county) = &self.res_county {
            key(out, "res_county", false);
            text(out, county);
        }
        if let Some(fips) = &self.county_fips_code {
            key(out, "county_fips_code", false);
            text(out, fips.as_str());
        }
        for (name, value) in [
            ("age_group", self.age_group.as_str()),
            ("sex", self.sex.as_str()),
            ("race", self.race.as_str()),
            ("ethnicity", self.ethnicity.as_str()),
        ] {
            key(out, name, false);
            text(out, value);
        }
        key(out, "case_positive_specimen_interval", false);
        interval(out, self.case_positive_specimen_interval);
        key(out, "case_onset_interval", false);
        interval(out, self.case_onset_interval);
        for (name, value) in [
            ("process", self.process.as_str()),
            ("exposure_yn", self.exposure_yn.as_str()),
            ("current_status", self.current_status.as_str()),
            ("symptom_status", self.symptom_status.as_str()),
            ("hosp_yn", self.hosp_yn.as_str()),
            ("icu_yn", self.icu_yn.as_str()),
            ("death_yn", self.death_yn.as_str()),
            (
                "underlying_conditions_yn",
                self.underlying_conditions_yn.as_str(),
            ),
        ] {
            key(out, name, false);
            text(out, value);
        }
        out.push(b'}');
        Ok(())
    }
}

/// One row of the WHO COVID-19 global daily data (`health.country_day` v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountryDay {
    /// Day the figures were reported.
    #[serde(with = "wire::date")]
    pub date_reported: NaiveDate,
    /// Country code.
    pub country_code: CountryCode,
    /// Country, territory or area name.
    #[serde(deserialize_with = "wire::non_empty")]
    pub country: String,
    /// WHO region.
    pub who_region: WhoRegion,
    /// New cases; `None` where WHO left the cell blank, negative for a
    /// correction.
    #[serde(deserialize_with = "wire::nullable_count")]
    pub new_cases: Option<i64>,
    /// Cumulative cases.
    #[serde(deserialize_with = "wire::cumulative_count")]
    pub cumulative_cases: u64,
    /// New deaths; `None` where WHO left the cell blank, negative for a
    /// correction.
    #[serde(deserialize_with = "wire::nullable_count")]
    pub new_deaths: Option<i64>,
    /// Cumulative deaths.
    #[serde(deserialize_with = "wire::cumulative_count")]
    pub cumulative_deaths: u64,
}

impl Payload for CountryDay {
    const SCHEMA: &'static str = "health.country_day";
    const VERSION: u32 = 1;

    fn natural_key(&self) -> Vec<String> {
        vec![
            self.country_code.to_string(),
            wire::format_date(self.date_reported),
        ]
    }

    fn occurred_at(&self) -> DateTime<Utc> {
        start_of_day(self.date_reported)
    }

    /// Per country, so that a country's days (and corrections) stay in order.
    fn partition_key(&self) -> String {
        self.country_code.to_string()
    }
}

/// One WHO Disease Outbreak News article (`health.outbreak_news` v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutbreakNews {
    /// Canonical address of the article; the natural key.
    pub url: HttpUrl,
    /// Headline.
    #[serde(deserialize_with = "wire::non_empty")]
    pub title: String,
    /// Publication date.
    #[serde(with = "wire::date")]
    pub published_on: NaiveDate,
    /// Disease or pathogen.
    #[serde(deserialize_with = "wire::non_empty")]
    pub disease: String,
    /// Countries, territories or areas concerned.
    #[serde(deserialize_with = "wire::non_empty_strings")]
    pub countries: Vec<String>,
    /// Situation summary.
    pub summary: String,
    /// SHA-256 of the normalised article text, to detect revisions.
    pub content_hash: ContentHash,
}

impl Payload for OutbreakNews {
    const SCHEMA: &'static str = "health.outbreak_news";
    const VERSION: u32 = 1;

    fn natural_key(&self) -> Vec<String> {
        vec![self.url.to_string()]
    }

    fn occurred_at(&self) -> DateTime<Utc> {
        start_of_day(self.published_on)
    }

    /// Per article, so that revisions of one article stay in order.
    fn partition_key(&self) -> String {
        self.url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;

    /// Cases over every vocabulary value, absent and present options,
    /// and county names that need escapes.
    fn varied_cases() -> Vec<Case> {
        let counties = [
            None,
            Some("LOS ANGELES"),
            Some("O'BRIEN \"X\"\\\n\u{1}"),
            Some("DOÑA ANA"),
        ];
        let n = 64;
        (0..n)
            .map(|i| {
                let pick = |len: usize, salt: usize| (i * 7 + salt * 13 + i / len) % len;
                Case {
                    row_id: format!("row-{i}").parse().unwrap(),
                    case_month: CaseMonth::new(2019 + (i % 5) as u16, 1 + (i % 12) as u8).unwrap(),
                    res_state: "CA".parse().unwrap(),
                    state_fips_code: (i % 3 != 0).then(|| "6".parse().unwrap()),
                    res_county: counties[i % counties.len()].map(SmolStr::new),
                    county_fips_code: (i % 5 != 0).then(|| "06037".parse().unwrap()),
                    age_group: AgeGroup::ALL[pick(AgeGroup::ALL.len(), 1)],
                    sex: Sex::ALL[pick(Sex::ALL.len(), 2)],
                    race: Race::ALL[pick(Race::ALL.len(), 3)],
                    ethnicity: Ethnicity::ALL[pick(Ethnicity::ALL.len(), 4)],
                    case_positive_specimen_interval: (i % 4 != 0).then_some(i as i32 - 20),
                    case_onset_interval: (i % 3 == 0).then_some(-(i as i32)),
                    process: Process::ALL[pick(Process::ALL.len(), 5)],
                    exposure_yn: YesNo::ALL[pick(YesNo::ALL.len(), 6)],
                    current_status: CurrentStatus::ALL[pick(CurrentStatus::ALL.len(), 7)],
                    symptom_status: SymptomStatus::ALL[pick(SymptomStatus::ALL.len(), 8)],
                    hosp_yn: YesNo::ALL[pick(YesNo::ALL.len(), 9)],
                    icu_yn: YesNo::ALL[pick(YesNo::ALL.len(), 10)],
                    death_yn: YesNo::ALL[pick(YesNo::ALL.len(), 11)],
                    underlying_conditions_yn: YesNo::ALL[pick(YesNo::ALL.len(), 12)],
                }
            })
            .collect()
    }

    #[test]
    fn a_case_is_written_as_serde_writes_it() {
        use chrono::TimeZone;
        let cases = varied_cases();
        for v in [AgeGroup::ALL.len(), Race::ALL.len(), Process::ALL.len()] {
            assert!(cases.len() >= 4 * v, "every value comes up");
        }
        let at = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        for (i, case) in cases.into_iter().enumerate() {
            let mut fast = Vec::new();
            case.write_json(&mut fast).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(&case).unwrap()
            );
            // The producers' path (no envelope built, the id hashed from the
            // borrowed row id) gives the same bytes as the envelope's.
            assert_eq!(
                case.event_id("cdc-cases"),
                crate::event_id("cdc-cases", &case.natural_key())
            );
            let direct = crate::encode_event("cdc-cases", &case, at).unwrap();
            let mut env = Envelope::new("cdc-cases", case, at);
            assert_eq!(direct, env.encode().unwrap());
            if i % 2 == 1 {
                // The envelope's own strings escaped too.
                env.source = "a\"b\\c".into();
                env.schema = "health.\u{7}".into();
            }
            assert_eq!(
                String::from_utf8(env.encode().unwrap()).unwrap(),
                String::from_utf8(env.to_json_bytes().unwrap()).unwrap()
            );
        }
    }

    #[test]
    fn case_month_round_trips() {
        let month: CaseMonth = "2021-03".parse().unwrap();
        assert_eq!((month.year(), month.month()), (2021, 3));
        assert_eq!(month.to_string(), "2021-03");
        assert_eq!(
            month.first_day(),
            NaiveDate::from_ymd_opt(2021, 3, 1).unwrap()
        );
        for bad in [
            "2021-13",
            "2021-00",
            "2021-3",
            "21-03",
            "2021/03",
            "2021-03-01",
            "+202-03",
        ] {
            assert!(bad.parse::<CaseMonth>().is_err(), "{bad:?}");
        }
        for (year, month) in [(0, 1), (7, 9), (999, 10), (2021, 3), (9999, 12)] {
            let m = CaseMonth::new(year, month).unwrap();
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{m}\""));
            assert_eq!(serde_json::from_str::<CaseMonth>(&json).unwrap(), m);
        }
    }

    #[test]
    fn vocabularies_parse_their_own_strings() {
        for v in Race::ALL {
            assert_eq!(v.as_str().parse::<Race>().unwrap(), *v);
        }
        assert!("white".parse::<Race>().is_err());
    }

    #[test]
    fn urls_need_an_http_scheme_and_uri_syntax() {
        assert!(
            "https://www.who.int/emergencies/disease-outbreak-news/item/2024-DON500"
                .parse::<HttpUrl>()
                .is_ok()
        );
        for bad in [
            "ftp://who.int/x",
            "HTTPS://who.int/",
            "https://who int/",
            "who.int",
        ] {
            assert!(bad.parse::<HttpUrl>().is_err(), "{bad:?}");
        }
    }
}

/// The score a model gave one case (`health.case_score` v1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseScore {
    /// Envelope id of the scored case.
    #[serde(deserialize_with = "crate::envelope::uuid_text")]
    pub case_event_id: uuid::Uuid,
    /// Model name, as in its metadata.
    #[serde(deserialize_with = "wire::non_empty")]
    pub model_name: String,
    /// Model version, as in its metadata.
    #[serde(deserialize_with = "wire::non_empty")]
    pub model_version: String,
    /// Probability of the model's target, in `[0, 1]`.
    #[serde(deserialize_with = "probability")]
    pub score: f64,
    /// When the score was computed.
    #[serde(with = "wire::timestamp")]
    pub scored_at: DateTime<Utc>,
}

fn probability<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let p = f64::deserialize(d)?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Float(p),
            &"a probability between 0 and 1",
        ))
    }
}

impl Payload for CaseScore {
    const SCHEMA: &'static str = "health.case_score";
    const VERSION: u32 = 1;

    /// Same case, same model version: same score id, so a replay converges.
    fn natural_key(&self) -> Vec<String> {
        vec![
            self.case_event_id.to_string(),
            self.model_name.clone(),
            self.model_version.clone(),
        ]
    }

    fn occurred_at(&self) -> DateTime<Utc> {
        self.scored_at
    }

    /// By case. The scorer itself keys each score like its case (by state),
    /// so a case and its score share a partition number.
    fn partition_key(&self) -> String {
        self.case_event_id.to_string()
    }
}
