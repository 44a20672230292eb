//! `scorer`: scores every case with the ONNX model and publishes one
//! `health.case_score.v1` event per case, keyed like the case.
//!
//! At-least-once with deterministic ids: a score's envelope id comes from
//! the case id and the model name and version, so a replayed batch
//! publishes the same ids again and the stores converge.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tracing::{error, info};
use vigie_core::{CaseScore, Envelope, Event, Payload};
use vigie_kafka::{EventProducer, OutRecord};

use crate::sink::{Accepted, BatchContext, Rejected, Rejects, Sink, SinkError, SinkSpec};

pub mod model;

pub use model::{Encoder, FeatureSource, FeatureSpec, Model, ModelMetadata, ScorerError};

/// The registry entry.
pub const SPEC: SinkSpec = SinkSpec {
    name: "scorer",
    about: "ONNX model scores of every case, published to their own topic",
    secrets: &[],
    check: crate::sink::check_section::<ScorerConfig>,
    build: |args| {
        Box::pin(async move {
            let config: ScorerConfig = args.config()?;
            Ok(
                Box::new(ScorerSink::new(&config, (args.producer)()?, args.registry)?)
                    as Box<dyn Sink>,
            )
        })
    },
};

/// The `[consumers.sinks.scorer]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScorerConfig {
    /// The model: a directory holding `model.onnx` and `metadata.json`, or
    /// a directory of versions (`1.0.0/`, `1.1.0/`, ...) of which the
    /// highest is used, and a newer one picked up while running.
    pub model_dir: PathBuf,
    /// `libonnxruntime.so` to load; `ORT_DYLIB_PATH` when unset.
    pub ort_dylib: Option<PathBuf>,
    /// Topic the scores are published to.
    pub output_topic: String,
    /// How often to look for a newer model version, in milliseconds
    /// (between batches; SIGHUP looks at once).
    pub reload_check_ms: u64,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        Self {
            model_dir: PathBuf::from("models/hosp_risk"),
            ort_dylib: None,
            output_topic: "health.case_score.v1".into(),
            reload_check_ms: 5_000,
        }
    }
}

/// The model version directory to use: `dir` itself when it holds a
/// model, else its subdirectory with the highest `major.minor.patch` name.
fn current_version(dir: &Path) -> Option<PathBuf> {
    if dir.join("model.onnx").is_file() {
        return Some(dir.to_path_buf());
    }
    let version =
        |name: &str| -> Option<Vec<u64>> { name.split('.').map(|p| p.parse().ok()).collect() };
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().join("model.onnx").is_file())
        .filter_map(|e| Some((version(e.file_name().to_str()?)?, e.path())))
        .max()
        .map(|(_, p)| p)
}

/// The scorer sink.
pub struct ScorerSink {
    model: Model,
    model_path: PathBuf,
    config: ScorerConfig,
    producer: EventProducer,
    scores: Histogram,
    info: IntGaugeVec,
    reload_errors: IntCounter,
    last_check: Instant,
    hangup: Arc<AtomicBool>,
}

impl std::fmt::Debug for ScorerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScorerSink")
            .field("model", &self.model)
            .field("topic", &self.config.output_topic)
            .finish_non_exhaustive()
    }
}

