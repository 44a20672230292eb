//! `health.country_day`: one row of the WHO COVID-19 daily figures.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::start_of_day;
use super::text::CountryCode;
use super::vocab::WhoRegion;
use crate::envelope::Payload;
use crate::wire;

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
