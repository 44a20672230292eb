//! The consumer's metrics: the component's own ([`ConsumerMetrics`]), and
//! the group's lag, exported on the side while the consumer runs.

use std::collections::BTreeSet;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use vigie_kafka::consumer::Assignment;
use vigie_kafka::group_lag;

use vigie_core::ValidationErrorKind;

use super::Runtime;
use super::validate::{EMPTY_PAYLOAD, OVERSIZED};

/// Metrics of a consumer component.
#[derive(Clone, Debug)]
pub struct ConsumerMetrics {
    /// Events written by the sink, by component.
    pub written: IntCounterVec,
    /// Seconds to process one batch (validate, write, DLQ, commit).
    pub batch_seconds: HistogramVec,
    /// Batch write retries, by component.
    pub retries: IntCounterVec,
    /// Batches refused because the store holds later offsets (another
    /// member took a partition over), by component.
    pub fenced: IntCounterVec,
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
            fenced: IntCounterVec::new(
                Opts::new(
                    "vigie_sink_fenced_batches_total",
                    "Batches not written because the store held later offsets for one of their \
                     partitions: a stale member, fenced.",
                ),
                &["component"],
            )?,
        };
        registry.register(Box::new(m.fenced.clone()))?;
        registry.register(Box::new(m.written.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        Ok(m)
    }
}

impl Runtime {
    /// Sets the counters whose labels are known at start to 0, as
    /// Prometheus advises: a counter first seen at 1 has no increase for
    /// `rate()`, so the first dead letter or retry would be missed by
    /// the dashboards and alerts. The dead letters are those refused at the
    /// edge, by origin topic and validation reason; a sink's own reasons
    /// appear with their first record.
    pub(super) fn initialise_counters(&self) {
        let c = self.component;
        self.metrics.written.with_label_values(&[c]);
        self.metrics.retries.with_label_values(&[c]);
        self.metrics.fenced.with_label_values(&[c]);
        let group = self.consumer.group_id.as_str();
        self.kafka_metrics.batches.with_label_values(&[group]);
        self.kafka_metrics
            .rebalance_dropped
            .with_label_values(&[group]);
        for topic in &self.consumer.topics {
            self.kafka_metrics
                .consumed
                .with_label_values(&[group, topic]);
            let edge = [EMPTY_PAYLOAD, OVERSIZED]
                .into_iter()
                .chain(ValidationErrorKind::ALL.map(ValidationErrorKind::as_str));
            for reason in edge {
                self.kafka_metrics
                    .dead_letters
                    .with_label_values(&[topic, reason]);
            }
        }
    }

    /// Spawns the task that exports the group's lag of the partitions
    /// assigned to this member every `lag_interval_ms`; none when that is 0.
    pub(super) fn spawn_lag_exporter(
        &self,
        assignment: Assignment,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.consumer.lag_interval_ms == 0 {
            return None;
        }
        let cluster = self.cluster.clone();
        let group = self.consumer.group_id.clone();
        let topics = self.consumer.topics.clone();
        let metrics = self.kafka_metrics.clone();
        let every = Duration::from_millis(self.consumer.lag_interval_ms);
        Some(tokio::spawn(async move {
            let mut exported = BTreeSet::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match group_lag(&cluster, &group, &topics, Duration::from_secs(5)).await {
                    Ok(lags) => vigie_kafka::lag::export(
                        &metrics,
                        &group,
                        &lags,
                        &assignment.partitions(),
                        &mut exported,
                    ),
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
