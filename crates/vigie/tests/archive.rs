//! `vigie archive` and `vigie restore` against Apache Kafka: a topic with
//! null keys, tombstones, headers without values, set timestamps and an
//! aborted transaction is archived, deleted and restored record for record
//! in its partitions, a group's offsets carried over; a second restore
//! changes nothing; a time range archives what it says; a damaged file is
//! named and nothing is restored; a topic holding other records is refused.
//! `vigie replay copy` keeps partitions, filters by source, and resumes.

mod common;

use common::vigie;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use vigie_testkit::{broker, create_topic, unique_name, wait_for};

/// A record as the test compares it: everything but its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_ms: Option<i64>,
}

/// Base of the records' timestamps: 2026-03-01T12:00:00Z.
const BASE_MS: i64 = 1_772_366_400_000;
const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 300;

fn rec(p: i32, i: i64) -> Rec {
    Rec {
        key: (i % 4 != 0).then(|| format!("k{p}-{i}").into_bytes()),
        value: (i % 10 != 3).then(|| format!("{{\"p\":{p},\"i\":{i}}}").into_bytes()),
        headers: (0..i % 3)
            .map(|h| {
                (
                    format!("h{h}"),
                    (h != 1).then(|| vec![b'v'; h as usize + 1]),
                )
            })
            .collect(),
        timestamp_ms: Some(BASE_MS + i * 1000 + i64::from(p)),
    }
}

fn producer(
    bootstrap: &str,
    transactional: Option<&str>,
) -> ThreadedProducer<DefaultProducerContext> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    if let Some(id) = transactional {
        c.set("transactional.id", id);
    }
    c.create().unwrap()
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, partition: i32, r: &Rec) {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &r.headers {
        headers = headers.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    let mut b = BaseRecord::<[u8], [u8]>::to(topic)
        .partition(partition)
        .headers(headers);
    if let Some(k) = &r.key {
        b = b.key(k);
    }
    if let Some(v) = &r.value {
        b = b.payload(v);
    }
    if let Some(t) = r.timestamp_ms {
        b = b.timestamp(t);
    }
    p.send(b).map_err(|(e, _)| e).unwrap();
}

/// Fills `topic`: per partition, records 0..PER_PARTITION, the first
/// half plain, the second half in a committed transaction, with an aborted
/// transaction of other records between them. Returns the committed
/// records in order per partition.
fn fill(bootstrap: &str, topic: &str) -> BTreeMap<i32, Vec<Rec>> {
    let plain = producer(bootstrap, None);
    let half = PER_PARTITION / 2;
    for p in 0..PARTITIONS {
        for i in 0..half {
            send(&plain, topic, p, &rec(p, i));
        }
    }
    plain.flush(Duration::from_secs(30)).unwrap();
    let txn = producer(bootstrap, Some(&unique_name("archive-test")));
    txn.init_transactions(Duration::from_secs(30)).unwrap();
    txn.begin_transaction().unwrap();
    for p in 0..PARTITIONS {
        for i in 0..20 {
            send(&txn, topic, p, &rec(p, 10_000 + i));
        }
    }
    txn.flush(Duration::from_secs(30)).unwrap();
    txn.abort_transaction(Duration::from_secs(30)).unwrap();
    txn.begin_transaction().unwrap();
    for p in 0..PARTITIONS {
        for i in half..PER_PARTITION {
            send(&txn, topic, p, &rec(p, i));
        }
    }
    txn.commit_transaction(Duration::from_secs(30)).unwrap();
    (0..PARTITIONS)
        .map(|p| (p, (0..PER_PARTITION).map(|i| rec(p, i)).collect()))
        .collect()
}

/// The committed records of `topic`, with their offsets, per partition.
fn read(bootstrap: &str, topic: &str) -> BTreeMap<i32, Vec<(i64, Rec)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("reader"))
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<(i64, Rec)>> = (0..PARTITIONS).map(|p| (p, vec![])).collect();
    let mut ended = std::collections::BTreeSet::new();
    while ended.len() < PARTITIONS as usize {
        match c.poll(Duration::from_secs(30)).expect("a record or an end") {
            Ok(m) => {
                let r = vigie_kafka::Record::from_message(&m);
                out.get_mut(&r.partition).unwrap().push((
                    r.offset,
                    Rec {
                        key: r.key,
                        value: r.payload,
                        headers: r.headers,
                        timestamp_ms: r.timestamp_ms,
                    },
                ));
            }
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                ended.insert(p);
            }
            Err(e) => panic!("{e}"),
        }
    }
    out
}

