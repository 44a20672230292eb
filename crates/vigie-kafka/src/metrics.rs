//! Prometheus metrics of the Kafka plumbing, registered once per process.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// Counters and gauges shared by producers and consumers.
#[derive(Clone, Debug)]
pub struct KafkaMetrics {
    /// Records delivered, by topic.
    pub produced: IntCounterVec,
    /// Records consumed, by group and topic.
    pub consumed: IntCounterVec,
    /// Batches whose offsets were committed, by group.
    pub batches: IntCounterVec,
    /// Records sent to a dead-letter topic, by origin topic and reason.
    pub dead_letters: IntCounterVec,
    /// Errors by `error_type` and `stage`.
    pub errors: IntCounterVec,
    /// Records produced and not yet committed by the group, per partition,
    /// exported by the partition's owner only.
    pub lag: IntGaugeVec,
    /// Partitions currently assigned to this member, by group.
    pub assigned: IntGaugeVec,
    /// Records dropped from an in-flight batch because their partition was
    /// revoked before the batch was processed (they are re-read by the new owner).
    pub rebalance_dropped: IntCounterVec,
}

impl KafkaMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            produced: IntCounterVec::new(
                Opts::new(
                    "vigie_producer_records_total",
                    "Records acknowledged by the broker.",
                ),
                &["topic"],
            )?,
            consumed: IntCounterVec::new(
                Opts::new(
                    "vigie_consumer_records_total",
                    "Records consumed and committed.",
                ),
                &["group", "topic"],
            )?,
            batches: IntCounterVec::new(
                Opts::new(
                    "vigie_consumer_batches_total",
                    "Batches processed and committed.",
                ),
                &["group"],
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "vigie_dlq_records_total",
                    "Records sent to a dead-letter topic.",
                ),
                &["topic", "reason"],
            )?,
            errors: IntCounterVec::new(
                Opts::new("vigie_kafka_errors_total", "Kafka client errors."),
                &["error_type", "stage"],
            )?,
            lag: IntGaugeVec::new(
                Opts::new(
                    "vigie_consumer_lag_records",
                    "High watermark minus committed offset, per partition, exported by the member that owns the partition.",
                ),
                &["group", "topic", "partition"],
            )?,
            assigned: IntGaugeVec::new(
                Opts::new(
                    "vigie_consumer_assigned_partitions",
                    "Partitions assigned to this group member.",
                ),
                &["group"],
            )?,
            rebalance_dropped: IntCounterVec::new(
                Opts::new(
                    "vigie_consumer_rebalance_dropped_records_total",
                    "In-flight records released on partition revocation.",
                ),
                &["group"],
            )?,
        };
        registry.register(Box::new(m.produced.clone()))?;
        registry.register(Box::new(m.consumed.clone()))?;
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.rebalance_dropped.clone()))?;
        registry.register(Box::new(m.assigned.clone()))?;
        Ok(m)
    }

    /// Metrics registered in a private registry (tests, tools).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry accepts every metric")
    }
}
