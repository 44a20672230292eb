//! One contract, written once and run for every registered sink (as Tansu
//! runs one scenario over every storage engine), on `vigie consume` as a
//! process against the real broker and PostgreSQL:
//! - a batch replayed after `kill -9` writes nothing twice;
//! - each record no sink accepts reaches the dead-letter topic once;
//! - the offsets the sink stores (in its database, or its group's) resume
//!   exactly: after the last run they are the end of the topic, no more;
//! - SIGTERM finishes the batch in flight: the run exits 0 and stores the
//!   offsets of every record it consumed.

mod common;

use common::{Reaped, SpawnReaped, free_port, produce_sample, vigie};

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use vigie_testkit::{
    TestDb, broker, create_topic_and_dlq, dlq_origin, ort_dylib, produce_raw, read_to_end,
    unique_name, wait_for,
};

/// Good cases, in two halves with poison after each.
const GOOD: u64 = 3_000;
/// Records no sink accepts: not JSON, or not an event.
const POISON: [&[u8]; 4] = [
    b"{not json",
    b"[1, 2",
    b"{\"schema\": \"nope\"}",
    b"\xff\xfe",
];
const DEADLINE: Duration = Duration::from_secs(120);

/// A registered sink and how the test observes it.
enum Under {
    Blackhole,
    Drift { reports: String, state: String },
    Postgres(TestDb),
    Scorer { scores: String },
    Scylla { keyspace: String },
}

impl Under {
    async fn new(name: &str) -> Self {
        match name {
            "blackhole" => Self::Blackhole,
            "drift" => {
                let (reports, state) = (
                    unique_name("health.drift_report.v1"),
                    unique_name("vigie.drift_state.v1"),
                );
                vigie_testkit::create_topic(&broker().bootstrap, &reports, 1).await;
                vigie_testkit::create_topic_with(
                    &broker().bootstrap,
                    &state,
                    1,
                    &[("cleanup.policy", "compact")],
                )
                .await;
                Self::Drift { reports, state }
            }
            "postgres" => Self::Postgres(TestDb::create().await),
            "scorer" => {
                let scores = unique_name("health.case_score.v1");
                create_topic_and_dlq(&broker().bootstrap, &scores, 3).await;
                Self::Scorer { scores }
            }
            "scylla" => Self::Scylla {
                keyspace: unique_name("vigie_contract").replace('-', "_"),
            },
            other => panic!("sink {other} has no case in the contract test"),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Blackhole => vec![],
            Self::Drift { reports, state } => vec![
                (
                    "VIGIE__CONSUMERS__SINKS__DRIFT__REPORT_TOPIC",
                    reports.clone(),
                ),
                ("VIGIE__CONSUMERS__SINKS__DRIFT__STATE_TOPIC", state.clone()),
                (
                    "VIGIE__CONSUMERS__SINKS__DRIFT__MODEL_DIR",
                    vigie_testkit::repo_root()
                        .join("models/hosp_risk")
                        .display()
                        .to_string(),
                ),
            ],
            Self::Postgres(db) => vec![("VIGIE__CONSUMERS__SINKS__POSTGRES__URL", db.url.clone())],
            Self::Scorer { scores } => vec![
                (
                    "VIGIE__CONSUMERS__SINKS__SCORER__OUTPUT_TOPIC",
                    scores.clone(),
                ),
                (
                    "VIGIE__CONSUMERS__SINKS__SCORER__MODEL_DIR",
                    vigie_testkit::repo_root()
                        .join("models/hosp_risk/1.0.0")
                        .display()
                        .to_string(),
                ),
                ("ORT_DYLIB_PATH", ort_dylib().display().to_string()),
            ],
            Self::Scylla { keyspace } => vec![
                (
                    "VIGIE__CONSUMERS__SINKS__SCYLLA__NODES",
                    vigie_testkit::cql_server().uri.clone(),
                ),
                (
                    "VIGIE__CONSUMERS__SINKS__SCYLLA__KEYSPACE",
                    keyspace.clone(),
                ),
            ],
        }
    }

    /// Where the sink resumes: the sum over the partitions of the next
    /// offset it stored (in its database for PostgreSQL, as its group's
    /// committed offsets otherwise). `None` while it cannot be read.
    async fn resume_point(&self, group: &str, topic: &str) -> Option<i64> {
        match self {
            Self::Postgres(db) => {
                let pool = db.pool().await;
                let n = common::stored_offsets(&pool, group).await;
                pool.close().await;
                Some(n.unwrap_or(0))
            }
            _ => common::committed_total(group, topic).await,
        }
    }

