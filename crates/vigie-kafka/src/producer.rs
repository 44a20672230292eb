//! The producer every Vigie component publishes with: idempotent,
//! `acks=all`, compressed, and with every delivery error surfaced.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::util::Timeout;
use slab::Slab;

use crate::cluster::Cluster;
use crate::config::ProducerConfig;
use crate::error::KafkaError;
use crate::metrics::KafkaMetrics;

/// One record to publish.
#[derive(Debug, Clone, Copy)]
pub struct OutRecord<'a> {
    /// Destination topic.
    pub topic: &'a str,
    /// Destination partition; `None` lets the partitioner choose from the
    /// key (what every component does; a restore keeps the archived one).
    pub partition: Option<i32>,
    /// Key: decides the partition, so the ordering and the spread.
    pub key: Option<&'a [u8]>,
    /// Value bytes; `None` is a tombstone (a delete on a compacted topic).
    pub payload: Option<&'a [u8]>,
    /// Headers, in order; a header may have no value.
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
    /// Timestamp in milliseconds since the epoch; `None` lets the client set it.
    pub timestamp_ms: Option<i64>,
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition written to.
    pub partition: i32,
    /// Offset assigned by the broker.
    pub offset: i64,
}

impl Delivered {
    /// A position not reported yet (only ever seen by a failed pipeline).
    const UNKNOWN: Self = Self {
        partition: -1,
        offset: -1,
    };
}

/// The librdkafka producer under an [`EventProducer`].
pub(crate) type Client = BaseProducer<Deliveries>;

/// An idempotent producer with a bounded in-flight window.
///
/// Delivery reports are not futures: the producer's polling thread hands
/// each one to `Deliveries`, which counts it against the [`Pipeline`] that
/// sent the record and wakes that pipeline only when what it waits for is
/// reached.
pub struct EventProducer {
    pub(crate) inner: Arc<Client>,
    /// Created with a `transactional.id`: every send belongs to a
    /// transaction.
    pub(crate) transactional: bool,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer").finish_non_exhaustive()
    }
}

impl EventProducer {
    /// Creates a producer from the `[kafka.producer]` settings; refuses an
    /// `extra` that would switch off one of its guarantees.
    pub fn new(
        cluster: &Cluster,
        config: &ProducerConfig,
        metrics: KafkaMetrics,
    ) -> Result<Self, KafkaError> {
        config.validate()?;
        Self::from_client_config(config.client_config(cluster), metrics)
    }

