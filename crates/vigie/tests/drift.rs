//! The drift component on a real broker: `kill -9` mid-transaction and
//! restarts, then exactly one report per window for a `read_committed`
//! reader, each equal to the report of the same window computed in one
//! uninterrupted pass, and a moderate drift reported as an alert on its
//! feature.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::{OpenTransactions, SpawnReaped, committed_at_least, free_port, metric, stop, vigie};
use vigie_consumers::drift::{Input, Tracker};
use vigie_consumers::sinks::drift::{DriftConfig, newest_profile};
use vigie_core::health::{DriftReport, DriftStatus};
use vigie_core::{Envelope, Event, SchemaRegistry};
use vigie_simulator::{CaseGenConfig, CaseGenerator, Drift};
use vigie_testkit::{
    broker, create_topic, create_topic_and_dlq, create_topic_with, produce_raw, read_to_end,
    unique_name,
};

/// 100 cases per simulated second: 6,000 per one-minute window.
const CASES: u64 = 60_000;
const PER_SECOND: u64 = 100;
/// The moderate drift starts half-way through the sixth window.
const DRIFT_FROM: u64 = 33_000;
const KILLS: usize = 3;

/// Event time of case `i`.
fn at(i: u64) -> DateTime<Utc> {
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    base + chrono::Duration::milliseconds(i64::try_from(i * 1000 / PER_SECOND).unwrap())
}

fn generator() -> CaseGenerator {
    CaseGenerator::new(CaseGenConfig {
        seed: 21,
        drift: Some(Drift::AgeShiftModerate {
            from_index: DRIFT_FROM,
        }),
        ..CaseGenConfig::default()
    })
    .unwrap()
}

fn config() -> DriftConfig {
    DriftConfig {
        model_dir: vigie_testkit::repo_root().join("models/hosp_risk"),
        window_secs: 60,
        // Each partition's cases come in time order: none is late.
        allowed_lateness_secs: 0,
        ..DriftConfig::default()
    }
}

/// The reports of one pass over every case, in one process.
fn uninterrupted() -> Vec<DriftReport> {
    let c = config();
    let (name, version, profile) = newest_profile(&c.model_dir).unwrap();
    let mut t = Tracker::new(
        Arc::new(profile),
        (&name, &version),
        c.spec(),
        c.thresholds(),
    );
    for (i, case) in generator().rows(0..CASES).enumerate() {
        assert!(t.add_case(Input::Cases(0), at(i as u64), 0, &case));
    }
    t.close_due(0)
}

/// A drift member of `group`.
fn member(
    bootstrap: &str,
    topics: &Topics,
    group: &str,
    txn: &str,
    port: u16,
) -> std::process::Command {
    let c = config();
    let mut cmd = vigie();
    cmd.args([
        "consume",
        "--sink",
        "drift",
        "--group",
        group,
        "--topic",
        &topics.cases,
    ])
    .env("VIGIE__KAFKA__BROKERS", bootstrap)
    .env("VIGIE__KAFKA__CONSUMER__BATCH_MAX_RECORDS", "1000")
    .env("VIGIE__CONSUMERS__SINKS__DRIFT__MODEL_DIR", &c.model_dir)
    .env(
        "VIGIE__CONSUMERS__SINKS__DRIFT__WINDOW_SECS",
        c.window_secs.to_string(),
    )
    .env(
        "VIGIE__CONSUMERS__SINKS__DRIFT__ALLOWED_LATENESS_SECS",
        c.allowed_lateness_secs.to_string(),
    )
    .env(
        "VIGIE__CONSUMERS__SINKS__DRIFT__REPORT_TOPIC",
        &topics.reports,
    )
    .env("VIGIE__CONSUMERS__SINKS__DRIFT__STATE_TOPIC", &topics.state)
    .env("VIGIE__CONSUMERS__SINKS__DRIFT__TRANSACTIONAL_ID", txn)
    .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
    .env("RUST_LOG", "warn")
    .stdout(std::process::Stdio::null());
    cmd
}

struct Topics {
    cases: String,
    reports: String,
    state: String,
}

