//! The scorer's Kafka transactions on a real broker: `kill -9` mid-
//! transaction and restarts, and a paused member whose partitions moved on.
//! A `read_committed` reader of the score topic sees exactly one score per
//! case; a `read_uncommitted` one also sees what the aborted transactions
//! had written, which shows the faults landed inside transactions.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    OpenTransactions, SpawnReaped, free_port, metric, produce_sample, signal, stop, vigie,
};
use vigie_kafka::Cluster;
use vigie_testkit::{
    PrivateKafka, broker, create_topic_and_dlq, kafka_tool, ort_dylib, read_to_end, unique_name,
    wait_for,
};

/// A scorer member of `group`, publishing in transactions under `txn_id`.
fn scorer(
    bootstrap: &str,
    cases: &str,
    scores: &str,
    group: &str,
    txn_id: &str,
    port: u16,
) -> Command {
    let mut c = vigie();
    c.args([
        "consume", "--sink", "scorer", "--group", group, "--topic", cases,
    ])
    .env("VIGIE__KAFKA__BROKERS", bootstrap)
    .env("VIGIE__KAFKA__CONSUMER__BATCH_MAX_RECORDS", "1000")
    .env("VIGIE__KAFKA__CONSUMER__SESSION_TIMEOUT_MS", "6000")
    .env("VIGIE__CONSUMERS__SINKS__SCORER__OUTPUT_TOPIC", scores)
    .env("VIGIE__CONSUMERS__SINKS__SCORER__TRANSACTIONAL_ID", txn_id)
    .env(
        "VIGIE__CONSUMERS__SINKS__SCORER__TRANSACTION_TIMEOUT_MS",
        "10000",
    )
    .env(
        "VIGIE__CONSUMERS__SINKS__SCORER__MODEL_DIR",
        vigie_testkit::repo_root().join("models/hosp_risk/1.0.0"),
    )
    .env("ORT_DYLIB_PATH", ort_dylib())
    .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null());
    c
}

/// A case topic holding `count` sample cases of generator `seed`, a score
/// topic (4 partitions each, with their DLQs) and a group name.
async fn stream(bootstrap: &str, count: u64, seed: u64) -> (String, String, String) {
    let (cases, scores) = (
        unique_name("health.case.v1"),
        unique_name("health.case_score.v1"),
    );
    for t in [&cases, &scores] {
        create_topic_and_dlq(bootstrap, t, 4).await;
    }
    produce_sample(bootstrap, &cases, count, seed);
    (cases, scores, unique_name("scorer"))
}

/// Records of `topic` the group has committed, over all partitions.
async fn committed(bootstrap: &str, group: &str, topic: &str) -> i64 {
    vigie_kafka::group_lag(
        &Cluster::new(bootstrap),
        group,
        &[topic.to_owned()],
        Duration::from_secs(10),
    )
    .await
    .map(|ps| ps.iter().filter_map(|p| p.committed).sum())
    .unwrap_or(0)
}

/// Waits until the group has committed at least `n` records of `topic`.
async fn committed_at_least(bootstrap: &str, group: &str, topic: &str, n: i64) {
    wait_for(
        &format!("{n} records of {topic} committed by {group}"),
        Duration::from_secs(120),
        || async move { (committed(bootstrap, group, topic).await >= n).then_some(()) },
    )
    .await;
}

/// Scores per case id, as a reader of `isolation` sees the topic.
fn scores_per_case(bootstrap: &str, scores: &str, isolation: &str) -> BTreeMap<String, usize> {
    let registry = vigie_core::SchemaRegistry::embedded().unwrap();
    let mut per_case = BTreeMap::new();
    for (_, _, _, value, _) in read_to_end(bootstrap, scores, isolation, Duration::from_secs(60)) {
        let vigie_core::Event::CaseScore(env) = registry.parse(&value).expect("a score event")
        else {
            panic!("not a health.case_score event");
        };
        *per_case
            .entry(env.data.case_event_id.to_string())
            .or_default() += 1;
    }
    per_case
}

/// Exactly one score per case for a `read_committed` reader, `cases` in
/// all; returns how many records a `read_uncommitted` reader sees.
fn assert_one_score_per_case(bootstrap: &str, scores: &str, cases: u64) -> usize {
    let committed = scores_per_case(bootstrap, scores, "read_committed");
    let twice: Vec<_> = committed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "cases scored more than once: {twice:?}");
    assert_eq!(committed.len() as u64, cases, "one score per case");
    scores_per_case(bootstrap, scores, "read_uncommitted")
        .values()
        .sum()
}

