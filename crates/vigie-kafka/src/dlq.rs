//! Dead-letter publishing: what cannot be processed goes, bytes unchanged,
//! to the `<topic>.dlq` twin of its topic, with why and where it came from
//! in headers.

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
        struct Owned {
            topic: String,
            partition: String,
            offset: String,
        }
        let owned: Vec<Owned> = letters
            .iter()
            .map(|l| Owned {
                topic: dlq_topic(&l.record.topic),
                partition: l.record.partition.to_string(),
                offset: l.record.offset.to_string(),
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
                payload: l.record.payload.as_deref().unwrap_or_default(),
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