    /// A producer from a complete librdkafka configuration, with its
    /// polling thread.
    pub(crate) fn from_client_config(
        client: rdkafka::ClientConfig,
        metrics: KafkaMetrics,
    ) -> Result<Self, KafkaError> {
        let context = Deliveries {
            open: Mutex::new(Slab::new()),
            metrics,
        };
        let inner: Arc<Client> = Arc::new(
            client
                .create_with_context(context)
                .map_err(KafkaError::creation)?,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let poller = std::thread::Builder::new()
            .name("vigie-producer-poll".into())
            .spawn({
                let (inner, stop) = (Arc::clone(&inner), Arc::clone(&stop));
                move || {
                    // Serves delivery reports as they come. Each call lasts
                    // its whole timeout, so the timeout bounds how long a
                    // dropped producer waits for this thread (rdkafka's
                    // ThreadedProducer polls 100 ms at a time). rdkafka
                    // waits for events in whole milliseconds, truncated,
                    // until the call's deadline: the last fraction of a
                    // millisecond of every call spins. With 5 ms calls
                    // those spins took a quarter of a core while the
                    // PostgreSQL sink drained a backlog (perf); with
                    // 50 ms calls, about a tenth of that.
                    while !stop.load(Ordering::Relaxed) {
                        inner.poll(Self::POLL_SLICE);
                    }
                }
            })
            .map_err(|e| KafkaError::Config(format!("cannot start the producer's thread: {e}")))?;
        Ok(Self {
            inner,
            transactional: false,
            stop,
            poller: Some(poller),
        })
    }

    /// Created by [`transactional`](Self::transactional): sends belong to
    /// the open transaction.
    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// How long one call of the polling thread waits for delivery reports.
    const POLL_SLICE: Duration = Duration::from_millis(50);

    fn deliveries(&self) -> &Deliveries {
        self.inner.context()
    }

    fn enqueue(&self, r: &OutRecord<'_>, tag: usize) -> Result<(), rdkafka::error::KafkaError> {
        let mut rec = BaseRecord::<[u8], [u8], usize>::with_opaque_to(r.topic, tag);
        if let Some(v) = r.payload {
            rec = rec.payload(v);
        }
        if let Some(k) = r.key {
            rec = rec.key(k);
        }
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        if let Some(ts) = r.timestamp_ms {
            rec = rec.timestamp(ts);
        }
        if !r.headers.is_empty() {
            let mut hs = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in r.headers {
                hs = hs.insert(Header { key: k, value: *v });
            }
            rec = rec.headers(hs);
        }
        self.inner.send(rec).map_err(|(e, _)| e)
    }

    /// Publishes one record and waits for the broker's acknowledgement.
    pub async fn send(&self, record: OutRecord<'_>) -> Result<Delivered, KafkaError> {
        let n = self.send_all(std::iter::once(record)).await?;
        Ok(n.last().copied().expect("one record in, one delivery out"))
    }

    /// Publishes every record, keeping librdkafka's queue full, and returns
    /// once the broker has acknowledged all of them, in input order.
    ///
    /// If a delivery fails, the error of the first failed record in input
    /// order that is not a purge (a purge follows another failure) is
    /// returned, once every record has been acknowledged or has failed; so
    /// a caller that checkpoints must not advance past the input.
    pub async fn send_all<'a, I>(&self, records: I) -> Result<Vec<Delivered>, KafkaError>
    where
        I: IntoIterator<Item = OutRecord<'a>>,
    {
        let mut p = self.pipeline(true);
        for r in records {
            p.push(r).await?;
        }
        p.finish().await.map(|(_, d)| d)
    }

    /// A stream of sends with no pause between records: each record is
    /// handed to librdkafka (which copies it) as soon as it is pushed, and
    /// acknowledgements are counted as they come, without a task wake-up
    /// per record.
    pub fn pipeline(&self, collect: bool) -> Pipeline<'_> {
        let slot = self.deliveries().lock().insert(Slot {
            collect: collect.then(Vec::new),
            ..Slot::default()
        });
        Pipeline {
            producer: self,
            slot,
            topics: Vec::new(),
            pushed: 0,
            settled: 0,
            finished: false,
        }
    }

    /// Waits until everything queued is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner
            .flush(Timeout::After(timeout))
            .map_err(KafkaError::Client)
    }
}

impl Drop for EventProducer {
    /// Stops the polling thread; librdkafka's own drop then purges what is
    /// still queued, reporting it as failed to its pipelines.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(poller) = self.poller.take()
            && poller.join().is_err()
        {
            tracing::warn!("the producer's polling thread panicked");
        }
    }
}

/// Which pipeline a record belongs to, which of that pipeline's topics it
/// goes to, and its position in the pipeline: packed into the `usize` that
/// librdkafka carries with the record and returns with its delivery report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    slot: usize,
    topic: usize,
    seq: u64,
}

// The tag needs 64 bits; Vigie runs on 64-bit targets only.
const _: () = assert!(
    usize::BITS == 64,
    "delivery tags are packed into a 64-bit usize"
);

impl Tag {
    const SEQ_BITS: u32 = 40;
    const TOPIC_BITS: u32 = 8;
    const SLOT_BITS: u32 = 64 - Self::SEQ_BITS - Self::TOPIC_BITS;

    fn pack(self) -> Result<usize, KafkaError> {
        let over = |what: &str, bits: u32| {
            KafkaError::Config(format!(
                "a producer pipeline supports at most {} {what}",
                1u64 << bits
            ))
        };
        if self.slot >> Self::SLOT_BITS != 0 {
            return Err(over("pipelines open at once", Self::SLOT_BITS));
        }
        if self.topic >> Self::TOPIC_BITS != 0 {
            return Err(over("topics", Self::TOPIC_BITS));
        }
        if self.seq >> Self::SEQ_BITS != 0 {
            return Err(over("records", Self::SEQ_BITS));
        }
        Ok((self.slot << (Self::SEQ_BITS + Self::TOPIC_BITS))
            | (self.topic << Self::SEQ_BITS)
            | self.seq as usize)
    }

    fn unpack(tag: usize) -> Self {
        Self {
            slot: tag >> (Self::SEQ_BITS + Self::TOPIC_BITS),
            topic: (tag >> Self::SEQ_BITS) & ((1 << Self::TOPIC_BITS) - 1),
            seq: (tag & ((1 << Self::SEQ_BITS) - 1)) as u64,
        }
    }
}

