//! The consumer loop shared by every sink: batch, validate at the edge,
//! write, dead-letter, commit; lag exported on the side; graceful stop.
//!
//! The edge validation is in `validate`, the metrics and the lag exporter
//! in `metrics`.

mod metrics;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigie_core::SchemaRegistry;
use vigie_kafka::consumer::TopicPartition;
use vigie_kafka::{
    Batch, BatchConsumer, Cluster, ConsumerConfig, DeadLetter, DlqPublisher, EventProducer,
    KafkaError, KafkaMetrics, ProducerConfig,
};

pub use self::metrics::ConsumerMetrics;
use self::validate::Checked;
pub use self::validate::STAGE_VALIDATE;
use crate::sink::{
    Accepted, BatchContext, Outbox, OutboxLetter, Rejected, Rejects, Sink, SinkError,
};

/// The runtime's side of [`Rejects`]: dead letters for a batch's records.
struct BatchRejects<'a> {
    dlq: &'a DlqPublisher<'a>,
    batch: &'a Batch,
    stage: &'static str,
    /// Batch indices already published (a retried write may refuse them again).
    published: BTreeSet<usize>,
    /// The letters handed to the sink by [`Rejects::letters`], by batch
    /// index: counted once a sink that publishes them in its transaction
    /// has committed.
    handed: BTreeMap<usize, vigie_kafka::dlq::Letter>,
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

    fn letters(&mut self, rejected: &[Rejected]) -> Vec<OutboxLetter> {
        self.published.extend(rejected.iter().map(|r| r.index));
        let letters: Vec<OutboxLetter> = rejected
            .iter()
            .map(|r| {
                outbox_letter(
                    self.dlq,
                    &DeadLetter {
                        record: &self.batch.records[r.index],
                        reason: r.reason,
                        error: r.error.clone(),
                        stage: self.stage,
                    },
                )
            })
            .collect();
        for (r, l) in rejected.iter().zip(&letters) {
            self.handed.insert(r.index, l.letter.clone());
        }
        letters
    }
}

/// The outbox letter of `dead`.
fn outbox_letter(dlq: &DlqPublisher<'_>, dead: &DeadLetter<'_>) -> OutboxLetter {
    let r = dead.record;
    OutboxLetter {
        origin: (r.topic.clone(), r.partition, r.offset),
        letter: dlq.letter(dead),
        stored_ms: 0,
    }
}

/// Where the dead-letter outbox of a sink that has one stands.
#[derive(Debug, Clone, Copy)]
struct OutboxState {
    /// Letters may be waiting in the outbox.
    pending: bool,
    /// Some of them may be published already: after a start, a rebalance
    /// or a failed publish. The DLQ topics are read before publishing.
    uncertain: bool,
}

/// Why a consumer run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Kafka refused or failed (consume, DLQ publish, commit).
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The sink failed in a way retrying cannot fix; the batch was not committed.
    #[error("sink {component}")]
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

/// One checked batch for [`Runtime::apply`], and what applying it takes.
struct Apply<'a> {
    /// The batch, validated.
    checked: &'a Checked,
    /// The consumer that read it, to commit it.
    consumer: &'a BatchConsumer,
    /// Where refused records go.
    dlq: &'a DlqPublisher<'a>,
    /// The sink to write to.
    sink: &'a mut dyn Sink,
    /// The consumer group.
    group: &'a str,
    /// For a sink that stores offsets: the next offset it holds per partition.
    applied: &'a Option<BTreeMap<TopicPartition, i64>>,
    /// The sink keeps dead letters in its outbox.
    outbox: bool,
    /// Cuts retries short.
    shutdown: &'a CancellationToken,
}

