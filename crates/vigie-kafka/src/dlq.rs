//! Dead-letter publishing: what cannot be processed goes, bytes unchanged
//! (up to [`DLQ_MAX_VALUE_BYTES`]), to the `<topic>.dlq` twin of its topic,
//! with why and where it came from in headers.

use crate::error::KafkaError;
use crate::metrics::KafkaMetrics;
use crate::producer::{EventProducer, OutRecord};
use crate::record::Record;

/// Header: short, stable reason code (`invalid_json`, `schema_violation`, `oversized`, ...).
pub const H_REASON: &str = "vigie.dlq.reason";
/// Header: the full error message.
pub const H_ERROR: &str = "vigie.dlq.error";
/// Header: the processing stage that refused the record (`validate`, `sink_postgres`, ...).
pub const H_STAGE: &str = "vigie.dlq.stage";
/// Header: the topic the record was read from.
pub const H_TOPIC: &str = "vigie.dlq.origin.topic";
/// Header: its partition.
pub const H_PARTITION: &str = "vigie.dlq.origin.partition";
/// Header: its offset.
pub const H_OFFSET: &str = "vigie.dlq.origin.offset";
/// Header: the upstream URL, for a row a producer could not map (producer
/// dead letters carry it instead of topic, partition and offset).
pub const H_URL: &str = "vigie.dlq.origin.url";

/// Header, on a dead letter whose value was cut to [`DLQ_MAX_VALUE_BYTES`]:
/// the size of the whole original value, in bytes.
pub const H_ORIGINAL_SIZE: &str = "vigie.dlq.original.size";
/// Header, with [`H_ORIGINAL_SIZE`]: the SHA-256 of the whole original
/// value, in lower-case hex.
pub const H_ORIGINAL_SHA256: &str = "vigie.dlq.original.sha256";

/// The most of a refused value a dead letter carries. A longer value (a
/// record refused as oversized, a huge upstream page) is cut to its first
/// `DLQ_MAX_VALUE_BYTES`, so that its dead letter fits any broker's
/// message size limit; its size and digest go in headers, and its origin
/// headers still locate the original.
pub const DLQ_MAX_VALUE_BYTES: usize = 64 * 1024;

/// A refused value as a dead letter carries it: whole, or cut to
/// [`DLQ_MAX_VALUE_BYTES`] with [`H_ORIGINAL_SIZE`] and
/// [`H_ORIGINAL_SHA256`] headers.
#[derive(Debug)]
pub struct FittedValue<'a> {
    /// The value, or its first [`DLQ_MAX_VALUE_BYTES`].
    pub value: &'a [u8],
    /// For a cut value: the size and SHA-256 of the whole, as header values.
    pub original: Option<(String, String)>,
}

impl<'a> FittedValue<'a> {
    /// Fits `value` into a dead letter.
    pub fn new(value: &'a [u8]) -> Self {
        if value.len() <= DLQ_MAX_VALUE_BYTES {
            return Self {
                value,
                original: None,
            };
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(value);
        let hex = digest.iter().fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        });
        Self {
            value: &value[..DLQ_MAX_VALUE_BYTES],
            original: Some((value.len().to_string(), hex)),
        }
    }

    /// The headers telling a cut value's original size and digest, if cut.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.original.iter().flat_map(|(size, sha)| {
            [
                (H_ORIGINAL_SIZE, size.as_bytes()),
                (H_ORIGINAL_SHA256, sha.as_bytes()),
            ]
        })
    }
}

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// A record refused by a stage, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// The original record.
    pub record: &'a Record,
    /// Bounded reason code, also the metric label.
    pub reason: &'a str,
    /// Human-readable error naming what was wrong.
    pub error: String,
    /// The stage that refused it.
    pub stage: &'a str,
}

/// Publishes dead letters with the shared producer.
#[derive(Debug)]
pub struct DlqPublisher<'p> {
    producer: &'p EventProducer,
    metrics: KafkaMetrics,
}

impl<'p> DlqPublisher<'p> {
    /// A publisher over an existing producer.
    pub fn new(producer: &'p EventProducer, metrics: KafkaMetrics) -> Self {
        Self { producer, metrics }
    }

    /// Publishes every dead letter and waits for the broker's acknowledgement:
    /// a batch's offsets may be committed only after its dead letters are safe.
    pub async fn publish(&self, letters: &[DeadLetter<'_>]) -> Result<(), KafkaError> {
        if letters.is_empty() {
            return Ok(());
        }
        struct Owned<'v> {
            topic: String,
            partition: String,
            offset: String,
            value: FittedValue<'v>,
        }
        let owned: Vec<Owned<'_>> = letters
            .iter()
            .map(|l| Owned {
                topic: dlq_topic(&l.record.topic),
                partition: l.record.partition.to_string(),
                offset: l.record.offset.to_string(),
                value: FittedValue::new(l.record.payload.as_deref().unwrap_or_default()),
            })
            .collect();
        let headers: Vec<Vec<(&str, &[u8])>> = letters
            .iter()
            .zip(&owned)
            .map(|(l, o)| {
                let mut h: Vec<(&str, &[u8])> = vec![
                    (H_REASON, l.reason.as_bytes()),
                    (H_ERROR, l.error.as_bytes()),
                    (H_STAGE, l.stage.as_bytes()),
                    (H_TOPIC, l.record.topic.as_bytes()),
                    (H_PARTITION, o.partition.as_bytes()),
                    (H_OFFSET, o.offset.as_bytes()),
                ];
                h.extend(o.value.headers());
                // The original headers follow, unchanged.
                h.extend(
                    l.record
                        .headers
                        .iter()
                        .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_str(), v))),
                );
                h
            })
            .collect();
        // Built with a loop, not a lazy `map`: a closure held across the
        // await below would make this future not `Send` for every lifetime.
        let mut records: Vec<OutRecord<'_>> = Vec::with_capacity(letters.len());
        for ((l, o), h) in letters.iter().zip(&owned).zip(&headers) {
            records.push(OutRecord {
                topic: &o.topic,
                key: l.record.key.as_deref(),
                payload: o.value.value,
                headers: h,
                timestamp_ms: l.record.timestamp_ms,
            });
        }
        self.producer.send_all(records).await?;
        for l in letters {
            self.metrics
                .dead_letters
                .with_label_values(&[&l.record.topic, l.reason])
                .inc();
        }
        Ok(())
    }
}
