//! `scorer`: scores every case with the ONNX model and publishes one
//! `health.case_score.v1` event per case, keyed like the case.
//!
//! At-least-once with deterministic ids: a score's envelope id comes from
//! the case id and the model name and version, so a replayed batch
//! publishes the same ids again and the stores converge.

use std::path::PathBuf;

use chrono::Utc;
use prometheus::{Histogram, HistogramOpts, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use vigie_core::{CaseScore, Envelope, Event, Payload};
use vigie_kafka::{EventProducer, OutRecord};

use super::{FeatureSource, Model};
use crate::sink::{Accepted, BatchContext, Rejected, Rejects, Sink, SinkError};

/// The `[scorer]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScorerConfig {
    /// Directory holding `model.onnx` and `metadata.json`.
    pub model_dir: PathBuf,
    /// `libonnxruntime.so` to load; `ORT_DYLIB_PATH` when unset.
    pub ort_dylib: Option<PathBuf>,
    /// Topic the scores are published to.
    pub output_topic: String,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        Self {
            model_dir: PathBuf::from("models/hosp_risk/1.0.0"),
            ort_dylib: None,
            output_topic: "health.case_score.v1".into(),
        }
    }
}

/// The scorer sink.
pub struct ScorerSink {
    model: Model,
    producer: EventProducer,
    topic: String,
    scores: Histogram,
}

impl std::fmt::Debug for ScorerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScorerSink")
            .field("model", &self.model)
            .field("topic", &self.topic)
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
        let model = Model::load(&config.model_dir, config.ort_dylib.as_deref())
            .map_err(|e| SinkError::Fatal(e.to_string()))?;
        let info = IntGaugeVec::new(
            Opts::new("vigie_scorer_model_info", "The model in use (value 1)."),
            &["model", "version"],
        )
        .map_err(|e| SinkError::Fatal(e.to_string()))?;
        info.with_label_values(&[&model.meta.name, &model.meta.version])
            .set(1);
        let scores = Histogram::with_opts(
            HistogramOpts::new("vigie_scorer_score", "Scores published.")
                .buckets((1..=20).map(|i| f64::from(i) / 20.0).collect()),
        )
        .map_err(|e| SinkError::Fatal(e.to_string()))?;
        for m in [
            Box::new(info) as Box<dyn prometheus::core::Collector>,
            Box::new(scores.clone()),
        ] {
            registry
                .register(m)
                .map_err(|e| SinkError::Fatal(e.to_string()))?;
        }
        Ok(Self {
            model,
            producer,
            topic: config.output_topic.clone(),
            scores,
        })
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
        // One model run per batch, one model version per batch.
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
                topic: &self.topic,
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
