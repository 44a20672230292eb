//! The sources, one module each; [`crate::source::REGISTRY`] lists them.

pub mod cdc_cases;
pub mod who_covid;
pub mod who_don;

use chrono::{DateTime, Utc};
use vigie_core::{Payload, encode_versioned_event};

use crate::source::Outgoing;

/// `data` in its envelope, keyed by its partition key.
pub(crate) fn outgoing<D: Payload>(source: &str, data: D, ingested_at: DateTime<Utc>) -> Outgoing {
    versioned_outgoing(source, data, ingested_at, None)
}

/// [`outgoing`], the envelope carrying the upstream's version of the
/// record when it has one.
pub(crate) fn versioned_outgoing<D: Payload>(
    source: &str,
    data: D,
    ingested_at: DateTime<Utc>,
    upstream_updated_at: Option<DateTime<Utc>>,
) -> Outgoing {
    Outgoing {
        key: data.partition_key(),
        payload: encode_versioned_event(source, &data, ingested_at, upstream_updated_at)
            .expect("a typed envelope always serializes"),
    }
}

/// A short content hash (128 bits of SHA-256, hex): enough to tell two
/// versions of one row or page apart.
pub(crate) fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(bytes);
    hash[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Prefix of the hash of what was dead-lettered, in a checkpoint's `seen`.
pub(crate) const REFUSED: &str = "refused:";
