//! No model version and no record can stop the scorer: a version that does
//! not fit its metadata or does not score its probe batch is refused with
//! its reason counted and the current one keeps scoring; a version copied
//! in pieces is checked again once its files change; a case the model
//! scores NaN (or fails on) goes to the DLQ and the rest of its batch is
//! published.
//!
//! The broken models are in `tests/data/bad_models/`, written by
//! `tests/data/make_bad_models.py` from the shipped model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vigie_consumers::sinks::scorer::{Model, Refusal, ScorerConfig, ScorerSink};
use vigie_consumers::{Accepted, BatchContext, OutboxLetter, Rejected, Rejects, Sink, SinkError};
use vigie_kafka::{EventProducer, KafkaMetrics, ProducerConfig};
use vigie_simulator::{CaseGenConfig, CaseGenerator};
use vigie_testkit::{broker, create_topic, ort_dylib, read_topic, unique_name};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/hosp_risk/1.0.0")
}

fn shipped_model() -> Vec<u8> {
    std::fs::read(shipped().join("model.onnx")).unwrap()
}

/// The shipped metadata.json with `version` in it.
fn metadata(version: &str) -> Vec<u8> {
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shipped().join("metadata.json")).unwrap()).unwrap();
    meta["version"] = version.into();
    meta.to_string().into_bytes()
}