/// The state of one open pipeline, updated by delivery reports.
#[derive(Default)]
struct Slot {
    /// Records acknowledged or failed.
    settled: u64,
    /// Acknowledged records per topic index.
    acked: Vec<u64>,
    /// Topic names, by index (only for the metrics).
    topics: Vec<String>,
    /// The failure of the earliest record in push order, with its position.
    failure: Option<(u64, KafkaError)>,
    /// Where each record landed, by position, when the pipeline collects.
    collect: Option<Vec<Delivered>>,
    /// The waiting pipeline's task, woken once `settled >= wake_at`.
    waker: Option<Waker>,
    wake_at: u64,
    /// Set when the pipeline was dropped before all its records settled:
    /// how many it pushed, so the last report can close the slot.
    abandoned_at: Option<u64>,
}

/// Producer context: routes each delivery report to its pipeline's slot.
pub(crate) struct Deliveries {
    open: Mutex<Slab<Slot>>,
    metrics: KafkaMetrics,
}

impl Deliveries {
    fn lock(&self) -> MutexGuard<'_, Slab<Slot>> {
        // A panic while holding the lock leaves counters, not broken invariants.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes a slot whose records have all settled: adds its acknowledged
    /// records to the metrics.
    fn close(&self, slot: Slot) {
        for (topic, n) in slot.topics.iter().zip(slot.acked) {
            self.metrics.produced.with_label_values(&[topic]).inc_by(n);
        }
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: usize) {
        let tag = Tag::unpack(tag);
        let mut open = self.lock();
        let Some(slot) = open.get_mut(tag.slot) else {
            // Unreachable: a slot stays open until all its records settled.
            return;
        };
        slot.settled += 1;
        match result {
            Ok(m) => {
                if let Some(acked) = slot.acked.get_mut(tag.topic) {
                    *acked += 1;
                }
                if let Some(positions) = &mut slot.collect {
                    let i = tag.seq as usize;
                    if positions.len() <= i {
                        positions.resize(i + 1, Delivered::UNKNOWN);
                    }
                    positions[i] = Delivered {
                        partition: m.partition(),
                        offset: m.offset(),
                    };
                }
            }
            Err((e, m)) => {
                self.metrics
                    .errors
                    .with_label_values(&["delivery", "produce"])
                    .inc();
                // A purge only follows another failure (librdkafka empties
                // the queues after it): the first failure that is not one
                // is the cause to report.
                let purged = |e: &rdkafka::error::KafkaError| {
                    matches!(
                        e.rdkafka_error_code(),
                        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                    )
                };
                let replace = match &slot.failure {
                    None => true,
                    Some((seq, KafkaError::Delivery { source, .. })) => {
                        let (was, is) = (purged(source), purged(e));
                        (was && !is) || (was == is && tag.seq < *seq)
                    }
                    Some((seq, _)) => tag.seq < *seq,
                };
                if replace {
                    slot.failure = Some((
                        tag.seq,
                        KafkaError::Delivery {
                            topic: m.topic().to_owned(),
                            source: e.clone(),
                        },
                    ));
                }
            }
        }
        let waker = if slot.settled >= slot.wake_at {
            slot.waker.take()
        } else {
            None
        };
        if slot.abandoned_at == Some(slot.settled) {
            let slot = open.remove(tag.slot);
            drop(open);
            self.close(slot);
        } else {
            drop(open);
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Records in flight; see [`EventProducer::pipeline`].
pub struct Pipeline<'p> {
    producer: &'p EventProducer,
    /// This pipeline's key in the producer's open slots.
    slot: usize,
    /// Distinct topics pushed to, so a record's tag holds an index.
    topics: Vec<String>,
    pushed: u64,
    /// Settled records as last read from the slot (a lower bound).
    settled: u64,
    finished: bool,
}

impl std::fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("pushed", &self.pushed)
            .finish_non_exhaustive()
    }
}