#[tokio::test]
async fn a_scorer_killed_mid_transaction_publishes_one_score_per_case() {
    const CASES: u64 = 50_000;
    const KILLS: usize = 5;
    let b = broker();
    let (cases, scores, group) = stream(&b.bootstrap, CASES, 11).await;
    let txn = unique_name("scorer-txn");

    let open = OpenTransactions::new(&b.bootstrap, &scores);
    let start = || scorer(&b.bootstrap, &cases, &scores, &group, &txn, free_port()).spawn_reaped();
    let mut member = start();
    let mut written = 0;
    for _ in 0..KILLS {
        // Kill the member inside a transaction (its scores on the broker,
        // not committed) once it has written more, and restart it at once.
        written = open.wait(written);
        member.kill().unwrap();
        member.wait().unwrap();
        member = start();
    }
    committed_at_least(&b.bootstrap, &group, &cases, CASES as i64).await;
    stop(member);

    // Kafka's own tool: the member's last transaction complete, and
    // nothing left hanging on the score topic.
    let state = kafka_tool(
        &b.bootstrap,
        "kafka-transactions",
        &["describe", "--transactional-id", &txn],
    );
    assert!(state.contains("CompleteCommit"), "{state}");
    let hanging = kafka_tool(
        &b.bootstrap,
        "kafka-transactions",
        &["find-hanging", "--topic", &scores],
    );
    assert_eq!(
        hanging.trim().lines().count(),
        1,
        "only the header: {hanging}"
    );

    let seen = assert_one_score_per_case(&b.bootstrap, &scores, CASES);
    assert!(
        seen > CASES as usize,
        "a read_uncommitted reader sees {seen} scores: no kill landed inside a transaction"
    );
}

#[tokio::test]
async fn a_paused_member_whose_partitions_moved_on_cannot_commit() {
    const CASES: u64 = 20_000;
    const MORE: u64 = 2_000;
    let b = broker();
    let (cases, scores, group) = stream(&b.bootstrap, CASES, 12).await;

    // A scores alone; it is paused inside a transaction.
    let open = OpenTransactions::new(&b.bootstrap, &scores);
    let (port_a, log_a) = (free_port(), tempfile::NamedTempFile::new().unwrap());
    let a = scorer(
        &b.bootstrap,
        &cases,
        &scores,
        &group,
        &unique_name("a"),
        port_a,
    )
    .stderr(log_a.reopen().unwrap())
    .spawn_reaped();
    open.wait(0);
    signal(&a, "-STOP");
    // B joins; once A's session times out, B holds every partition and
    // scores every case. They become visible to `read_committed` readers
    // once the broker has aborted A's open transaction, after its timeout.
    let b_member = scorer(
        &b.bootstrap,
        &cases,
        &scores,
        &group,
        &unique_name("b"),
        free_port(),
    )
    .spawn_reaped();
    committed_at_least(&b.bootstrap, &group, &cases, CASES as i64).await;
    wait_for(
        "A's open transaction aborted by the broker",
        Duration::from_secs(60),
        || async { (!open.any()).then_some(()) },
    )
    .await;
    // A wakes up and cannot commit: the broker aborted its open
    // transaction and fenced its producer, and refuses the offsets of its
    // batch, read before the group moved on. A registers its producer
    // again, aborts the batch and rejoins the group.
    signal(&a, "-CONT");
    wait_for("A's abort counted", Duration::from_secs(60), || async {
        let aborted = metric(port_a, "vigie_scorer_transactions_aborted_total").await?;
        (aborted >= 1.0).then_some(())
    })
    .await;
    produce_sample(&b.bootstrap, &cases, MORE, 13);
    committed_at_least(&b.bootstrap, &group, &cases, (CASES + MORE) as i64).await;
    stop(b_member);
    stop(a);
    let seen = assert_one_score_per_case(&b.bootstrap, &scores, CASES + MORE);
    assert!(seen > (CASES + MORE) as usize, "A's aborted scores: {seen}");
}

#[tokio::test]
async fn a_broker_restart_mid_transaction_leaves_one_score_per_case() {
    const CASES: u64 = 20_000;
    let kafka = PrivateKafka::start();
    let (cases, scores, group) = stream(&kafka.bootstrap, CASES, 14).await;
    let open = OpenTransactions::new(&kafka.bootstrap, &scores);
    let member = scorer(
        &kafka.bootstrap,
        &cases,
        &scores,
        &group,
        &unique_name("txn"),
        free_port(),
    )
    .spawn_reaped();
    // The broker stops while a transaction is open, and starts again.
    open.wait(0);
    kafka.stop();
    kafka.restart();
    committed_at_least(&kafka.bootstrap, &group, &cases, CASES as i64).await;
    // The member went on across the restart and stops cleanly.
    stop(member);
    assert_one_score_per_case(&kafka.bootstrap, &scores, CASES);
}
