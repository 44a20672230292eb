//! Typed payloads of the public-health data sets, mirroring the
//! `health.*` JSON Schemas.
//!
//! Each type accepts exactly what its schema accepts: vocabularies are enums
//! carrying the data set's own strings, and every pattern the schema imposes
//! is checked while deserialising, so a value of these types always
//! serialises to a document its schema accepts (as long as code building one
//! by hand keeps numbers inside the schema's bounds).

mod case;
mod case_score;
mod country_day;
mod drift_report;
mod outbreak_news;
mod text;
mod vocab;

use chrono::{DateTime, NaiveDate, Utc};
pub use smol_str::SmolStr;

pub use case::Case;
pub use case_score::CaseScore;
pub use country_day::CountryDay;
pub use drift_report::{DriftReport, DriftStatus, DriftThresholds, FeatureDrift, FeatureKind};
pub use outbreak_news::OutbreakNews;
pub use text::{
    CaseMonth, ContentHash, CountryCode, CountyFips, HttpUrl, InvalidValue, RowId, StateCode,
    StateFips,
};
pub use vocab::{
    AgeGroup, CurrentStatus, Ethnicity, Process, Race, Sex, SymptomStatus, WhoRegion, YesNo,
};

/// Midnight UTC at the start of `date`: when an event the data set dates
/// only to the day occurred. Shared by the schemas dated that way.
fn start_of_day(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(chrono::NaiveTime::MIN).and_utc()
}
