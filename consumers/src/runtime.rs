//! The consumer loop shared by every sink: batch, validate at the edge,
//! write, dead-letter, commit; lag exported on the side; graceful stop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigie_core::SchemaRegistry;
use vigie_kafka::consumer::TopicPartition;
use vigie_kafka::record::Record;
use vigie_kafka::{
    Batch, BatchConsumer, ConsumerConfig, DeadLetter, DlqPublisher, EventProducer, KafkaError,
    KafkaMetrics, ProducerConfig, group_lag,
};

use crate::sink::{Accepted, BatchContext, Rejected, Rejects, Sink, SinkError};

/// The runtime's side of [`Rejects`]: dead letters for a batch's records.
struct BatchRejects<'a> {
    dlq: &'a DlqPublisher<'a>,
    batch: &'a Batch,
    stage: &'static str,
    /// Batch indices already published (a retried write may refuse them again).
    published: BTreeSet<usize>,
}

#[async_trait::async_trait]
impl Rejects for BatchRejects<'_> {
    async fn publish(&mut self, rejected: &[Rejected]) -> Result<(), SinkError> {
        let letters: Vec<DeadLetter<'_>> = rejected
            .iter()
            .map(|r| DeadLetter {
                record: &self.batch.records[r.index],
                reason: r.reason,
                error: r.error.clone(),
                stage: self.stage,
            })
            .collect();
        self.dlq
            .publish(&letters)
            .await
            .map_err(|e| SinkError::Retryable(format!("DLQ publish: {e}")))?;
        self.published.extend(rejected.iter().map(|r| r.index));
        Ok(())
    }
}

/// A record refused at the edge: its index in the batch and why.
#[derive(Debug)]
struct Refused {
    index: usize,
    reason: &'static str,
    error: String,
}

/// A batch split into valid events and records refused at the edge.
#[derive(Debug, Default)]
struct Checked {
    batch: Batch,
    accepted: Vec<Accepted>,
    refused: Vec<Refused>,
    /// The batch was collected full: a backlog is likely waiting.
    full: bool,
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
                refuse("empty_payload", "record has no value".into());
                continue;
            };
            if payload.len() > max_record_bytes {
                refuse(
                    "oversized",
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
    fn retain(&mut self, keep: impl Fn(&Record) -> bool) {
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

/// Stage name in DLQ headers for records refused at the edge.
pub const STAGE_VALIDATE: &str = "validate";

/// Metrics of a consumer component.
#[derive(Clone, Debug)]
pub struct ConsumerMetrics {
    /// Events written by the sink, by component.
    pub written: IntCounterVec,
    /// Seconds to process one batch (validate, write, DLQ, commit).
    pub batch_seconds: HistogramVec,
    /// Batch write retries, by component.
    pub retries: IntCounterVec,
}

impl ConsumerMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            written: IntCounterVec::new(
                Opts::new("vigie_sink_events_total", "Events written by a sink."),
                &["component"],
            )?,
            batch_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "vigie_consumer_batch_duration_seconds",
                    "Time to validate, write, dead-letter and commit one batch.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["component"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "vigie_sink_retries_total",
                    "Batch writes retried after a transient error.",
                ),
                &["component"],
            )?,
        };
        registry.register(Box::new(m.written.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        Ok(m)
    }
}

/// Why a consumer run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Kafka refused or failed (consume, DLQ publish, commit).
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The sink failed in a way retrying cannot fix; the batch was not committed.
    #[error("sink {component}: {source}")]
    Sink {
        /// The component.
        component: &'static str,
        /// The sink's error.
        source: SinkError,
    },
    /// The sink holds a next offset past the end of the partition: the topic
    /// was deleted and recreated, or the sink's store belongs to another
    /// cluster. Reading on would skip every new record, so the run stops.
    #[error(
        "the sink's store holds next offset {stored} for {topic}/{partition}, but the partition \
         ends at {high}: the topic was recreated or the store belongs to another cluster; \
         delete that group's stored offsets (or use a fresh database or group) to read it again"
    )]
    StoredOffsetAhead {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The next offset the store holds.
        stored: i64,
        /// The partition's high watermark.
        high: i64,
    },
}

