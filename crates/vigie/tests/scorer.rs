//! The scorer end to end on a real broker: cases in, one score per case
//! out (ids, model version and keys right), then the scores stored by the
//! PostgreSQL sink.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Reaped, SpawnReaped, free_port, postgres_sink, produce_sample, vigie};
use vigie_simulator::{CaseGenConfig, CaseGenerator};
use vigie_testkit::{
    TestDb, broker, create_topic_and_dlq, ort_dylib, read_topic, unique_name, wait_for,
};

const CASES: u64 = 500;

fn stop(mut child: Reaped) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success(), "clean exit after SIGTERM");
}

#[tokio::test]
async fn every_case_gets_one_score_with_its_id_model_version_and_key() {
    let b = broker();
    let (cases, scores) = (
        unique_name("health.case.v1"),
        unique_name("health.case_score.v1"),
    );
    for t in [&cases, &scores] {
        create_topic_and_dlq(&b.bootstrap, t, 2).await;
    }
    produce_sample(&b.bootstrap, &cases, CASES, 3);

    let scorer = vigie()
        .args([
            "consume",
            "--sink",
            "scorer",
            "--group",
            &unique_name("scorer"),
            "--topic",
            &cases,
        ])
        .env("VIGIE__KAFKA__BROKERS", &b.bootstrap)
        .env("VIGIE__CONSUMERS__SINKS__SCORER__OUTPUT_TOPIC", &scores)
        .env(
            "VIGIE__CONSUMERS__SINKS__SCORER__MODEL_DIR",
            vigie_testkit::repo_root().join("models/hosp_risk/1.0.0"),
        )
        .env("ORT_DYLIB_PATH", ort_dylib())
        .env(
            "VIGIE__TELEMETRY__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn_reaped();
    let got = tokio::task::spawn_blocking({
        let (bootstrap, scores) = (b.bootstrap.clone(), scores.clone());
        move || read_topic(&bootstrap, &scores, CASES as usize, Duration::from_secs(60))
    })
    .await
    .unwrap();
    stop(scorer);

    let g = CaseGenerator::new(CaseGenConfig {
        seed: 3,
        ..CaseGenConfig::default()
    })
    .unwrap();
    let expected: BTreeMap<String, (String, _)> = (0..CASES)
        .map(|i| {
            let e = vigie_simulator::case_envelope(&g, i, chrono::Utc::now());
            let state = e.data.res_state.as_str().to_owned();
            (e.id.to_string(), (state, e.upstream_updated_at))
        })
        .collect();
    let registry = vigie_core::SchemaRegistry::embedded().unwrap();
    let mut seen = BTreeSet::new();
    for (_, _, key, value, _) in &got {
        let vigie_core::Event::CaseScore(env) = registry.parse(value).expect("a valid score event")
        else {
            panic!("not a health.case_score event");
        };
        let case = env.data.case_event_id.to_string();
        assert!(seen.insert(case.clone()), "case {case} scored twice");
        assert_eq!(
            key.as_deref(),
            Some(expected[&case].0.as_bytes()),
            "keyed like its case"
        );
        assert!(expected[&case].1.is_some());
        assert_eq!(
            env.upstream_updated_at, expected[&case].1,
            "the version of the case scored"
        );
        assert_eq!(
            (
                env.data.model_name.as_str(),
                env.data.model_version.as_str()
            ),
            ("hosp_risk", "1.0.0")
        );
        assert!((0.0..=1.0).contains(&env.data.score));
        assert_eq!(
            env.id,
            vigie_core::event_id("scorer", &[case.as_str(), "hosp_risk", "1.0.0"]),
            "deterministic id"
        );
    }
    assert_eq!(
        seen,
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "one score per case"
    );

    // The PostgreSQL sink stores them.
    let db = TestDb::create().await;
    let sink = postgres_sink(
        &b.bootstrap,
        &scores,
        &unique_name("pg"),
        &db.url,
        free_port(),
    )
    .spawn_reaped();
    let pool = db.pool().await;
    wait_for("scores stored", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(DISTINCT case_event_id) FROM case_score")
                .fetch_one(&pool)
                .await
                .ok()?;
            (n == CASES as i64).then_some(())
        }
    })
    .await;
    stop(sink);
}
