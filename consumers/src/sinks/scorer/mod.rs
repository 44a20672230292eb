//! `scorer`: scores every case with the ONNX model and publishes one
//! `health.case_score.v1` event per case, keyed like the case.
//!
//! Exactly once, with Kafka transactions (`exactly_once`, the default): the
//! scores of a batch, its dead letters and its consumed offsets commit in
//! one transaction, so a `read_committed` reader sees one score per case
//! across crashes and restarts, and a member whose partitions moved on
//! while it was paused cannot commit (KIP-447 fencing). With
//! `exactly_once = false`, at-least-once with deterministic ids: a score's
//! envelope id comes from the case id and the model name and version, so a
//! replayed batch publishes the same ids again and the stores converge.
//!
//! A model version is checked when loaded ([`Model::load`]); a version
//! refused is logged, counted in `vigie_scorer_model_refused_total{reason}`
//! and not checked again until its files change, and the version in use
//! goes on scoring. A case whose score is not a finite number in `[0, 1]`
//! goes to the DLQ; the rest of its batch is published.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};
use vigie_core::{Case, CaseScore, Envelope, Event, Payload};
use vigie_kafka::{EventProducer, OutRecord};

use crate::sink::{Accepted, BatchContext, Rejected, Rejects, Sink, SinkError, SinkSpec};
use crate::transaction::TxnCommits;

pub mod model;

pub use model::{Encoder, FeatureSource, FeatureSpec, Model, ModelMetadata, Refusal, ScorerError};

