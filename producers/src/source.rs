//! What a source is, how it is configured, and the registry of sources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Checkpoint;
use crate::http::{FetchError, HttpConfig, HttpFetcher};
use crate::metrics::SourceMetrics;
use crate::sources;

/// The `[producers]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducersConfig {
    /// Where checkpoints are kept, one file per source.
    pub checkpoint_dir: PathBuf,
    /// Where pages that could not be parsed are kept for inspection.
    pub quarantine_dir: PathBuf,
    /// The HTTP client.
    #[serde(default)]
    pub http: HttpConfig,
    /// The sources, by registry name (`cdc-cases`, `who-covid`, `who-don`).
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
}

/// One `[producers.sources.<name>]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Upstream endpoint (for a scraper, the listing page).
    pub url: String,
    /// Destination topic; rows that do not map go to its `.dlq` twin.
    pub topic: String,
    /// Pause between polls once the source is caught up, milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Source-specific settings; each source documents its own.
    #[serde(default)]
    pub options: toml::Table,
}

fn default_poll_interval_ms() -> u64 {
    10_000
}

impl SourceConfig {
    /// The options as the source's own type; an error names the source and
    /// the key.
    pub fn options<T: DeserializeOwned>(&self, source: &str) -> Result<T, SourceError> {
        T::deserialize(toml::Value::Table(self.options.clone())).map_err(|e| {
            SourceError::Config(format!(
                "producers.sources.{source}.options: {}",
                e.to_string().trim()
            ))
        })
    }
}

/// An event ready for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Kafka key.
    pub key: String,
    /// The envelope, serialized.
    pub payload: Vec<u8>,
}

/// An upstream row or page that does not map to its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The upstream bytes, unchanged.
    pub raw: Vec<u8>,
    /// Short, stable reason code (metric label and DLQ header).
    pub reason: &'static str,
    /// What was wrong, naming the field.
    pub error: String,
    /// Where it came from.
    pub url: String,
}

/// What one poll returned.
#[derive(Debug, Default)]
pub struct Poll {
    /// Events, in upstream order.
    pub events: Vec<Outgoing>,
    /// Rows that did not map, for the DLQ.
    pub rejects: Vec<Reject>,
    /// The checkpoint once all of the above is acknowledged.
    pub next: Checkpoint,
    /// More is available right away (a full page); otherwise the source
    /// is caught up and waits for its poll interval.
    pub more: bool,
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Fetching failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The upstream answered something that is not the expected format at
    /// all (not one row: the whole response).
    #[error("{url}: {error}")]
    Format {
        /// The URL.
        url: String,
        /// What was wrong.
        error: String,
    },
    /// The configuration is wrong.
    #[error("{0}")]
    Config(String),
}

impl SourceError {
    /// Whether polling again later may succeed; if not, the source stops
    /// with this error.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Fetch(FetchError::Exhausted { .. }) | Self::Format { .. } => true,
            Self::Fetch(_) | Self::Config(_) => false,
        }
    }
}

/// What a poll may use.
#[derive(Debug)]
pub struct PollContext<'a> {
    /// The HTTP client.
    pub http: &'a HttpFetcher,
    /// Shutdown signal.
    pub shutdown: &'a CancellationToken,
    /// The source's metrics.
    pub metrics: &'a SourceMetrics,
    /// Directory for pages kept for inspection.
    pub quarantine: &'a Path,
}

/// A producer's upstream side: turns upstream data into events.
#[async_trait::async_trait]
pub trait Source: Send {
    /// Registry name, metric label, envelope source.
    fn name(&self) -> &'static str;
    /// Polls what follows `at`.
    async fn poll(&mut self, at: &Checkpoint, cx: &PollContext<'_>) -> Result<Poll, SourceError>;
}

/// A registry entry.
#[derive(Debug, Clone, Copy)]
pub struct SourceSpec {
    /// Registry name, also the `[producers.sources.<name>]` key.
    pub name: &'static str,
    /// One line for `--help` and the docs.
    pub about: &'static str,
    /// Builds the source from its section.
    pub build: fn(&SourceConfig) -> Result<Box<dyn Source>, SourceError>,
}

/// Every source Vigie knows. Adding one is a module under `sources/` and a
/// line here.
pub const REGISTRY: &[SourceSpec] = &[
    sources::cdc_cases::SPEC,
    sources::who_covid::SPEC,
    sources::who_don::SPEC,
];

/// Configuration keys are normalised to snake_case (`cdc-cases` and
/// `cdc_cases` name the same source).
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (x == b'-' && y == b'_') || (x == b'_' && y == b'-'))
}

/// The section of source `name` in `sources`, however its key is spelt.
pub fn section<'a>(
    sources: &'a BTreeMap<String, SourceConfig>,
    name: &str,
) -> Option<&'a SourceConfig> {
    sources
        .iter()
        .find(|(k, _)| same_name(k, name))
        .map(|(_, v)| v)
}

/// The registry entry named `name` (`cdc-cases` or `cdc_cases`), or an
/// error listing the known names.
pub fn spec(name: &str) -> Result<&'static SourceSpec, SourceError> {
    REGISTRY
        .iter()
        .find(|s| same_name(s.name, name))
        .ok_or_else(|| {
            let known: Vec<_> = REGISTRY.iter().map(|s| s.name).collect();
            SourceError::Config(format!(
                "unknown source `{name}`; known sources: {}",
                known.join(", ")
            ))
        })
}
