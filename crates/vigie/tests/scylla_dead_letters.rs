//! The `scylla` sink's dead letters exactly once: it commits each batch's
//! letters and consumed offsets in one Kafka transaction, after the
//! batch's rows are written. `vigie consume --sink scylla` is killed
//! (`kill -9`) again and again while it drains a topic where invalid
//! records and events it does not store are mixed with cases; at the end a
//! `read_committed` reader of the DLQ sees each refused record once, and
//! the table holds each case once.
//!
//! Each kill lands right after the run has written a letter: inside the
//! batch's transaction, or, with `exactly_once = false`, between the
//! letters' publication and the batch's commit. There the same kills
//! publish letters twice (`without_transactions_the_same_kills_publish_letters_twice`),
//! which shows that they land in the window the transaction closes.

mod common;

use common::{Reaped, SpawnReaped, committed_total as committed, free_port, produce_sample, vigie};

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::process::Stdio;
use std::time::Duration;

use vigie_testkit::{
    RawInput, broker, create_topic_and_dlq, dlq_origin, produce_raw, read_to_end, unique_name,
};

const ROUNDS: u64 = 6;
const CASES_PER_ROUND: u64 = 150;
const INVALID_PER_ROUND: usize = 30;
const NEWS_PER_ROUND: usize = 10;
const KILLS: usize = 6;
const DEADLINE: Duration = Duration::from_secs(240);

/// A topic of `ROUNDS` rounds of cases, invalid records and news articles.
async fn mixed_topic() -> (String, i64, usize) {
    let topic = unique_name("health.case.v1");
    create_topic_and_dlq(&broker().bootstrap, &topic, 3).await;
    let news = vigie_simulator::NewsGenerator::new(1, vigie_simulator::DEFAULT_BASE_URL).unwrap();
    let now = chrono::Utc::now();
    for round in 0..ROUNDS {
        produce_sample(&broker().bootstrap, &topic, CASES_PER_ROUND, 70 + round);
        let mut refused: Vec<RawInput> = (0..INVALID_PER_ROUND)
            .map(|i| {
                let v = format!(r#"{{"round": {round}, "record": {i}, "not": "an envelope"}}"#);
                (b"NY".to_vec(), v.into_bytes(), vec![])
            })
            .collect();
        refused.extend((0..NEWS_PER_ROUND).map(|i| {
            let article = vigie_simulator::news_envelope(&news, round * 100 + i as u64, 0, now);
            (b"news".to_vec(), article.to_json_bytes().unwrap(), vec![])
        }));
        produce_raw(&broker().bootstrap, &topic, &refused).await;
    }
    let refused = (ROUNDS as usize) * (INVALID_PER_ROUND + NEWS_PER_ROUND);
    let total = (ROUNDS * CASES_PER_ROUND) as i64 + refused as i64;
    (topic, total, refused)
}

fn sink(topic: &str, group: &str, keyspace: &str, exactly_once: bool) -> Reaped {
    vigie()
        .args(["consume", "--sink", "scylla", "--group", group])
        .args(["--topic", topic])
        .env("VIGIE__KAFKA__BROKERS", &broker().bootstrap)
        // Small batches: many commits, each batch with letters in it.
        .env("VIGIE__KAFKA__CONSUMER__BATCH_MAX_RECORDS", "40")
        .env(
            "VIGIE__CONSUMERS__SINKS__SCYLLA__NODES",
            &vigie_testkit::cql_server().uri,
        )
        .env("VIGIE__CONSUMERS__SINKS__SCYLLA__KEYSPACE", keyspace)
        .env(
            "VIGIE__CONSUMERS__SINKS__SCYLLA__EXACTLY_ONCE",
            exactly_once.to_string(),
        )
        .env(
            "VIGIE__CONSUMERS__SINKS__SCYLLA__TRANSACTIONAL_ID",
            format!("{group}-member"),
        )
        .env(
            "VIGIE__TELEMETRY__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn_reaped()
}

/// The sum of the DLQ's high watermarks: letters written, whether their
/// transaction committed yet or not.
struct Written {
    topic: String,
    client: BaseConsumer,
}

impl Written {
    fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            client: ClientConfig::new()
                .set("bootstrap.servers", &broker().bootstrap)
                .create()
                .unwrap(),
        }
    }

    fn now(&self) -> i64 {
        (0..3)
            .map(|p| {
                self.client
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(5))
                    .map_or(0, |(_, high)| high)
            })
            .sum()
    }

    /// Waits until more letters than `since` are written; polls without a
    /// pause: the window between a batch's letters and its commit lasts
    /// milliseconds. Fails at once if `run` exits meanwhile.
    fn wait_past(&self, since: i64, run: &mut Reaped) -> i64 {
        let start = std::time::Instant::now();
        loop {
            let now = self.now();
            if now > since {
                return now;
            }
            if let Some(status) = run.try_wait().unwrap() {
                panic!("the sink exited ({status}) before writing a letter past {since}");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no letter past {since} on {}",
                self.topic
            );
        }
    }
}

