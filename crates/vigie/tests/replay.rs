//! `vigie replay reset-group` against Apache Kafka's own tool: by time it
//! plans what `kafka-consumer-groups --reset-offsets --to-datetime
//! --dry-run` plans; executed, the group's committed offsets are the plan;
//! a shift moves from there; a running group is refused.

mod common;

use common::{stdout_of, vigie};

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use vigie_testkit::{broker, create_topic, repo_root, unique_name, wait_for};

/// Records per partition; record `i` of a partition has timestamp
/// `BASE + (3 i + partition) s`, so the three partitions interleave in time.
const PER_PARTITION: i64 = 40;

fn base_ms() -> i64 {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .unwrap()
        .timestamp_millis()
}

/// New offsets by partition, from `vigie replay reset-group … --json`.
fn vigie_plan(bootstrap: &str, group: &str, topic: &str, args: &[&str]) -> BTreeMap<i32, Value> {
    stdout_of(
        vigie()
            .args([
                "replay",
                "reset-group",
                "--group",
                group,
                "--topic",
                topic,
                "--json",
            ])
            .args(args)
            .env("VIGIE__KAFKA__BROKERS", bootstrap),
    )
    .lines()
    .map(|l| {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        (v["partition"].as_i64().unwrap() as i32, v)
    })
    .collect()
}

fn new_offsets(plan: &BTreeMap<i32, Value>) -> BTreeMap<i32, i64> {
    plan.iter()
        .map(|(p, v)| (*p, v["new"].as_i64().unwrap()))
        .collect()
}

/// `kafka-consumer-groups --reset-offsets … --dry-run`'s table: `GROUP
/// TOPIC PARTITION NEW-OFFSET`.
fn kafka_tool_plan(bootstrap: &str, group: &str, topic: &str, args: &[&str]) -> BTreeMap<i32, i64> {
    stdout_of(
        Command::new(repo_root().join("scripts/kafka-cli"))
            .args(["kafka-consumer-groups", "--bootstrap-server", bootstrap])
            .args(["--group", group, "--topic", topic, "--reset-offsets"])
            .args(args)
            .arg("--dry-run"),
    )
    .lines()
    .filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 4 && f[0] == group && f[1] == topic)
            .then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
    })
    .collect()
}

/// A consumer of `group` that commits only when asked.
fn group_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// The error of a `vigie replay reset-group` run that must fail.
fn refused(bootstrap: &str, group: &str, topic: &str, args: &[&str]) -> String {
    common::stderr_of_failure(
        vigie()
            .args(["replay", "reset-group", "--group", group, "--topic", topic])
            .args(args)
            .env("VIGIE__KAFKA__BROKERS", bootstrap),
    )
}

async fn committed(bootstrap: &str, group: &str, topic: &str) -> BTreeMap<i32, Option<i64>> {
    vigie_kafka::group_lag(
        &vigie_kafka::Cluster::new(bootstrap),
        group,
        &[topic.to_owned()],
        Duration::from_secs(10),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|l| (l.partition, l.committed))
    .collect()
}