/// What a run did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Records read and committed.
    pub consumed: u64,
    /// Events the sink accepted.
    pub written: u64,
    /// Records sent to the DLQ.
    pub dead_lettered: u64,
}

/// Everything a consumer component runs with.
#[derive(Debug)]
pub struct Runtime {
    /// Component name (the sink's name): metric label and DLQ stage.
    pub component: &'static str,
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer settings.
    pub consumer: ConsumerConfig,
    /// Producer settings for the DLQ.
    pub producer: ProducerConfig,
    /// Schemas to validate against.
    pub schemas: Arc<SchemaRegistry>,
    /// Kafka metrics.
    pub kafka_metrics: KafkaMetrics,
    /// Component metrics.
    pub metrics: ConsumerMetrics,
}

impl Runtime {
    /// Consumes until `shutdown`; then finishes and commits the batch in
    /// flight and leaves the group.
    pub async fn run(
        self,
        sink: &mut dyn Sink,
        shutdown: CancellationToken,
    ) -> Result<RunSummary, RunError> {
        let consumer = BatchConsumer::new(
            &self.brokers,
            self.consumer.clone(),
            self.kafka_metrics.clone(),
        )?;
        let producer =
            EventProducer::new(&self.brokers, &self.producer, self.kafka_metrics.clone())?;
        let lag_task = self.spawn_lag_exporter(shutdown.child_token());
        info!(
            component = self.component,
            group = %self.consumer.group_id,
            topics = ?self.consumer.topics,
            "Consumer started"
        );
        let result = self.consume(&consumer, &producer, sink, &shutdown).await;
        consumer.close().await;
        if let Some(t) = lag_task {
            t.abort();
        }
        if let Ok(s) = &result {
            info!(
                consumed = s.consumed,
                written = s.written,
                dead_lettered = s.dead_lettered,
                "Consumer stopped"
            );
        }
        result
    }

