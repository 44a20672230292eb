//! Vigie's upstream simulator: seeded, deterministic generators of the three
//! public-health sources Vigie ingests, so that the pipeline can be run,
//! load-tested and drift-tested without the real upstream systems.
//!
//! - [`CaseGenerator`]: CDC "COVID-19 Case Surveillance Public Use Data with
//!   Geography" rows, the high-volume stream (millions of rows).
//! - [`CountryDayGenerator`]: WHO COVID-19 global daily counts per country.
//! - [`NewsGenerator`]: WHO Disease Outbreak News articles and their
//!   revisions.
//!
//! [`server`] serves the three sources over HTTP in their real wire formats,
//! with growth over time, article edits and fault injection.
//!
//! Every record is a pure function of a seed and an index, so any record can
//! be regenerated on its own and the same seed gives the same data forever,
//! as long as the algorithms and tables here are unchanged: changing them
//! changes the data, which is why the tests pin a fingerprint of it.

mod cases;
mod countries;
mod error;
mod geo;
mod news;
mod sample;
pub mod server;

use chrono::{DateTime, Utc};
use vigie_core::Envelope;
use vigie_core::health::{Case, CountryDay, InvalidValue, OutbreakNews};

pub use cases::{CaseGenConfig, CaseGenerator, Drift};
pub use countries::CountryDayGenerator;
pub use error::ConfigError;
pub use news::{DEFAULT_BASE_URL, NewsGenerator, content_hash};

/// Envelope source of the CDC case rows.
pub const CDC_CASES_SOURCE: &str = "cdc-cases";
/// Envelope source of the WHO daily country rows.
pub const WHO_COVID_SOURCE: &str = "who-covid";
/// Envelope source of the WHO Disease Outbreak News articles.
pub const WHO_DON_SOURCE: &str = "who-don";

/// Case row `index` of `generator` in its envelope, source
/// [`CDC_CASES_SOURCE`], as `cdc-cases` publishes it: its version is the
/// `:updated_at` the simulator serves it with ([`case_updated_at`]).
pub fn case_envelope(
    generator: &CaseGenerator,
    index: u64,
    ingested_at: DateTime<Utc>,
) -> Envelope<Case> {
    Envelope::new(CDC_CASES_SOURCE, generator.row(index), ingested_at)
        .with_upstream_updated_at(case_updated_at(index))
}

/// The `:updated_at` of case row `index` with one row per timestamp:
/// [`server::ROW_EPOCH`] plus `index` milliseconds.
pub fn case_updated_at(index: u64) -> DateTime<Utc> {
    server::ROW_EPOCH.and_utc()
        + chrono::TimeDelta::milliseconds(i64::try_from(index).unwrap_or(i64::MAX))
}

/// The sample case generator of `vigie produce --sample cases` and of the
/// benchmarks: [`CaseGenConfig::default`] with `seed`.
///
/// # Panics
///
/// Never: the default settings are valid.
pub fn case_generator(seed: u64) -> CaseGenerator {
    CaseGenerator::new(CaseGenConfig {
        seed,
        ..CaseGenConfig::default()
    })
    .expect("the default generator settings are valid")
}

/// Case rows `range` of `generator` as serialized envelopes (see
/// [`case_envelope`]), each with its partition key: the `(key, value)`
/// records a producer sends. All share one `ingested_at`, now.
///
/// # Panics
///
/// If an envelope does not serialize, which a generated row always does.
pub fn case_lines(
    generator: &CaseGenerator,
    range: std::ops::Range<u64>,
) -> Vec<(String, Vec<u8>)> {
    let now = Utc::now();
    range
        .map(|i| {
            let env = case_envelope(generator, i, now);
            let value = env.to_json_bytes().expect("an envelope serializes");
            (env.partition_key(), value)
        })
        .collect()
}

/// The rows of day `day_index` of `generator` in their envelopes, source
/// [`WHO_COVID_SOURCE`]. Like [`CountryDayGenerator::day`], this replays the
/// days before it.
///
/// # Panics
///
/// If the date falls after 9999-12-31.
pub fn country_day_envelopes(
    generator: &CountryDayGenerator,
    day_index: u32,
    ingested_at: DateTime<Utc>,
) -> Vec<Envelope<CountryDay>> {
    generator
        .day(day_index)
        .into_iter()
        .map(|row| Envelope::new(WHO_COVID_SOURCE, row, ingested_at))
        .collect()
}

/// Article `index` of `generator` after `revision` revisions (0 for the
/// original) in its envelope, source [`WHO_DON_SOURCE`]. Every revision of an
/// article has the same event id, since the id derives from the URL.
///
/// # Panics
///
/// If `index` is not below [`NewsGenerator::capacity`].
pub fn news_envelope(
    generator: &NewsGenerator,
    index: u64,
    revision: u32,
    ingested_at: DateTime<Utc>,
) -> Envelope<OutbreakNews> {
    Envelope::new(
        WHO_DON_SOURCE,
        generator.edited(index, revision),
        ingested_at,
    )
}

/// Checks a value built by this crate from its own tables, which the tests
/// show are valid: a failure here is a bug in the tables, not bad input.
pub(crate) fn checked<T: TryFrom<String, Error = InvalidValue>>(text: impl Into<String>) -> T {
    T::try_from(text.into()).unwrap_or_else(|e| panic!("built-in value is invalid: {e}"))
}