fn without_offsets(t: &BTreeMap<i32, Vec<(i64, Rec)>>) -> BTreeMap<i32, Vec<Rec>> {
    t.iter()
        .map(|(p, rs)| (*p, rs.iter().map(|(_, r)| r.clone()).collect()))
        .collect()
}

/// The JSON summaries a `--json` run prints, one per topic.
fn run_json(bootstrap: &str, args: &[&str]) -> Vec<Value> {
    common::stdout_of(
        vigie()
            .args(args)
            .arg("--json")
            .env("VIGIE__KAFKA__BROKERS", bootstrap),
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
    .collect()
}

fn failed(bootstrap: &str, args: &[&str]) -> String {
    common::stderr_of_failure(vigie().args(args).env("VIGIE__KAFKA__BROKERS", bootstrap))
}

async fn topic_exists(bootstrap: &str, topic: &str) -> bool {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
}

async fn delete_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for r in admin
        .delete_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    wait_for("the topic's deletion", Duration::from_secs(60), || async {
        (!topic_exists(bootstrap, topic).await).then_some(())
    })
    .await;
}

/// Index, in `records`, of the first record at or after `offset`.
fn position(records: &[(i64, Rec)], offset: i64) -> usize {
    records
        .iter()
        .position(|(o, _)| *o >= offset)
        .unwrap_or(records.len())
}

