//! Runs one source: poll, produce, wait for the broker's acknowledgements,
//! save the checkpoint, repeat; the three run at once, on consecutive polls.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigie_kafka::dlq::{FittedValue, H_ERROR, H_REASON, H_STAGE, H_URL};
use vigie_kafka::{EventProducer, KafkaError, OutRecord, Pipeline, dlq_topic};

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

/// A poll handed to librdkafka, waiting for its acknowledgements.
struct Pushed<'p> {
    pipeline: Pipeline<'p>,
    /// The checkpoint to save once they came.
    next: Checkpoint,
    /// Events and dead letters.
    counts: (u64, u64),
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
    ///
    /// Three stages run at once, each on the previous one's output: polling
    /// (fetch, then map on a blocking thread), handing a poll's records to
    /// librdkafka, and waiting for a poll's acknowledgements before saving
    /// the checkpoint after it. Checkpoints are therefore saved in poll
    /// order, each once everything before it is acknowledged; the broker
    /// never waits for the next page to be mapped, nor the mapping for the
    /// previous page's acknowledgements. At most `Self::AHEAD` polls wait
    /// between two stages.
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
        let at = self.checkpoints.load(name)?;
        info!(source = name, topic = %self.config.topic, checkpoint = ?at.watermark, position = at.position, "Source started");
        let (to_push, mut polled) = mpsc::channel::<Poll>(Self::AHEAD);
        let (to_ack, mut pushed) = mpsc::channel::<Pushed<'_>>(Self::AHEAD);
        let poller = self.poll_loop(&mut *source, at, &cx, to_push);
        let pusher = async move {
            while let Some(poll) = polled.recv().await {
                // Past shutdown, what is not handed over yet is polled
                // again next time, from the last checkpoint.
                if shutdown.is_cancelled() {
                    break;
                }
                let Poll {
                    events,
                    rejects,
                    next,
                    more: _,
                } = poll;
                let counts = (events.len() as u64, rejects.len() as u64);
                let pipeline = self.push(producer, name, events, rejects).await?;
                let pushed = Pushed {
                    pipeline,
                    next,
                    counts,
                };
                if to_ack.send(pushed).await.is_err() {
                    break;
                }
            }
            Ok::<_, RunError>(())
        };
        let acker = async move {
            let mut stats = RunStats::default();
            while let Some(Pushed {
                pipeline,
                next,
                counts: (n_events, n_rejects),
            }) = pushed.recv().await
            {
                pipeline.finish().await?;
                self.checkpoints.save(name, &next)?;
                self.record(name, &next, n_events, n_rejects);
                stats.events += n_events;
                stats.rejects += n_rejects;
                stats.polls += 1;
            }
            Ok::<_, RunError>(stats)
        };
        let ((), (), stats) = tokio::try_join!(poller, pusher, acker)?;
        info!(
            source = name,
            events = stats.events,
            rejects = stats.rejects,
            "Source stopped"
        );
        Ok(stats)
    }

    /// Polls waiting to be handed to librdkafka, and handed polls waiting
    /// for their acknowledgements: enough for the stages not to wait on
    /// each other, few enough to bound memory (a poll of 10,000 cases holds
    /// about 7 MB of envelopes until handed over).
    const AHEAD: usize = 1;

    /// Polls from `at` on, each from the checkpoint the previous one ends
    /// at, and sends the polls to `out` until shutdown, until caught up if
    /// asked, or until `out` is closed.
    async fn poll_loop(
        &self,
        source: &mut dyn Source,
        mut at: Checkpoint,
        cx: &PollContext<'_>,
        out: mpsc::Sender<Poll>,
    ) -> Result<(), RunError> {
        let name = source.name();
        while !cx.shutdown.is_cancelled() {
            let poll = match source.poll(&at, cx).await {
                Ok(p) => p,
                Err(SourceError::Fetch(FetchError::Cancelled)) => break,
                Err(e) if e.is_transient() => {
                    warn!(source = name, error = %e, "Poll failed; trying again after the poll interval");
                    if matches!(e, SourceError::Format { .. }) {
                        self.metrics.error(name, "parse");
                    }
                    if self.pause(cx.shutdown).await {
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
            let more = poll.more;
            at = poll.next.clone();
            if out.send(poll).await.is_err() {
                break;
            }
            if !more && (self.until_caught_up || self.pause(cx.shutdown).await) {
                break;
            }
        }
        Ok(())
    }

    /// Hands a poll's events and dead letters to librdkafka (which copies
    /// them: they are freed here, not kept until acknowledged); the
    /// returned pipeline waits for their acknowledgements.
    async fn push<'p>(
        &self,
        producer: &'p EventProducer,
        name: &'static str,
        events: Vec<Outgoing>,
        rejects: Vec<Reject>,
    ) -> Result<Pipeline<'p>, KafkaError> {
        let topic = self.config.topic.as_str();
        let mut pipeline = producer.pipeline(false);
        for e in &events {
            pipeline
                .push(OutRecord {
                    partition: None,
                    topic,
                    key: Some(e.key.as_bytes()),
                    payload: Some(&e.payload),
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
                let value = FittedValue::new(&r.raw);
                let mut headers = vec![
                    (H_REASON, Some(r.reason.as_bytes())),
                    (H_ERROR, Some(r.error.as_bytes())),
                    (H_STAGE, Some(stage.as_bytes())),
                    (H_URL, Some(r.url.as_bytes())),
                ];
                headers.extend(value.headers().map(|(k, v)| (k, Some(v))));
                pipeline
                    .push(OutRecord {
                        partition: None,
                        topic: &dlq,
                        key: None,
                        payload: Some(value.value),
                        headers: &headers,
                        timestamp_ms: None,
                    })
                    .await?;
            }
        }
        drop(rejects);
        Ok(pipeline)
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
