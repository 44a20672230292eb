//! The producer every Vigie component publishes with: idempotent,
//! `acks=all`, compressed, and with every delivery error surfaced.

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::ProducerConfig;
use crate::error::KafkaError;
use crate::metrics::KafkaMetrics;

/// One record to publish.
#[derive(Debug, Clone, Copy)]
pub struct OutRecord<'a> {
    /// Destination topic.
    pub topic: &'a str,
    /// Key: decides the partition, so the ordering and the spread.
    pub key: Option<&'a [u8]>,
    /// Value bytes.
    pub payload: &'a [u8],
    /// Headers, in order.
    pub headers: &'a [(&'a str, &'a [u8])],
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

/// An idempotent producer with a bounded in-flight window.
pub struct EventProducer {
    inner: FutureProducer,
    metrics: KafkaMetrics,
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
        brokers: &str,
        config: &ProducerConfig,
        metrics: KafkaMetrics,
    ) -> Result<Self, KafkaError> {
        config.validate()?;
        let inner: FutureProducer = config
            .client_config(brokers)
            .create()
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        Ok(Self { inner, metrics })
    }

    fn enqueue(&self, r: &OutRecord<'_>) -> Result<DeliveryFuture, rdkafka::error::KafkaError> {
        let mut rec = FutureRecord::<[u8], [u8]>::to(r.topic).payload(r.payload);
        if let Some(k) = r.key {
            rec = rec.key(k);
        }
        if let Some(ts) = r.timestamp_ms {
            rec = rec.timestamp(ts);
        }
        if !r.headers.is_empty() {
            let mut hs = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in r.headers {
                hs = hs.insert(Header {
                    key: k,
                    value: Some(*v),
                });
            }
            rec = rec.headers(hs);
        }
        self.inner.send_result(rec).map_err(|(e, _)| e)
    }

    /// Publishes one record and waits for the broker's acknowledgement.
    pub async fn send(&self, record: OutRecord<'_>) -> Result<Delivered, KafkaError> {
        let n = self.send_all(std::iter::once(record)).await?;
        Ok(n.last().copied().expect("one record in, one delivery out"))
    }

    /// Publishes every record, keeping librdkafka's queue full, and returns
    /// once the broker has acknowledged all of them, in input order.
    ///
    /// The first failed delivery is returned as the error; records before it
    /// in the input are acknowledged, records after it may or may not be,
    /// so a caller that checkpoints must only advance past acknowledged input.
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
    /// acknowledgements are collected as they come.
    pub fn pipeline(&self, collect: bool) -> Pipeline<'_> {
        Pipeline {
            producer: self,
            pending: VecDeque::new(),
            topics: Vec::new(),
            acked: Vec::new(),
            delivered: Vec::new(),
            collect,
        }
    }

    async fn settle(&self, f: DeliveryFuture, topic: &str) -> Result<Delivered, KafkaError> {
        let failed = |source| {
            self.metrics
                .errors
                .with_label_values(&["delivery", "produce"])
                .inc();
            KafkaError::Delivery {
                topic: topic.to_owned(),
                source,
            }
        };
        match f.await {
            Ok(Ok(d)) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
            Ok(Err((e, _))) => Err(failed(e)),
            Err(_) => Err(failed(rdkafka::error::KafkaError::Canceled)),
        }
    }

    /// Waits until everything queued is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner
            .flush(Timeout::After(timeout))
            .map_err(KafkaError::Client)
    }

    /// The underlying client, for metadata requests.
    pub fn client(&self) -> &FutureProducer {
        &self.inner
    }
}

/// Records in flight; see [`EventProducer::pipeline`].
pub struct Pipeline<'p> {
    producer: &'p EventProducer,
    pending: VecDeque<(DeliveryFuture, usize)>,
    /// Distinct topics seen, so a pending record holds an index, not a String.
    topics: Vec<String>,
    /// Acknowledged records per topic index, added to the metrics once at the end.
    acked: Vec<u64>,
    delivered: Vec<Delivered>,
    collect: bool,
}

impl std::fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Pipeline<'_> {
    /// Most records awaiting acknowledgement before `push` waits for the oldest.
    const MAX_PENDING: usize = 200_000;

    /// Enqueues one record; waits only when librdkafka's queue is full.
    pub async fn push(&mut self, r: OutRecord<'_>) -> Result<(), KafkaError> {
        let topic = match self.topics.iter().position(|t| t == r.topic) {
            Some(i) => i,
            None => {
                self.topics.push(r.topic.to_owned());
                self.acked.push(0);
                self.topics.len() - 1
            }
        };
        if self.pending.len() >= Self::MAX_PENDING {
            self.settle_oldest().await?;
        }
        loop {
            match self.producer.enqueue(&r) {
                Ok(f) => {
                    self.pending.push_back((f, topic));
                    return Ok(());
                }
                Err(rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    // Wait for the oldest record instead of spinning.
                    if !self.settle_oldest().await? {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Err(e) => {
                    self.flush_metrics();
                    self.producer
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

    async fn settle_oldest(&mut self) -> Result<bool, KafkaError> {
        let Some((f, t)) = self.pending.pop_front() else {
            return Ok(false);
        };
        match self.producer.settle(f, &self.topics[t]).await {
            Ok(d) => {
                self.acked[t] += 1;
                if self.collect {
                    self.delivered.push(d);
                }
                Ok(true)
            }
            Err(e) => {
                self.flush_metrics();
                Err(e)
            }
        }
    }

    fn flush_metrics(&mut self) {
        for (t, n) in self.topics.iter().zip(self.acked.iter_mut()) {
            self.producer
                .metrics
                .produced
                .with_label_values(&[t])
                .inc_by(*n);
            *n = 0;
        }
    }

    /// Waits for every acknowledgement; returns how many records were
    /// acknowledged and, if collecting, where each landed, in push order.
    pub async fn finish(mut self) -> Result<(u64, Vec<Delivered>), KafkaError> {
        while self.settle_oldest().await? {}
        let total = self.acked.iter().sum();
        self.flush_metrics();
        Ok((total, std::mem::take(&mut self.delivered)))
    }
}
