//! The poison campaign: poison records of every kind mixed into good ones
//! across 12 partitions, `vigie consume --sink postgres` killed with SIGKILL
//! at random points (one of them after dead letters were published and
//! before the outbox knew it) and restarted each time. Afterwards every
//! record is reconciled: rows = good records, dead letters in the DLQ topic
//! = poison records (counted as records, not as distinct origins), stored
//! offsets = end offsets.
//!
//! Sizes come from `VIGIE_POISON_GOOD` (default 10,000 good records; one
//! poison record per 10 good ones) and `VIGIE_POISON_KILLS` (default 5);
//! `scripts/poison-campaign` runs it at full size. `VIGIE_POISON_SEED`
//! replays a run's kill points.

mod common;

use common::{Reaped, SpawnReaped, count_writes, free_port, postgres_sink, produce_sample, writes};

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use vigie_testkit::{
    RawInput, TestDb, broker, create_topic, create_topic_with, produce_raw_at, read_topic,
    topic_len, unique_name, wait_for,
};

const PARTITIONS: i32 = 12;
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(10);
const DEADLINE: Duration = Duration::from_secs(300);
/// The sink's `max_record_bytes` in this test.
const MAX_RECORD_BYTES: usize = 100_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}")))
        .unwrap_or(default)
}

/// A good case envelope to spoil, from the simulator (seed 999: ids apart
/// from the good records').
fn case(i: u64) -> Value {
    let g = vigie_simulator::CaseGenerator::new(vigie_simulator::CaseGenConfig {
        seed: 999,
        ..Default::default()
    })
    .unwrap();
    serde_json::to_value(vigie_simulator::case_envelope(&g, i, chrono::Utc::now())).unwrap()
}

/// Poison record `i`: its kind (what the DLQ must say) and its value;
/// `None` for a record without a value.
fn poison(i: u64) -> (&'static str, Option<Vec<u8>>) {
    let spoil = |f: &dyn Fn(&mut Value)| {
        let mut v = case(i);
        f(&mut v);
        Some(serde_json::to_vec(&v).unwrap())
    };
    // `case_onset_interval` spelled `text`, past what a type can hold.
    let number = |i: u64, text: &str| {
        let mut v = case(i);
        v["data"]["case_onset_interval"] = json!(12345);
        Some(
            serde_json::to_string(&v)
                .unwrap()
                .replacen(
                    "\"case_onset_interval\":12345",
                    &format!("\"case_onset_interval\":{text}"),
                    1,
                )
                .into_bytes(),
        )
    };
    match i % 15 {
        0 => ("invalid_json", Some(b"{\"id\": \"cut".to_vec())),
        1 => ("invalid_json", Some(Vec::new())), // an empty value
        2 => ("empty_payload", None),            // a null value
        3 => (
            "invalid_json", // nested far deeper than any parser allows
            Some(format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)).into_bytes()),
        ),
        4 => (
            "invalid_json", // a lone UTF-16 surrogate escape
            Some(
                serde_json::to_string(&case(i))
                    .unwrap()
                    .replacen("\"row_id\":\"", "\"row_id\":\"\\ud800", 1)
                    .into_bytes(),
            ),
        ),
        5 => ("envelope_violation", Some(br#"{"hello":"world"}"#.to_vec())),
        6 => (
            "unknown_schema",
            spoil(&|v| v["schema"] = json!("health.nope")),
        ),
        7 => (
            "schema_violation",
            spoil(&|v| v["data"]["age_group"] = json!("99 years")),
        ),
        8 => (
            "schema_violation", // a number beyond i64
            number(i, "99999999999999999999"),
        ),
        9 => (
            "schema_violation", // a wrong type
            spoil(&|v| v["data"]["res_state"] = json!(42)),
        ),
        10 => (
            "unstorable",
            spoil(&|v| v["data"]["res_county"] = json!("Nul\u{0}County")),
        ),
        11 => (
            "unstorable",
            spoil(&|v| v["data"]["case_month"] = json!("0000-01")),
        ),
        12 => (
            "constraint_violation", // a state the database does not know
            spoil(&|v| v["data"]["res_state"] = json!("ZZ")),
        ),
        13 => ("invalid_json", number(i, "1e400")), // a number beyond f64
        _ => {
            // Over the sink's `max_record_bytes` (`MAX_RECORD_BYTES`); one
            // in ten of two megabytes, over the dead-letter topic's limit.
            let size = if i % 150 == 14 { 2_000_000 } else { 150_000 };
            let mut v = case(i);
            v["data"]["res_county"] = json!("X".repeat(size));
            ("oversized", Some(serde_json::to_vec(&v).unwrap()))
        }
    }
}