    /// The ids of the events the sink wrote, each as often as it is
    /// stored; `None` for a sink that keeps nothing.
    async fn written(&self) -> Option<Vec<String>> {
        match self {
            // The drift component keeps windows, not events.
            Self::Blackhole | Self::Drift { .. } => None,
            Self::Postgres(db) => Some(
                sqlx::query_scalar("SELECT event_id::text FROM health_case")
                    .fetch_all(&db.pool().await)
                    .await
                    .unwrap(),
            ),
            Self::Scorer { scores } => {
                let scores = scores.clone();
                let records = tokio::task::spawn_blocking(move || {
                    read_to_end(&broker().bootstrap, &scores, "read_committed", DEADLINE)
                })
                .await
                .unwrap();
                Some(
                    records
                        .iter()
                        .map(|(_, _, _, value, _)| {
                            let v: serde_json::Value = serde_json::from_slice(value).unwrap();
                            v["data"]["case_event_id"].as_str().unwrap().to_owned()
                        })
                        .collect(),
                )
            }
            Self::Scylla { keyspace } => Some(
                common::cql_rows::<(uuid::Uuid,)>(
                    &vigie_testkit::cql_server().uri,
                    format!("SELECT event_id FROM {keyspace}.health_case_by_state_month"),
                )
                .await
                .into_iter()
                .map(|(id,)| id.to_string())
                .collect(),
            ),
        }
    }
}

impl Under {
    /// Every row the sink stored in its table of cases, each as text,
    /// sorted: every column compared. `None` for a sink without a table.
    async fn contents(&self) -> Option<Vec<String>> {
        let mut rows: Vec<String> = match self {
            Self::Postgres(db) => sqlx::query_scalar("SELECT t::text FROM health_case t")
                .fetch_all(&db.pool().await)
                .await
                .unwrap(),
            Self::Scylla { keyspace } => common::cql_rows::<scylla::value::Row>(
                &vigie_testkit::cql_server().uri,
                format!("SELECT * FROM {keyspace}.health_case_by_state_month"),
            )
            .await
            .into_iter()
            .map(|r| format!("{:?}", r.columns))
            .collect(),
            Self::Blackhole | Self::Drift { .. } | Self::Scorer { .. } => return None,
        };
        rows.sort();
        Some(rows)
    }
}

/// `vigie consume --sink NAME` on `topic` for `group`, its logs (JSON) in
/// `logs`. Small batches: many commits, so that signals land mid-stream.
fn start(
    under: &Under,
    name: &str,
    (topic, group): (&str, &str),
    logs: &std::path::Path,
) -> Reaped {
    vigie()
        .args([
            "consume", "--sink", name, "--group", group, "--topic", topic,
        ])
        .env("VIGIE__KAFKA__BROKERS", &broker().bootstrap)
        .env("VIGIE__KAFKA__CONSUMER__BATCH_MAX_RECORDS", "20")
        .env(
            "VIGIE__TELEMETRY__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("VIGIE__LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .envs(under.env())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(logs).unwrap())
        .spawn_reaped()
}