/// Drains the topic through `KILLS` runs, each killed with `kill -9` as
/// soon as it has written a letter (inside the batch's transaction, or
/// before its commit), then one run to the end, stopped with SIGTERM. Returns the letters per origin (partition, offset) that a
/// `read_committed` reader of the DLQ sees, and how many cases the table
/// holds.
async fn drain_with_kills(exactly_once: bool) -> (BTreeMap<(String, String), usize>, usize, usize) {
    let (topic, total, refused) = mixed_topic().await;
    let group = unique_name("vigie-scylla-dlq");
    let keyspace = unique_name("vigie_dlq").replace('-', "_");
    let written = Written::new(&format!("{topic}.dlq"));
    let mut last = 0;
    for _ in 0..KILLS {
        let mut run = sink(&topic, &group, &keyspace, exactly_once);
        last = written.wait_past(last, &mut run);
        run.kill().unwrap();
        run.wait().unwrap();
        // A killed member's open transaction holds its group's offsets
        // (unstable) until the next member's registration aborts it.
    }
    let mut run = sink(&topic, &group, &keyspace, exactly_once);
    // As `wait_for`, but failing at once if the sink exits.
    let start = std::time::Instant::now();
    while committed(&group, &topic).await != Some(total) {
        if let Some(status) = run.try_wait().unwrap() {
            panic!("the sink exited ({status}) before committing every record");
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for every record committed"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(run.wait().unwrap().success(), "clean exit after SIGTERM");

    let dlq = format!("{topic}.dlq");
    let letters = tokio::task::spawn_blocking(move || {
        read_to_end(&broker().bootstrap, &dlq, "read_committed", DEADLINE)
    })
    .await
    .unwrap();
    let mut per_origin = BTreeMap::new();
    for letter in &letters {
        *per_origin.entry(dlq_origin(letter)).or_insert(0) += 1;
    }
    let rows: Vec<(i64,)> = common::cql_rows(
        &vigie_testkit::cql_server().uri,
        format!("SELECT count(*) FROM {keyspace}.health_case_by_state_month"),
    )
    .await;
    (per_origin, refused, rows[0].0 as usize)
}

#[tokio::test]
async fn killed_again_and_again_each_refused_record_reaches_the_dlq_once() {
    let (letters, refused, rows) = drain_with_kills(true).await;
    let repeated: Vec<_> = letters.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "letters published twice: {repeated:?}");
    assert_eq!(letters.len(), refused, "every refused record dead-lettered");
    assert_eq!(
        rows,
        (ROUNDS * CASES_PER_ROUND) as usize,
        "every case stored"
    );
}

/// The same faults without transactions: the letters of a batch killed
/// between their publication and its commit are published again by the
/// next run (12 of 240 in each of four runs here).
#[tokio::test]
async fn without_transactions_the_same_kills_publish_letters_twice() {
    let (letters, refused, rows) = drain_with_kills(false).await;
    let repeated = letters.values().filter(|n| **n > 1).count();
    assert!(
        repeated > 0,
        "no letter published twice: the kills missed the window"
    );
    assert_eq!(letters.len(), refused, "every refused record dead-lettered");
    assert_eq!(
        rows,
        (ROUNDS * CASES_PER_ROUND) as usize,
        "every case stored"
    );
}