    async fn consume(
        &self,
        consumer: &BatchConsumer,
        producer: &EventProducer,
        sink: &mut dyn Sink,
        shutdown: &CancellationToken,
    ) -> Result<RunSummary, RunError> {
        let dlq = DlqPublisher::new(producer, self.kafka_metrics.clone());
        let group = self.consumer.group_id.as_str();
        let mut summary = RunSummary::default();
        // For a sink that stores offsets: the next offset it holds per
        // partition. Records below it were applied already and are skipped.
        let mut applied: Option<BTreeMap<TopicPartition, i64>> =
            self.stored_offsets(sink, shutdown).await?;
        let mut generation = consumer.assignment_generation();
        // While a backlog is drained, the batch after the one being written,
        // collected before the write and validated during it.
        let mut ahead: Option<Checked> = None;
        loop {
            let mut checked = match ahead.take() {
                Some(c) => c,
                None => match consumer.next_batch(shutdown).await? {
                    Some(batch) => self.check(batch).await,
                    None => break,
                },
            };
            if let Some(applied) = applied.as_mut() {
                let g = consumer.assignment_generation();
                if g != generation {
                    generation = g;
                    // Partitions (re)assigned: another member may have moved
                    // their stored offsets. Start each one from the store.
                    *applied = self
                        .stored_offsets(sink, shutdown)
                        .await?
                        .unwrap_or_default();
                    for tp in consumer.assigned() {
                        if let Some(next) = applied.get(&tp) {
                            check_not_ahead(consumer, &tp, *next)?;
                            match consumer.seek(&tp, *next) {
                                // The partition is read again from the stored
                                // offset: its in-flight records go.
                                Ok(()) => {
                                    checked.retain(|r| r.topic != tp.0 || r.partition != tp.1)
                                }
                                // Keep them: skipping what is applied (below)
                                // still holds, and nothing is lost.
                                Err(e) => {
                                    warn!(topic = %tp.0, partition = tp.1, offset = next, error = %e, "Seek to stored offset failed")
                                }
                            }
                        }
                    }
                }
                // A linear look-up over the few partitions held: no key
                // String allocated per record on this hot path.
                checked.retain(|r| {
                    applied
                        .iter()
                        .find(|((t, p), _)| *p == r.partition && *t == r.topic)
                        .is_none_or(|(_, next)| r.offset >= *next)
                });
            }
            // A full batch: more is likely waiting. Take what the client
            // already holds now, before writing (rebalance callbacks run only
            // while collecting), and validate it while this batch is written.
            let next = if checked.full && !shutdown.is_cancelled() {
                let mark = consumer.revocation_mark();
                let next = consumer.ready_batch();
                // Revoked meanwhile: this batch's records of those partitions
                // are read again from the last commit, so they go.
                let revoked = consumer.revoked_since(mark);
                if !revoked.is_empty() {
                    checked.retain(|r| {
                        !revoked
                            .iter()
                            .any(|(t, p)| *p == r.partition && *t == r.topic)
                    });
                }
                (!next.is_empty()).then_some(next)
            } else {
                None
            };
            if checked.batch.is_empty() {
                if let Some(next) = next {
                    ahead = Some(self.check(next).await);
                }
                continue;
            }
            let (step, next) = tokio::join!(
                self.apply(&checked, consumer, &dlq, sink, group, &applied, shutdown),
                async {
                    match next {
                        Some(n) => Some(self.check(n).await),
                        None => None,
                    }
                }
            );
            ahead = next;
            let (written, rejected) = step?;
            if let Some(applied) = applied.as_mut() {
                applied.extend(checked.batch.next_offsets());
            }
            summary.consumed += checked.batch.len() as u64;
            summary.written += written as u64;
            summary.dead_lettered += (checked.refused.len() + rejected) as u64;
            if shutdown.is_cancelled() {
                break;
            }
        }
        Ok(summary)
    }

