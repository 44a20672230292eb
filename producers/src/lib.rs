//! Vigie producers: publish events to Kafka.
//!
//! - [`raw`]: NDJSON lines, as `kcat -P` reads them.
//! - [`source`]: the upstream sources (HTTP pollers and a scraper), their
//!   configuration and [`source::REGISTRY`]; [`runner`] runs one with
//!   checkpoints saved only after the broker's acknowledgement.

pub mod checkpoint;
pub mod http;
pub mod metrics;
pub mod raw;
pub mod runner;
pub mod source;
pub mod sources;

pub use checkpoint::{Checkpoint, CheckpointStore};
pub use http::{HttpConfig, HttpFetcher};
pub use metrics::SourceMetrics;
pub use runner::{RunError, RunStats, SourceRunner};
pub use source::{
    ProducersConfig, REGISTRY, Source, SourceConfig, SourceError, SourceSpec, section, spec,
};
