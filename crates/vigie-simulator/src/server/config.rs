//! What a simulator run serves: its seed, the size and growth of each
//! source, and the faults to inject. Loaded from TOML; every section and
//! key is optional and unknown keys are refused.

use serde::{Deserialize, Serialize};

use super::faults::FaultRule;
use crate::{CountryDayGenerator, Drift};

/// Most case rows a simulator serves: their `:updated_at` (one millisecond
/// apart from 2024-01-01) must stay within the years `YYYY` can write.
pub const MAX_CASE_ROWS: u64 = 1 << 47;

/// Most rows that may share one `:updated_at` (`cases.rows_per_timestamp`):
/// a page that reaches into a timestamp sorts its rows by `:id`.
pub const MAX_ROWS_PER_TIMESTAMP: u64 = 100_000;

/// The whole configuration of a simulator run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Seed of every generator: the same seed and configuration serve the
    /// same bytes for the same request (growth with time aside).
    pub seed: u64,
    /// The CDC case rows (Socrata SODA endpoint).
    pub cases: CasesSim,
    /// The WHO daily CSV.
    pub who: WhoSim,
    /// The WHO Disease Outbreak News pages.
    pub news: NewsSim,
    /// Faults injected into responses, in order: when several rules are due
    /// on the same request, the first one listed is injected.
    pub faults: Vec<FaultRule>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            cases: CasesSim::default(),
            who: WhoSim::default(),
            news: NewsSim::default(),
            faults: Vec::new(),
        }
    }
}

/// The `[cases]` section: the CDC case rows served over SODA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CasesSim {
    /// Total number of rows the data set grows to.
    pub rows: u64,
    /// Rows available when the simulator starts; `None` means all of
    /// `rows`.
    pub initial_rows: Option<u64>,
    /// Rows added per second after the start, up to `rows`; 0 for none.
    pub rows_per_second: u64,
    /// Rows that share each `:updated_at` (1 to
    /// [`MAX_ROWS_PER_TIMESTAMP`]): row `i` is updated at 2024-01-01 plus
    /// `i / rows_per_timestamp` milliseconds, and the rows of a timestamp
    /// are served by `:id`. Rows then become available a whole timestamp
    /// at a time, as a transaction commits them.
    pub rows_per_timestamp: u64,
    /// Optional change in the data from some row on.
    pub drift: Option<Drift>,
    /// When set, a request carrying another `X-App-Token` is refused with
    /// 403; requests without the header are served, as Socrata does.
    pub app_token: Option<String>,
    /// Rows updated upstream: some rows are new versions of earlier ones.
    pub updates: Option<Updates>,
}

/// `[cases.updates]`: from row `distance` on, every `every`-th row is not a
/// new case but a new version of the row `distance` rows before it (same
/// `:id`, a later `:updated_at`, other values), which from then on is
/// served only there, as SODA serves a row at its latest `:updated_at`.
/// With one row per timestamp (required), a row's versions come in the
/// order of their rows, and a row is updated at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Updates {
    /// One row in `every` (at least 2) is an update.
    pub every: u64,
    /// How many rows back the row it updates is (at least 1, not a
    /// multiple of `every`, so that no update is itself updated).
    pub distance: u64,
}

impl Default for CasesSim {
    fn default() -> Self {
        Self {
            rows: 100_000,
            initial_rows: None,
            rows_per_second: 0,
            rows_per_timestamp: 1,
            drift: None,
            app_token: None,
            updates: None,
        }
    }
}

impl CasesSim {
    /// Rows available at the start: `initial_rows`, or `rows` when unset,
    /// never more than `rows`.
    pub fn initial_rows(&self) -> u64 {
        self.initial_rows.unwrap_or(self.rows).min(self.rows)
    }
}

/// The `[who]` section: the WHO COVID-19 global daily CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhoSim {
    /// Number of countries, i.e. rows per day (1 to
    /// [`CountryDayGenerator::AVAILABLE_COUNTRIES`]).
    pub countries: usize,
    /// Days in the file when the simulator starts.
    pub initial_days: u32,
    /// One more day every `day_seconds` seconds after the start; 0 keeps
    /// the file as it started.
    pub day_seconds: f64,
    /// The last days of the file, served as first published: `New_cases`
    /// blank and `New_deaths` one more than the final figure. Each day the
    /// file grows, the oldest of them is served final, as WHO revises days
    /// already published. 0 serves every day final.
    pub preliminary_days: u32,
    /// One more row, for the first country, dated a century after the
    /// file's last day (a mistyped year).
    pub future_row: bool,
}