/// Everything a consumer component runs with.
#[derive(Debug)]
pub struct Runtime {
    /// Component name (the sink's name): metric label and DLQ stage.
    pub component: &'static str,
    /// The cluster: bootstrap servers and connection (security) properties.
    pub cluster: Cluster,
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
        self.initialise_counters();
        self.align_committed(sink, &shutdown).await?;
        let consumer = BatchConsumer::new(
            &self.cluster,
            self.consumer.clone(),
            self.kafka_metrics.clone(),
        )?;
        let producer =
            EventProducer::new(&self.cluster, &self.producer, self.kafka_metrics.clone())?;
        let lag_task = self.spawn_lag_exporter(consumer.assignment(), shutdown.child_token());
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
        let group = self.consumer.group_id.as_str();
        let dlq = DlqPublisher::new(producer, self.kafka_metrics.clone()).for_group(group);
        let letters = sink.outbox();
        let mut outbox = letters.as_ref().map(|_| OutboxState {
            pending: true,
            uncertain: true,
        });
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
                None => {
                    // Letters still waiting go out before the wait for more.
                    if let (Some(o), Some(l)) = (outbox.as_mut(), &letters)
                        && o.pending
                    {
                        *o = self.flush_outbox(consumer, &**l, &dlq, *o).await;
                    }
                    match consumer.next_batch(shutdown).await? {
                        Some(batch) => self.check(batch).await,
                        None => break,
                    }
                }
            };
            if let Some(applied) = applied.as_mut() {
                let g = consumer.assignment_generation();
                if g != generation {
                    generation = g;
                    // Partitions (re)assigned: another member may have moved
                    // their stored offsets. Start each one from the store.
                    self.resync(consumer, sink, shutdown, applied, &mut checked)
                        .await?;
                    // Letters of the partitions now held may be waiting,
                    // some published by their previous owner.
                    if let Some(o) = outbox.as_mut() {
                        *o = OutboxState {
                            pending: true,
                            uncertain: true,
                        };
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
            // The letters of the batches before go out while this one is
            // written: the outbox is a handle apart from the sink, and a
            // letter is deleted from it only once published.
            let flushing = match (outbox, &letters) {
                (Some(o), Some(l)) if o.pending => Some((o, &**l)),
                _ => None,
            };
            let (step, next, flushed) = tokio::join!(
                self.apply(Apply {
                    checked: &checked,
                    consumer,
                    dlq: &dlq,
                    sink,
                    group,
                    applied: &applied,
                    outbox: outbox.is_some(),
                    shutdown,
                }),
                async {
                    match next {
                        Some(n) => Some(self.check(n).await),
                        None => None,
                    }
                },
                async {
                    match flushing {
                        Some((o, l)) => Some(self.flush_outbox(consumer, l, &dlq, o).await),
                        None => None,
                    }
                }
            );
            ahead = next;
            if let (Some(o), Some(f)) = (outbox.as_mut(), flushed) {
                *o = f;
            }
            let Some((written, rejected)) = step? else {
                // Fenced: another member moved a partition of this batch
                // on, or this batch's own earlier attempt committed before
                // an error had it retried. Nothing more was written; every
                // assigned partition goes on from the store.
                let Some(applied) = applied.as_mut() else {
                    // Committed in a Kafka transaction, which the broker
                    // refused: the group rebalanced since the batch was
                    // collected. The batch collected ahead dates from
                    // before too. A partition this member still holds is
                    // read again from the batch's first record; the
                    // others are their new owners'.
                    ahead = None;
                    rewind(consumer, &checked.batch);
                    continue;
                };
                {
                    let mut in_flight = ahead.take().unwrap_or_default();
                    self.resync(consumer, sink, shutdown, applied, &mut in_flight)
                        .await?;
                    ahead = (!in_flight.batch.is_empty()).then_some(in_flight);
                    // The records of the batch the store now holds, on the
                    // partitions still this member's, were consumed by it
                    // (its earlier attempt committed): they are not read
                    // again. Those of a partition that moved are the new
                    // owner's.
                    let mine = consumer.assigned();
                    summary.consumed += checked
                        .batch
                        .records
                        .iter()
                        .filter(|r| {
                            let tp = (r.topic.clone(), r.partition);
                            mine.contains(&tp)
                                && applied.get(&tp).is_some_and(|next| r.offset < *next)
                        })
                        .count() as u64;
                }
                if let Some(o) = outbox.as_mut() {
                    *o = OutboxState {
                        pending: true,
                        uncertain: true,
                    };
                }
                continue;
            };
            if let Some(o) = outbox.as_mut() {
                // Published during the next write, or before the wait for it.
                o.pending |= !checked.refused.is_empty() || rejected > 0;
            }
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
        if let (Some(o), Some(l)) = (outbox, &letters)
            && o.pending
        {
            self.flush_outbox(consumer, &**l, &dlq, o).await;
        }
        Ok(summary)
    }

    /// After a rebalance, for a sink that stores offsets: reads the stored
    /// offsets again into `applied` and seeks each assigned partition to
    /// its own, dropping from `checked` the in-flight records of the
    /// partitions sought. The store alone decides: a partition it holds no
    /// offset for starts where `auto.offset.reset` points, never at the
    /// group's offset committed in Kafka (which feeds only the lag).
    async fn resync(
        &self,
        consumer: &BatchConsumer,
        sink: &mut dyn Sink,
        shutdown: &CancellationToken,
        applied: &mut BTreeMap<TopicPartition, i64>,
        checked: &mut Checked,
    ) -> Result<(), RunError> {
        *applied = self
            .stored_offsets(sink, shutdown)
            .await?
            .unwrap_or_default();
        for tp in consumer.assigned() {
            let sought = match applied.get(&tp) {
                Some(next) => {
                    check_not_ahead(consumer, &tp, *next)?;
                    consumer.seek(&tp, *next)
                }
                None => consumer.seek_to_reset(&tp),
            };
            match sought {
                // The partition is read again from the stored offset (or
                // the reset point): its in-flight records go.
                Ok(()) => checked.retain(|r| r.topic != tp.0 || r.partition != tp.1),
                // Keep them: skipping what is applied (in `consume`) still
                // holds. A partition without a stored offset then goes on
                // from Kafka's committed offset; the failure is logged.
                Err(e) => {
                    warn!(topic = %tp.0, partition = tp.1, stored = ?applied.get(&tp), error = %e, "Seek to the stored offset failed")
                }
            }
        }
        Ok(())
    }

    /// Dead-letters, writes and commits one checked batch; returns how many
    /// events the sink wrote and how many it refused, or `None` when the
    /// sink was fenced (nothing written, nothing committed).
    async fn apply(&self, args: Apply<'_>) -> Result<Option<(usize, usize)>, RunError> {
        let Apply {
            checked,
            consumer,
            dlq,
            sink,
            group,
            applied,
            outbox,
            shutdown,
        } = args;
        let started = Instant::now();
        let batch = &checked.batch;
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
        // A sink with an outbox stores the letters with the batch, one that
        // commits in a transaction publishes them in it. For another, they
        // go first: once the sink commits, this batch is never read again,
        // so they must already be safe.
        let in_txn = sink.commits_in_transaction();
        let letters: Vec<OutboxLetter> = if outbox || in_txn {
            dead.iter().map(|d| outbox_letter(dlq, d)).collect()
        } else {
            dlq.publish(&dead).await?;
            Vec::new()
        };
        let next_offsets = batch.next_offsets();
        let assigned = consumer.assigned();
        let ctx = BatchContext {
            group,
            next_offsets: &next_offsets,
            assigned: &assigned,
            dead_letters: &letters,
            group_metadata: batch.group.as_ref(),
        };
        let mut rejects = BatchRejects {
            dlq,
            batch,
            stage: self.component,
            published: BTreeSet::new(),
            handed: BTreeMap::new(),
        };
        let written = match self
            .write_with_retry(sink, &checked.accepted, &ctx, &mut rejects, shutdown)
            .await
        {
            Ok(n) => n,
            Err(SinkError::Fenced(e)) => {
                warn!(component = self.component, error = %e, "Batch fenced; reading the stored offsets again");
                self.metrics
                    .fenced
                    .with_label_values(&[self.component])
                    .inc();
                return Ok(None);
            }
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
        if in_txn {
            // Committed with the sink's transaction.
            consumer.count_consumed(batch);
            let published: Vec<_> = letters
                .into_iter()
                .map(|l| l.letter)
                .chain(rejects.handed.into_values())
                .collect();
            dlq.count(&published);
        } else {
            self.commit(consumer, batch, applied)?;
        }
        self.metrics
            .written
            .with_label_values(&[self.component])
            .inc_by(written as u64);
        self.metrics
            .batch_seconds
            .with_label_values(&[self.component])
            .observe(started.elapsed().as_secs_f64());
        Ok(Some((written, rejects.published.len())))
    }

    /// Commits a written batch's offsets to the group.
    fn commit(
        &self,
        consumer: &BatchConsumer,
        batch: &vigie_kafka::Batch,
        applied: &Option<BTreeMap<TopicPartition, i64>>,
    ) -> Result<(), RunError> {
        match consumer.commit(batch) {
            Ok(()) => {}
            // The store holds the offsets: Kafka's copy only feeds the
            // lag metric, and the next commit repairs it.
            Err(e) if applied.is_some() => {
                warn!(error = %e, "Kafka commit failed; the sink's stored offsets stand")
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Publishes the letters waiting in the sink's outbox for the
    /// partitions held, then deletes them from it. When `state` is
    /// uncertain, the DLQ topics are read first and the letters found
    /// there are not published again. A failure is logged and leaves the
    /// letters for the next call: the stream goes on.
    async fn flush_outbox(
        &self,
        consumer: &BatchConsumer,
        outbox: &dyn Outbox,
        dlq: &DlqPublisher<'_>,
        state: OutboxState,
    ) -> OutboxState {
        let group = self.consumer.group_id.as_str();
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            warn!(component = self.component, error = %e, "Dead-letter outbox: {what} failed; trying again after the next batch");
            OutboxState {
                pending: true,
                uncertain: true,
            }
        };
        let assigned = consumer.assigned();
        if assigned.is_empty() {
            // Nothing held yet (or any more): the letters wait for the
            // partitions' next owner, this member included.
            return state;
        }
        let pending = match outbox.pending(group, &assigned).await {
            Ok(p) => p,
            Err(e) => return failed("reading", &e),
        };
        if pending.is_empty() {
            return OutboxState {
                pending: false,
                uncertain: false,
            };
        }
        let published = if state.uncertain {
            let topics = pending.iter().map(|l| l.letter.topic.clone()).collect();
            // Letters are published after they are stored; the margin
            // covers clock skew between the database and the broker.
            let since = pending.iter().map(|l| l.stored_ms).min().unwrap_or(0) - 60_000;
            let (cluster, g) = (self.cluster.clone(), group.to_owned());
            let found = tokio::task::spawn_blocking(move || {
                vigie_kafka::dlq::published_by_group(
                    &cluster,
                    &g,
                    &topics,
                    since,
                    Duration::from_secs(30),
                )
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            match found {
                Ok(found) => found,
                Err(e) => return failed("reading the DLQ topics", &e),
            }
        } else {
            Default::default()
        };
        let to_publish: Vec<vigie_kafka::dlq::Letter> = pending
            .iter()
            .filter(|l| !published.contains(&l.origin))
            .map(|l| l.letter.clone())
            .collect();
        if let Err(e) = dlq.publish_letters(&to_publish).await {
            return failed("publishing", &e);
        }
        let origins: Vec<_> = pending.into_iter().map(|l| l.origin).collect();
        if let Err(e) = outbox.published(group, &origins).await {
            return failed("recording as published", &e);
        }
        OutboxState {
            pending: false,
            uncertain: false,
        }
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

    /// For a sink that stores offsets, before joining the group: where
    /// Kafka's committed offset of a partition is ahead of the store's (the
    /// store was reset, or is new), commits the store's offset, or the
    /// `auto.offset.reset` point where the store has none, so that the
    /// members start there. The seek on assignment does the same, but it
    /// can race with the client's own fetch of the committed offset, and
    /// waits for a first record. Best effort: the broker refuses the commit
    /// while the group has running members, and then the seek remains.
    async fn align_committed(
        &self,
        sink: &mut dyn Sink,
        shutdown: &CancellationToken,
    ) -> Result<(), RunError> {
        let Some(stored) = self.stored_offsets(sink, shutdown).await? else {
            return Ok(());
        };
        let group = &self.consumer.group_id;
        let partitions = match vigie_kafka::group_lag(
            &self.cluster,
            group,
            &self.consumer.topics,
            Duration::from_secs(10),
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                warn!(component = self.component, error = %e, "Reading the group's committed offsets failed; the stored offsets are sought on assignment");
                return Ok(());
            }
        };
        let mut ahead = BTreeMap::new();
        for p in partitions {
            let tp = (p.topic, p.partition);
            let start = match stored.get(&tp) {
                Some(next) => *next,
                None if self.consumer.auto_offset_reset == "latest" => p.high_watermark,
                None => p.low_watermark,
            };
            if p.committed.is_some_and(|c| c > start) {
                ahead.insert(tp, start);
            }
        }
        if ahead.is_empty() {
            return Ok(());
        }
        match vigie_kafka::commit_group_offsets(&self.cluster, group, &ahead).await {
            Ok(()) => {
                info!(component = self.component, offsets = ?ahead, "Kafka's committed offsets moved back to the store's")
            }
            Err(e) => {
                warn!(component = self.component, error = %e, offsets = ?ahead, "Kafka's committed offsets are ahead of the store's and could not be moved; the stored offsets are sought on assignment")
            }
        }
        Ok(())
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
}

/// Seeks every partition of `batch` that `consumer` still holds back to
/// the batch's first record of it. A failed seek is logged: the partition
/// is then being revoked, and its next owner reads from the committed
/// offset.
fn rewind(consumer: &BatchConsumer, batch: &vigie_kafka::Batch) {
    let held = consumer.assigned();
    for (tp, offset) in batch
        .first_offsets()
        .iter()
        .filter(|(tp, _)| held.contains(tp))
    {
        if let Err(e) = consumer.seek(tp, *offset) {
            warn!(topic = %tp.0, partition = tp.1, offset, error = %e, "Seek back to the fenced batch failed");
        }
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
