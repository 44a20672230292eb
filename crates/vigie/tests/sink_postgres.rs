//! `vigie consume --sink postgres` as processes: killed with SIGKILL at
//! five points of a large load, two instances sharing partitions through a
//! rebalance, and a member frozen (SIGSTOP) past its group's patience while
//! another takes over. Every case must end up stored exactly once, with the
//! same table content as an undisturbed run, and stored offsets never go
//! backwards.

mod common;

use common::{
    Reaped, SpawnReaped, count_writes, free_port, metric, postgres_sink, produce_sample, writes,
};

use std::process::{Command, Stdio};
use std::time::Duration;

use vigie_testkit::{TestDb, broker, create_topic_and_dlq, unique_name, wait_for};

const DEADLINE: Duration = Duration::from_secs(120);
const EVENTS: u64 = 20_000;
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// A topic holding `EVENTS` sample cases.
async fn loaded_topic(bootstrap: &str) -> String {
    let topic = unique_name("health.case.v1");
    create_topic_and_dlq(bootstrap, &topic, 4).await;
    produce_sample(bootstrap, &topic, EVENTS, 5);
    topic
}

fn start_sink(bootstrap: &str, topic: &str, group: &str, db: &TestDb, port: u16) -> Reaped {
    postgres_sink(bootstrap, topic, group, &db.url, port)
        .env("VIGIE__KAFKA__CONSUMER__BATCH_MAX_RECORDS", "1000")
        .env(
            "VIGIE__KAFKA__CONSUMER__SESSION_TIMEOUT_MS",
            SESSION_TIMEOUT.as_millis().to_string(),
        )
        // A killed member never rejoins: bound the rebalance that waits for it.
        .env(
            "VIGIE__KAFKA__CONSUMER__MAX_POLL_INTERVAL_MS",
            MAX_POLL_INTERVAL.as_millis().to_string(),
        )
        .env("VIGIE__KAFKA__CONSUMER__LAG_INTERVAL_MS", "0")
        .stderr(Stdio::null())
        .spawn_reaped()
}

async fn count(pool: &sqlx::PgPool) -> Option<i64> {
    sqlx::query_scalar("SELECT count(*) FROM health_case")
        .fetch_one(pool)
        .await
        .ok()
}

async fn wait_rows(pool: &sqlx::PgPool, at_least: i64) {
    wait_for(&format!("{at_least} rows"), DEADLINE, || async move {
        count(pool).await.filter(|n| *n >= at_least)
    })
    .await;
}

/// Table content, independent of load order.
async fn checksum(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar(
        "SELECT md5(string_agg(concat_ws('|', event_id, row_id, case_month, res_state, county_fips,
            age_group, sex, race, ethnicity, case_positive_specimen_interval, case_onset_interval,
            process, exposure_yn, current_status, symptom_status, hosp_yn, icu_yn, death_yn,
            underlying_conditions_yn, source, occurred_at, ingested_at), ',' ORDER BY event_id))
         FROM health_case",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn reconcile(pool: &sqlx::PgPool, group: &str, total: u64) {
    let total = total as i64;
    let (rows, ids): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT row_id) FROM health_case")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((rows, ids), (total, total), "every case exactly once");
    let offsets: i64 = sqlx::query_scalar(
        "SELECT sum(next_offset)::bigint FROM sink_offsets WHERE consumer_group = $1",
    )
    .bind(group)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        offsets, total,
        "stored offsets at the end of every partition"
    );
}

fn stop(mut child: Reaped) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}

/// The reference: the same topic, holding `total` cases, loaded by one
/// undisturbed run.
async fn clean_run(bootstrap: &str, topic: &str, total: u64) -> String {
    let db = TestDb::create().await;
    let group = unique_name("clean");
    let child = start_sink(bootstrap, topic, &group, &db, free_port());
    let pool = db.pool().await;
    wait_rows(&pool, total as i64).await;
    stop(child);
    reconcile(&pool, &group, total).await;
    checksum(&pool).await
}

