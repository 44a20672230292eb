//! Vigie producers: publish events to Kafka.
//!
//! - [`raw`]: NDJSON lines, as `kcat -P` reads them.
//! - [`source`]: the upstream sources (HTTP pollers and a scraper), their
//!   configuration and [`source::REGISTRY`]; [`runner`] runs one with
//!   checkpoints saved only after the broker's acknowledgement.
//!
//! The `kafka` feature (on by default) builds [`raw`] and [`runner`], which
//! publish through librdkafka; without it the crate is the sources and
//! their parsers alone (what the fuzz targets build).

pub mod checkpoint;
pub mod http;
pub mod metrics;
#[cfg(feature = "kafka")]
pub mod raw;
#[cfg(feature = "kafka")]
pub mod runner;
pub mod source;
pub mod sources;

pub use checkpoint::{Checkpoint, CheckpointStore};
pub use http::{HttpConfig, HttpFetcher};
pub use metrics::SourceMetrics;
#[cfg(feature = "kafka")]
pub use runner::{RunError, RunStats, SourceRunner};
pub use source::{
    ProducersConfig, REGISTRY, Source, SourceConfig, SourceError, SourceSpec, section, spec,
};
