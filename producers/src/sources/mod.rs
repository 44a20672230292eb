//! The sources, one module each; [`crate::source::REGISTRY`] lists them.

pub mod cdc_cases;
pub mod who_covid;
pub mod who_don;

use chrono::{DateTime, Utc};
use vigie_core::{Payload, encode_event};

use crate::source::Outgoing;

/// `data` in its envelope, keyed by its partition key.
pub(crate) fn outgoing<D: Payload>(source: &str, data: D, ingested_at: DateTime<Utc>) -> Outgoing {
    Outgoing {
        key: data.partition_key(),
        payload: encode_event(source, &data, ingested_at)
            .expect("a typed envelope always serializes"),
    }
}
