//! Edge validation: each record of a batch parsed against the schemas
//! before the sink sees it; a record refused keeps its index and why, for
//! the DLQ.

use vigie_core::SchemaRegistry;
use vigie_kafka::Batch;
use vigie_kafka::record::Record;

use super::Runtime;
use crate::sink::Accepted;

/// A record refused at the edge: its index in the batch and why.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) index: usize,
    pub(super) reason: &'static str,
    pub(super) error: String,
}

/// A batch split into valid events and records refused at the edge.
#[derive(Debug, Default)]
pub(super) struct Checked {
    pub(super) batch: Batch,
    pub(super) accepted: Vec<Accepted>,
    pub(super) refused: Vec<Refused>,
    /// The batch was collected full: a backlog is likely waiting.
    pub(super) full: bool,
}

impl Checked {
    fn validate(batch: Batch, schemas: &SchemaRegistry, max_record_bytes: usize) -> Self {
        let mut accepted = Vec::with_capacity(batch.len());
        let mut refused = Vec::new();
        for (index, record) in batch.records.iter().enumerate() {
            let mut refuse = |reason: &'static str, error: String| {
                refused.push(Refused {
                    index,
                    reason,
                    error,
                });
            };
            let Some(payload) = record.payload.as_deref() else {
                refuse(EMPTY_PAYLOAD, "record has no value".into());
                continue;
            };
            if payload.len() > max_record_bytes {
                refuse(
                    OVERSIZED,
                    format!(
                        "record of {} bytes exceeds max_record_bytes = {max_record_bytes}",
                        payload.len(),
                    ),
                );
                continue;
            }
            match schemas.parse(payload) {
                Ok(event) => accepted.push(Accepted {
                    index,
                    partition: record.partition,
                    event,
                }),
                Err(e) => refuse(e.kind().as_str(), e.to_string()),
            }
        }
        Self {
            batch,
            accepted,
            refused,
            full: false,
        }
    }

    /// Keeps only the records `keep` selects, with their verdicts.
    pub(super) fn retain(&mut self, keep: impl Fn(&Record) -> bool) {
        let records = &self.batch.records;
        let mut new_index = vec![usize::MAX; records.len()];
        let mut kept = 0;
        for (i, r) in records.iter().enumerate() {
            if keep(r) {
                new_index[i] = kept;
                kept += 1;
            }
        }
        if kept == records.len() {
            return;
        }
        let mut i = 0;
        self.batch.records.retain(|_| {
            i += 1;
            new_index[i - 1] != usize::MAX
        });
        let remap = |index: &mut usize| {
            let n = new_index[*index];
            *index = n;
            n != usize::MAX
        };
        self.accepted.retain_mut(|a| remap(&mut a.index));
        self.refused.retain_mut(|r| remap(&mut r.index));
    }
}

/// Dead-letter reason of a record without a value.
pub(super) const EMPTY_PAYLOAD: &str = "empty_payload";
/// Dead-letter reason of a record over `max_record_bytes`.
pub(super) const OVERSIZED: &str = "oversized";

/// Stage name in DLQ headers for records refused at the edge.
pub const STAGE_VALIDATE: &str = "validate";

impl Runtime {
    /// Validates a batch at the edge, on a blocking thread (JSON decoding is
    /// the consumer's main CPU cost, and may overlap another batch's write).
    pub(super) async fn check(&self, batch: Batch) -> Checked {
        let schemas = self.schemas.clone();
        let max_record_bytes = self.consumer.max_record_bytes;
        let full = batch.len() >= self.consumer.batch_max_records;
        let mut checked = tokio::task::spawn_blocking(move || {
            Checked::validate(batch, &schemas, max_record_bytes)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        checked.full = full;
        checked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64, payload: &[u8]) -> Record {
        Record {
            topic: "t".into(),
            partition,
            offset,
            key: None,
            payload: Some(payload.to_vec()),
            headers: vec![],
            timestamp_ms: None,
        }
    }

    fn valid(i: u64) -> Vec<u8> {
        let generator =
            vigie_simulator::CaseGenerator::new(vigie_simulator::CaseGenConfig::default()).unwrap();
        vigie_simulator::case_envelope(&generator, i, chrono::Utc::now())
            .to_json_bytes()
            .unwrap()
    }

    #[test]
    fn retain_keeps_each_verdict_with_its_record() {
        let schemas = SchemaRegistry::embedded().unwrap();
        // Partition 0: valid, bad, valid; partition 1: bad, valid, valid.
        let batch = Batch {
            records: vec![
                record(0, 0, &valid(0)),
                record(1, 0, b"{not json"),
                record(0, 1, b"{\"id\": 1}"),
                record(1, 1, &valid(1)),
                record(0, 2, &valid(2)),
                record(1, 2, &valid(3)),
            ],
            group: None,
        };
        let mut checked = Checked::validate(batch, &schemas, 1 << 20);
        assert_eq!(checked.accepted.len(), 4);
        assert_eq!(checked.refused.len(), 2);
        checked.retain(|r| r.partition == 1);
        let offsets: Vec<i64> = checked.batch.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [0, 1, 2]);
        assert!(checked.batch.records.iter().all(|r| r.partition == 1));
        // Every verdict still points at its own record.
        let refused: Vec<usize> = checked.refused.iter().map(|r| r.index).collect();
        assert_eq!(refused, [0]);
        assert_eq!(checked.refused[0].reason, "invalid_json");
        for a in &checked.accepted {
            let payload = checked.batch.records[a.index].payload.as_deref().unwrap();
            assert_eq!(schemas.parse(payload).unwrap().id(), a.event.id());
        }
        assert_eq!(checked.accepted.len(), 2);
        // Keeping everything changes nothing.
        checked.retain(|_| true);
        assert_eq!(checked.batch.len(), 3);
    }
}
