//! Why a generator could not be built from its configuration.

/// A generator configuration that cannot produce valid records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The first case month is not a month (the month must be 1 to 12).
    #[error("start month {year}-{month} is not a valid month")]
    StartMonth {
        /// Configured year.
        year: u16,
        /// Configured month.
        month: u8,
    },
    /// The case months must cover at least one month.
    #[error("the number of case months must be at least 1")]
    NoMonths,
    /// The case months would run past December 9999, which `YYYY-MM`
    /// cannot write.
    #[error("the case months run past 9999-12")]
    MonthsOutOfRange,
    /// A drift scenario names a state that is not in the simulated geography.
    #[error("unknown state code {0:?} in the drift scenario")]
    UnknownState(String),
    /// The number of countries is 0 or more than the built-in table holds.
    #[error("{requested} countries requested, between 1 and {available} available")]
    Countries {
        /// Requested number.
        requested: usize,
        /// Size of the built-in table.
        available: usize,
    },
    /// The date of day 0 is outside the years 0 to 9999 that the schema's
    /// `YYYY-MM-DD` dates can write.
    #[error("start date {0} is outside the years 0 to 9999")]
    StartDate(chrono::NaiveDate),
    /// The article base URL does not give valid article URLs.
    #[error("base URL {0:?} does not give valid http(s) article URLs")]
    BaseUrl(String),
}