#[tokio::test]
async fn reset_group_plans_as_kafka_does_then_moves_the_group() {
    let b = broker();
    let topic = unique_name("replay");
    let group = unique_name("g");
    create_topic(&b.bootstrap, &topic, 3).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.bootstrap)
        .create()
        .unwrap();
    for i in 0..PER_PARTITION {
        for partition in 0..3 {
            producer
                .send(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(partition)
                        .payload("x")
                        .timestamp(base_ms() + (3 * i + i64::from(partition)) * 1000),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }
    // The group has read everything, as a member that is gone now left it.
    {
        let c = group_consumer(&b.bootstrap, &group);
        let mut tpl = TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition_offset(&topic, p, Offset::Offset(PER_PARTITION))
                .unwrap();
        }
        c.commit(&tpl, CommitMode::Sync).unwrap();
    }

    // By time: 100.5 s after the base, the first record at or after it is
    // record 34 of partitions 0 (102 s) and 1 (103 s), 33 of partition 2
    // (101 s): computed from the layout, and asked of Kafka's own tool.
    let when_ms = base_ms() + 100_500;
    let expected: BTreeMap<i32, i64> = (0..3)
        .map(|p| {
            let first = (0..PER_PARTITION)
                .find(|i| (3 * i + i64::from(p)) * 1000 >= 100_500)
                .unwrap();
            (p, first)
        })
        .collect();
    let when = Utc.timestamp_millis_opt(when_ms).unwrap();
    let ours = vigie_plan(
        &b.bootstrap,
        &group,
        &topic,
        &["--to-datetime", &when.to_rfc3339()],
    );
    let kafkas = kafka_tool_plan(
        &b.bootstrap,
        &group,
        &topic,
        &[
            "--to-datetime",
            &when.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        ],
    );
    assert_eq!(kafkas, expected, "kafka-consumer-groups --to-datetime");
    assert_eq!(
        new_offsets(&ours),
        kafkas,
        "vigie replay against kafka-consumer-groups"
    );
    for (p, v) in &ours {
        assert_eq!(v["current"], PER_PARTITION, "partition {p}");
        assert_eq!(v["to_read"], PER_PARTITION - expected[p], "partition {p}");
        assert_eq!(v["again"], PER_PARTITION - expected[p], "partition {p}");
    }
    // A dry run moved nothing.
    assert!(
        committed(&b.bootstrap, &group, &topic)
            .await
            .values()
            .all(|c| *c == Some(PER_PARTITION))
    );

    // Executed: the group's committed offsets are the plan.
    vigie_plan(
        &b.bootstrap,
        &group,
        &topic,
        &["--to-datetime", &when.to_rfc3339(), "--execute"],
    );
    let now: BTreeMap<i32, i64> = committed(&b.bootstrap, &group, &topic)
        .await
        .into_iter()
        .map(|(p, c)| (p, c.unwrap()))
        .collect();
    assert_eq!(now, expected);

    // A shift moves from there, within the watermarks, as Kafka's does.
    let back = vigie_plan(&b.bootstrap, &group, &topic, &["--shift-by", "-35"]);
    let kafkas = kafka_tool_plan(&b.bootstrap, &group, &topic, &["--shift-by", "-35"]);
    assert_eq!(new_offsets(&back), kafkas);
    assert!(new_offsets(&back).values().all(|o| *o == 0), "{back:?}");

    // A time past every record: the end, for both.
    let later = Utc.timestamp_millis_opt(base_ms() + 3_600_000).unwrap();
    assert_eq!(
        new_offsets(&vigie_plan(
            &b.bootstrap,
            &group,
            &topic,
            &["--to-datetime", &later.to_rfc3339()]
        )),
        (0..3).map(|p| (p, PER_PARTITION)).collect()
    );

    // An offset outside a partition's records is refused, naming them.
    let err = refused(&b.bootstrap, &group, &topic, &["--to-offset", "41"]);
    assert!(
        err.contains("--to-offset 41") && err.contains("holds offsets 0 to 40"),
        "{err}"
    );

    // A running member: refused, nothing moved.
    let member = group_consumer(&b.bootstrap, &group);
    member.subscribe(&[&topic]).unwrap();
    let members = || async {
        vigie_kafka::group_members(
            &vigie_kafka::Cluster::new(&b.bootstrap),
            &group,
            Duration::from_secs(5),
        )
        .await
        .ok()
        .filter(|m| !m.is_empty())
    };
    wait_for("the member in the group", Duration::from_secs(60), || {
        let _ = member.poll(Duration::from_millis(100));
        members()
    })
    .await;
    let err = refused(
        &b.bootstrap,
        &group,
        &topic,
        &["--to-earliest", "--execute"],
    );
    assert!(
        err.contains(&format!("group {group} has 1 running member")),
        "{err}"
    );
    drop(member);
    let after: BTreeMap<i32, i64> = committed(&b.bootstrap, &group, &topic)
        .await
        .into_iter()
        .map(|(p, c)| (p, c.unwrap()))
        .collect();
    assert_eq!(after, expected, "nothing moved while the group ran");
}
