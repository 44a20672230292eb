//! The sink contract and the registry of sinks.

use vigie_core::Envelope;

/// An event that passed validation, with its index in the batch.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Position of the record in the batch (for DLQ coordinates).
    pub index: usize,
    /// The validated envelope.
    pub envelope: Envelope<serde_json::Value>,
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
    /// Writes the batch's accepted events durably; returns those refused
    /// one by one. An `Err` means nothing of the batch may be committed.
    async fn write(&mut self, events: &[Accepted]) -> Result<Vec<Rejected>, SinkError>;

    /// A real round trip to the store, for `/readyz`.
    async fn healthcheck(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Every sink Vigie ships, by its configuration `type` and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// Validates, counts and discards: a pipeline check and a baseline.
    Blackhole,
}

impl SinkKind {
    /// Every sink, for `--help` and config errors.
    pub const ALL: &'static [SinkKind] = &[SinkKind::Blackhole];

    /// The name used in configuration, file names and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Blackhole => "blackhole",
        }
    }

    /// Builds the sink.
    pub fn build(self) -> Box<dyn Sink> {
        match self {
            SinkKind::Blackhole => Box::new(crate::blackhole::Blackhole::default()),
        }
    }
}

impl std::str::FromStr for SinkKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
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