/// Sends records with a null value, keyed.
fn produce_nulls(bootstrap: &str, topic: &str, keys: &[Vec<u8>]) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let p: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for k in keys {
        p.send(BaseRecord::<[u8], [u8]>::to(topic).key(k.as_slice()))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

fn start_sink(bootstrap: &str, topic: &str, group: &str, db: &TestDb) -> Reaped {
    postgres_sink(bootstrap, topic, group, &db.url, free_port())
        .env("VIGIE__KAFKA__CONSUMER__BATCH_MAX_RECORDS", "500")
        .env(
            "VIGIE__KAFKA__CONSUMER__SESSION_TIMEOUT_MS",
            SESSION_TIMEOUT.as_millis().to_string(),
        )
        .env(
            "VIGIE__KAFKA__CONSUMER__MAX_POLL_INTERVAL_MS",
            MAX_POLL_INTERVAL.as_millis().to_string(),
        )
        .env("VIGIE__KAFKA__CONSUMER__LAG_INTERVAL_MS", "0")
        .env(
            "VIGIE__KAFKA__CONSUMER__MAX_RECORD_BYTES",
            MAX_RECORD_BYTES.to_string(),
        )
        .stderr(if std::env::var_os("VIGIE_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn_reaped()
}

async fn scalar(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Rows stored plus letters committed to the outbox or already out of it:
/// how far the sink has gone, in records.
async fn progress(pool: &sqlx::PgPool) -> i64 {
    scalar(
        pool,
        "SELECT (SELECT count(*) FROM health_case) + (SELECT count(*) FROM test_letters)",
    )
    .await
}

/// Makes the outbox's deletes (run once the letters are published) sleep
/// while `test_block_delete.on` is true, and counts every letter stored.
async fn instrument_outbox(pool: &sqlx::PgPool) {
    for sql in [
        "CREATE TABLE test_block_delete (on_ boolean NOT NULL)",
        "INSERT INTO test_block_delete VALUES (false)",
        "CREATE FUNCTION test_block_delete() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN IF (SELECT on_ FROM test_block_delete) THEN PERFORM pg_sleep(600); END IF;
              RETURN OLD; END $$",
        "CREATE TRIGGER test_block_delete BEFORE DELETE ON dlq_outbox
           FOR EACH ROW EXECUTE FUNCTION test_block_delete()",
        "CREATE TABLE test_letters (origin text NOT NULL)",
        "CREATE FUNCTION test_count_letter() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO test_letters
              VALUES (NEW.origin_topic || '/' || NEW.origin_partition || '@' || NEW.origin_offset);
              RETURN NEW; END $$",
        "CREATE TRIGGER test_count_letter BEFORE INSERT ON dlq_outbox
           FOR EACH ROW EXECUTE FUNCTION test_count_letter()",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
}

#[tokio::test]
async fn poison_of_every_kind_and_kill_9s_leave_every_record_stored_or_dead_lettered_once() {
    let good_total = env_or("VIGIE_POISON_GOOD", 10_000);
    let kills = env_or("VIGIE_POISON_KILLS", 5);
    let seed = env_or("VIGIE_POISON_SEED", rand::random::<u32>().into());
    eprintln!(
        "poison campaign: {good_total} good records, {kills} kills, VIGIE_POISON_SEED={seed}"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let b = broker();
    let topic = unique_name("health.case.v1");
    let dlq = vigie_kafka::dlq_topic(&topic);
    // The input takes the 2 MB records; its dead-letter twin has the
    // broker's default limit of 1 MiB.
    create_topic_with(
        &b.bootstrap,
        &topic,
        PARTITIONS,
        &[("max.message.bytes", "4194304")],
    )
    .await;
    create_topic(&b.bootstrap, &dlq, PARTITIONS).await;

    // Ten rounds: good records, then their tenth in poison, keys spread.
    let rounds = 10;
    let good_per_round = good_total / rounds;
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    let mut poison_n = 0u64;
    let two_hours_ago = chrono::Utc::now().timestamp_millis() - 2 * 3_600_000;
    for round in 0..rounds {
        produce_sample(&b.bootstrap, &topic, good_per_round, 1_000 + round);
        let (mut values, mut nulls): (Vec<RawInput>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
        for _ in 0..good_per_round / 10 {
            let (kind, value) = poison(poison_n);
            *kinds.entry(kind).or_default() += 1;
            let key = format!("p{}", rng.random_range(0..1_000)).into_bytes();
            match value {
                Some(v) => values.push((key, v, vec![])),
                None => nulls.push(key),
            }
            poison_n += 1;
        }
        // Produced two hours ago, as a backlog may have been: dead letters
        // must not be looked up by their records' times.
        produce_raw_at(&b.bootstrap, &topic, &values, Some(two_hours_ago)).await;
        produce_nulls(&b.bootstrap, &topic, &nulls);
    }
    let good = good_per_round * rounds;
    let total = good + poison_n;
    assert_eq!(topic_len(&b.bootstrap, &topic), total as i64);
    assert_eq!(kinds.len(), 8, "poison of every reason: {kinds:?}");
    // The 2 MB records really are on the topic.
    let big = read_topic(&b.bootstrap, &topic, total as usize, DEADLINE)
        .iter()
        .filter(|r| r.3.len() > 2_000_000)
        .count() as u64;
    assert_eq!(
        big,
        poison_n.div_ceil(150),
        "the 2 MB records are on the topic"
    );

    let db = TestDb::create().await;
    let pool = db.pool().await;
    count_writes(&pool).await;
    instrument_outbox(&pool).await;
    let group = unique_name("g");

    // Kill points: progress thresholds spread at random over the run. The
    // one at `blocked` waits instead until dead letters are published and
    // their removal from the outbox is stuck.
    let mut points: Vec<i64> = (0..kills)
        .map(|_| rng.random_range(total as i64 / 20..total as i64 * 9 / 10))
        .collect();
    points.sort_unstable();
    let blocked = kills / 2;
    for (k, point) in points.iter().enumerate() {
        let before = progress(&pool).await;
        let mut child = start_sink(&b.bootstrap, &topic, &group, &db);
        if k as u64 == blocked {
            sqlx::query("UPDATE test_block_delete SET on_ = true")
                .execute(&pool)
                .await
                .unwrap();
            wait_for(
                "dead letters published and their outbox rows being deleted",
                DEADLINE,
                || async {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE query LIKE 'DELETE FROM dlq_outbox%' AND wait_event = 'PgSleep'",
                    )
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                    (n > 0).then_some(())
                },
            )
            .await;
        } else {
            wait_for(
                &format!("progress past {}", (*point).max(before + 1)),
                DEADLINE,
                || async {
                    let p = progress(&pool).await;
                    (p > before && p >= *point).then_some(())
                },
            )
            .await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if k as u64 == blocked {
            // The killed member's sleeping delete still holds its rows.
            sqlx::query("UPDATE test_block_delete SET on_ = false")
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE query LIKE 'DELETE FROM dlq_outbox%' AND wait_event = 'PgSleep'",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    let child = start_sink(&b.bootstrap, &topic, &group, &db);
    wait_for("every record stored or dead-lettered", DEADLINE, || async {
        let stored: i64 = scalar(
            &pool,
            "SELECT coalesce(sum(next_offset), 0)::bigint FROM sink_offsets",
        )
        .await;
        let waiting = scalar(&pool, "SELECT count(*) FROM dlq_outbox").await;
        (stored == total as i64 && waiting == 0).then_some(())
    })
    .await;
    let mut child = child;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success(), "clean exit after SIGTERM");

    // Rows: the good records, each written once.
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM health_case").await,
        good as i64,
        "rows = good records"
    );
    assert_eq!(
        writes(&pool).await,
        (good as i64, good as i64),
        "each good record written once across the kills"
    );
    // Dead letters: one per poison record, in the topic itself.
    let letters = topic_len(&b.bootstrap, &dlq);
    let dead = read_topic(&b.bootstrap, &dlq, letters as usize, DEADLINE);
    let mut by_origin: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (_, _, _, value, headers) in &dead {
        let h: BTreeMap<&str, String> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        assert!(value.len() <= vigie_kafka::dlq::DLQ_MAX_VALUE_BYTES);
        assert_eq!(h["vigie.dlq.group"], group);
        by_origin
            .entry((
                h["vigie.dlq.origin.partition"].clone(),
                h["vigie.dlq.origin.offset"].clone(),
            ))
            .or_default()
            .push(h["vigie.dlq.reason"].clone());
    }
    let twice: Vec<_> = by_origin.iter().filter(|(_, r)| r.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "{} records dead-lettered more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(letters, poison_n as i64, "DLQ records = poison records");
    let mut got: BTreeMap<&str, u64> = BTreeMap::new();
    for reasons in by_origin.values() {
        *got.entry(reasons[0].as_str()).or_default() += 1;
    }
    assert_eq!(got, kinds, "each poison record with its own reason");
    // Offsets: at the end of every partition, so none stalled.
    let stored: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM sink_offsets WHERE consumer_group = $1 ORDER BY 1",
    )
    .bind(&group)
    .fetch_all(&pool)
    .await
    .unwrap();
    let ends = vigie_testkit::end_offsets(&b.bootstrap, &topic);
    assert_eq!(stored, ends, "stored offsets = end offsets");
    eprintln!(
        "poison campaign reconciled: {good} rows for {good} good records, {letters} dead letters \
         for {poison_n} poison records {kinds:?}, stored offsets = end offsets on {PARTITIONS} \
         partitions, after {kills} kill -9s"
    );
}
