//! The sources, one module each; [`crate::source::REGISTRY`] lists them.

pub mod cdc_cases;
pub mod who_covid;
pub mod who_don;

use chrono::{DateTime, Utc};
use vigie_core::{Envelope, Payload};

use crate::source::Outgoing;

/// `data` in its envelope, keyed by its partition key.
pub(crate) fn outgoing<D: Payload>(source: &str, data: D, ingested_at: DateTime<Utc>) -> Outgoing {
    let env = Envelope::new(source, data, ingested_at);
    Outgoing {
        key: env.partition_key(),
        payload: env.encode().expect("a typed envelope always serializes"),
    }
}