/// A model of `tests/data/bad_models/`.
fn bad(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/bad_models")
        .join(format!("{name}.onnx"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A version directory `root/<version>`: `model` as model.onnx and
/// `meta` as metadata.json (left out when `None`).
fn install(root: &Path, version: &str, model: &[u8], meta: Option<&[u8]>) -> PathBuf {
    let dir = root.join(version);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.onnx"), model).unwrap();
    if let Some(meta) = meta {
        std::fs::write(dir.join("metadata.json"), meta).unwrap();
    }
    dir
}

/// The first half of `bytes`: a copy caught half-way.
fn half(bytes: &[u8]) -> Vec<u8> {
    bytes[..bytes.len() / 2].to_vec()
}

/// Every way a version can be broken, with the reason it is refused for.
fn broken_versions() -> Vec<(&'static str, Vec<u8>, Vec<u8>, Refusal)> {
    let m = metadata("9.9.9");
    vec![
        (
            "wrong output name",
            bad("wrong_output_name"),
            m.clone(),
            Refusal::OutputName,
        ),
        (
            "wrong input name",
            bad("wrong_input_name"),
            m.clone(),
            Refusal::InputName,
        ),
        (
            "wrong feature count",
            bad("wrong_feature_count"),
            m.clone(),
            Refusal::FeatureCount,
        ),
        (
            "NaN probabilities",
            bad("nan_output"),
            m.clone(),
            Refusal::ProbeNonFinite,
        ),
        (
            "probabilities above 1",
            bad("out_of_range"),
            m.clone(),
            Refusal::ProbeOutOfRange,
        ),
        (
            "truncated model.onnx",
            half(&shipped_model()),
            m.clone(),
            Refusal::ModelFile,
        ),
        (
            "truncated metadata.json",
            shipped_model(),
            half(&m),
            Refusal::Metadata,
        ),
    ]
}

#[test]
fn each_broken_model_is_refused_at_load_with_its_reason_and_file() {
    let dylib = ort_dylib();
    for (what, model, meta, reason) in broken_versions() {
        let root = tempfile::tempdir().unwrap();
        let dir = install(root.path(), "9.9.9", &model, Some(&meta));
        let err = Model::load(&dir, Some(&dylib)).expect_err(what);
        assert_eq!(err.refusal(), Some(reason), "{what}: {err}");
        let file = if reason == Refusal::Metadata {
            "metadata.json"
        } else {
            "model.onnx"
        };
        assert_eq!(err.file(), Some(dir.join(file).as_path()), "{what}: {err}");
        assert!(err.to_string().contains(reason.as_str()), "{what}: {err}");
    }
    // What was wrong is said.
    let root = tempfile::tempdir().unwrap();
    let dir = install(
        root.path(),
        "9.9.9",
        &bad("wrong_output_name"),
        Some(&metadata("9.9.9")),
    );
    let err = Model::load(&dir, Some(&dylib)).unwrap_err().to_string();
    assert!(
        err.contains("`probabilities`") && err.contains("`probs`"),
        "{err}"
    );
    std::fs::write(dir.join("model.onnx"), bad("wrong_feature_count")).unwrap();
    let err = Model::load(&dir, Some(&dylib)).unwrap_err().to_string();
    assert!(
        err.contains("96") && err.contains("n_features = 97"),
        "{err}"
    );
    // A version without its metadata.json yet.
    std::fs::remove_file(dir.join("metadata.json")).unwrap();
    let err = Model::load(&dir, Some(&dylib)).unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::MissingFile), "{err}");
    // Models that score their probe batch, though not every row: they load.
    for name in ["nan_when_onset_over_1000", "fails_when_onset_over_1000"] {
        std::fs::write(dir.join("model.onnx"), bad(name)).unwrap();
        std::fs::write(dir.join("metadata.json"), metadata("9.9.9")).unwrap();
        Model::load(&dir, Some(&dylib)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Collects what the sink refuses.
#[derive(Default)]
struct Recorded(Vec<Rejected>);

#[async_trait::async_trait]
impl Rejects for Recorded {
    async fn publish(&mut self, rejected: &[Rejected]) -> Result<(), SinkError> {
        self.0.extend_from_slice(rejected);
        Ok(())
    }

    fn letters(&mut self, rejected: &[Rejected]) -> Vec<OutboxLetter> {
        panic!("the scorer has no outbox: {rejected:?}");
    }
}

struct Harness {
    sink: ScorerSink,
    registry: prometheus::Registry,
    topic: String,
    generator: CaseGenerator,
    schemas: vigie_core::SchemaRegistry,
    next: u64,
}

async fn scorer(root: &Path) -> Result<Harness, (SinkError, prometheus::Registry)> {
    let b = broker();
    let topic = unique_name("health.case_score.v1");
    create_topic(&b.bootstrap, &topic, 1).await;
    let registry = prometheus::Registry::new();
    let producer = EventProducer::new(
        &vigie_kafka::Cluster::new(&b.bootstrap),
        &ProducerConfig::default(),
        KafkaMetrics::unregistered(),
    )
    .unwrap();
    let config = ScorerConfig {
        model_dir: root.to_path_buf(),
        ort_dylib: Some(ort_dylib()),
        output_topic: topic.clone(),
        reload_check_ms: 0,
        ..ScorerConfig::default()
    };
    match ScorerSink::new(&config, producer, &registry) {
        Ok(sink) => Ok(Harness {
            sink,
            registry,
            topic,
            generator: CaseGenerator::new(CaseGenConfig::default()).unwrap(),
            schemas: vigie_core::SchemaRegistry::embedded().unwrap(),
            next: 0,
        }),
        Err(e) => Err((e, registry)),
    }
}

impl Harness {
    /// 50 cases, those at `poisoned` indices with a case_onset_interval of
    /// 5000 weeks; their envelope ids.
    fn batch(&mut self, poisoned: impl Fn(usize) -> bool) -> (Vec<Accepted>, Vec<uuid::Uuid>) {
        let mut ids = Vec::new();
        let events = (0..50)
            .map(|index| {
                let mut env =
                    vigie_simulator::case_envelope(&self.generator, self.next, chrono::Utc::now());
                self.next += 1;
                if poisoned(index) {
                    env.data.case_onset_interval = Some(5000);
                }
                ids.push(env.id);
                Accepted {
                    index,
                    partition: 0,
                    event: self.schemas.parse(&env.to_json_bytes().unwrap()).unwrap(),
                }
            })
            .collect();
        (events, ids)
    }

    /// Writes a batch of 50 good cases; all must be published.
    async fn write_good(&mut self) {
        let (events, _) = self.batch(|_| false);
        let mut rejects = Recorded::default();
        let written = write(&mut self.sink, &events, &mut rejects).await.unwrap();
        assert!(rejects.0.is_empty(), "{:?}", rejects.0);
        assert_eq!(written, 50);
    }

    fn refused(&self, reason: Refusal) -> u64 {
        refused(&self.registry, reason)
    }

    fn refused_total(&self) -> u64 {
        Refusal::ALL.iter().map(|r| self.refused(*r)).sum()
    }

    /// The first `n` score events published: (case id, version, score).
    fn published(&self, n: usize) -> Vec<(String, String, f64)> {
        read_topic(&broker().bootstrap, &self.topic, n, Duration::from_secs(30))
            .iter()
            .take(n)
            .map(|(_, _, _, v, _)| {
                let e: serde_json::Value = serde_json::from_slice(v).unwrap();
                let d = &e["data"];
                (
                    d["case_event_id"].as_str().unwrap().to_owned(),
                    d["model_version"].as_str().unwrap().to_owned(),
                    d["score"]
                        .as_f64()
                        .unwrap_or_else(|| panic!("a score that is not a number: {e}")),
                )
            })
            .collect()
    }
}

async fn write(
    sink: &mut ScorerSink,
    events: &[Accepted],
    rejects: &mut Recorded,
) -> Result<usize, SinkError> {
    let offsets = BTreeMap::new();
    let ctx = BatchContext {
        group: "g",
        next_offsets: &offsets,
        assigned: &std::collections::BTreeSet::new(),
        dead_letters: &[],
        group_metadata: None,
    };
    sink.write(events, &ctx, rejects).await
}

/// `vigie_scorer_model_refused_total{reason}`.
fn refused(registry: &prometheus::Registry, reason: Refusal) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "vigie_scorer_model_refused_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "reason" && l.value() == reason.as_str())
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test]
async fn broken_versions_are_refused_and_counted_and_the_current_one_keeps_scoring() {
    let root = tempfile::tempdir().unwrap();
    install(
        root.path(),
        "1.0.0",
        &shipped_model(),
        Some(&metadata("1.0.0")),
    );
    let mut h = scorer(root.path()).await.unwrap();
    h.write_good().await;
    let broken = broken_versions();
    for (i, (what, model, meta, reason)) in broken.iter().enumerate() {
        install(root.path(), &format!("1.0.{}", i + 1), model, Some(meta));
        h.write_good().await;
        assert_eq!(h.sink.model_version(), "1.0.0", "{what}");
        assert_eq!(h.refused(*reason), 1, "{what}: {reason}");
        assert_eq!(h.refused_total(), i as u64 + 1, "{what}");
    }
    // Refused versions whose files do not change are not checked again.
    h.write_good().await;
    h.write_good().await;
    assert_eq!(h.refused_total(), broken.len() as u64);
    let metrics = prometheus::TextEncoder::new()
        .encode_to_string(&h.registry.gather())
        .unwrap();
    assert!(
        metrics.contains(r#"vigie_scorer_model_refused_total{reason="output_name"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"vigie_scorer_model_info{model="hosp_risk",version="1.0.0"} 1"#),
        "{metrics}"
    );

    let batches = 1 + broken.len() + 2;
    let scores = h.published(batches * 50);
    assert_eq!(scores.len(), batches * 50);
    for (_, version, score) in &scores {
        assert_eq!(version, "1.0.0");
        assert!((0.0..=1.0).contains(score), "{score}");
    }
}

#[tokio::test]
async fn a_version_copied_in_pieces_is_refused_then_taken_once_complete() {
    let root = tempfile::tempdir().unwrap();
    install(
        root.path(),
        "1.0.0",
        &shipped_model(),
        Some(&metadata("1.0.0")),
    );
    let mut h = scorer(root.path()).await.unwrap();

    // model.onnx half copied.
    let dir = install(
        root.path(),
        "1.1.0",
        &half(&shipped_model()),
        Some(&metadata("1.1.0")),
    );
    h.write_good().await;
    assert_eq!(h.sink.model_version(), "1.0.0");
    assert_eq!(h.refused(Refusal::ModelFile), 1);
    h.write_good().await;
    assert_eq!(
        h.refused(Refusal::ModelFile),
        1,
        "unchanged: not checked again"
    );
    std::fs::write(dir.join("model.onnx"), shipped_model()).unwrap();
    h.write_good().await;
    assert_eq!(h.sink.model_version(), "1.1.0");

    // model.onnx first, then metadata.json, half of it, then all of it.
    let dir = install(root.path(), "1.2.0", &shipped_model(), None);
    h.write_good().await;
    assert_eq!(h.sink.model_version(), "1.1.0");
    assert_eq!(h.refused(Refusal::MissingFile), 1);
    h.write_good().await;
    assert_eq!(
        h.refused(Refusal::MissingFile),
        1,
        "unchanged: not checked again"
    );
    std::fs::write(dir.join("metadata.json"), half(&metadata("1.2.0"))).unwrap();
    h.write_good().await;
    assert_eq!(h.sink.model_version(), "1.1.0");
    assert_eq!(h.refused(Refusal::Metadata), 1);
    std::fs::write(dir.join("metadata.json"), metadata("1.2.0")).unwrap();
    h.write_good().await;
    assert_eq!(h.sink.model_version(), "1.2.0");
    assert_eq!(h.refused_total(), 3);

    let versions: Vec<String> = h.published(350).into_iter().map(|(_, v, _)| v).collect();
    let expected: Vec<&str> = [
        "1.0.0", "1.0.0", "1.1.0", "1.1.0", "1.1.0", "1.1.0", "1.2.0",
    ]
    .iter()
    .flat_map(|v| [*v; 50])
    .collect();
    assert_eq!(versions, expected);
}

#[tokio::test]
async fn at_start_up_a_refused_newest_version_is_skipped_and_no_usable_one_is_fatal() {
    let root = tempfile::tempdir().unwrap();
    install(
        root.path(),
        "1.0.0",
        &shipped_model(),
        Some(&metadata("1.0.0")),
    );
    install(
        root.path(),
        "1.1.0",
        &bad("wrong_output_name"),
        Some(&metadata("1.1.0")),
    );
    let mut h = scorer(root.path()).await.unwrap();
    assert_eq!(h.sink.model_version(), "1.0.0");
    assert_eq!(h.refused(Refusal::OutputName), 1);
    h.write_good().await;
    assert_eq!(
        h.refused_total(),
        1,
        "refused at start-up: not checked again"
    );

    // Nothing usable: a clear error naming each version and its reason.
    let root = tempfile::tempdir().unwrap();
    install(
        root.path(),
        "1.0.0",
        &bad("nan_output"),
        Some(&metadata("1.0.0")),
    );
    install(
        root.path(),
        "1.1.0",
        &half(&shipped_model()),
        Some(&metadata("1.1.0")),
    );
    let (err, registry) = scorer(root.path()).await.err().expect("no usable model");
    let SinkError::Fatal(message) = &err else {
        panic!("{err}");
    };
    for part in [
        "no usable model",
        "1.1.0: model",
        "model_file",
        "1.0.0: model",
        "probe_non_finite",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert_eq!(refused(&registry, Refusal::ProbeNonFinite), 1);
    assert_eq!(refused(&registry, Refusal::ModelFile), 1);

    let empty = tempfile::tempdir().unwrap();
    let (err, _) = scorer(empty.path()).await.err().expect("no model");
    assert!(err.to_string().contains("no model in"), "{err}");
}

/// With `model` as the only version: a batch whose every 5th case has
/// an onset of 5000 weeks; the other 40 are published, the 10 refused with
/// `reason`.
async fn poisoned_cases_go_to_the_dlq(model: &str, reason: &str, error_part: &str) {
    let root = tempfile::tempdir().unwrap();
    install(root.path(), "1.0.0", &bad(model), Some(&metadata("1.0.0")));
    let mut h = scorer(root.path()).await.unwrap();
    let (events, ids) = h.batch(|i| i % 5 == 0);
    let mut rejects = Recorded::default();
    let written = write(&mut h.sink, &events, &mut rejects).await.unwrap();
    assert_eq!(written, 40);
    let indices: Vec<usize> = rejects.0.iter().map(|r| r.index).collect();
    assert_eq!(indices, (0..50).step_by(5).collect::<Vec<_>>());
    for r in &rejects.0 {
        assert_eq!(r.reason, reason, "{r:?}");
        assert!(r.error.contains(error_part), "{r:?}");
        assert!(r.error.contains(&ids[r.index].to_string()), "{r:?}");
    }
    // The stream goes on with the same model.
    h.write_good().await;
    let published = h.published(90);
    let expected: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, id)| id.to_string())
        .collect();
    let first: Vec<String> = published[..40]
        .iter()
        .map(|(id, _, _)| id.clone())
        .collect();
    assert_eq!(first, expected);
    for (_, _, score) in &published {
        assert!((0.0..=1.0).contains(score), "{score}");
    }
}

#[tokio::test]
async fn a_case_scored_nan_goes_to_the_dlq_and_the_rest_of_its_batch_is_published() {
    poisoned_cases_go_to_the_dlq("nan_when_onset_over_1000", "non_finite_score", "NaN").await;
}

#[tokio::test]
async fn a_case_onnx_runtime_fails_on_goes_to_the_dlq_and_the_rest_of_its_batch_is_published() {
    poisoned_cases_go_to_the_dlq(
        "fails_when_onset_over_1000",
        "scoring_failed",
        "out of data bounds",
    )
    .await;
}