#[tokio::test]
async fn kill_9_at_five_points_then_restart_stores_every_event_exactly_once() {
    let b = broker();
    let topic = loaded_topic(&b.bootstrap).await;
    let db = TestDb::create().await;
    let pool = db.pool().await;
    count_writes(&pool).await;
    let group = unique_name("g");
    let mut last = 0;
    for point in [1_500i64, 4_500, 8_000, 11_500, 15_000] {
        let mut child = start_sink(&b.bootstrap, &topic, &group, &db, free_port());
        // Restarted at once, the member gets its partitions back when the
        // broker evicts the killed one: within the rebalance timeout.
        wait_for(
            "the restarted member to store more rows",
            MAX_POLL_INTERVAL + Duration::from_secs(15),
            || async { count(&pool).await.filter(|n| *n > last) },
        )
        .await;
        wait_rows(&pool, point).await;
        child.kill().unwrap(); // SIGKILL, mid-stream
        child.wait().unwrap();
        last = count(&pool).await.unwrap();
    }
    let child = start_sink(&b.bootstrap, &topic, &group, &db, free_port());
    wait_rows(&pool, EVENTS as i64).await;
    stop(child);
    reconcile(&pool, &group, EVENTS).await;
    assert_eq!(
        writes(&pool).await,
        (EVENTS as i64, EVENTS as i64),
        "each case written once: none applied twice across the kills"
    );
    assert_eq!(
        checksum(&pool).await,
        clean_run(&b.bootstrap, &topic, EVENTS).await,
        "same content as a clean run"
    );
}

#[tokio::test]
async fn two_instances_and_a_rebalance_mid_stream_store_every_event_exactly_once() {
    let b = broker();
    let topic = unique_name("health.case.v1");
    create_topic_and_dlq(&b.bootstrap, &topic, 4).await;
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let group = unique_name("g");
    let (pa, pb) = (free_port(), free_port());
    // A backlog for the first instance.
    let backlog = EVENTS / 2;
    produce_sample(&b.bootstrap, &topic, backlog, 5);
    let a = start_sink(&b.bootstrap, &topic, &group, &db, pa);
    // The second instance joins once the first has stored some of the
    // backlog but not all, while a stream of new cases keeps coming.
    wait_for(
        "the first instance to store some of the backlog, not all",
        DEADLINE,
        || async { count(&pool).await.filter(|n| *n > 0 && *n < backlog as i64) },
    )
    .await;
    let stream = Stream::start(&b.bootstrap, &topic, backlog);
    let second = start_sink(&b.bootstrap, &topic, &group, &db, pb);
    // `produced` is read before each look at the assignments: all of those
    // cases existed when the group settled.
    let produced = wait_for("both instances to hold partitions", DEADLINE, || async {
        let produced = stream.produced();
        let (na, nb) = (
            metric(pa, "vigie_consumer_assigned_partitions").await?,
            metric(pb, "vigie_consumer_assigned_partitions").await?,
        );
        (na > 0.0 && nb > 0.0).then_some(produced)
    })
    .await;
    // Mid-stream: the stream goes on past the rebalance, and the cases it
    // adds then are stored too (checked at the end). The members may keep
    // up with it, so a lag at that moment is not asked for.
    wait_for(
        "the stream to go on after the group settled",
        DEADLINE,
        || async { (stream.produced() > produced).then_some(()) },
    )
    .await;
    // Both instances take part.
    for (port, which) in [(pb, "second"), (pa, "first")] {
        wait_for(
            &format!("the {which} instance to write events"),
            DEADLINE,
            || async {
                metric(port, "vigie_sink_events_total")
                    .await
                    .filter(|n| *n > 0.0)
            },
        )
        .await;
    }
    let total = stream.stop().await;
    wait_rows(&pool, total as i64).await;
    stop(a);
    stop(second);
    reconcile(&pool, &group, total).await;
    assert_eq!(
        checksum(&pool).await,
        clean_run(&b.bootstrap, &topic, total).await,
        "same content as a clean run"
    );
}

/// Cases `vigie produce` appends in each step of a [`Stream`].
const STREAM_STEP: u64 = 500;
/// A bound on a stream's steps (the waits end it much sooner). A rebalance
/// on Apache Kafka waits for the first member's next heartbeat (up to 3 s)
/// and its next poll: the stream must outlast that by far.
const STREAM_MAX_STEPS: u64 = 400;

/// Runs of `vigie produce`, one after another, each with its own seed
/// (distinct ids), until stopped.
struct Stream {
    produced: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream {
    /// Starts appending to `topic`, which holds `already` cases.
    fn start(bootstrap: &str, topic: &str, already: u64) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
        let produced = std::sync::Arc::new(AtomicU64::new(already));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
        let task = {
            let (produced, stop) = (produced.clone(), stop.clone());
            tokio::task::spawn_blocking(move || {
                for step in 0..STREAM_MAX_STEPS {
                    if stop.load(SeqCst) {
                        break;
                    }
                    produce_sample(&bootstrap, &topic, STREAM_STEP, 100 + step);
                    produced.fetch_add(STREAM_STEP, SeqCst);
                }
            })
        };
        Self {
            produced,
            stop,
            task,
        }
    }