impl ScorerSink {
    /// Loads the model and registers the scorer's metrics.
    pub fn new(
        config: &ScorerConfig,
        producer: EventProducer,
        registry: &Registry,
    ) -> Result<Self, SinkError> {
        let fatal = |e: &dyn std::fmt::Display| SinkError::Fatal(e.to_string());
        let model_path = current_version(&config.model_dir).ok_or_else(|| {
            SinkError::Fatal(format!(
                "no model in {} (a model.onnx, or version directories holding one)",
                config.model_dir.display()
            ))
        })?;
        let model = Model::load(&model_path, config.ort_dylib.as_deref()).map_err(|e| fatal(&e))?;
        let info = IntGaugeVec::new(
            Opts::new(
                "vigie_scorer_model_info",
                "The model version in use (value 1).",
            ),
            &["model", "version"],
        )
        .map_err(|e| fatal(&e))?;
        info.with_label_values(&[&model.meta.name, &model.meta.version])
            .set(1);
        let scores = Histogram::with_opts(
            HistogramOpts::new("vigie_scorer_score", "Scores published.")
                .buckets((1..=20).map(|i| f64::from(i) / 20.0).collect()),
        )
        .map_err(|e| fatal(&e))?;
        let reload_errors = IntCounter::new(
            "vigie_scorer_reload_errors_total",
            "New model versions that could not be loaded (the previous one stays).",
        )
        .map_err(|e| fatal(&e))?;
        registry
            .register(Box::new(info.clone()))
            .map_err(|e| fatal(&e))?;
        registry
            .register(Box::new(scores.clone()))
            .map_err(|e| fatal(&e))?;
        registry
            .register(Box::new(reload_errors.clone()))
            .map_err(|e| fatal(&e))?;
        let hangup = Arc::new(AtomicBool::new(false));
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            let flag = hangup.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    flag.store(true, Ordering::Relaxed);
                }
            });
        }
        Ok(Self {
            model,
            model_path,
            config: config.clone(),
            producer,
            scores,
            info,
            reload_errors,
            last_check: Instant::now(),
            hangup,
        })
    }

    /// The version in use.
    pub fn model_version(&self) -> &str {
        &self.model.meta.version
    }

    /// Between batches: switch to a newer model version if there is one.
    /// A version that does not load is reported and skipped; the one in
    /// use stays.
    fn maybe_reload(&mut self) {
        let due = self.last_check.elapsed() >= Duration::from_millis(self.config.reload_check_ms);
        if !(due || self.hangup.swap(false, Ordering::Relaxed)) {
            return;
        }
        self.last_check = Instant::now();
        let Some(latest) = current_version(&self.config.model_dir) else {
            return;
        };
        if latest == self.model_path {
            return;
        }
        match Model::load(&latest, self.config.ort_dylib.as_deref()) {
            Ok(model) => {
                info!(from = %self.model.meta.version, to = %model.meta.version, path = %latest.display(), "Model reloaded");
                self.info
                    .with_label_values(&[&self.model.meta.name, &self.model.meta.version])
                    .set(0);
                self.info
                    .with_label_values(&[&model.meta.name, &model.meta.version])
                    .set(1);
                self.model = model;
            }
            Err(e) => {
                error!(error = %e, "New model version not loaded; keeping the current one");
                self.reload_errors.inc();
            }
        }
        // Tried once: not again until a newer directory appears.
        self.model_path = latest;
    }
}

#[async_trait::async_trait]
impl Sink for ScorerSink {
    async fn write(
        &mut self,
        events: &[Accepted],
        _ctx: &BatchContext<'_>,
        rejects: &mut dyn Rejects,
    ) -> Result<usize, SinkError> {
        let mut cases = Vec::with_capacity(events.len());
        let mut refused = Vec::new();
        for ev in events {
            match &ev.event {
                Event::Case(c) => cases.push(c),
                other => refused.push(Rejected {
                    index: ev.index,
                    reason: "unsupported_schema",
                    error: format!(
                        "the scorer scores health.case v1, not {} v{}",
                        other.schema(),
                        other.schema_version()
                    ),
                }),
            }
        }
        if !refused.is_empty() {
            rejects.publish(&refused).await?;
        }
        if cases.is_empty() {
            return Ok(0);
        }
        // One model run per batch, so one model version per batch.
        self.maybe_reload();
        let scores = {
            // Not held across the await below: `dyn FeatureSource` is not `Sync`.
            let rows: Vec<&dyn FeatureSource> = cases
                .iter()
                .map(|c| &c.data as &dyn FeatureSource)
                .collect();
            self.model
                .score(&rows)
                .map_err(|e| SinkError::Fatal(e.to_string()))?
        };
        let now = Utc::now();
        let mut out = Vec::with_capacity(cases.len());
        for (case, score) in cases.iter().zip(&scores) {
            self.scores.observe(f64::from(*score));
            let env = Envelope::new(
                "scorer",
                CaseScore {
                    case_event_id: case.id,
                    model_name: self.model.meta.name.clone(),
                    model_version: self.model.meta.version.clone(),
                    score: f64::from(*score),
                    scored_at: now,
                },
                now,
            );
            let bytes = env
                .to_json_bytes()
                .map_err(|e| SinkError::Fatal(e.to_string()))?;
            out.push((case.data.partition_key(), bytes));
        }
        let records: Vec<OutRecord<'_>> = out
            .iter()
            .map(|(k, v)| OutRecord {
                topic: &self.config.output_topic,
                key: Some(k.as_bytes()),
                payload: v,
                headers: &[],
                timestamp_ms: None,
            })
            .collect();
        self.producer
            .send_all(records)
            .await
            .map_err(|e| SinkError::Retryable(e.to_string()))?;
        Ok(cases.len())
    }
}