impl Default for WhoSim {
    fn default() -> Self {
        Self {
            countries: 20,
            initial_days: 30,
            day_seconds: 0.0,
            preliminary_days: 0,
            future_row: false,
        }
    }
}

/// The `[news]` section: the Disease Outbreak News listing and articles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewsSim {
    /// Number of articles published, newest first (capped to what the
    /// generator can produce).
    pub articles: u64,
    /// Articles per listing page, at least 1.
    pub page_size: usize,
    /// Path prefixes written as `Disallow:` lines in `/robots.txt`.
    pub robots_disallow: Vec<String>,
    /// `Crawl-delay:` of `/robots.txt`, in seconds, when set.
    pub crawl_delay_seconds: Option<f64>,
    /// Articles (by index) whose publication date is written in words in
    /// the `datetime` attribute (`3 March 2025`), an invalid value.
    pub undated_articles: Vec<u64>,
}

impl Default for NewsSim {
    fn default() -> Self {
        Self {
            articles: 50,
            page_size: 10,
            robots_disallow: Vec::new(),
            crawl_delay_seconds: None,
            undated_articles: Vec::new(),
        }
    }
}

/// A configuration value the simulator cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid simulator setting {key}: {reason}")]
pub struct InvalidSetting {
    /// Dotted key, e.g. `news.page_size` or `faults[2].every`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidSetting {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl SimConfig {
    /// Parses a TOML document; missing keys take their defaults.
    ///
    /// # Errors
    ///
    /// On a syntax error, an unknown key or a value of the wrong type; the
    /// message names the key and its line.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks the values that the types alone do not rule out.
    ///
    /// # Errors
    ///
    /// The first invalid setting found.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.cases.rows > MAX_CASE_ROWS {
            return Err(InvalidSetting::new(
                "cases.rows",
                format!("at most {MAX_CASE_ROWS}"),
            ));
        }
        if !(1..=MAX_ROWS_PER_TIMESTAMP).contains(&self.cases.rows_per_timestamp) {
            return Err(InvalidSetting::new(
                "cases.rows_per_timestamp",
                format!(
                    "between 1 and {MAX_ROWS_PER_TIMESTAMP} (got {})",
                    self.cases.rows_per_timestamp
                ),
            ));
        }
        if let Some(u) = self.cases.updates {
            if u.every < 2 || u.distance == 0 || u.distance.is_multiple_of(u.every) {
                return Err(InvalidSetting::new(
                    "cases.updates",
                    format!(
                        "every at least 2, distance at least 1 and not a multiple of every \
                         (got every = {}, distance = {})",
                        u.every, u.distance
                    ),
                ));
            }
            if self.cases.rows_per_timestamp != 1 {
                return Err(InvalidSetting::new(
                    "cases.updates",
                    "needs cases.rows_per_timestamp = 1",
                ));
            }
        }
        let countries = self.who.countries;
        if countries == 0 || countries > CountryDayGenerator::AVAILABLE_COUNTRIES {
            return Err(InvalidSetting::new(
                "who.countries",
                format!("between 1 and {}", CountryDayGenerator::AVAILABLE_COUNTRIES),
            ));
        }
        if !(self.who.day_seconds.is_finite() && self.who.day_seconds >= 0.0) {
            return Err(InvalidSetting::new(
                "who.day_seconds",
                "a finite number of seconds, 0 or more",
            ));
        }
        if self.news.page_size == 0 {
            return Err(InvalidSetting::new("news.page_size", "at least 1"));
        }
        if let Some(delay) = self.news.crawl_delay_seconds
            && !(delay.is_finite() && delay >= 0.0)
        {
            return Err(InvalidSetting::new(
                "news.crawl_delay_seconds",
                "a finite number of seconds, 0 or more",
            ));
        }
        for (i, prefix) in self.news.robots_disallow.iter().enumerate() {
            if !prefix.starts_with('/') || prefix.contains(['\n', '\r']) {
                return Err(InvalidSetting::new(
                    format!("news.robots_disallow[{i}]"),
                    "a path starting with / on one line",
                ));
            }
        }
        for (i, rule) in self.faults.iter().enumerate() {
            rule.validate(&format!("faults[{i}]"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::faults::{Endpoint, FaultKind};

    #[test]
    fn empty_toml_gives_the_defaults() {
        assert_eq!(SimConfig::from_toml("").unwrap(), SimConfig::default());
        SimConfig::default().validate().unwrap();
    }

    #[test]
    fn every_key_parses() {
        let config = SimConfig::from_toml(
            r#"
            seed = 7
            [cases]
            rows = 1000
            initial_rows = 10
            rows_per_second = 5
            rows_per_timestamp = 3
            app_token = "t"
            drift = { kind = "age_shift_older", from_index = 500 }
            [who]
            countries = 8
            initial_days = 3
            day_seconds = 2
            preliminary_days = 2
            future_row = true
            [news]
            articles = 12
            page_size = 5
            robots_disallow = ["/private"]
            crawl_delay_seconds = 0.5
            undated_articles = [3]
            [[faults]]
            endpoint = "cases"
            kind = "too_many_requests"
            retry_after_seconds = 2
            every = 3
            times = 1
            [[faults]]
            endpoint = "news_listing"
            kind = "layout_change"
            every = 4
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.seed, 7);
        assert_eq!(config.cases.initial_rows(), 10);
        assert_eq!(config.cases.rows_per_timestamp, 3);
        assert_eq!(
            config.cases.drift,
            Some(Drift::AgeShiftOlder { from_index: 500 })
        );
        assert_eq!(config.who.day_seconds, 2.0);
        assert_eq!(config.who.preliminary_days, 2);
        assert!(config.who.future_row);
        assert_eq!(config.news.crawl_delay_seconds, Some(0.5));
        assert_eq!(config.news.undated_articles, [3]);
        assert_eq!(
            config.faults[0],
            FaultRule {
                endpoint: Endpoint::Cases,
                kind: FaultKind::TooManyRequests {
                    retry_after_seconds: 2
                },
                every: 3,
                times: Some(1),
            }
        );
        assert_eq!(config.faults[1].kind, FaultKind::LayoutChange);
    }

    #[test]
    fn updates_parse_and_are_checked() {
        let config =
            SimConfig::from_toml("[cases]\nupdates = { every = 10, distance = 3 }").unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.cases.updates,
            Some(Updates {
                every: 10,
                distance: 3
            })
        );
        for bad in [
            "[cases]\nupdates = { every = 1, distance = 3 }",
            "[cases]\nupdates = { every = 5, distance = 10 }",
            "[cases]\nrows_per_timestamp = 2\nupdates = { every = 5, distance = 3 }",
        ] {
            let err = SimConfig::from_toml(bad).unwrap().validate().unwrap_err();
            assert_eq!(err.key, "cases.updates", "{bad}");
        }
    }

    #[test]
    fn typos_are_refused() {
        for bad in [
            "sead = 1",
            "[cases]\nrow = 1",
            "[[faults]]\nendpoint = \"cases\"\nkind = \"reset\"\nevry = 1",
            "[[faults]]\nendpoint = \"cases\"\nkind = \"slow\"\ndelay = 1\nevery = 1",
            "[[faults]]\nendpoint = \"case\"\nkind = \"reset\"\nevery = 1",
        ] {
            assert!(SimConfig::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut config = SimConfig::default();
        config.who.countries = 0;
        assert_eq!(config.validate().unwrap_err().key, "who.countries");
        for bad in [0, MAX_ROWS_PER_TIMESTAMP + 1] {
            let mut config = SimConfig::default();
            config.cases.rows_per_timestamp = bad;
            let err = config.validate().unwrap_err();
            assert_eq!(err.key, "cases.rows_per_timestamp");
            assert!(err.to_string().contains("between 1 and 100000"), "{err}");
        }
        let mut config = SimConfig::default();
        config.cases.rows_per_timestamp = MAX_ROWS_PER_TIMESTAMP;
        config.validate().unwrap();
        let mut config = SimConfig::default();
        config.news.page_size = 0;
        assert_eq!(config.validate().unwrap_err().key, "news.page_size");
        let mut config = SimConfig::default();
        config.faults.push(FaultRule {
            endpoint: Endpoint::Who,
            kind: FaultKind::RepeatRows { rows: 3 },
            every: 1,
            times: None,
        });
        assert_eq!(config.validate().unwrap_err().key, "faults[0].kind");
    }
}