    /// Cases on the topic so far (acknowledged).
    fn produced(&self) -> u64 {
        self.produced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops after the step under way; returns the cases on the topic.
    async fn stop(self) -> u64 {
        let Self {
            produced,
            stop,
            task,
        } = self;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        task.await.unwrap();
        produced.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Sends `sig` (`STOP`, `CONT`) to `child`.
fn signal(child: &Reaped, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig}");
}

/// `(partition, next_offset)` stored for `group`, in order.
async fn stored_offsets(pool: &sqlx::PgPool, group: &str) -> Vec<(i32, i64)> {
    sqlx::query_as(
        "SELECT partition, next_offset FROM sink_offsets WHERE consumer_group = $1 ORDER BY 1",
    )
    .bind(group)
    .fetch_all(pool)
    .await
    .unwrap_or_default()
}

#[tokio::test]
async fn a_stale_member_frozen_mid_batch_is_fenced_when_it_resumes() {
    // A holds a batch, frozen (SIGSTOP) inside its transaction before its
    // first row; past max_poll_interval_ms, B takes every partition over
    // and stores them to the end. A, resumed (SIGCONT), tries to commit its
    // stale batch: refused, counted, and the offsets never go backwards.
    let b = broker();
    let topic = unique_name("health.case.v1");
    create_topic_and_dlq(&b.bootstrap, &topic, 4).await;
    let total = 4_000;
    produce_sample(&b.bootstrap, &topic, total, 7);
    let db = TestDb::create().await;
    let pool = db.pool().await;
    count_writes(&pool).await;
    let group = unique_name("g");
    let (pa, pb) = (free_port(), free_port());
    // Hold A at its next batch's first statement on `health_case`: the
    // probe of the direct load, which waits behind this lock.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE health_case IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let a = start_sink(&b.bootstrap, &topic, &group, &db, pa);
    wait_for("A to wait at its batch's first row", DEADLINE, || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT EXISTS (SELECT 1 FROM health_case%'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (n > 0).then_some(())
    })
    .await;
    signal(&a, "STOP");
    lock.commit().await.unwrap();
    // Every offset ever seen, checked to only move forward.
    let watch = {
        let (pool, group) = (pool.clone(), group.clone());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen: std::collections::BTreeMap<i32, i64> = Default::default();
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                for (p, o) in stored_offsets(&pool, &group).await {
                    let last = seen.entry(p).or_insert(o);
                    assert!(
                        o >= *last,
                        "partition {p}: stored offset went back from {last} to {o}"
                    );
                    *last = o;
                }
                tokio::task::yield_now().await;
            }
            seen
        });
        (stop, task)
    };
    let second = start_sink(&b.bootstrap, &topic, &group, &db, pb);
    wait_rows(&pool, total as i64).await;
    wait_for("B to store every offset", DEADLINE, || async {
        let sum: i64 = stored_offsets(&pool, &group)
            .await
            .iter()
            .map(|(_, o)| o)
            .sum();
        (sum == total as i64).then_some(())
    })
    .await;
    signal(&a, "CONT");
    wait_for("A's stale batch to be fenced", DEADLINE, || async {
        metric(pa, "vigie_sink_fenced_batches_total")
            .await
            .filter(|n| *n >= 1.0)
    })
    .await;
    stop(a);
    stop(second);
    watch.0.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watch.1.await.expect("offsets only moved forward");
    assert_eq!(seen.values().sum::<i64>(), total as i64);
    reconcile(&pool, &group, total).await;
    assert_eq!(
        writes(&pool).await,
        (total as i64, total as i64),
        "each case written once: the stale batch was rolled back"
    );
}

/// Waits until `n` case writes have been counted.
async fn wait_writes(pool: &sqlx::PgPool, n: i64) {
    wait_for(&format!("{n} case writes"), DEADLINE, || async move {
        Some(writes(pool).await).filter(|(w, _)| *w >= n)
    })
    .await;
}