/// The topics, and every case produced, keyed as `vigie ingest` keys them
/// (by state) over 4 partitions.
async fn topics(bootstrap: &str) -> Topics {
    let t = Topics {
        cases: unique_name("health.case.v1"),
        reports: unique_name("health.drift_report.v1"),
        state: unique_name("vigie.drift_state.v1"),
    };
    create_topic_and_dlq(bootstrap, &t.cases, 4).await;
    create_topic(bootstrap, &t.reports, 1).await;
    create_topic_with(bootstrap, &t.state, 1, &[("cleanup.policy", "compact")]).await;
    let records: Vec<_> = generator()
        .rows(0..CASES)
        .enumerate()
        .map(|(i, case)| {
            let env = Envelope::new("simulator", case, at(i as u64));
            (
                env.partition_key().into_bytes(),
                env.to_json_bytes().unwrap(),
                Vec::new(),
            )
        })
        .collect();
    produce_raw(bootstrap, &t.cases, &records).await;
    t
}

/// The reports a reader of `isolation` sees.
fn reports(bootstrap: &str, topic: &str, isolation: &str) -> Vec<DriftReport> {
    let registry = SchemaRegistry::embedded().unwrap();
    read_to_end(bootstrap, topic, isolation, Duration::from_secs(60))
        .into_iter()
        .map(|(_, _, _, value, _)| match registry.parse(&value) {
            Ok(Event::Other(env)) => serde_json::from_value(env.data).unwrap(),
            other => panic!("not a drift report: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_drift_member_killed_mid_transaction_reports_each_window_once() {
    let b = broker();
    let topics = topics(&b.bootstrap).await;
    let (group, txn) = (unique_name("drift"), unique_name("drift-txn"));
    let expected = uninterrupted();
    // Nine windows closed, the tenth still open (its end not yet passed).
    assert_eq!(expected.len(), 9);

    let open = OpenTransactions::new(&b.bootstrap, &topics.state);
    let mut port = free_port();
    let mut running = member(&b.bootstrap, &topics, &group, &txn, port).spawn_reaped();
    let mut written = 0;
    for k in 1..=KILLS as i64 {
        // Killed inside a transaction (its state on the broker, not
        // committed) once a k-th share of the cases is committed, and
        // started again at once.
        committed_at_least(&group, &topics.cases, k * CASES as i64 / (KILLS as i64 + 1)).await;
        written = open.wait(written);
        running.kill().unwrap();
        running.wait().unwrap();
        port = free_port();
        running = member(&b.bootstrap, &topics, &group, &txn, port).spawn_reaped();
    }
    committed_at_least(&group, &topics.cases, CASES as i64).await;
    // The last member's gauges: the verdict of the last window it closed
    // (the drifted ones are alerts), if it closed any.
    let windows = metric(port, "vigie_drift_windows_total").await.unwrap();
    if windows > 0.0 {
        let status = metric(port, "vigie_drift_status").await.unwrap();
        assert!((status - 2.0).abs() < f64::EPSILON, "status gauge {status}");
    }
    stop(running);

    let seen = reports(&b.bootstrap, &topics.reports, "read_committed");
    assert_eq!(seen.len(), expected.len(), "one report per window");
    for (s, e) in seen.iter().zip(&expected) {
        assert_eq!(s, e, "window {}", e.window_start);
    }
    // The states the kills interrupted are on the broker, aborted.
    let committed = read_to_end(
        &b.bootstrap,
        &topics.state,
        "read_committed",
        Duration::from_secs(60),
    );
    let all = read_to_end(
        &b.bootstrap,
        &topics.state,
        "read_uncommitted",
        Duration::from_secs(60),
    );
    assert!(
        all.len() > committed.len(),
        "no kill landed inside a transaction: {} states",
        all.len()
    );

    // Before the change every window is ok; from the first whole window
    // after it, age_group alerts, and no other feature does.
    let status = |r: &DriftReport, feature: &str| {
        r.features
            .iter()
            .find(|f| f.feature == feature)
            .unwrap()
            .status
    };
    for r in &seen[..5] {
        assert_eq!(r.status, DriftStatus::Ok, "{r:?}");
    }
    for r in &seen[6..] {
        assert_eq!(status(r, "age_group"), DriftStatus::Alert, "{r:?}");
        for f in r
            .features
            .iter()
            .filter(|f| f.feature != "age_group" && f.feature != "score")
        {
            assert_ne!(f.status, DriftStatus::Alert, "{} {f:?}", r.window_start);
        }
    }
}
