//! The sink contract and the registry of sinks.

use std::collections::BTreeMap;

use vigie_core::Event;
use vigie_kafka::consumer::TopicPartition;

/// An event that passed validation, with its index in the batch.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Position of the record in the batch (for DLQ coordinates).
    pub index: usize,
    /// The partition it was read from: a sink may write partitions in
    /// parallel, each with its own offsets.
    pub partition: i32,
    /// The validated event, typed where Vigie has a type for its schema.
    pub event: Event,
}

/// An event the sink refused on its own merits (e.g. a constraint): it goes
/// to the DLQ and the rest of the batch is committed.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Position of the record in the batch.
    pub index: usize,
    /// Bounded reason code.
    pub reason: &'static str,
    /// What was wrong.
    pub error: String,
}

/// What the sink needs to know of the batch besides its events.
#[derive(Debug, Clone)]
pub struct BatchContext<'a> {
    /// The consumer group.
    pub group: &'a str,
    /// One past the last record of the batch, per partition: a sink that
    /// stores offsets writes these in the same transaction as the rows.
    pub next_offsets: &'a BTreeMap<TopicPartition, i64>,
}

/// Publishes a sink's rejected events to the DLQ. A transactional sink calls
/// it before committing, so that no rejected event can be lost between its
/// commit and the DLQ (the DLQ is at-least-once: its records carry their
/// origin coordinates, which identify a repeat).
#[async_trait::async_trait]
pub trait Rejects: Send {
    /// Publishes and waits for the broker's acknowledgement.
    async fn publish(&mut self, rejected: &[Rejected]) -> Result<(), SinkError>;
}

/// Why a batch could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: connection lost, timeout, serialization failure.
    #[error("retryable sink error: {0}")]
    Retryable(String),
    /// Retrying cannot help: the component stops without committing.
    #[error("fatal sink error: {0}")]
    Fatal(String),
}

/// Where a consumer writes its events.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// Writes the batch's accepted events durably, publishing the events it
    /// refuses one by one through `rejects` before its own commit; returns
    /// how many it wrote. An `Err` means nothing of the batch was written.
    async fn write(
        &mut self,
        events: &[Accepted],
        ctx: &BatchContext<'_>,
        rejects: &mut dyn Rejects,
    ) -> Result<usize, SinkError>;

    /// For a sink that stores consumed offsets with its data (exactly-once):
    /// the next offset to read for every partition it has seen for `group`.
    /// `None`: the sink keeps no offsets and Kafka's commits are the truth.
    async fn stored_offsets(
        &mut self,
        _group: &str,
    ) -> Result<Option<BTreeMap<TopicPartition, i64>>, SinkError> {
        Ok(None)
    }

    /// A real round trip to the store, for `/readyz`; `None` when the sink
    /// has no store.
    fn health_probe(&self) -> Option<HealthProbe> {
        None
    }
}

/// A readiness check that can run beside the sink's own work.
pub type HealthProbe = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// The settings of every sink, one section each (`[sink_postgres]`, ...).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// `[sink_postgres]`.
    #[serde(default)]
    pub sink_postgres: crate::sink_postgres::PostgresConfig,
    /// `[scorer]`.
    #[serde(default)]
    pub scorer: crate::scorer::ScorerConfig,
}

/// Every sink Vigie ships, by its configuration `type` and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// Validates, counts and discards: a pipeline check and a baseline.
    Blackhole,
    /// PostgreSQL, exactly-once: rows and offsets in one transaction.
    Postgres,
    /// ONNX model scores, published to their own topic.
    Scorer,
}

impl SinkKind {
    /// Every sink, for `--help` and config errors.
    pub const ALL: &'static [SinkKind] =
        &[SinkKind::Blackhole, SinkKind::Postgres, SinkKind::Scorer];

    /// The name used in configuration, file names and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Blackhole => "blackhole",
            SinkKind::Postgres => "sink_postgres",
            SinkKind::Scorer => "scorer",
        }
    }
}

impl SinkKind {
    /// Builds the sink (connecting to its store, loading its model). Its
    /// metrics go to `registry`; a sink that publishes uses `producer`.
    pub async fn build(
        self,
        config: &SinksConfig,
        producer: impl FnOnce() -> Result<vigie_kafka::EventProducer, SinkError>,
        registry: &prometheus::Registry,
    ) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            SinkKind::Blackhole => Box::new(crate::blackhole::Blackhole::default()),
            SinkKind::Postgres => {
                Box::new(crate::sink_postgres::PostgresSink::connect(&config.sink_postgres).await?)
            }
            SinkKind::Scorer => Box::new(crate::scorer::ScorerSink::new(
                &config.scorer,
                producer()?,
                registry,
            )?),
        })
    }
}

impl std::str::FromStr for SinkKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = if s == "postgres" { "sink_postgres" } else { s };
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("unknown sink `{s}` (expected one of: {})", names.join(", "))
            })
    }
}