impl Pipeline<'_> {
    /// Most records awaiting acknowledgement before `push` waits.
    const MAX_PENDING: u64 = 200_000;

    /// Enqueues one record; waits only when librdkafka's queue is full or
    /// `Self::MAX_PENDING` records await acknowledgement.
    pub async fn push(&mut self, r: OutRecord<'_>) -> Result<(), KafkaError> {
        let topic = self.topic_index(r.topic);
        if self.pushed - self.settled >= Self::MAX_PENDING {
            self.settled_at_least(self.pushed - Self::MAX_PENDING + 1)
                .await;
        }
        let tag = Tag {
            slot: self.slot,
            topic,
            seq: self.pushed,
        }
        .pack()?;
        loop {
            match self.producer.enqueue(&r, tag) {
                Ok(()) => {
                    self.pushed += 1;
                    return Ok(());
                }
                Err(rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    // Wait for one of this pipeline's records instead of
                    // spinning; if none is in flight, the queue is full of
                    // another pipeline's records.
                    self.settled = self.producer.deliveries().lock()[self.slot].settled;
                    if self.settled < self.pushed {
                        self.settled_at_least(self.settled + 1).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Err(e) => {
                    self.producer
                        .deliveries()
                        .metrics
                        .errors
                        .with_label_values(&["delivery", "produce"])
                        .inc();
                    return Err(KafkaError::Delivery {
                        topic: r.topic.to_owned(),
                        source: e,
                    });
                }
            }
        }
    }

    fn topic_index(&mut self, topic: &str) -> usize {
        if let Some(i) = self.topics.iter().position(|t| t == topic) {
            return i;
        }
        self.topics.push(topic.to_owned());
        let mut open = self.producer.deliveries().lock();
        let slot = &mut open[self.slot];
        slot.topics.push(topic.to_owned());
        slot.acked.push(0);
        self.topics.len() - 1
    }

    /// Waits until at least `n` of this pipeline's records have settled.
    async fn settled_at_least(&mut self, n: u64) {
        let deliveries = self.producer.deliveries();
        let key = self.slot;
        self.settled = poll_fn(|cx| {
            let mut open = deliveries.lock();
            let slot = &mut open[key];
            if slot.settled >= n {
                Poll::Ready(slot.settled)
            } else {
                slot.wake_at = n;
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    /// Waits for every acknowledgement; returns how many records were
    /// acknowledged and, if collecting, where each landed, in push order.
    /// If any record failed, returns the failure of the earliest one that
    /// is not a purge (which only follows another failure).
    pub async fn finish(mut self) -> Result<(u64, Vec<Delivered>), KafkaError> {
        self.settled_at_least(self.pushed).await;
        self.finished = true;
        let deliveries = self.producer.deliveries();
        let mut slot = deliveries.lock().remove(self.slot);
        let failure = slot.failure.take();
        let collected = slot.collect.take().unwrap_or_default();
        let acked = slot.acked.iter().sum();
        deliveries.close(slot);
        match failure {
            Some((_, e)) => Err(e),
            None => Ok((acked, collected)),
        }
    }
}

impl Drop for Pipeline<'_> {
    /// A pipeline dropped before [`Pipeline::finish`] leaves its records to
    /// librdkafka; its slot closes with the last of their reports.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let deliveries = self.producer.deliveries();
        let mut open = deliveries.lock();
        if open[self.slot].settled == self.pushed {
            let slot = open.remove(self.slot);
            drop(open);
            deliveries.close(slot);
        } else {
            open[self.slot].abandoned_at = Some(self.pushed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_at_their_limits() {
        for tag in [
            Tag {
                slot: 0,
                topic: 0,
                seq: 0,
            },
            Tag {
                slot: 3,
                topic: 1,
                seq: 12_345,
            },
            Tag {
                slot: (1 << Tag::SLOT_BITS) - 1,
                topic: (1 << Tag::TOPIC_BITS) - 1,
                seq: (1 << Tag::SEQ_BITS) - 1,
            },
        ] {
            assert_eq!(Tag::unpack(tag.pack().unwrap()), tag);
        }
    }

    #[test]
    fn tags_out_of_range_are_refused_with_the_limit() {
        let ok = Tag {
            slot: 1,
            topic: 1,
            seq: 1,
        };
        let cases = [
            (
                Tag {
                    slot: 1 << Tag::SLOT_BITS,
                    ..ok
                },
                "65536 pipelines",
            ),
            (
                Tag {
                    topic: 1 << Tag::TOPIC_BITS,
                    ..ok
                },
                "256 topics",
            ),
            (
                Tag {
                    seq: 1 << Tag::SEQ_BITS,
                    ..ok
                },
                "1099511627776 records",
            ),
        ];
        for (tag, limit) in cases {
            let e = tag.pack().unwrap_err().to_string();
            assert!(e.contains(limit), "{e}");
        }
    }
}
