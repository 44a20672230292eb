//! Runs one source: poll, produce, wait for the broker's acknowledgements,
//! save the checkpoint, repeat. While a page's events are being
//! acknowledged, the next page is already being fetched.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigie_kafka::dlq::{H_ERROR, H_REASON, H_STAGE, H_URL};
use vigie_kafka::{EventProducer, KafkaError, OutRecord, dlq_topic};

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::http::{FetchError, HttpConfig, HttpFetcher};
use crate::metrics::SourceMetrics;
use crate::source::{Outgoing, Poll, PollContext, Reject, Source, SourceConfig, SourceError};

/// Why a source stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The source failed in a way polling again cannot fix.
    #[error("source {source_name}: {error}")]
    Source {
        /// The source.
        source_name: &'static str,
        /// The error.
        error: SourceError,
    },
    /// The broker did not acknowledge.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The checkpoint could not be read or saved.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunStats {
    /// Events acknowledged.
    pub events: u64,
    /// Rows sent to the DLQ.
    pub rejects: u64,
    /// Polls completed.
    pub polls: u64,
}

/// Everything a source runs with.
#[derive(Debug)]
pub struct SourceRunner {
    /// The source's section.
    pub config: SourceConfig,
    /// HTTP client settings.
    pub http: HttpConfig,
    /// Checkpoints.
    pub checkpoints: CheckpointStore,
    /// Where unparseable pages are kept.
    pub quarantine_dir: PathBuf,
    /// Metrics.
    pub metrics: SourceMetrics,
    /// Stop once a poll finds nothing more right away (tests, backfills,
    /// benchmarks) instead of polling forever.
    pub until_caught_up: bool,
}

impl SourceRunner {
    /// Runs `source` until shutdown (or until caught up).
    pub async fn run(
        &self,
        mut source: Box<dyn Source>,
        producer: &EventProducer,
        shutdown: &CancellationToken,
    ) -> Result<RunStats, RunError> {
        let name = source.name();
        let http = HttpFetcher::new(&self.http, name, self.metrics.clone()).map_err(|e| {
            RunError::Source {
                source_name: name,
                error: e.into(),
            }
        })?;
        let cx = PollContext {
            http: &http,
            shutdown,
            metrics: &self.metrics,
            quarantine: &self.quarantine_dir,
        };
        let mut at = self.checkpoints.load(name)?;
        info!(source = name, topic = %self.config.topic, checkpoint = ?at.watermark, position = at.position, "Source started");
        let mut stats = RunStats::default();
        let mut prefetched: Option<Result<Poll, SourceError>> = None;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let polled = match prefetched.take() {
                Some(p) => p,
                None => source.poll(&at, &cx).await,
            };
            let poll = match polled {
                Ok(p) => p,
                Err(SourceError::Fetch(FetchError::Cancelled)) => break,
                Err(e) if e.is_transient() => {
                    warn!(source = name, error = %e, "Poll failed; trying again after the poll interval");
                    if matches!(e, SourceError::Format { .. }) {
                        self.metrics.error(name, "parse");
                    }
                    if self.pause(shutdown).await {
                        break;
                    }
                    continue;
                }
                Err(error) => {
                    return Err(RunError::Source {
                        source_name: name,
                        error,
                    });
                }
            };
            let Poll {
                events,
                rejects,
                next,
                more,
            } = poll;
            let (n_events, n_rejects) = (events.len() as u64, rejects.len() as u64);
            let acked = self.publish(producer, name, events, rejects);
            // Fetch the next page while this one is acknowledged.
            let acked = if more && !shutdown.is_cancelled() {
                let (acked, next) = tokio::join!(acked, source.poll(&next, &cx));
                prefetched = Some(next);
                acked
            } else {
                acked.await
            };
            acked?;
            self.checkpoints.save(name, &next)?;
            self.record(name, &next, n_events, n_rejects);
            stats.events += n_events;
            stats.rejects += n_rejects;
            stats.polls += 1;
            at = next;
            if !more {
                if self.until_caught_up {
                    break;
                }
                if self.pause(shutdown).await {
                    break;
                }
            }
        }
        info!(
            source = name,
            events = stats.events,
            rejects = stats.rejects,
            "Source stopped"
        );
        Ok(stats)
    }

    /// Produces a poll's events and dead letters and waits for every
    /// acknowledgement. They are freed once handed to librdkafka (which
    /// copies them), not kept until acknowledged.
    async fn publish(
        &self,
        producer: &EventProducer,
        name: &'static str,
        events: Vec<Outgoing>,
        rejects: Vec<Reject>,
    ) -> Result<(), KafkaError> {
        let topic = self.config.topic.as_str();
        let mut pipeline = producer.pipeline(false);
        for e in &events {
            pipeline
                .push(OutRecord {
                    topic,
                    key: Some(e.key.as_bytes()),
                    payload: &e.payload,
                    headers: &[],
                    timestamp_ms: None,
                })
                .await?;
        }
        drop(events);
        if !rejects.is_empty() {
            let dlq = dlq_topic(topic);
            let stage = format!("source:{name}");
            for r in &rejects {
                pipeline
                    .push(OutRecord {
                        topic: &dlq,
                        key: None,
                        payload: &r.raw,
                        headers: &[
                            (H_REASON, r.reason.as_bytes()),
                            (H_ERROR, r.error.as_bytes()),
                            (H_STAGE, stage.as_bytes()),
                            (H_URL, r.url.as_bytes()),
                        ],
                        timestamp_ms: None,
                    })
                    .await?;
            }
        }
        drop(rejects);
        pipeline.finish().await?;
        Ok(())
    }

    fn record(&self, name: &str, at: &Checkpoint, events: u64, rejects: u64) {
        let m = &self.metrics;
        m.events.with_label_values(&[name]).inc_by(events);
        if rejects > 0 {
            m.rejects
                .with_label_values(&[name, "unmappable"])
                .inc_by(rejects);
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        m.last_success
            .with_label_values(&[name])
            .set(now.as_secs_f64());
        m.checkpoint_position
            .with_label_values(&[name])
            .set(at.position as f64);
    }

    /// Waits the poll interval; true if shutdown came first.
    async fn pause(&self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(self.config.poll_interval_ms)) => false,
            _ = shutdown.cancelled() => true,
        }
    }
}
