//! A consumer-group member that hands out batches and commits them only
//! after their effects are durable.
//!
//! Rebalances: librdkafka runs the rebalance callbacks inside `recv`, so
//! they can only happen while a batch is being *collected* (by
//! [`BatchConsumer::next_batch`] or [`BatchConsumer::ready_batch`]), never
//! while one is being written. When partitions are revoked mid-collection,
//! their records already collected are dropped from the batch, even if the
//! same partitions come back in the same rebalance: nothing of them was
//! applied or committed, so the partition's owner reads them again from the
//! last commit. A caller that collects a batch ahead while holding another
//! one not yet written drops that one's revoked records too
//! ([`BatchConsumer::revoked_since`]). Nothing committed is lost or repeated.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cluster::Cluster;
use crate::config::ConsumerConfig;
use crate::error::KafkaError;
use crate::metrics::KafkaMetrics;
use crate::record::Record;
use crate::transaction::GroupMetadata;

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// `offsets` (an offset per partition) as librdkafka's partition list.
pub(crate) fn offset_list(
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    Ok(tpl)
}

/// Assignment changes seen by the rebalance callbacks.
#[derive(Debug, Default)]
struct RebalanceState {
    /// Partitions currently assigned to this member.
    assigned: BTreeSet<TopicPartition>,
    /// Every revocation, in order: a batch drops the records of the
    /// partitions revoked after its records were fetched. Rebalances are
    /// rare, so the log stays small.
    revoked: Vec<TopicPartition>,
    /// Incremented on every assignment.
    generation: u64,
}

/// The partitions assigned to a member, as its rebalance callbacks last
/// left them.
#[derive(Debug, Clone)]
pub struct Assignment(Arc<Mutex<RebalanceState>>);

impl Assignment {
    /// Partitions currently assigned to the member.
    pub fn partitions(&self) -> BTreeSet<TopicPartition> {
        self.0
            .lock()
            .expect("rebalance state lock")
            .assigned
            .clone()
    }
}

/// Consumer context: records assignment changes for the batch loop.
#[derive(Debug, Clone)]
pub struct GroupContext {
    state: Arc<Mutex<RebalanceState>>,
    /// `vigie_consumer_assigned_partitions` of this member's group.
    assigned_gauge: prometheus::IntGauge,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions(tpl);
            info!(partitions = ?revoked, "Partitions revoked");
            let mut s = self.state.lock().expect("rebalance state lock");
            for tp in revoked {
                s.assigned.remove(&tp);
                s.revoked.push(tp);
            }
            self.assigned_gauge.set(s.assigned.len() as i64);
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = partitions(tpl);
                info!(partitions = ?assigned, "Partitions assigned");
                let mut s = self.state.lock().expect("rebalance state lock");
                s.generation += 1;
                s.assigned.extend(assigned);
                self.assigned_gauge.set(s.assigned.len() as i64);
            }
            Rebalance::Error(e) => warn!(error = %e, "Rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// Records read from the group, in order per partition.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// The records.
    pub records: Vec<Record>,
    /// The member's group membership once the batch was collected, for a
    /// transaction that commits the batch's offsets: refused by the broker
    /// if the group has rebalanced since. `None` outside a group.
    pub group: Option<GroupMetadata>,
}

impl Batch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The offset to commit for every partition in the batch: one past the
    /// last record read.
    pub fn next_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            let e = m
                .entry((r.topic.clone(), r.partition))
                .or_insert(r.offset + 1);
            *e = (*e).max(r.offset + 1);
        }
        m
    }

    /// The offset of the batch's first record of every partition in it.
    pub fn first_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            let e = m.entry((r.topic.clone(), r.partition)).or_insert(r.offset);
            *e = (*e).min(r.offset);
        }
        m
    }
}

/// A member of a consumer group that yields batches by size or time.
pub struct BatchConsumer {
    consumer: StreamConsumer<GroupContext>,
    context: GroupContext,
    config: ConsumerConfig,
    metrics: KafkaMetrics,
}

impl std::fmt::Debug for BatchConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchConsumer")
            .field("group", &self.config.group_id)
            .field("topics", &self.config.topics)
            .finish_non_exhaustive()
    }
}

