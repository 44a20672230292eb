//! The `scylla` sink across a CQL server crash: a node of the test's own
//! (Apache Cassandra, `scripts/cassandra`) is killed (`kill -9`) while
//! `vigie consume --sink scylla` drains a backlog, then started again. The
//! sink keeps running, resumes its writes once the node answers, and every
//! case of the topic ends up in the table once.

mod common;

use common::{SpawnReaped, committed_total as committed, free_port, produce_sample, vigie};

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use vigie_testkit::{PrivateCql, broker, create_topic_and_dlq, read_topic, unique_name, wait_for};

const CASES: u64 = 3_000;
const DEADLINE: Duration = Duration::from_secs(240);

#[tokio::test]
async fn a_cql_server_killed_mid_stream_loses_no_case_once_it_is_back() {
    let node = PrivateCql::start();
    let topic = unique_name("health.case.v1");
    let group = unique_name("vigie-scylla");
    let keyspace = unique_name("vigie_restart").replace('-', "_");
    create_topic_and_dlq(&broker().bootstrap, &topic, 3).await;
    produce_sample(&broker().bootstrap, &topic, CASES, 41);

    // Small batches: many commits, so that the crash lands mid-stream.
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut sink = vigie()
        .args(["consume", "--sink", "scylla", "--group", &group])
        .args(["--topic", &topic])
        .env("VIGIE__KAFKA__BROKERS", &broker().bootstrap)
        .env("VIGIE__KAFKA__CONSUMER__BATCH_MAX_RECORDS", "20")
        .env("VIGIE__CONSUMERS__SINKS__SCYLLA__NODES", &node.uri)
        .env("VIGIE__CONSUMERS__SINKS__SCYLLA__KEYSPACE", &keyspace)
        .env(
            "VIGIE__TELEMETRY__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(logs.reopen().unwrap())
        .spawn_reaped();

    let before = wait_for("some cases written", DEADLINE, || async {
        committed(&group, &topic)
            .await
            .filter(|n| *n > 0 && *n < CASES as i64)
    })
    .await;
    node.kill();
    // While the node is down the sink's writes fail and are retried, not
    // skipped (the table is checked below); what was committed by then
    // goes into the failure message.
    let during = committed(&group, &topic).await.unwrap_or(0);
    assert!(
        sink.try_wait().unwrap().is_none(),
        "the sink keeps running while the node is down: {}",
        std::fs::read_to_string(logs.path()).unwrap()
    );
    node.restart();

    wait_for("every case committed", DEADLINE, || async {
        committed(&group, &topic)
            .await
            .filter(|n| *n == CASES as i64)
    })
    .await;
    assert!(
        sink.try_wait().unwrap().is_none(),
        "the sink ran through the restart: {}",
        std::fs::read_to_string(logs.path()).unwrap()
    );
    let logged = std::fs::read_to_string(logs.path()).unwrap();
    assert!(
        logged.contains("Sink write failed; retrying"),
        "the failed writes were retried, and said so: {logged}"
    );

    // Every case of the topic is in the table, once (its primary key).
    let ids: HashSet<String> = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || read_topic(&broker().bootstrap, &topic, CASES as usize, DEADLINE)
    })
    .await
    .unwrap()
    .iter()
    .map(|(_, _, _, value, _)| {
        let v: serde_json::Value = serde_json::from_slice(value).unwrap();
        v["id"].as_str().unwrap().to_owned()
    })
    .collect();
    assert_eq!(ids.len(), CASES as usize, "distinct sample cases");
    let stored: Vec<String> = common::cql_rows::<(uuid::Uuid,)>(
        &node.uri,
        format!("SELECT event_id FROM {keyspace}.health_case_by_state_month"),
    )
    .await
    .into_iter()
    .map(|(id,)| id.to_string())
    .collect();
    assert_eq!(stored.len(), CASES as usize, "one row per case");
    assert_eq!(
        stored.into_iter().collect::<HashSet<_>>(),
        ids,
        "the cases stored are the topic's ({before} committed before the kill, {during} right after)"
    );

    let sent = Command::new("kill")
        .args(["-TERM", &sink.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(sink.wait().unwrap().success(), "clean exit after SIGTERM");
}
