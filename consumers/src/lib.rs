//! Vigie consumers: consumer-group components that validate events at the
//! edge, hand them to a sink, send what cannot be processed to the DLQ and
//! commit only once the batch's effects are durable.
//!
//! Adding a sink is one module and one line in [`SinkKind`].

pub mod blackhole;
pub mod runtime;
pub mod scorer;
pub mod sink;
pub mod sink_postgres;

pub use runtime::{ConsumerMetrics, RunError, RunSummary, Runtime};
pub use sink::{
    Accepted, BatchContext, HealthProbe, Rejected, Rejects, Sink, SinkError, SinkKind, SinksConfig,
};