impl BatchConsumer {
    /// Creates the consumer and subscribes to the configured topics.
    pub fn new(
        cluster: &Cluster,
        config: ConsumerConfig,
        metrics: KafkaMetrics,
    ) -> Result<Self, KafkaError> {
        config.validate()?;
        let context = GroupContext {
            state: Arc::default(),
            assigned_gauge: metrics.assigned.with_label_values(&[&config.group_id]),
        };
        let consumer: StreamConsumer<GroupContext> = config
            .client_config(cluster)
            .create_with_context(context.clone())
            .map_err(KafkaError::creation)?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Self {
            consumer,
            context,
            config,
            metrics,
        })
    }

    /// The group id.
    pub fn group_id(&self) -> &str {
        &self.config.group_id
    }

    /// The settings this consumer runs with.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Partitions currently assigned to this member.
    pub fn assigned(&self) -> BTreeSet<TopicPartition> {
        self.assignment().partitions()
    }

    /// A handle on this member's assignment that outlives a borrow of the
    /// consumer (the lag exporter's task reads it).
    pub fn assignment(&self) -> Assignment {
        Assignment(self.context.state.clone())
    }

    /// A number that changes whenever partitions are assigned to this member.
    pub fn assignment_generation(&self) -> u64 {
        self.context
            .state
            .lock()
            .expect("rebalance state lock")
            .generation
    }

    /// Moves the next fetch of an assigned partition to `offset`.
    pub fn seek(&self, tp: &TopicPartition, offset: i64) -> Result<(), KafkaError> {
        self.consumer
            .seek(&tp.0, tp.1, Offset::Offset(offset), Duration::from_secs(10))
            .map_err(KafkaError::Client)
    }

    /// Moves the next fetch of an assigned partition to where
    /// `auto.offset.reset` points: its first record for `earliest` (the
    /// default), past its last for `latest`.
    pub fn seek_to_reset(&self, tp: &TopicPartition) -> Result<(), KafkaError> {
        let to = if self.config.auto_offset_reset == "latest" {
            Offset::End
        } else {
            Offset::Beginning
        };
        self.consumer
            .seek(&tp.0, tp.1, to, Duration::from_secs(10))
            .map_err(KafkaError::Client)
    }

    /// The partition's high watermark: the offset after its last record.
    /// A blocking broker round trip, bounded by 10 s.
    pub fn high_watermark(&self, tp: &TopicPartition) -> Result<i64, KafkaError> {
        self.consumer
            .fetch_watermarks(&tp.0, tp.1, Duration::from_secs(10))
            .map(|(_, high)| high)
            .map_err(KafkaError::Client)
    }

    /// A mark in the revocation log, for [`Self::revoked_since`].
    pub fn revocation_mark(&self) -> usize {
        self.context
            .state
            .lock()
            .expect("rebalance state lock")
            .revoked
            .len()
    }

    /// The partitions revoked since `mark` (even if assigned again since):
    /// records of them fetched before the mark must not be written, their
    /// partitions are read again from the last commit.
    pub fn revoked_since(&self, mark: usize) -> BTreeSet<TopicPartition> {
        let s = self.context.state.lock().expect("rebalance state lock");
        s.revoked
            .get(mark..)
            .unwrap_or_default()
            .iter()
            .cloned()
            .collect()
    }

    /// Drops from `batch` the records of partitions revoked since `mark`,
    /// moves `mark` to now, and returns how many records went.
    pub fn drop_revoked(&self, batch: &mut Batch, mark: &mut usize) -> usize {
        // Callbacks run only inside this thread's poll: nothing is revoked
        // between these two reads.
        let revoked = self.revoked_since(*mark);
        *mark = self.revocation_mark();
        if revoked.is_empty() || batch.is_empty() {
            return 0;
        }
        let before = batch.len();
        batch.records.retain(|r| {
            !revoked
                .iter()
                .any(|(t, p)| *p == r.partition && *t == r.topic)
        });
        let dropped = before - batch.len();
        if dropped > 0 {
            debug!(dropped, "Released in-flight records of revoked partitions");
            self.metrics
                .rebalance_dropped
                .with_label_values(&[&self.config.group_id])
                .inc_by(dropped as u64);
        }
        dropped
    }

    /// Collects the next batch: up to `batch_max_records` records, closed
    /// `batch_max_wait_ms` after its first record or as soon as no record
    /// has come for `batch_linger_ms`, whichever is first. Returns
    /// `Ok(None)` once `shutdown` is cancelled and nothing is in flight; a
    /// batch already begun is returned so it can be finished and
    /// committed.
    pub async fn next_batch(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Batch>, KafkaError> {
        let mut batch = Batch::default();
        let mut mark = self.revocation_mark();
        let max_wait = Duration::from_millis(self.config.batch_max_wait_ms);
        let linger = Duration::from_millis(self.config.batch_linger_ms);
        let mut deadline: Option<Instant> = None;
        loop {
            if batch.len() >= self.config.batch_max_records {
                break;
            }
            let recv = async {
                match deadline {
                    Some(d) => {
                        let until = d.min(Instant::now() + linger);
                        tokio::time::timeout_at(until, self.consumer.recv())
                            .await
                            .ok()
                    }
                    None => Some(self.consumer.recv().await),
                }
            };
            let got = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                got = recv => got,
            };
            self.drop_revoked(&mut batch, &mut mark);
            match got {
                // The batch's time is up, or the stream paused.
                None => break,
                Some(got) => {
                    self.take(got, &mut batch);
                    if deadline.is_none() && !batch.is_empty() {
                        deadline = Some(Instant::now() + max_wait);
                    }
                }
            }
        }
        self.drop_revoked(&mut batch, &mut mark);
        if batch.is_empty() && shutdown.is_cancelled() {
            return Ok(None);
        }
        batch.group = self.group_metadata();
        Ok(Some(batch))
    }

    /// Collects, without waiting, up to `batch_max_records` records that
    /// the client already holds: the batch after one being written, while
    /// a backlog is drained. Empty when nothing is ready.
    pub fn ready_batch(&self) -> Batch {
        let mut batch = Batch::default();
        let mut mark = self.revocation_mark();
        while batch.len() < self.config.batch_max_records {
            let Some(got) = self.consumer.recv().now_or_never() else {
                break;
            };
            self.drop_revoked(&mut batch, &mut mark);
            self.take(got, &mut batch);
        }
        self.drop_revoked(&mut batch, &mut mark);
        batch.group = self.group_metadata();
        batch
    }

    /// The member id and generation now (see [`Batch::group`]).
    fn group_metadata(&self) -> Option<GroupMetadata> {
        self.consumer
            .group_metadata()
            .map(|m| GroupMetadata(Arc::new(m)))
    }

    fn take(
        &self,
        got: Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError>,
        batch: &mut Batch,
    ) {
        match got {
            Ok(m) => batch.records.push(Record::from_message(&m)),
            Err(e) => {
                self.metrics
                    .errors
                    .with_label_values(&["client", "consume"])
                    .inc();
                warn!(error = %e, "Consumer error");
            }
        }
    }

    /// Commits the batch's next offsets, synchronously. Call only once the
    /// batch's effects are durable.
    pub fn commit(&self, batch: &Batch) -> Result<(), KafkaError> {
        let offsets = batch.next_offsets();
        if offsets.is_empty() {
            return Ok(());
        }
        let tpl = offset_list(&offsets)?;
        self.consumer.commit(&tpl, CommitMode::Sync).map_err(|e| {
            self.metrics
                .errors
                .with_label_values(&["commit", "commit"])
                .inc();
            KafkaError::Commit(e)
        })?;
        self.count_consumed(batch);
        Ok(())
    }

    /// Counts a batch as consumed (`vigie_consumer_records_total`,
    /// `vigie_consumer_batches_total`): done by [`commit`](Self::commit),
    /// and by its caller for a batch committed in a transaction.
    pub fn count_consumed(&self, batch: &Batch) {
        let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &batch.records {
            *per_topic.entry(&r.topic).or_default() += 1;
        }
        for (topic, n) in per_topic {
            self.metrics
                .consumed
                .with_label_values(&[&self.config.group_id, topic])
                .inc_by(n);
        }
        self.metrics
            .batches
            .with_label_values(&[&self.config.group_id])
            .inc();
    }

    /// Leaves the group cleanly. Unsubscribing and polling once before the
    /// client is dropped makes librdkafka's close return at once (a plain
    /// drop after a manual commit was seen to hang on some brokers).
    pub async fn close(self) {
        self.consumer.unsubscribe();
        let _ = tokio::time::timeout(Duration::from_millis(200), self.consumer.recv()).await;
        let consumer = self.consumer;
        // librdkafka's close blocks; keep it off the async workers.
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    }

    /// The underlying client (metadata, watermarks).
    pub fn client(&self) -> &StreamConsumer<GroupContext> {
        &self.consumer
    }
}
