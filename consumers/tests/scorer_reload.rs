//! Model reload between batches: a new version in the models directory is
//! picked up, a corrupt one is refused with a clear count and the current
//! model goes on; every event gets its score.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use vigie_consumers::sinks::scorer::{ScorerConfig, ScorerSink};
use vigie_consumers::{Accepted, BatchContext, Rejected, Rejects, Sink, SinkError};
use vigie_kafka::{EventProducer, KafkaMetrics, ProducerConfig};
use vigie_simulator::{CaseGenConfig, CaseGenerator};
use vigie_testkit::{broker, create_topic, ort_dylib, read_topic, unique_name};

struct NoRejects;

#[async_trait::async_trait]
impl Rejects for NoRejects {
    async fn publish(&mut self, rejected: &[Rejected]) -> Result<(), SinkError> {
        panic!("nothing should be refused: {rejected:?}");
    }

    fn letters(&mut self, rejected: &[Rejected]) -> Vec<vigie_consumers::OutboxLetter> {
        panic!("nothing should be refused: {rejected:?}");
    }
}

/// Copies the shipped model into `root/<version>`, with that version in its metadata.
fn install(root: &Path, version: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/hosp_risk/1.0.0");
    let dst = root.join(version);
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(src.join("model.onnx"), dst.join("model.onnx")).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("metadata.json")).unwrap()).unwrap();
    meta["version"] = version.into();
    std::fs::write(dst.join("metadata.json"), meta.to_string()).unwrap();
}

#[tokio::test]
async fn a_new_version_is_picked_up_between_batches_and_a_corrupt_one_is_refused() {
    let b = broker();
    let topic = unique_name("health.case_score.v1");
    create_topic(&b.bootstrap, &topic, 1).await;
    let root = tempfile::tempdir().unwrap();
    install(root.path(), "1.0.0");

    let registry = prometheus::Registry::new();
    let producer = EventProducer::new(
        &vigie_kafka::Cluster::new(&b.bootstrap),
        &ProducerConfig::default(),
        KafkaMetrics::unregistered(),
    )
    .unwrap();
    let config = ScorerConfig {
        model_dir: root.path().to_path_buf(),
        ort_dylib: Some(ort_dylib()),
        output_topic: topic.clone(),
        reload_check_ms: 0,
        // Written to directly, outside a group.
        exactly_once: false,
        ..ScorerConfig::default()
    };
    let mut sink = ScorerSink::new(&config, producer, &registry).unwrap();
    let schemas = vigie_core::SchemaRegistry::embedded().unwrap();
    let g = CaseGenerator::new(CaseGenConfig::default()).unwrap();
    let batch = |from: u64| -> Vec<Accepted> {
        (from..from + 50)
            .map(|i| {
                let bytes = vigie_simulator::case_envelope(&g, i, chrono::Utc::now())
                    .to_json_bytes()
                    .unwrap();
                Accepted {
                    index: (i - from) as usize,
                    partition: 0,
                    event: schemas.parse(&bytes).unwrap(),
                }
            })
            .collect()
    };
    let offsets = BTreeMap::new();
    let ctx = BatchContext {
        group: "g",
        next_offsets: &offsets,
        assigned: &std::collections::BTreeSet::new(),
        dead_letters: &[],
        group_metadata: None,
    };

    assert_eq!(
        sink.write(&batch(0), &ctx, &mut NoRejects).await.unwrap(),
        50
    );
    install(root.path(), "1.1.0");
    assert_eq!(
        sink.write(&batch(50), &ctx, &mut NoRejects).await.unwrap(),
        50
    );
    assert_eq!(sink.model_version(), "1.1.0");
    // A broken newer version: refused, counted, and the stream goes on with 1.1.0.
    install(root.path(), "1.2.0");
    std::fs::write(root.path().join("1.2.0/model.onnx"), b"truncated").unwrap();
    assert_eq!(
        sink.write(&batch(100), &ctx, &mut NoRejects).await.unwrap(),
        50
    );
    assert_eq!(sink.model_version(), "1.1.0");
    let metrics = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        metrics.contains(r#"vigie_scorer_model_refused_total{reason="model_file"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"vigie_scorer_model_info{model="hosp_risk",version="1.1.0"} 1"#),
        "{metrics}"
    );

    let scores = read_topic(&b.bootstrap, &topic, 150, Duration::from_secs(30));
    let versions: Vec<String> = scores
        .iter()
        .map(|(_, _, _, v, _)| {
            let e: serde_json::Value = serde_json::from_slice(v).unwrap();
            e["data"]["model_version"].as_str().unwrap().to_owned()
        })
        .collect();
    // In order on one partition: no batch mixes versions.
    assert!(versions[..50].iter().all(|v| v == "1.0.0"));
    assert!(versions[50..].iter().all(|v| v == "1.1.0"));
}