/// The registry entry.
pub const SPEC: SinkSpec = SinkSpec {
    name: "scorer",
    about: "ONNX model scores of every case, published to their own topic",
    secrets: &[],
    check: crate::sink::check_section::<ScorerConfig>,
    build: |args| {
        Box::pin(async move {
            let config: ScorerConfig = args.config()?;
            if !config.exactly_once {
                let producer = args.kafka.producer()?;
                return Ok(
                    Box::new(ScorerSink::new(&config, producer, args.registry)?) as Box<dyn Sink>
                );
            }
            let txn = config.transactions(&args.kafka.group);
            let producer = args.kafka.transactional(&txn).await?;
            let mut sink = ScorerSink::new(&config, producer, args.registry)?;
            sink.txn = sink.txn.renewing(args.kafka.clone(), txn);
            Ok(Box::new(sink) as Box<dyn Sink>)
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
    /// Scores, dead letters and consumed offsets of a batch commit in one
    /// Kafka transaction. `false`: at-least-once, scores published then
    /// offsets committed.
    pub exactly_once: bool,
    /// The producer's `transactional.id`: stable across restarts of a
    /// member, so that its restart aborts what it left open at once;
    /// distinct between members. Default `vigie-scorer-<group>-<host
    /// name>` (a StatefulSet's pod names are stable).
    pub transactional_id: Option<String>,
    /// How long the broker keeps a transaction open before aborting it:
    /// how long a member that crashed and does not come back holds its
    /// partitions' `read_committed` readers back.
    pub transaction_timeout_ms: u64,
}

impl ScorerConfig {
    /// The transactional settings of a member of `group`.
    pub fn transactions(&self, group: &str) -> vigie_kafka::Transactions {
        crate::transaction::member_transactions(
            "scorer",
            self.transactional_id.as_deref(),
            group,
            self.transaction_timeout_ms,
        )
    }
}

impl Default for ScorerConfig {
    fn default() -> Self {
        Self {
            model_dir: PathBuf::from("models/hosp_risk"),
            ort_dylib: None,
            output_topic: "health.case_score.v1".into(),
            reload_check_ms: 5_000,
            exactly_once: true,
            transactional_id: None,
            transaction_timeout_ms: 10_000,
        }
    }
}

/// The model versions under `dir`, newest first: `dir` itself when it
/// holds a model, else its subdirectories named `major.minor.patch` (any
/// number of dot-separated integers) that hold a `model.onnx`.
pub(crate) fn versions(dir: &Path) -> Vec<PathBuf> {
    if dir.join("model.onnx").is_file() {
        return vec![dir.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("model.onnx").is_file())
        .filter_map(|e| Some((version_key(e.file_name().to_str()?)?, e.path())))
        .collect();
    found.sort_unstable_by(|a, b| b.cmp(a));
    found.into_iter().map(|(_, p)| p).collect()
}

/// A version name's numbers (`1.10.0`: 1, 10, 0), which order versions;
/// `None` when it is not dot-separated numbers.
pub(crate) fn version_key(name: &str) -> Option<Vec<u64>> {
    name.split('.').map(|p| p.parse().ok()).collect()
}

/// The name of a version directory, for logs.
fn version_name(dir: &Path) -> String {
    dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Size, modification and change times and inode of a file: a copy under
/// way changes them, so a version refused with other stamps is checked
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

/// The stamps of a version's two files (`None`: absent).
type Fingerprint = [Option<FileStamp>; 2];

fn fingerprint(dir: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    ["model.onnx", "metadata.json"].map(|f| {
        std::fs::metadata(dir.join(f)).ok().map(|m| FileStamp {
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
        })
    })
}

/// Loads and checks model versions; remembers the ones refused.
struct Loader {
    ort_dylib: Option<PathBuf>,
    refused_total: IntCounterVec,
    /// Versions refused, with the stamps of their files then: not checked
    /// again until these change (or SIGHUP).
    refused: HashMap<PathBuf, Fingerprint>,
}

/// What [`Loader::newest`] found.
enum Newest {
    /// A version newer than the current one that passed its checks.
    Loaded(PathBuf, Box<Model>),
    /// None: every version above the current one (all of them at start-up)
    /// is refused; their errors, newest first.
    Refused(Vec<String>),
}

impl Loader {
    /// The newest version that loads and passes its checks, walking down
    /// from the newest and stopping at `current` (the one in use, `None` at
    /// start-up). Versions refused before with the same file stamps are
    /// skipped; newly refused ones are logged, counted and remembered.
    /// `Err` only when ONNX Runtime itself cannot be loaded.
    fn newest(
        &mut self,
        dir: &Path,
        current: Option<(&Path, &str)>,
    ) -> Result<Newest, ScorerError> {
        let candidates = versions(dir);
        self.refused.retain(|p, _| candidates.contains(p));
        let mut errors = Vec::new();
        for path in candidates {
            if current.is_some_and(|(p, _)| p == path) {
                break;
            }
            let stamps = fingerprint(&path);
            if self.refused.get(&path) == Some(&stamps) {
                continue;
            }
            match Model::load(&path, self.ort_dylib.as_deref()) {
                Ok(model) => return Ok(Newest::Loaded(path, Box::new(model))),
                Err(e @ ScorerError::Model { .. }) => {
                    let reason = e.refusal().map_or("", Refusal::as_str);
                    let file = e
                        .file()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default();
                    let keeping = match current {
                        Some((_, version)) => format!("version {version} keeps scoring"),
                        None => "trying the next older version".to_owned(),
                    };
                    error!(
                        version = %version_name(&path),
                        file = %file,
                        reason,
                        error = %e,
                        "Model version refused ({keeping}); checked again when its files change or on SIGHUP"
                    );
                    self.refused_total.with_label_values(&[reason]).inc();
                    // The stamps from before the load: a file that changed
                    // while it was read is checked again.
                    self.refused.insert(path.clone(), stamps);
                    errors.push(format!("{}: {e}", version_name(&path)));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Newest::Refused(errors))
    }
}

/// DLQ reason: the scorer scores `health.case` events only.
pub const REASON_UNSUPPORTED: &str = "unsupported_schema";
/// DLQ reason: the model gave a NaN or infinite score for the case.
pub const REASON_NON_FINITE: &str = "non_finite_score";
/// DLQ reason: the model gave a score outside `[0, 1]` for the case.
pub const REASON_OUT_OF_RANGE: &str = "score_out_of_range";
/// DLQ reason: ONNX Runtime failed on the case (alone), while the model
/// still scores its probe batch.
pub const REASON_SCORING_FAILED: &str = "scoring_failed";

/// The scorer sink.
pub struct ScorerSink {
    model: Model,
    model_path: PathBuf,
    config: ScorerConfig,
    producer: EventProducer,
    scores: Histogram,
    info: IntGaugeVec,
    /// The transactions of a transactional `producer`, and
    /// `vigie_scorer_transactions_aborted_total{cause}`.
    txn: TxnCommits,
    loader: Loader,
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
    /// Registers the scorer's metrics and loads the newest model version
    /// that passes its checks (newer ones refused are logged and counted);
    /// fails when there is none.
    pub fn new(
        config: &ScorerConfig,
        producer: EventProducer,
        registry: &Registry,
    ) -> Result<Self, SinkError> {
        let fatal = |e: &dyn std::fmt::Display| SinkError::Fatal(e.to_string());
        let info = IntGaugeVec::new(
            Opts::new(
                "vigie_scorer_model_info",
                "The model version in use (value 1).",
            ),
            &["model", "version"],
        )
        .map_err(|e| fatal(&e))?;
        let scores = Histogram::with_opts(
            HistogramOpts::new("vigie_scorer_score", "Scores published.")
                .buckets((1..=20).map(|i| f64::from(i) / 20.0).collect()),
        )
        .map_err(|e| fatal(&e))?;
        let refused_total = IntCounterVec::new(
            Opts::new(
                "vigie_scorer_model_refused_total",
                "Model versions refused when loaded (the current one stays), by reason.",
            ),
            &["reason"],
        )
        .map_err(|e| fatal(&e))?;
        for reason in Refusal::ALL {
            refused_total.with_label_values(&[reason.as_str()]);
        }
        let txn = TxnCommits::register(
            registry,
            "vigie_scorer_transactions_aborted_total",
            "Transactions of the scorer aborted (nothing of their batch visible to read_committed readers), by cause.",
        )?;
        registry
            .register(Box::new(info.clone()))
            .map_err(|e| fatal(&e))?;
        registry
            .register(Box::new(scores.clone()))
            .map_err(|e| fatal(&e))?;
        registry
            .register(Box::new(refused_total.clone()))
            .map_err(|e| fatal(&e))?;
        let mut loader = Loader {
            ort_dylib: config.ort_dylib.clone(),
            refused_total,
            refused: HashMap::new(),
        };
        let (model_path, model) = match loader
            .newest(&config.model_dir, None)
            .map_err(|e| fatal(&e))?
        {
            Newest::Loaded(path, model) => (path, *model),
            Newest::Refused(errors) if errors.is_empty() => {
                return Err(SinkError::Fatal(format!(
                    "no model in {} (a model.onnx, or version directories holding one)",
                    config.model_dir.display()
                )));
            }
            Newest::Refused(errors) => {
                return Err(SinkError::Fatal(format!(
                    "no usable model in {}: every version is refused: {}",
                    config.model_dir.display(),
                    errors.join("; ")
                )));
            }
        };
        info!(model = %model.meta.name, version = %model.meta.version, path = %model_path.display(), "Model loaded");
        info.with_label_values(&[&model.meta.name, &model.meta.version])
            .set(1);
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
            txn,
            loader,
            last_check: Instant::now(),
            hangup,
        })
    }

    /// The version in use.
    pub fn model_version(&self) -> &str {
        &self.model.meta.version
    }

    /// Between batches: switch to the newest version above the one in use
    /// that passes its checks, if any. A refused version is logged,
    /// counted and not checked again until its files change (a copy still
    /// under way) or SIGHUP; the one in use stays.
    fn maybe_reload(&mut self) {
        let hangup = self.hangup.swap(false, Ordering::Relaxed);
        let due = self.last_check.elapsed() >= Duration::from_millis(self.config.reload_check_ms);
        if !(due || hangup) {
            return;
        }
        if hangup {
            self.loader.refused.clear();
        }
        self.last_check = Instant::now();
        let current = (self.model_path.as_path(), self.model.meta.version.as_str());
        match self.loader.newest(&self.config.model_dir, Some(current)) {
            Ok(Newest::Loaded(path, model)) => {
                info!(from = %self.model.meta.version, to = %model.meta.version, path = %path.display(), "Model reloaded");
                self.info
                    .with_label_values(&[&self.model.meta.name, &self.model.meta.version])
                    .set(0);
                self.info
                    .with_label_values(&[&model.meta.name, &model.meta.version])
                    .set(1);
                self.model = *model;
                self.model_path = path;
            }
            Ok(Newest::Refused(_)) => {}
            // ONNX Runtime is loaded once per process: with a model in use
            // this cannot happen; the model in use stays.
            Err(e) => error!(error = %e, "Model reload check failed; keeping the current one"),
        }
    }

    /// Scores `cases` with one run; a per-case error for a case ONNX
    /// Runtime fails on. If the batch fails and the model still scores its
    /// probe batch, the cases are scored one by one so that one record
    /// cannot stop the stream; if the probe fails too, the model (or the
    /// runtime) is broken and that is fatal.
    fn score_cases(
        &mut self,
        cases: &[(usize, &Envelope<Case>)],
    ) -> Result<Vec<Result<f32, String>>, SinkError> {
        let rows: Vec<&dyn FeatureSource> = cases
            .iter()
            .map(|(_, c)| &c.data as &dyn FeatureSource)
            .collect();
        let batch_error = match self.model.score(&rows) {
            Ok(scores) => return Ok(scores.into_iter().map(Ok).collect()),
            Err(e) => e,
        };
        if let Err((reason, message)) = self.model.probe() {
            return Err(SinkError::Fatal(format!(
                "model {} {}: a batch failed ({batch_error}) and the probe batch fails too ({reason}: {message})",
                self.model.meta.name, self.model.meta.version
            )));
        }
        warn!(error = %batch_error, cases = cases.len(), version = %self.model.meta.version, "Batch not scored; scoring its cases one by one");
        Ok(rows
            .iter()
            .map(|row| match self.model.score(std::slice::from_ref(row)) {
                Ok(s) => s
                    .first()
                    .copied()
                    .ok_or_else(|| "no score for the row".to_owned()),
                Err(e) => Err(e.to_string()),
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl Sink for ScorerSink {
    fn commits_in_transaction(&self) -> bool {
        self.producer.is_transactional()
    }

    async fn write(
        &mut self,
        events: &[Accepted],
        ctx: &BatchContext<'_>,
        rejects: &mut dyn Rejects,
    ) -> Result<usize, SinkError> {
        let mut cases = Vec::with_capacity(events.len());
        let mut refused = Vec::new();
        for ev in events {
            match &ev.event {
                Event::Case(c) => cases.push((ev.index, c)),
                other => refused.push(Rejected {
                    index: ev.index,
                    reason: REASON_UNSUPPORTED,
                    error: format!(
                        "the scorer scores health.case v1, not {} v{}",
                        other.schema(),
                        other.schema_version()
                    ),
                }),
            }
        }
        let mut out = Vec::with_capacity(cases.len());
        if !cases.is_empty() {
            // One model run per batch, so one model version per batch.
            self.maybe_reload();
            // Not held across an await: `dyn FeatureSource` is not `Sync`.
            let scores = self.score_cases(&cases)?;
            let (name, version) = (&self.model.meta.name, &self.model.meta.version);
            let now = Utc::now();
            let mut unscored = 0usize;
            for ((index, case), score) in cases.iter().zip(scores) {
                let refuse = |reason, error| Rejected {
                    index: *index,
                    reason,
                    error,
                };
                let score = match score {
                    Ok(s) => f64::from(s),
                    Err(e) => {
                        refused.push(refuse(
                            REASON_SCORING_FAILED,
                            format!("model {name} {version} failed on case {}: {e}", case.id),
                        ));
                        unscored += 1;
                        continue;
                    }
                };
                if !score.is_finite() || !(0.0..=1.0).contains(&score) {
                    let (reason, what) = if score.is_finite() {
                        (REASON_OUT_OF_RANGE, "outside [0, 1]")
                    } else {
                        (REASON_NON_FINITE, "not finite")
                    };
                    refused.push(refuse(
                        reason,
                        format!(
                            "model {name} {version} scored case {} {score}: {what}; not published",
                            case.id
                        ),
                    ));
                    unscored += 1;
                    continue;
                }
                self.scores.observe(score);
                let mut env = Envelope::new(
                    "scorer",
                    CaseScore {
                        case_event_id: case.id,
                        model_name: name.clone(),
                        model_version: version.clone(),
                        score,
                        scored_at: now,
                    },
                    now,
                );
                // The version of the case scored: a score of an older
                // version, published late, never replaces a newer one's.
                env.upstream_updated_at = case.upstream_updated_at;
                let bytes = env
                    .to_json_bytes()
                    .map_err(|e| SinkError::Fatal(e.to_string()))?;
                out.push((case.data.partition_key(), bytes));
            }
            if unscored > 0 {
                warn!(model = %name, version = %version, cases = unscored, of = cases.len(), "Cases without a usable score sent to the DLQ");
            }
        }
        if self.producer.is_transactional() {
            let records = records(&self.config.output_topic, &out);
            self.txn
                .commit(&mut self.producer, records, &refused, rejects, ctx)
                .await?;
            return Ok(out.len());
        }
        if !refused.is_empty() {
            rejects.publish(&refused).await?;
        }
        if out.is_empty() {
            return Ok(0);
        }
        self.publish(&out)
            .await
            .map_err(|e| SinkError::Retryable(e.to_string()))?;
        Ok(out.len())
    }
}

impl ScorerSink {
    /// Publishes scores, keyed, and waits for every acknowledgement.
    async fn publish(&self, out: &[(String, Vec<u8>)]) -> Result<(), vigie_kafka::KafkaError> {
        let records = records(&self.config.output_topic, out);
        self.producer.send_all(records).await.map(drop)
    }
}

/// The scores of `out` as records of `topic`, keyed.
fn records<'a>(topic: &'a str, out: &'a [(String, Vec<u8>)]) -> Vec<OutRecord<'a>> {
    out.iter()
        .map(|(k, v)| OutRecord {
            partition: None,
            topic,
            key: Some(k.as_bytes()),
            payload: Some(v),
            headers: &[],
            timestamp_ms: None,
        })
        .collect()
}