/// Sends SIGTERM and waits for the exit, which must be clean; returns the
/// records the run says it consumed.
async fn terminate(mut child: Reaped, logs: &std::path::Path) -> u64 {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = wait_for("the consumer to exit after SIGTERM", DEADLINE, || {
        let exited = child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    let logged = std::fs::read_to_string(logs).unwrap();
    assert!(status.success(), "exit {status:?} after SIGTERM:\n{logged}");
    let stopped: serde_json::Value = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "Consumer stopped")
        .unwrap_or_else(|| panic!("no 'Consumer stopped' line in:\n{logged}"));
    stopped["consumed"].as_u64().unwrap()
}

async fn contract(name: &str) {
    let b = broker();
    let topic = unique_name("health.case.v1");
    create_topic_and_dlq(&b.bootstrap, &topic, 3).await;
    let under = Under::new(name).await;
    let poison = |range: std::ops::Range<usize>| -> Vec<vigie_testkit::RawInput> {
        POISON[range]
            .iter()
            .map(|v| (b"NY".to_vec(), v.to_vec(), vec![]))
            .collect()
    };
    produce_sample(&b.bootstrap, &topic, GOOD / 2, 5);
    produce_raw(&b.bootstrap, &topic, &poison(0..2)).await;
    produce_sample(&b.bootstrap, &topic, GOOD / 2, 6);
    produce_raw(&b.bootstrap, &topic, &poison(2..4)).await;
    let total = GOOD as i64 + POISON.len() as i64;
    let group = unique_name(&format!("contract-{name}"));
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("consume.log");
    let resume = || async { under.resume_point(&group, &topic).await };

    // kill -9 once a batch is stored: the next run replays the batch that
    // was in flight.
    let mut run = start(&under, name, (&topic, &group), &logs);
    wait_for("a first batch stored", DEADLINE, || async {
        resume().await.filter(|n| *n > 0)
    })
    .await;
    run.kill().unwrap();
    run.wait().unwrap();

    // SIGTERM mid-stream: the run stores the offsets of all it consumed.
    // A killed scorer may leave a transaction open with its batch's
    // offsets: the group's offsets cannot be read (unstable) until the
    // broker aborts it, at the transaction timeout.
    let before = wait_for("the killed run's offsets to be readable", DEADLINE, resume).await;
    let run = start(&under, name, (&topic, &group), &logs);
    wait_for("the second run to store a batch", DEADLINE, || async {
        resume().await.filter(|n| *n > before || *n == total)
    })
    .await;
    let consumed = terminate(run, &logs).await;
    let after = resume().await.unwrap();
    eprintln!("{name}: killed at {before} of {total}, SIGTERM at {after} ({consumed} consumed)");
    assert_eq!(
        after - before,
        consumed as i64,
        "{name}: the offsets stored after SIGTERM cover exactly what the run consumed"
    );

    // To the end.
    let run = start(&under, name, (&topic, &group), &logs);
    wait_for("every record stored", DEADLINE, || async {
        resume().await.filter(|n| *n >= total)
    })
    .await;
    terminate(run, &logs).await;

    assert_eq!(
        resume().await,
        Some(total),
        "{name}: resumes exactly at the end of the topic"
    );
    if let Some(ids) = under.written().await {
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(
            (ids.len(), distinct.len()),
            (GOOD as usize, GOOD as usize),
            "{name}: every good record written once"
        );
    }
    let dlq = format!("{topic}.dlq");
    let letters = tokio::task::spawn_blocking(move || {
        read_to_end(&broker().bootstrap, &dlq, "read_committed", DEADLINE)
    })
    .await
    .unwrap();
    let origins: BTreeSet<(String, String)> = letters.iter().map(dlq_origin).collect();
    assert_eq!(
        (letters.len(), origins.len()),
        (POISON.len(), POISON.len()),
        "{name}: each refused record dead-lettered once"
    );

    // After the kill -9 and the SIGTERM, the table holds what one clean
    // run of the same topic into a fresh store writes, column by column.
    if let Some(faulted) = under.contents().await {
        let clean = Under::new(name).await;
        let clean_group = unique_name(&format!("clean-{name}"));
        let run = start(&clean, name, (&topic, &clean_group), &logs);
        wait_for("the clean run to store every record", DEADLINE, || async {
            clean
                .resume_point(&clean_group, &topic)
                .await
                .filter(|n| *n >= total)
        })
        .await;
        terminate(run, &logs).await;
        let clean = clean.contents().await.unwrap();
        assert_eq!(clean.len(), GOOD as usize, "{name}: the clean run's rows");
        assert!(
            clean == faulted,
            "{name}: the faulted runs' rows differ from a clean run's, e.g. {:?}",
            clean.iter().zip(&faulted).find(|(c, f)| c != f)
        );
    }
}

#[test]
fn every_registered_sink_is_under_contract() {
    let registered: Vec<&str> = vigie_consumers::sink::REGISTRY
        .iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(
        registered,
        ["blackhole", "drift", "postgres", "scorer", "scylla"],
        "a sink was added or removed: give it a test below and a case in Under"
    );
}

#[tokio::test]
async fn blackhole_keeps_the_contract() {
    contract("blackhole").await;
}

#[tokio::test]
async fn postgres_keeps_the_contract() {
    contract("postgres").await;
}

#[tokio::test]
async fn drift_keeps_the_contract() {
    contract("drift").await;
}

#[tokio::test]
async fn scorer_keeps_the_contract() {
    contract("scorer").await;
}

#[tokio::test]
async fn scylla_keeps_the_contract() {
    contract("scylla").await;
}