/// Runs `vigie` with `args` on the shared broker and the test database;
/// returns its standard output.
fn vigie_ok(bootstrap: &str, db: &TestDb, args: &[&str]) -> String {
    let out = common::vigie()
        .args(args)
        .env("VIGIE__KAFKA__BROKERS", bootstrap)
        .env("VIGIE__CONSUMERS__SINKS__POSTGRES__URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_replay_by_time_rereads_from_then_and_a_restore_resumes_the_sink_at_its_place() {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

    let b = broker();
    let topic = unique_name("health.case.v1");
    create_topic_and_dlq(&b.bootstrap, &topic, 4).await;
    produce_sample(&b.bootstrap, &topic, 3_000, 5);
    // An aborted transaction between the two loads: the archived offsets
    // have a gap that the restored ones do not.
    let txn: ThreadedProducer<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &b.bootstrap)
        .set("transactional.id", unique_name("aborted"))
        .create_with_context(rdkafka::producer::DefaultProducerContext)
        .unwrap();
    txn.init_transactions(DEADLINE).unwrap();
    txn.begin_transaction().unwrap();
    for p in 0..4 {
        for _ in 0..25 {
            txn.send(BaseRecord::<(), str>::to(&topic).partition(p).payload("{}"))
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }
    txn.flush(DEADLINE).unwrap();
    txn.abort_transaction(DEADLINE).unwrap();
    let then = chrono::Utc::now();
    produce_sample(&b.bootstrap, &topic, 2_000, 6);

    let db = TestDb::create().await;
    let pool = db.pool().await;
    count_writes(&pool).await;
    let group = unique_name("g");
    let child = start_sink(&b.bootstrap, &topic, &group, &db, free_port());
    wait_rows(&pool, 5_000).await;
    stop(child);
    assert_eq!(writes(&pool).await, (5_000, 5_000));
    let content = checksum(&pool).await;

    // Replay from `then`: the 2,000 cases produced after it, again.
    let plan = vigie_ok(
        &b.bootstrap,
        &db,
        &[
            "replay",
            "reset-group",
            "--group",
            &group,
            "--topic",
            &topic,
            "--store",
            "postgres",
            "--to-datetime",
            &then.to_rfc3339(),
            "--execute",
            "--json",
        ],
    );
    let again: i64 = plan
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["again"]
                .as_i64()
                .unwrap()
        })
        .sum();
    // Offsets, not cases: the abort markers, written by the transaction
    // coordinator once the abort is acknowledged, may carry a timestamp
    // after `then` (one a partition).
    assert!((2_000..=2_004).contains(&again), "{plan}");
    let child = start_sink(&b.bootstrap, &topic, &group, &db, free_port());
    wait_writes(&pool, 7_000).await;
    stop(child);
    assert_eq!(
        writes(&pool).await,
        (7_000, 5_000),
        "the 2,000 cases from then on re-read once, no other"
    );
    assert_eq!(checksum(&pool).await, content, "the rows converge");
    reconcile_offsets(&pool, &group, &topic, &b.bootstrap).await;

    // Archive, delete the topic, restore it with the sink's stored offsets
    // translated: the restored offsets lack the aborted transaction's.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    vigie_ok(
        &b.bootstrap,
        &db,
        &["archive", "--topic", &topic, "--out", out],
    );
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &b.bootstrap)
            .create()
            .unwrap();
    admin
        .delete_topics(&[topic.as_str()], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    wait_for("the topic's deletion", DEADLINE, || async {
        vigie_kafka::group_lag(
            &vigie_kafka::Cluster::new(&b.bootstrap),
            "probe",
            std::slice::from_ref(&topic),
            Duration::from_secs(5),
        )
        .await
        .is_err()
        .then_some(())
    })
    .await;
    vigie_ok(
        &b.bootstrap,
        &db,
        &[
            "restore", "--from", out, "--group", &group, "--store", "postgres",
        ],
    );
    // 500 new cases: the sink, resumed at its translated offsets, writes
    // exactly those (stale offsets past the end would skip some).
    produce_sample(&b.bootstrap, &topic, 500, 7);
    let child = start_sink(&b.bootstrap, &topic, &group, &db, free_port());
    wait_rows(&pool, 5_500).await;
    wait_writes(&pool, 7_500).await;
    stop(child);
    assert_eq!(writes(&pool).await, (7_500, 5_500), "each new case once");
    reconcile_offsets(&pool, &group, &topic, &b.bootstrap).await;
}

/// The sink's stored offsets are its partitions' ends: the high watermark,
/// or one before it where the last record is a transaction marker.
async fn reconcile_offsets(pool: &sqlx::PgPool, group: &str, topic: &str, bootstrap: &str) {
    let stored: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM sink_offsets WHERE consumer_group = $1 AND topic = $2
         ORDER BY partition",
    )
    .bind(group)
    .bind(topic)
    .fetch_all(pool)
    .await
    .unwrap();
    let ends = vigie_kafka::group_lag(
        &vigie_kafka::Cluster::new(bootstrap),
        group,
        &[topic.to_owned()],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(stored.len(), ends.len(), "{stored:?}");
    for ((p, next), end) in stored.iter().zip(&ends) {
        assert_eq!(*p, end.partition);
        assert!(
            (end.high_watermark - 1..=end.high_watermark).contains(next),
            "partition {p}: stored {next}, high watermark {}",
            end.high_watermark
        );
    }
}
