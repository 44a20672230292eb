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
    /// Creates a producer from the `[kafka.producer]` settings.
    pub fn new(
        brokers: &str,
        config: &ProducerConfig,
        metrics: KafkaMetrics,
    ) -> Result<Self, KafkaError> {
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
        let mut pending: VecDeque<(DeliveryFuture, &'a str)> = VecDeque::new();
        let mut out = Vec::new();
        for r in records {
            loop {
                match self.enqueue(&r) {
                    Ok(f) => {
                        pending.push_back((f, r.topic));
                        break;
                    }
                    Err(rdkafka::error::KafkaError::MessageProduction(
                        RDKafkaErrorCode::QueueFull,
                    )) => match pending.pop_front() {
                        // The queue is full: wait for the oldest record
                        // instead of spinning.
                        Some((f, topic)) => out.push(self.settle(f, topic).await?),
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    },
                    Err(e) => {
                        self.metrics
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
        while let Some((f, topic)) = pending.pop_front() {
            out.push(self.settle(f, topic).await?);
        }
        Ok(out)
    }

    async fn settle(&self, f: DeliveryFuture, topic: &str) -> Result<Delivered, KafkaError> {
        match f.await {
            Ok(Ok(d)) => {
                self.metrics.produced.with_label_values(&[topic]).inc();
                Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Ok(Err((e, _))) => {
                self.metrics
                    .errors
                    .with_label_values(&["delivery", "produce"])
                    .inc();
                Err(KafkaError::Delivery {
                    topic: topic.to_owned(),
                    source: e,
                })
            }
            Err(_) => {
                self.metrics
                    .errors
                    .with_label_values(&["delivery", "produce"])
                    .inc();
                Err(KafkaError::Delivery {
                    topic: topic.to_owned(),
                    source: rdkafka::error::KafkaError::Canceled,
                })
            }
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
