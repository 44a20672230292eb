//! Metrics per source.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The metrics of every source, labelled by source name.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    /// Events produced and acknowledged by the broker.
    pub events: IntCounterVec,
    /// Rows or pages that did not map to their schema, by reason.
    pub rejects: IntCounterVec,
    /// Poll and scrape errors, by kind (`timeout`, `connect`, `body`,
    /// `status_429`, `status_5xx`, `status_4xx`, `too_large`, `parse`,
    /// `robots`, ...).
    pub errors: IntCounterVec,
    /// Time to a complete upstream response (or failure), per attempt.
    pub upstream_seconds: HistogramVec,
    /// Unix time of the last poll that completed.
    pub last_success: GaugeVec,
    /// Checkpoint position: rows consumed, or pages, per source.
    pub checkpoint_position: GaugeVec,
    /// Pages fetched ahead while a backlog drains, by outcome: `used` (the
    /// next poll asked for that URL; a failed fetch counts here too, as the
    /// next poll's failure), `wrong_guess` (it asked for another one),
    /// `dropped` (the page before it turned out to be the last).
    pub prefetches: IntCounterVec,
}

impl SourceMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered();
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.rejects.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.upstream_seconds.clone()))?;
        registry.register(Box::new(m.last_success.clone()))?;
        registry.register(Box::new(m.checkpoint_position.clone()))?;
        registry.register(Box::new(m.prefetches.clone()))?;
        Ok(m)
    }

    /// Metrics kept out of any registry (tests, tools).
    pub fn unregistered() -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["source"]).expect("valid metric")
        };
        Self {
            events: counter(
                "vigie_source_events_total",
                "Events produced and acknowledged, per source.",
                &["source"],
            ),
            rejects: counter(
                "vigie_source_rejects_total",
                "Upstream rows that did not map to their schema (sent to the DLQ), per source and reason.",
                &["source", "reason"],
            ),
            errors: counter(
                "vigie_source_errors_total",
                "Poll and scrape errors, per source and kind.",
                &["source", "kind"],
            ),
            upstream_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "vigie_source_upstream_seconds",
                    "Upstream response time per attempt, per source.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
                &["source"],
            )
            .expect("valid metric"),
            last_success: gauge(
                "vigie_source_last_success_timestamp_seconds",
                "Unix time of the last poll that completed, per source.",
            ),
            checkpoint_position: gauge(
                "vigie_source_checkpoint_position",
                "Position of the saved checkpoint (rows or pages), per source.",
            ),
            prefetches: counter(
                "vigie_source_prefetches_total",
                "Pages fetched ahead while a backlog drains, per source and outcome (used, wrong_guess, dropped).",
                &["source", "outcome"],
            ),
        }
    }

    /// Counts one error of `kind`.
    pub fn error(&self, source: &str, kind: &str) {
        self.errors.with_label_values(&[source, kind]).inc();
    }
}
