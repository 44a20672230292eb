//! Retraining on a drift alert, end to end on a real broker. From the
//! third window on, the simulator's cases are those of an outbreak
//! (`Drift::Outbreak`): the moderate age shift, and hospitalisation
//! doubling in four states. The drift component reports the age shift as
//! an alert on `age_group`;
//! the retraining job (`ml/retrain.py`, what `scripts/retrain` runs) reads
//! that alert, takes the fresh cases from the topic, runs `dvc repro`
//! (the candidate trained, both models evaluated on the same test rows),
//! finds the candidate's AUC not below the current model's and installs it
//! as version 1.1.0 beside 1.0.0; the scorer and the drift component
//! running on the same model directory move to it with the next cases.

mod common;

use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::{SpawnReaped, committed_at_least, free_port, metric, stop, vigie};
use serde_json::Value;
use vigie_core::{Envelope, Event, SchemaRegistry};
use vigie_simulator::{CaseGenConfig, CaseGenerator, Drift};
use vigie_testkit::{
    RawInput, broker, create_topic, create_topic_and_dlq, create_topic_with, ort_dylib,
    produce_raw, read_to_end, repo_root, unique_name, venv_python,
};

/// 100 cases per simulated second: 6,000 per one-minute window; the
/// drift from the third window on.
const CASES: u64 = 36_000;
const PER_SECOND: u64 = 100;
const DRIFT_FROM: u64 = 12_000;
/// Where hospitalisation doubles.
const OUTBREAK_STATES: [&str; 4] = ["CA", "TX", "FL", "NY"];
/// Cases produced once the new version is installed.
const AFTER: u64 = 500;

fn at(i: u64) -> DateTime<Utc> {
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    base + chrono::Duration::milliseconds(i64::try_from(i * 1000 / PER_SECOND).unwrap())
}

