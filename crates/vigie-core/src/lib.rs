//! Vigie core: the event envelope every Kafka message is wrapped in, the typed
//! payloads of the public-health data sets, and their validation against the
//! JSON Schemas that are the contract between producers and consumers.
//!
//! The JSON Schema files are the source of truth: the Rust types here are
//! written to accept exactly what the schemas accept, and the test suite
//! checks the two against each other sample by sample.

pub mod compat;
pub mod envelope;
pub mod event;
pub mod health;
pub mod registry;
mod wire;

pub use compat::{CompatError, FamilyReport, Incompatibility, IncompatibilityKind};
pub use envelope::{
    EVENT_NAMESPACE, Envelope, Payload, PayloadError, encode_event, encode_versioned_event,
    event_id,
};
pub use event::Event;
pub use health::{Case, CaseScore, CountryDay, DriftReport, InvalidValue, OutbreakNews};
pub use registry::{
    RegistryError, SchemaRegistry, ValidationError, ValidationErrorKind, Violation,
};
