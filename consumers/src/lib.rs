//! Vigie consumers: consumer-group components that validate events at the
//! edge, hand them to a sink, send what cannot be processed to the DLQ and
//! commit only once the batch's effects are durable.
//!
//! Adding a sink is one folder under `sinks/` and one line in
//! [`sink::REGISTRY`].

pub mod drift;
pub mod runtime;
pub mod sink;
pub mod sinks;
pub mod transaction;

pub use runtime::{ConsumerMetrics, RunError, RunSummary, Runtime};
pub use sink::{
    Accepted, BatchContext, BuildArgs, HealthProbe, KafkaClients, Outbox, OutboxLetter, Rejected,
    Rejects, Sink, SinkError, SinkSpec, SinksConfig,
};