#[tokio::test]
async fn a_topic_archived_deleted_and_restored_is_the_same_record_for_record() {
    let b = broker();
    let topic = unique_name("archive");
    let group = unique_name("g");
    create_topic(&b.bootstrap, &topic, PARTITIONS).await;
    let expected = fill(&b.bootstrap, &topic);
    let before = read(&b.bootstrap, &topic);
    assert_eq!(without_offsets(&before), expected, "the topic as filled");
    // The group has read 100, 160 and 299 records of the partitions (past
    // the aborted transaction for the last two).
    let read_so_far = [100usize, 160, 299];
    let old_committed: BTreeMap<i32, i64> = (0..PARTITIONS)
        .map(|p| (p, before[&p][read_so_far[p as usize]].0))
        .collect();
    vigie_kafka::commit_group_offsets(
        &vigie_kafka::Cluster::new(&b.bootstrap),
        &group,
        &old_committed
            .iter()
            .map(|(p, o)| ((topic.clone(), *p), *o))
            .collect(),
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("backup");
    let out_s = out.to_str().unwrap();
    let archived = run_json(
        &b.bootstrap,
        &[
            "archive", "--topic", &topic, "--out", out_s, "--group", &group,
        ],
    );
    assert_eq!(archived.len(), 1);
    let total = PER_PARTITION * i64::from(PARTITIONS);
    assert_eq!(archived[0]["records"], total, "committed records only");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join(&topic).join("manifest.json")).unwrap())
            .unwrap();
    for f in manifest["files"].as_array().unwrap() {
        let p = f["partition"].as_i64().unwrap() as i32;
        let last = before[&p].last().unwrap().0;
        assert_eq!(f["records"], PER_PARTITION, "{f}");
        assert_eq!(f["start"], 0, "{f}");
        assert_eq!(f["first_offset"], 0, "{f}");
        assert_eq!(f["last_offset"], last, "{f}");
        // The commit marker after the last record is not part of it.
        assert_eq!(f["end"], last + 1, "{f}");
    }
    // Archiving into the same folder again is refused: nothing overwritten.
    let e = failed(
        &b.bootstrap,
        &["archive", "--topic", &topic, "--out", out_s],
    );
    assert!(e.contains("exists"), "{e}");

    delete_topic(&b.bootstrap, &topic).await;
    // In chunks of 97 records: many, each from one partition or two.
    let restored = run_json(
        &b.bootstrap,
        &[
            "restore",
            "--from",
            out_s,
            "--group",
            &group,
            "--chunk-records",
            "97",
        ],
    );
    assert_eq!(restored[0]["records"], total);
    assert_eq!(restored[0]["already_there"], 0);
    let after = read(&b.bootstrap, &topic);
    assert_eq!(
        without_offsets(&after),
        expected,
        "keys, values, headers, timestamps and partitions"
    );
    // The group resumes at the same record: the one it would have read next.
    let new_committed = vigie_kafka::group_lag(
        &vigie_kafka::Cluster::new(&b.bootstrap),
        &group,
        std::slice::from_ref(&topic),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    for l in new_committed {
        let p = l.partition;
        let at = position(&after[&p], l.committed.expect("a committed offset"));
        assert_eq!(at, read_so_far[p as usize], "partition {p}");
    }

    // Again: every record is found there, nothing is sent twice.
    let again = run_json(&b.bootstrap, &["restore", "--from", out_s]);
    assert_eq!(again[0]["records"], 0);
    assert_eq!(again[0]["already_there"], total);
    assert_eq!(read(&b.bootstrap, &topic), after, "a second restore");

    // A time range: records 100 to 199 of each partition.
    let from = chrono::DateTime::from_timestamp_millis(BASE_MS + 100_000).unwrap();
    let to = chrono::DateTime::from_timestamp_millis(BASE_MS + 199_500).unwrap();
    let ranged = dir.path().join("range");
    let part = run_json(
        &b.bootstrap,
        &[
            "archive",
            "--topic",
            &topic,
            "--out",
            ranged.to_str().unwrap(),
            "--from-datetime",
            &from.to_rfc3339(),
            "--to-datetime",
            &to.to_rfc3339(),
        ],
    );
    assert_eq!(part[0]["records"], 100 * i64::from(PARTITIONS));
    let other = unique_name("ranged");
    run_json(
        &b.bootstrap,
        &[
            "restore",
            "--from",
            ranged.to_str().unwrap(),
            "--to-topic",
            &other,
        ],
    );
    let got = without_offsets(&read(&b.bootstrap, &other));
    for p in 0..PARTITIONS {
        assert_eq!(got[&p], expected[&p][100..200], "partition {p}");
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_damaged_archive_is_named_and_nothing_is_restored() {
    let b = broker();
    let topic = unique_name("archive-bad");
    create_topic(&b.bootstrap, &topic, PARTITIONS).await;
    fill(&b.bootstrap, &topic);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    run_json(&b.bootstrap, &["archive", "--topic", &topic, "--out", out]);
    let file = dir.path().join(&topic).join("p00001.vgar");
    flip_byte(&file, 200);
    let target = unique_name("never");
    let e = failed(
        &b.bootstrap,
        &["restore", "--from", out, "--to-topic", &target],
    );
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(
        e.contains("partition 1") && e.contains("offsets 0 to"),
        "{e}"
    );
    assert!(e.contains("nothing was restored"), "{e}");
    assert!(
        !topic_exists(&b.bootstrap, &target).await,
        "the target topic was created"
    );

    // A topic holding other records is not written to.
    flip_byte(&file, 200);
    let busy = unique_name("busy");
    create_topic(&b.bootstrap, &busy, PARTITIONS).await;
    let p = producer(&b.bootstrap, None);
    send(&p, &busy, 2, &rec(9, 9));
    p.flush(Duration::from_secs(30)).unwrap();
    let e = failed(
        &b.bootstrap,
        &["restore", "--from", out, "--to-topic", &busy],
    );
    assert!(e.contains(&format!("{busy}/2: offset 0")), "{e}");
    let left = read(&b.bootstrap, &busy);
    assert_eq!(
        left.values().map(Vec::len).collect::<Vec<_>>(),
        [0, 0, 1],
        "nothing restored into any partition"
    );
}

/// Record `i` of partition `p` of the copy test: an envelope of source
/// `who` for every third record, `cdc` otherwise.
fn envelope(p: i32, i: i64) -> Rec {
    let source = if i % 3 == 0 { "who" } else { "cdc" };
    Rec {
        key: Some(format!("k{i}").into_bytes()),
        value: Some(
            format!("{{\"schema\":\"health.case\",\"source\":\"{source}\",\"p\":{p},\"i\":{i}}}")
                .into_bytes(),
        ),
        headers: vec![("h".into(), Some(format!("{i}").into_bytes()))],
        timestamp_ms: Some(BASE_MS + i * 1000),
    }
}

#[tokio::test]
async fn a_copy_keeps_partitions_filters_by_source_and_resumes_where_it_stopped() {
    let b = broker();
    let from = unique_name("copy-from");
    let to = unique_name("copy-to");
    create_topic(&b.bootstrap, &from, PARTITIONS).await;
    let p = producer(&b.bootstrap, None);
    for part in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            send(&p, &from, part, &envelope(part, i));
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let cdc: BTreeMap<i32, Vec<Rec>> = (0..PARTITIONS)
        .map(|part| {
            let kept = (0..PER_PARTITION)
                .filter(|i| i % 3 != 0)
                .map(|i| envelope(part, i))
                .collect();
            (part, kept)
        })
        .collect();
    let per_partition = cdc[&0].len() as i64;

    // A first run stopped at record 150 of each partition (by time)...
    let cut = chrono::DateTime::from_timestamp_millis(BASE_MS + 150_000).unwrap();
    let args = |source: &str, extra: &[&str]| -> Vec<String> {
        let fixed = ["replay", "copy", "--from-topic", &from, "--to-topic", &to];
        fixed
            .iter()
            .chain(&["--source", source])
            .chain(extra)
            .map(|a| (*a).to_owned())
            .collect()
    };
    let copy = |extra: &[&str]| {
        let a = args("cdc", extra);
        run_json(
            &b.bootstrap,
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .remove(0)
    };
    let first = copy(&["--to-datetime", &cut.to_rfc3339()]);
    assert_eq!(first["read"], 150 * i64::from(PARTITIONS));
    assert_eq!(first["copied"], 100 * i64::from(PARTITIONS));
    // ...then the whole range: the first run's records are recognised.
    let second = copy(&[]);
    assert_eq!(second["read"], PER_PARTITION * i64::from(PARTITIONS));
    assert_eq!(second["already_there"], 100 * i64::from(PARTITIONS));
    assert_eq!(
        second["copied"],
        (per_partition - 100) * i64::from(PARTITIONS)
    );
    assert_eq!(without_offsets(&read(&b.bootstrap, &to)), cdc);

    // Another filter over the same destination is not a copy of it.
    let who = args("who", &[]);
    let e = failed(
        &b.bootstrap,
        &who.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(e.contains("not a copy of this range"), "{e}");
    assert_eq!(without_offsets(&read(&b.bootstrap, &to)), cdc, "unchanged");
}

#[tokio::test]
async fn a_restore_killed_midway_leaves_a_prefix_and_the_next_run_completes_it() {
    let b = broker();
    let topic = unique_name("archive-kill");
    create_topic(&b.bootstrap, &topic, PARTITIONS).await;
    let total: u64 = 100_000;
    common::produce_sample(&b.bootstrap, &topic, total, 21);
    let source = without_offsets(&read(&b.bootstrap, &topic));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    run_json(&b.bootstrap, &["archive", "--topic", &topic, "--out", out]);
    let target = unique_name("archive-kill-target");
    let from = dir.path().join(&topic);

    // Small chunks: the restore waits for acknowledgements often, and is
    // caught midway.
    let mut restore = vigie()
        .args([
            "restore",
            "--json",
            "--chunk-records",
            "1000",
            "--to-topic",
            &target,
        ])
        .arg("--from")
        .arg(&from)
        .env("VIGIE__KAFKA__BROKERS", &b.bootstrap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the restore to write 10,000 records",
        Duration::from_secs(120),
        || async {
            let n: i64 = vigie_testkit::end_offsets(&b.bootstrap, &target)
                .iter()
                .map(|(_, o)| o)
                .sum();
            (n >= 10_000).then_some(())
        },
    )
    .await;
    restore.kill().unwrap(); // SIGKILL
    restore.wait().unwrap();
    let partial = without_offsets(&read(&b.bootstrap, &target));
    let written: usize = partial.values().map(Vec::len).sum();
    assert!(
        (written as u64) < total,
        "the restore finished before it was killed: nothing tested"
    );
    for (p, records) in &partial {
        assert_eq!(
            records[..],
            source[p][..records.len()],
            "partition {p}: a prefix of the archive"
        );
    }

    let again = run_json(
        &b.bootstrap,
        &[
            "restore",
            "--from",
            from.to_str().unwrap(),
            "--to-topic",
            &target,
        ],
    );
    assert_eq!(again[0]["already_there"], written as u64);
    assert_eq!(again[0]["records"], total - written as u64);
    assert_eq!(
        without_offsets(&read(&b.bootstrap, &target)),
        source,
        "every record once, in its partition and order"
    );
}