    /// Dead-letters, writes and commits one checked batch; returns how many
    /// events the sink wrote and how many it refused.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        checked: &Checked,
        consumer: &BatchConsumer,
        dlq: &DlqPublisher<'_>,
        sink: &mut dyn Sink,
        group: &str,
        applied: &Option<BTreeMap<TopicPartition, i64>>,
        shutdown: &CancellationToken,
    ) -> Result<(usize, usize), RunError> {
        let started = Instant::now();
        let batch = &checked.batch;
        // Dead letters first: once the sink commits, this batch is never
        // read again, so they must already be safe.
        let dead: Vec<DeadLetter<'_>> = checked
            .refused
            .iter()
            .map(|r| DeadLetter {
                record: &batch.records[r.index],
                reason: r.reason,
                error: r.error.clone(),
                stage: STAGE_VALIDATE,
            })
            .collect();
        dlq.publish(&dead).await?;
        let next_offsets = batch.next_offsets();
        let ctx = BatchContext {
            group,
            next_offsets: &next_offsets,
        };
        let mut rejects = BatchRejects {
            dlq,
            batch,
            stage: self.component,
            published: BTreeSet::new(),
        };
        let written = match self
            .write_with_retry(sink, &checked.accepted, &ctx, &mut rejects, shutdown)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                // Nothing of this batch is committed: a restart reads it again.
                warn!(component = self.component, error = %e, "Sink failed; stopping without committing");
                self.kafka_metrics
                    .errors
                    .with_label_values(&["sink", self.component])
                    .inc();
                return Err(RunError::Sink {
                    component: self.component,
                    source: e,
                });
            }
        };
        match consumer.commit(batch) {
            Ok(()) => {}
            // The store holds the offsets: Kafka's copy only feeds the
            // lag metric, and the next commit repairs it.
            Err(e) if applied.is_some() => {
                warn!(error = %e, "Kafka commit failed; the sink's stored offsets stand")
            }
            Err(e) => return Err(e.into()),
        }
        self.metrics
            .written
            .with_label_values(&[self.component])
            .inc_by(written as u64);
        self.metrics
            .batch_seconds
            .with_label_values(&[self.component])
            .observe(started.elapsed().as_secs_f64());
        Ok((written, rejects.published.len()))
    }

    /// Logs and counts a transient sink failure, then waits `delay` (cut
    /// short by shutdown) and doubles it, up to 10 s.
    async fn back_off(
        &self,
        what: &str,
        error: &str,
        delay: &mut Duration,
        shutdown: &CancellationToken,
    ) {
        warn!(
            component = self.component,
            error,
            ?delay,
            "{what} failed; retrying"
        );
        self.metrics
            .retries
            .with_label_values(&[self.component])
            .inc();
        tokio::select! {
            _ = tokio::time::sleep(*delay) => {}
            _ = shutdown.cancelled() => {}
        }
        *delay = (*delay * 2).min(Duration::from_secs(10));
    }

    /// The sink's stored offsets, retrying transient failures.
    async fn stored_offsets(
        &self,
        sink: &mut dyn Sink,
        shutdown: &CancellationToken,
    ) -> Result<Option<BTreeMap<TopicPartition, i64>>, RunError> {
        let mut delay = Duration::from_millis(100);
        loop {
            match sink.stored_offsets(&self.consumer.group_id).await {
                Ok(o) => return Ok(o),
                Err(SinkError::Retryable(e)) if !shutdown.is_cancelled() => {
                    self.back_off("Reading stored offsets", &e, &mut delay, shutdown)
                        .await;
                }
                Err(e) => {
                    return Err(RunError::Sink {
                        component: self.component,
                        source: e,
                    });
                }
            }
        }
    }

    /// Validates a batch at the edge, on a blocking thread (JSON decoding is
    /// the consumer's main CPU cost, and may overlap another batch's write).
    async fn check(&self, batch: Batch) -> Checked {
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

    async fn write_with_retry(
        &self,
        sink: &mut dyn Sink,
        events: &[Accepted],
        ctx: &BatchContext<'_>,
        rejects: &mut dyn Rejects,
        shutdown: &CancellationToken,
    ) -> Result<usize, SinkError> {
        let mut delay = Duration::from_millis(100);
        loop {
            match sink.write(events, ctx, rejects).await {
                Err(SinkError::Retryable(e)) if !shutdown.is_cancelled() => {
                    self.back_off("Sink write", &e, &mut delay, shutdown).await;
                }
                other => return other,
            }
        }
    }

    fn spawn_lag_exporter(&self, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        if self.consumer.lag_interval_ms == 0 {
            return None;
        }
        let brokers = self.brokers.clone();
        let group = self.consumer.group_id.clone();
        let topics = self.consumer.topics.clone();
        let metrics = self.kafka_metrics.clone();
        let every = Duration::from_millis(self.consumer.lag_interval_ms);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match group_lag(&brokers, &group, &topics, Duration::from_secs(5)).await {
                    Ok(lags) => vigie_kafka::lag::export(&metrics, &group, &lags),
                    Err(e) => {
                        metrics
                            .errors
                            .with_label_values(&[e.error_type(), "lag"])
                            .inc();
                        warn!(error = %e, "Lag reading failed");
                    }
                }
            }
        }))
    }
}

/// Fails when the sink's stored next offset for `tp` lies past the
/// partition's end. A failed watermark query is only logged: the check
/// guards against a misconfiguration and must not stop a healthy stream.
fn check_not_ahead(
    consumer: &BatchConsumer,
    tp: &TopicPartition,
    next: i64,
) -> Result<(), RunError> {
    match consumer.high_watermark(tp) {
        Ok(high) if next > high => Err(RunError::StoredOffsetAhead {
            topic: tp.0.clone(),
            partition: tp.1,
            stored: next,
            high,
        }),
        Ok(_) => Ok(()),
        Err(e) => {
            warn!(topic = %tp.0, partition = tp.1, error = %e, "Could not read the high watermark");
            Ok(())
        }
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