/// Cases `range` of the drifting stream, keyed as `vigie ingest` keys them.
fn cases(range: std::ops::Range<u64>) -> Vec<RawInput> {
    let g = CaseGenerator::new(CaseGenConfig {
        seed: 31,
        drift: Some(Drift::Outbreak {
            from_index: DRIFT_FROM,
            states: OUTBREAK_STATES.map(str::to_owned).to_vec(),
        }),
        ..CaseGenConfig::default()
    })
    .unwrap();
    range
        .map(|i| {
            let env = Envelope::new("simulator", g.row(i), at(i));
            (
                env.partition_key().into_bytes(),
                env.to_json_bytes().unwrap(),
                Vec::new(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_drift_alert_retrains_and_the_scorer_moves_to_the_new_version() {
    let b = broker();
    let (case_topic, scores, reports, state) = (
        unique_name("health.case.v1"),
        unique_name("health.case_score.v1"),
        unique_name("health.drift_report.v1"),
        unique_name("vigie.drift_state.v1"),
    );
    create_topic_and_dlq(&b.bootstrap, &case_topic, 2).await;
    create_topic_and_dlq(&b.bootstrap, &scores, 2).await;
    create_topic(&b.bootstrap, &reports, 1).await;
    create_topic_with(&b.bootstrap, &state, 1, &[("cleanup.policy", "compact")]).await;
    produce_raw(&b.bootstrap, &case_topic, &cases(0..CASES)).await;

    // The model directory the scorer, the drift component and the job
    // share, with the shipped version.
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("hosp_risk");
    std::fs::create_dir_all(models.join("1.0.0")).unwrap();
    for f in ["model.onnx", "metadata.json"] {
        std::fs::copy(
            repo_root().join("models/hosp_risk/1.0.0").join(f),
            models.join("1.0.0").join(f),
        )
        .unwrap();
    }

    let (drift_group, scorer_group) = (unique_name("drift"), unique_name("scorer"));
    let drift_port = free_port();
    let drift = vigie()
        .args(["consume", "--sink", "drift", "--group", &drift_group])
        .args(["--topic", &case_topic])
        .env("VIGIE__KAFKA__BROKERS", &b.bootstrap)
        .env("VIGIE__CONSUMERS__SINKS__DRIFT__MODEL_DIR", &models)
        .env("VIGIE__CONSUMERS__SINKS__DRIFT__RELOAD_CHECK_MS", "200")
        .env("VIGIE__CONSUMERS__SINKS__DRIFT__WINDOW_SECS", "60")
        .env("VIGIE__CONSUMERS__SINKS__DRIFT__ALLOWED_LATENESS_SECS", "0")
        .env("VIGIE__CONSUMERS__SINKS__DRIFT__REPORT_TOPIC", &reports)
        .env("VIGIE__CONSUMERS__SINKS__DRIFT__STATE_TOPIC", &state)
        .env(
            "VIGIE__CONSUMERS__SINKS__DRIFT__TRANSACTIONAL_ID",
            unique_name("drift-txn"),
        )
        .env(
            "VIGIE__TELEMETRY__LISTEN",
            format!("127.0.0.1:{drift_port}"),
        )
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn_reaped();
    let scorer_port = free_port();
    let scorer = vigie()
        .args(["consume", "--sink", "scorer", "--group", &scorer_group])
        .args(["--topic", &case_topic])
        .env("VIGIE__KAFKA__BROKERS", &b.bootstrap)
        .env("VIGIE__CONSUMERS__SINKS__SCORER__OUTPUT_TOPIC", &scores)
        .env("VIGIE__CONSUMERS__SINKS__SCORER__MODEL_DIR", &models)
        .env("VIGIE__CONSUMERS__SINKS__SCORER__RELOAD_CHECK_MS", "200")
        .env(
            "VIGIE__CONSUMERS__SINKS__SCORER__TRANSACTIONAL_ID",
            unique_name("scorer-txn"),
        )
        .env("ORT_DYLIB_PATH", ort_dylib())
        .env(
            "VIGIE__TELEMETRY__LISTEN",
            format!("127.0.0.1:{scorer_port}"),
        )
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn_reaped();
    committed_at_least(&drift_group, &case_topic, CASES as i64).await;
    committed_at_least(&scorer_group, &case_topic, CASES as i64).await;

    // The job, as scripts/retrain runs it.
    let runs = dir.path().join("runs");
    let out = Command::new(venv_python("ml-venv"))
        .arg(repo_root().join("ml/retrain.py"))
        .args(["--brokers", &b.bootstrap, "--reports", &reports])
        .args(["--cases-topic", &case_topic, "--cases", &CASES.to_string()])
        .arg("--models")
        .arg(&models)
        .arg("--runs")
        .arg(&runs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ml/retrain.py failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{result:#}");
    let trigger = &result["trigger"];
    assert_eq!(trigger["status"], "alert", "{result}");
    assert_eq!(
        trigger["alerted"],
        serde_json::json!(["age_group"]),
        "the drifted feature only: {result}"
    );
    assert_eq!(result["fresh_cases"], CASES);
    let auc = &result["auc"];
    assert!(
        auc["candidate"].as_f64().unwrap() >= auc["current"].as_f64().unwrap(),
        "{result}"
    );
    assert_eq!(result["candidate"], "1.1.0");
    for f in ["model.onnx", "metadata.json"] {
        assert!(
            models.join("1.1.0").join(f).is_file(),
            "1.1.0/{f} installed"
        );
    }
    // DVC's record of the run: the lock file of the three stages.
    let run = std::path::PathBuf::from(result["run"].as_str().unwrap());
    let lock = std::fs::read_to_string(run.join("dvc.lock")).unwrap();
    for stage in ["train:", "evaluate-current:", "evaluate-candidate:"] {
        assert!(lock.contains(stage), "{stage} in dvc.lock");
    }

    // The scorer and the drift component take the new version up with the
    // next cases.
    produce_raw(&b.bootstrap, &case_topic, &cases(CASES..CASES + AFTER)).await;
    committed_at_least(&scorer_group, &case_topic, (CASES + AFTER) as i64).await;
    committed_at_least(&drift_group, &case_topic, (CASES + AFTER) as i64).await;
    // The last window of 1.0.0, still open, dropped; the windows committed
    // with the last batch are 1.1.0's.
    assert_eq!(
        metric(
            drift_port,
            "vigie_drift_windows_dropped_total{model=\"hosp_risk\",version=\"1.0.0\"}"
        )
        .await,
        Some(1.0)
    );
    stop(drift);
    let drift_state = read_to_end(
        &b.bootstrap,
        &state,
        "read_committed",
        Duration::from_secs(60),
    )
    .into_iter()
    .rfind(|(_, _, key, _, _)| key.as_deref() == Some(drift_group.as_bytes()))
    .expect("the drift state committed");
    let drift_state: Value = serde_json::from_slice(&drift_state.3).unwrap();
    assert_eq!(drift_state["model_version"], "1.1.0");
    assert_eq!(
        metric(
            scorer_port,
            "vigie_scorer_model_info{model=\"hosp_risk\",version=\"1.1.0\"}"
        )
        .await,
        Some(1.0)
    );
    stop(scorer);
    let registry = SchemaRegistry::embedded().unwrap();
    let late: std::collections::BTreeSet<String> = cases(CASES..CASES + AFTER)
        .iter()
        .map(|(_, v, _)| {
            let Ok(Event::Case(c)) = registry.parse(v) else {
                unreachable!()
            };
            c.id.to_string()
        })
        .collect();
    let mut versions = std::collections::BTreeMap::<String, usize>::new();
    for (_, _, _, value, _) in read_to_end(
        &b.bootstrap,
        &scores,
        "read_committed",
        Duration::from_secs(60),
    ) {
        let Ok(Event::CaseScore(s)) = registry.parse(&value) else {
            panic!("not a score")
        };
        if late.contains(&s.data.case_event_id.to_string()) {
            *versions.entry(s.data.model_version).or_default() += 1;
        }
    }
    assert_eq!(
        versions,
        [("1.1.0".to_owned(), AFTER as usize)].into(),
        "the cases after the retraining scored by 1.1.0"
    );
}
