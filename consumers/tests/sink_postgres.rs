//! The PostgreSQL sink against a real broker and the real PostgreSQL:
//! poison input and severed database connections, reconciled event by event.

mod common;

use common::Refused;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use vigie_consumers::sinks::postgres::{PostgresConfig, PostgresSink};
use vigie_consumers::{ConsumerMetrics, RunSummary, Runtime, Sink};
use vigie_core::SchemaRegistry;
use vigie_kafka::{ConsumerConfig, KafkaMetrics, ProducerConfig};
use vigie_simulator::{CaseGenConfig, CaseGenerator, CountryDayGenerator, NewsGenerator};
use vigie_testkit::{
    RawInput, TestDb, broker, create_topic, create_topic_and_dlq, produce_raw, read_topic,
    unique_name, wait_for,
};

const DEADLINE: Duration = Duration::from_secs(90);

fn cases(seed: u64, n: u64) -> Vec<(String, String)> {
    let g = CaseGenerator::new(CaseGenConfig {
        seed,
        ..CaseGenConfig::default()
    })
    .unwrap();
    (0..n)
        .map(|i| {
            let e = vigie_simulator::case_envelope(&g, i, Utc::now());
            (
                e.data.res_state.as_str().to_owned(),
                String::from_utf8(e.to_json_bytes().unwrap()).unwrap(),
            )
        })
        .collect()
}

async fn sink(db: &TestDb) -> PostgresSink {
    PostgresSink::connect(&PostgresConfig {
        url: db.url.clone(),
        ..PostgresConfig::default()
    })
    .await
    .expect("sink")
}

/// The sink's consumer runtime on `topic` for `group`.
fn runtime(bootstrap: &str, topic: &str, group: &str) -> Runtime {
    Runtime {
        component: "postgres",
        cluster: vigie_kafka::Cluster::new(bootstrap),
        consumer: ConsumerConfig {
            group_id: group.to_owned(),
            topics: vec![topic.to_owned()],
            batch_max_records: 300,
            batch_max_wait_ms: 100,
            max_record_bytes: 8_192,
            lag_interval_ms: 0,
            ..ConsumerConfig::default()
        },
        producer: ProducerConfig::default(),
        schemas: Arc::new(SchemaRegistry::embedded().unwrap()),
        kafka_metrics: KafkaMetrics::unregistered(),
        metrics: ConsumerMetrics::register(&prometheus::Registry::new()).unwrap(),
    }
}

/// A login of its own, member of `role` of `infra/postgres/roles.sql`,
/// which the administrator applied to `db` after migrating it; and the URL
/// that connects as that login. Dropped with [`drop_login`].
async fn login_as(db: &TestDb, role: &str) -> (String, String) {
    let pool = db.pool().await;
    vigie_consumers::sinks::postgres::migrate::migrate(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(include_str!("../../infra/postgres/roles.sql"))
        .execute(&pool)
        .await
        .expect("infra/postgres/roles.sql applies");
    let login = format!("{role}_login_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {login} LOGIN IN ROLE {role}"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let url = db.url.replacen("postgres@", &format!("{login}@"), 1);
    (login, url)
}

async fn drop_login(db: &TestDb, login: &str) {
    let pool = db.pool().await;
    // The sink's sessions may outlive its run by a moment, each owning
    // its temporary staging tables until it ends: end them, then drop the
    // role once nothing of theirs is left.
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(login)
        .execute(&pool)
        .await
        .unwrap();
    wait_for(
        "the login's sessions to end",
        Duration::from_secs(30),
        || async {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE {login}")))
                .execute(&pool)
                .await
                .ok()
        },
    )
    .await;
}

/// Runs `s` until `done` holds on the database, then stops it.
async fn run_until<F, Fut>(
    bootstrap: &str,
    (topic, group): (&str, &str),
    db: &TestDb,
    mut s: PostgresSink,
    during: F,
    expected_rows: i64,
) -> RunSummary
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = runtime(bootstrap, topic, group);
    let pool = db.pool().await;
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let summary = runtime.run(&mut s, stop).await.expect("run");
            drop(s.pool().clone());
            summary
        })
    };
    let side = tokio::spawn(during(pool.clone()));
    wait_for("every row stored", DEADLINE, || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM health_case) + (SELECT count(*) FROM country_day)
                      + (SELECT count(*) FROM outbreak_news)",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (n >= expected_rows).then_some(())
        }
    })
    .await;
    side.await.unwrap();
    stop.cancel();
    task.await.unwrap()
}

#[tokio::test]
async fn poison_mix_goes_to_the_dlq_and_the_rest_is_stored_once() {
    let b = broker();
    let db = TestDb::create().await;
    let topic = unique_name("health.mixed.v1");
    create_topic_and_dlq(&b.bootstrap, &topic, 3).await;

    let mut input: Vec<RawInput> = Vec::new();
    let valid = cases(7, 400);
    for (i, (k, v)) in valid.iter().enumerate() {
        input.push((k.clone().into_bytes(), v.clone().into_bytes(), vec![]));
        if i == 100 {
            input.push((b"NY".to_vec(), b"{not json".to_vec(), vec![]));
        }
        if i == 300 {
            input.push((
                k.clone().into_bytes(),
                v.replace("\"current_status\":\"", "\"current_status\":\"Very ")
                    .into_bytes(),
                vec![],
            ));
        }
    }
    // The constraint violation: rewrite the state of one valid event.
    let mut bad: serde_json::Value = serde_json::from_str(&cases(8, 1)[0].1).unwrap();
    bad["data"]["res_state"] = "ZZ".into();
    bad["data"]
        .as_object_mut()
        .unwrap()
        .remove("state_fips_code");
    input.insert(250, (b"ZZ".to_vec(), bad.to_string().into_bytes(), vec![]));
    // A county the model lacks, which the case does not name either.
    let mut unnamed: serde_json::Value = serde_json::from_str(&cases(10, 1)[0].1).unwrap();
    unnamed["data"]["county_fips_code"] = "99999".into();
    unnamed["data"]
        .as_object_mut()
        .unwrap()
        .remove("res_county");
    input.insert(
        260,
        (b"TX".to_vec(), unnamed.to_string().into_bytes(), vec![]),
    );
    let mut big: serde_json::Value = serde_json::from_str(&cases(9, 1)[0].1).unwrap();
    big["data"]["res_county"] = "Y".repeat(10_000).into();
    input.insert(350, (b"TX".to_vec(), big.to_string().into_bytes(), vec![]));
    // Other event types go to their own tables.
    let days = CountryDayGenerator::new(3, chrono::NaiveDate::from_ymd_opt(2021, 1, 1).unwrap(), 5)
        .unwrap();
    let mut others = 0;
    for d in 0..4 {
        for e in vigie_simulator::country_day_envelopes(&days, d, Utc::now()) {
            input.push((
                e.data.country_code.as_str().as_bytes().to_vec(),
                e.to_json_bytes().unwrap(),
                vec![],
            ));
            others += 1;
        }
    }
    let news = NewsGenerator::new(3, vigie_simulator::DEFAULT_BASE_URL).unwrap();
    for i in 0..6 {
        let e = vigie_simulator::news_envelope(&news, i, 0, Utc::now());
        input.push((
            e.data.url.as_str().as_bytes().to_vec(),
            e.to_json_bytes().unwrap(),
            vec![],
        ));
        others += 1;
    }
    produce_raw(&b.bootstrap, &topic, &input).await;

    let group = unique_name("g");
    // The sink runs as a login with only the rights of vigie_sink.
    let (login, url) = login_as(&db, "vigie_sink").await;
    let s = PostgresSink::connect(&PostgresConfig {
        url,
        migrate: false,
        ..PostgresConfig::default()
    })
    .await
    .expect("the sink connects as vigie_sink");
    let summary = run_until(
        &b.bootstrap,
        (&topic, &group),
        &db,
        s,
        |_| async {},
        400 + others,
    )
    .await;
    drop_login(&db, &login).await;

    let pool = db.pool().await;
    let cases_stored: i64 = sqlx::query_scalar("SELECT count(*) FROM health_case")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(cases_stored, 400, "every valid case stored once");
    let dlq = read_topic(
        &b.bootstrap,
        &format!("{topic}.dlq"),
        5,
        Duration::from_secs(30),
    );
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut origins = std::collections::BTreeSet::new();
    for (_, _, _, _, headers) in &dlq {
        let h: BTreeMap<&str, String> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        *reasons.entry(h["vigie.dlq.reason"].clone()).or_default() += 1;
        origins.insert((
            h["vigie.dlq.origin.partition"].clone(),
            h["vigie.dlq.origin.offset"].clone(),
        ));
        if h["vigie.dlq.reason"] == "constraint_violation" {
            assert_eq!(h["vigie.dlq.stage"], "postgres");
            let error = &h["vigie.dlq.error"];
            assert!(
                (error.contains("dim_state") && error.contains("\"ZZ\""))
                    || (error.contains("dim_county") && error.contains("\"99999\"")),
                "{h:?}"
            );
        }
    }
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("constraint_violation".to_owned(), 2),
            ("invalid_json".to_owned(), 1),
            ("oversized".to_owned(), 1),
            ("schema_violation".to_owned(), 1),
        ])
    );
    let in_total = input.len() as i64;
    let stored = cases_stored + others;
    assert_eq!(in_total, stored + origins.len() as i64, "in = stored + dlq");
    assert_eq!(summary.dead_lettered, 5);

    // Offsets stored with the rows: one past the last record of each partition.
    let offsets: i64 = sqlx::query_scalar(
        "SELECT sum(next_offset)::bigint FROM sink_offsets WHERE consumer_group = $1",
    )
    .bind(&group)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(offsets, in_total);
    // Every letter published left the outbox.
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM dlq_outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(waiting, 0, "letters left in the outbox");
}

#[tokio::test]
async fn severed_database_connections_lose_and_duplicate_nothing() {
    vigie_testkit::logs();
    let b = broker();
    let db = TestDb::create().await;
    let topic = unique_name("health.case.v1");
    create_topic_and_dlq(&b.bootstrap, &topic, 4).await;
    let n = 6_000;
    let input: Vec<RawInput> = cases(11, n)
        .into_iter()
        .map(|(k, v)| (k.into_bytes(), v.into_bytes(), vec![]))
        .collect();
    produce_raw(&b.bootstrap, &topic, &input).await;

    let name = db.name.clone();
    let group = unique_name("g");
    let summary = run_until(
        &b.bootstrap,
        (&topic, &group),
        &db,
        sink(&db).await,
        move |pool| async move {
            // Five times, as rows arrive: end every other session on the database.
            for k in 1..=5i64 {
                wait_for("rows to arrive", DEADLINE, || {
                    let pool = pool.clone();
                    async move {
                        let c: i64 = sqlx::query_scalar("SELECT count(*) FROM health_case")
                            .fetch_one(&pool)
                            .await
                            .ok()?;
                        (c >= k * 900).then_some(())
                    }
                })
                .await;
                let killed: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                      WHERE datname = $1 AND pid <> pg_backend_pid()) t",
                )
                .bind(&name)
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
                assert!(killed >= 0);
            }
        },
        n as i64,
    )
    .await;
    let pool = db.pool().await;
    let (rows, ids): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT row_id) FROM health_case")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rows, ids), (n as i64, n as i64));
    let offsets: i64 = sqlx::query_scalar(
        "SELECT sum(next_offset)::bigint FROM sink_offsets WHERE consumer_group = $1",
    )
    .bind(&group)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(offsets, n as i64, "stored offsets cover every record once");
    assert_eq!(summary.consumed, n);
}

#[tokio::test]
async fn migrations_apply_on_an_empty_database_and_reapply_as_a_no_op() {
    let db = TestDb::create().await;
    let s = sink(&db).await;
    let pool = db.pool().await;
    let tables = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let first = tables().await;
    assert!(first >= 9, "model created: {first} tables");
    vigie_consumers::sinks::postgres::migrate::migrate(s.pool())
        .await
        .expect("again");
    assert_eq!(tables().await, first);
    let states: i64 = sqlx::query_scalar("SELECT count(*) FROM dim_state")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(states, 56);
    assert!(s.health_probe().is_some());
}

#[tokio::test]
async fn stored_offsets_past_the_end_of_a_recreated_topic_stop_the_run_with_a_clear_error() {
    let b = broker();
    let db = TestDb::create().await;
    let topic = unique_name("health.recreated.v1");
    let group = unique_name("g");
    create_topic(&b.bootstrap, &topic, 1).await;
    let input: Vec<RawInput> = cases(3, 10)
        .into_iter()
        .map(|(k, v)| (k.into_bytes(), v.into_bytes(), vec![]))
        .collect();
    produce_raw(&b.bootstrap, &topic, &input).await;
    // The store remembers a longer life of a topic of the same name.
    let mut s = sink(&db).await;
    let pool = db.pool().await;
    sqlx::query("INSERT INTO sink_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, 0, 1000)")
        .bind(&group)
        .bind(&topic)
        .execute(&pool)
        .await
        .unwrap();
    let err = tokio::time::timeout(
        DEADLINE,
        runtime(&b.bootstrap, &topic, &group).run(&mut s, CancellationToken::new()),
    )
    .await
    .expect("the run stops by itself")
    .expect_err("stored offsets ahead of the topic");
    match &err {
        vigie_consumers::RunError::StoredOffsetAhead {
            topic: t,
            partition: 0,
            stored: 1000,
            high: 10,
        } if *t == topic => {}
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("recreated"), "{err}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM health_case")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing written past the check");
}

#[tokio::test]
async fn a_partition_the_store_has_no_offset_for_starts_at_the_reset_point_not_at_kafkas_commit() {
    // Kafka holds a committed offset for the group, the store none (a new
    // database): the store decides, so every record is read and stored.
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let b = broker();
    let db = TestDb::create().await;
    let topic = unique_name("health.resume.v1");
    let group = unique_name("g");
    create_topic(&b.bootstrap, &topic, 1).await;
    let input: Vec<RawInput> = cases(5, 20)
        .into_iter()
        .map(|(k, v)| (k.into_bytes(), v.into_bytes(), vec![]))
        .collect();
    produce_raw(&b.bootstrap, &topic, &input).await;
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &b.bootstrap)
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut committed = rdkafka::TopicPartitionList::new();
    committed
        .add_partition_offset(&topic, 0, rdkafka::Offset::Offset(15))
        .unwrap();
    c.commit(&committed, CommitMode::Sync).unwrap();
    drop(c);
    let summary = run_until(
        &b.bootstrap,
        (&topic, &group),
        &db,
        sink(&db).await,
        |_| async {},
        20,
    )
    .await;
    assert_eq!(
        summary.written, 20,
        "every record, not the 5 past Kafka's commit"
    );
}

/// PostgreSQL over TLS with the server's certificate verified
/// (`sslmode=verify-full` against the local CA `scripts/setup` made): the
/// sink connects, migrates and writes on an encrypted connection. Against
/// another CA it refuses to connect, and says why.
#[tokio::test]
async fn the_sink_connects_with_verify_full_and_refuses_an_unknown_ca() {
    let db = TestDb::create().await;
    let ca = vigie_testkit::postgres_ca();
    assert!(ca.exists(), "scripts/setup makes {}", ca.display());
    let tls = |ca: &std::path::Path| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            db.url,
            ca.display()
        )
    };
    let mut s = PostgresSink::connect(&PostgresConfig {
        url: tls(&ca),
        ..PostgresConfig::default()
    })
    .await
    .expect("the sink connects over TLS");
    let mut refused = Refused::default();
    s.write(
        &[case_version("No", Some(1), 1)],
        &common::no_offsets(),
        &mut refused,
    )
    .await
    .unwrap();
    let pool = sqlx::PgPool::connect(&tls(&ca)).await.unwrap();
    let (encrypted, rows): (bool, i64) = sqlx::query_as(
        "SELECT (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()),
                (SELECT count(*) FROM health_case)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(encrypted && rows == 1, "{encrypted} {rows}");

    // A CA that did not sign the server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = common::unrelated_ca(dir.path());
    let attempt = PostgresSink::connect(&PostgresConfig {
        url: tls(&other_ca),
        ..PostgresConfig::default()
    })
    .await;
    let Err(err) = attempt else {
        panic!("an unknown CA is refused");
    };
    let err = err.to_string();
    assert!(err.contains("certificate"), "{err}");
}

/// 2026-01-01 at `h` o'clock.
fn hour(h: u32) -> chrono::DateTime<Utc> {
    chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 1, h, 0, 0).unwrap()
}

/// A version of case 1 of the default generator: `hosp_yn` set, fetched
/// at hour `ingested`, of upstream version hour `upstream` when given.
fn case_version(hosp: &str, upstream: Option<u32>, ingested: u32) -> vigie_consumers::Accepted {
    let g = CaseGenerator::new(CaseGenConfig::default()).unwrap();
    let mut env = vigie_simulator::case_envelope(&g, 1, hour(ingested));
    env.data.hosp_yn = hosp.parse().unwrap();
    env.upstream_updated_at = upstream.map(hour);
    let bytes = env.to_json_bytes().unwrap();
    vigie_consumers::Accepted {
        index: 0,
        partition: 0,
        event: SchemaRegistry::embedded().unwrap().parse(&bytes).unwrap(),
    }
}

#[tokio::test]
async fn a_newer_version_of_an_id_wins_and_an_older_one_does_not_overwrite() {
    let db = TestDb::create().await;
    let mut s = sink(&db).await;
    let at = hour;
    let version = |hosp: &str, h: u32| case_version(hosp, None, h);
    let ctx = common::no_offsets();
    let pool = db.pool().await;
    let stored = || async {
        sqlx::query_as::<_, (String, chrono::DateTime<Utc>)>(
            "SELECT hosp_yn, ingested_at FROM health_case",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let mut refused = Refused::default();
    // First load (direct path), then a newer and an older version (upsert path),
    // and both in one batch (the newest of the batch wins).
    s.write(&[version("No", 10)], &ctx, &mut refused)
        .await
        .unwrap();
    assert_eq!(stored().await, vec![("No".to_owned(), at(10))]);
    s.write(&[version("Yes", 12)], &ctx, &mut refused)
        .await
        .unwrap();
    assert_eq!(
        stored().await,
        vec![("Yes".to_owned(), at(12))],
        "newer wins"
    );
    s.write(&[version("Unknown", 11)], &ctx, &mut refused)
        .await
        .unwrap();
    assert_eq!(
        stored().await,
        vec![("Yes".to_owned(), at(12))],
        "older does not overwrite"
    );
    s.write(
        &[version("Missing", 14), version("No", 13)],
        &ctx,
        &mut refused,
    )
    .await
    .unwrap();
    assert_eq!(
        stored().await,
        vec![("Missing".to_owned(), at(14))],
        "newest of a batch wins"
    );
    assert!(refused.0.is_empty());
}

/// The upstream's version (`upstream_updated_at`) decides before the time
/// of ingestion: a version fetched later but older upstream (a re-drive, a
/// lagging producer) never overwrites a newer one, in the table or within
/// a batch; a record without a version sorts before every versioned one.
#[tokio::test]
async fn the_upstreams_version_decides_before_the_time_of_ingestion() {
    let db = TestDb::create().await;
    let mut s = sink(&db).await;
    let at = hour;
    let version = case_version;
    let ctx = common::no_offsets();
    let pool = db.pool().await;
    let stored = || async {
        sqlx::query_as::<_, (String, Option<chrono::DateTime<Utc>>)>(
            "SELECT hosp_yn, upstream_updated_at FROM health_case",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let mut refused = Refused::default();
    let mut write = async |batch: &[vigie_consumers::Accepted]| {
        s.write(batch, &ctx, &mut refused).await.unwrap();
    };
    // First load: the direct path stores the version too.
    write(&[version("No", Some(1), 10)]).await;
    assert_eq!(stored().await, vec![("No".to_owned(), Some(at(1)))]);
    write(&[version("Yes", Some(3), 9)]).await;
    assert_eq!(
        stored().await,
        vec![("Yes".to_owned(), Some(at(3)))],
        "newer upstream, fetched earlier: wins"
    );
    write(&[version("Unknown", Some(2), 20)]).await;
    write(&[version("Unknown", None, 23)]).await;
    assert_eq!(
        stored().await,
        vec![("Yes".to_owned(), Some(at(3)))],
        "older upstream or none, fetched later: does not overwrite"
    );
    write(&[version("Missing", Some(5), 1), version("No", Some(4), 22)]).await;
    assert_eq!(
        stored().await,
        vec![("Missing".to_owned(), Some(at(5)))],
        "the newest upstream version of a batch wins"
    );
    // The same version fetched again later: the later fetch is kept.
    write(&[version("No", Some(5), 2)]).await;
    assert_eq!(stored().await, vec![("No".to_owned(), Some(at(5)))]);

    // A score carries the version of the case scored: the re-scoring of an
    // older version, published later, leaves the newer one's score.
    let score = |value: f64, upstream: u32, published: u32| {
        let mut env = vigie_core::Envelope::new(
            "scorer",
            vigie_core::CaseScore {
                case_event_id: uuid::Uuid::from_u128(7),
                model_name: "m".into(),
                model_version: "1".into(),
                score: value,
                scored_at: at(published),
            },
            at(published),
        );
        env.upstream_updated_at = Some(at(upstream));
        vigie_consumers::Accepted {
            index: 0,
            partition: 0,
            event: SchemaRegistry::embedded()
                .unwrap()
                .parse(&env.to_json_bytes().unwrap())
                .unwrap(),
        }
    };
    write(&[score(0.25, 6, 10)]).await;
    write(&[score(0.75, 5, 11)]).await;
    write(&[score(0.5, 4, 12), score(0.125, 3, 13)]).await;
    let scores: Vec<f64> = sqlx::query_scalar("SELECT score FROM case_score")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(scores, [0.25]);
    assert!(refused.0.is_empty());
}

#[tokio::test]
async fn values_postgresql_refuses_are_isolated_row_by_row_and_never_fatal() {
    // Edge validation refuses these; the sink is the last line, for what
    // validation does not foresee. Events built in code skip validation.
    let db = TestDb::create().await;
    let mut s = sink(&db).await;
    let g = CaseGenerator::new(CaseGenConfig::default()).unwrap();
    let mut events: Vec<vigie_core::Event> = (0..40)
        .map(|i| vigie_core::Event::Case(vigie_simulator::case_envelope(&g, i, Utc::now())))
        .collect();
    // Row 7: year 0, which PostgreSQL has not (22008); row 23: a NUL
    // character, which no text column holds (22021).
    let vigie_core::Event::Case(e) = &mut events[7] else {
        unreachable!()
    };
    e.data.case_month = vigie_core::health::CaseMonth::new(0, 1).unwrap();
    let vigie_core::Event::Case(e) = &mut events[23] else {
        unreachable!()
    };
    e.data.res_county = Some("Nul\u{0}County".into());
    let accepted: Vec<vigie_consumers::Accepted> = events
        .into_iter()
        .enumerate()
        .map(|(index, event)| vigie_consumers::Accepted {
            index,
            partition: 0,
            event,
        })
        .collect();
    let next_offsets = BTreeMap::from([(("t".to_owned(), 0), 40)]);
    let ctx = vigie_consumers::BatchContext {
        group: "g",
        next_offsets: &next_offsets,
        assigned: &common::NONE_ASSIGNED,
        dead_letters: &[],
        group_metadata: None,
    };
    let mut refused = Refused::default();
    let written = s
        .write(&accepted, &ctx, &mut refused)
        .await
        .expect("not fatal");
    assert_eq!(written, 38);
    let mut got: Vec<(usize, &str)> = refused.0.iter().map(|r| (r.index, r.reason)).collect();
    got.sort();
    assert_eq!(got, [(7, "data_exception"), (23, "data_exception")]);
    assert!(
        refused.0.iter().any(|r| r.error.contains("out of range")),
        "{:?}",
        refused.0
    );
    let pool = db.pool().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM health_case")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 38);
    let stored: i64 =
        sqlx::query_scalar("SELECT next_offset FROM sink_offsets WHERE consumer_group = 'g'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, 40, "the batch's offsets are stored with its rows");
}

#[tokio::test]
async fn a_stale_writer_is_fenced_and_stored_offsets_never_go_backwards() {
    let db = TestDb::create().await;
    let mut s = sink(&db).await;
    let g = CaseGenerator::new(CaseGenConfig::default()).unwrap();
    let batch = |from: u64, n: u64| -> Vec<vigie_consumers::Accepted> {
        (from..from + n)
            .map(|i| vigie_consumers::Accepted {
                index: (i - from) as usize,
                partition: 0,
                event: vigie_core::Event::Case(vigie_simulator::case_envelope(&g, i, Utc::now())),
            })
            .collect()
    };
    let write = |next: i64| BTreeMap::from([(("t".to_owned(), 0), next)]);
    // The new owner has stored up to 50; the stale member then writes a
    // batch that ends at 40, with partition 2's offset in the same
    // transaction (lanes split partitions modulo `parallelism`, 2).
    let ahead = write(50);
    let ctx = vigie_consumers::BatchContext {
        group: "g",
        next_offsets: &ahead,
        assigned: &common::NONE_ASSIGNED,
        dead_letters: &[],
        group_metadata: None,
    };
    let mut refused = Refused::default();
    assert_eq!(
        s.write(&batch(0, 10), &ctx, &mut refused).await.unwrap(),
        10
    );
    let mut stale = write(40);
    stale.insert(("t".to_owned(), 2), 7);
    let ctx = vigie_consumers::BatchContext {
        group: "g",
        next_offsets: &stale,
        assigned: &common::NONE_ASSIGNED,
        dead_letters: &[],
        group_metadata: None,
    };
    let err = s
        .write(&batch(100, 5), &ctx, &mut refused)
        .await
        .unwrap_err();
    assert!(
        matches!(err, vigie_consumers::SinkError::Fenced(_)),
        "{err}"
    );
    let pool = db.pool().await;
    let stored: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM sink_offsets WHERE consumer_group = 'g' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(stored, [(0, 50)], "nothing of the fenced batch stored");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM health_case")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 10, "the fenced batch's rows rolled back");
    // Staying put is fenced too (a batch ending there holds only records
    // stored already); moving on is allowed.
    let same = write(50);
    let ctx = vigie_consumers::BatchContext {
        group: "g",
        next_offsets: &same,
        assigned: &common::NONE_ASSIGNED,
        dead_letters: &[],
        group_metadata: None,
    };
    let err = s.write(&[], &ctx, &mut refused).await.unwrap_err();
    assert!(
        matches!(err, vigie_consumers::SinkError::Fenced(_)),
        "an equal offset: {err}"
    );
    let later = write(51);
    let ctx = vigie_consumers::BatchContext {
        group: "g",
        next_offsets: &later,
        assigned: &common::NONE_ASSIGNED,
        dead_letters: &[],
        group_metadata: None,
    };
    s.write(&[], &ctx, &mut refused)
        .await
        .expect("a later offset");
}

#[tokio::test]
async fn a_who_entity_that_is_not_a_country_is_stored_with_its_own_code() {
    let db = TestDb::create().await;
    let mut s = sink(&db).await;
    let days = CountryDayGenerator::new(3, chrono::NaiveDate::from_ymd_opt(2021, 1, 1).unwrap(), 2)
        .unwrap();
    let mut rows = days.day(0);
    rows[0].country_code = "XXX".parse().unwrap();
    rows[0].country = "International commercial vessel".into();
    rows[0].who_region = "OTHER".parse().unwrap();
    let accepted: Vec<vigie_consumers::Accepted> = rows
        .into_iter()
        .enumerate()
        .map(|(index, row)| vigie_consumers::Accepted {
            index,
            partition: 0,
            event: vigie_core::Event::CountryDay(vigie_core::Envelope::new(
                "who-covid",
                row,
                Utc::now(),
            )),
        })
        .collect();
    let ctx = vigie_consumers::BatchContext {
        group: "g",
        next_offsets: &BTreeMap::new(),
        assigned: &common::NONE_ASSIGNED,
        dead_letters: &[],
        group_metadata: None,
    };
    let mut refused = Refused::default();
    assert_eq!(s.write(&accepted, &ctx, &mut refused).await.unwrap(), 2);
    assert!(refused.0.is_empty(), "{:?}", refused.0);
    let pool = db.pool().await;
    let stored: (String, String, String) = sqlx::query_as(
        "SELECT c.country_code, c.name, c.who_region FROM country_day d
         JOIN dim_country c USING (country_code) WHERE d.country_code = 'XXX'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            "XXX".to_owned(),
            "International commercial vessel".to_owned(),
            "OTHER".to_owned()
        )
    );
}

/// A drift report, as the drift component publishes it, for the window
/// starting at `minute` with verdict `status`; received at `ingested`.
fn drift_report(minute: u32, status: &str, ingested: u32) -> vigie_consumers::Accepted {
    use chrono::TimeZone;
    let at = |m: u32| Utc.with_ymd_and_hms(2026, 1, 1, 0, m, 0).unwrap();
    let report: vigie_core::DriftReport = serde_json::from_value(serde_json::json!({
        "model_name": "hosp_risk", "model_version": "1.0.0",
        "window_start": "2026-01-01T00:00:00Z", "window_end": "2026-01-01T00:01:00Z",
        "cases": 6000, "scores": 0, "status": status,
        "thresholds": {"psi_warn": 0.03, "psi_alert": 0.05, "min_cases": 5000},
        "features": [{"feature": "age_group", "kind": "categorical", "n": 6000,
                      "psi": 0.1, "jensen_shannon": 0.15, "status": status}],
    }))
    .unwrap();
    let report = vigie_core::DriftReport {
        window_start: at(minute),
        window_end: at(minute + 1),
        ..report
    };
    let bytes = vigie_core::Envelope::new("drift", report, at(ingested))
        .to_json_bytes()
        .unwrap();
    let event = SchemaRegistry::embedded().unwrap().parse(&bytes).unwrap();
    vigie_consumers::Accepted {
        index: 0,
        partition: 0,
        event,
    }
}

/// The drift reports' history: one row per window, whose features are
/// queryable; the same window received again with a later verdict
/// replaces its row, an older copy does not.
#[tokio::test]
async fn drift_reports_are_stored_one_row_per_window() {
    let db = TestDb::create().await;
    let mut s = sink(&db).await;
    let ctx = common::no_offsets();
    let mut refused = Refused::default();
    let batch = [drift_report(0, "ok", 5), drift_report(1, "alert", 5)];
    assert_eq!(s.write(&batch, &ctx, &mut refused).await.unwrap(), 2);
    s.write(&[drift_report(1, "warn", 9)], &ctx, &mut refused)
        .await
        .unwrap();
    s.write(&[drift_report(0, "alert", 1)], &ctx, &mut refused)
        .await
        .unwrap();
    assert!(refused.0.is_empty(), "{:?}", refused.0);
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT to_char(window_start AT TIME ZONE 'UTC', 'HH24:MI'), status, cases,
                f->>'psi'
         FROM drift_report, jsonb_array_elements(features) f
         WHERE f->>'feature' = 'age_group' ORDER BY window_start",
    )
    .fetch_all(&db.pool().await)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("00:00".to_owned(), "ok".to_owned(), 6000, "0.1".to_owned()),
            (
                "00:01".to_owned(),
                "warn".to_owned(),
                6000,
                "0.1".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn a_reset_starts_a_new_epoch_that_fences_the_old_ones_writers_and_replays_from_its_offset() {
    use vigie_consumers::sinks::postgres::OffsetReset;
    use vigie_consumers::{BatchContext, SinkError};
    let b = broker();
    let db = TestDb::create().await;
    let topic = unique_name("health.reset.v1");
    let group = unique_name("g");
    create_topic(&b.bootstrap, &topic, 1).await;
    let input: Vec<RawInput> = cases(6, 20)
        .into_iter()
        .map(|(k, v)| (k.into_bytes(), v.into_bytes(), vec![]))
        .collect();
    produce_raw(&b.bootstrap, &topic, &input).await;
    let first = run_until(
        &b.bootstrap,
        (&topic, &group),
        &db,
        sink(&db).await,
        |_| async {},
        20,
    )
    .await;
    assert_eq!(first.written, 20);

    // A member that read the stored offsets before the reset and still
    // holds a batch.
    let tp = (topic.clone(), 0);
    let mut stale = sink(&db).await;
    let read = stale.stored_offsets(&group).await.unwrap().unwrap();
    assert_eq!(read[&tp], 20);
    let resets = sink(&db)
        .await
        .reset_offsets(&group, &topic, &BTreeMap::from([(0, 5)]))
        .await
        .unwrap();
    assert_eq!(
        resets,
        vec![OffsetReset {
            topic: topic.clone(),
            partition: 0,
            before: Some(20),
            after: 5,
            epoch: 1,
        }]
    );
    // Its batch ends past the reset point, so only the epoch can refuse it.
    let later = BTreeMap::from([(tp.clone(), 21)]);
    let ctx = BatchContext {
        group: &group,
        next_offsets: &later,
        assigned: &common::NONE_ASSIGNED,
        dead_letters: &[],
        group_metadata: None,
    };
    let refused = stale.write(&[], &ctx, &mut Refused::default()).await;
    assert!(matches!(refused, Err(SinkError::Fenced(_))), "{refused:?}");
    let pool = db.pool().await;
    let stored: (i64, i64) = sqlx::query_as(
        "SELECT next_offset, epoch FROM sink_offsets WHERE consumer_group = $1 AND topic = $2",
    )
    .bind(&group)
    .bind(&topic)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, (5, 1), "the reset stands");

    // The group's next run reads from the reset point, in the new epoch.
    let runtime = runtime(&b.bootstrap, &topic, &group);
    let mut s = sink(&db).await;
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { runtime.run(&mut s, stop).await.expect("run") })
    };
    wait_for("the offsets back at the end", DEADLINE, || {
        let pool = pool.clone();
        let (group, topic) = (group.clone(), topic.clone());
        async move {
            let (next, epoch): (i64, i64) = sqlx::query_as(
                "SELECT next_offset, epoch FROM sink_offsets
                 WHERE consumer_group = $1 AND topic = $2",
            )
            .bind(&group)
            .bind(&topic)
            .fetch_one(&pool)
            .await
            .ok()?;
            (next == 20 && epoch == 1).then_some(())
        }
    })
    .await;
    stop.cancel();
    let replay = task.await.unwrap();
    assert_eq!(replay.consumed, 15, "records 5 to 19 read again");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM health_case")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 20, "the replay converges on the same rows");
}

/// The readers' role (the API, dashboards) reads the data and nothing
/// else: no write, no DDL, not the sinks' offsets. The sink's role may not
/// change the schema either.
#[tokio::test]
async fn the_reader_role_only_reads_the_data_and_the_sink_role_changes_no_schema() {
    let db = TestDb::create().await;
    let (reader, reader_url) = login_as(&db, "vigie_reader").await;
    let (sinker, sink_url) = login_as(&db, "vigie_sink").await;
    let mut s = PostgresSink::connect(&PostgresConfig {
        url: sink_url.clone(),
        migrate: false,
        ..PostgresConfig::default()
    })
    .await
    .unwrap();
    let mut refused = Refused::default();
    s.write(
        &[case_version("No", None, 1)],
        &common::no_offsets(),
        &mut refused,
    )
    .await
    .expect("the sink writes as vigie_sink");
    drop(s);

    let as_reader = sqlx::PgPool::connect(&reader_url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM health_case")
        .fetch_one(&as_reader)
        .await
        .expect("the reader reads the cases");
    assert_eq!(rows, 1);
    let as_sink = sqlx::PgPool::connect(&sink_url).await.unwrap();
    for (pool, who, sql, refusal) in [
        (
            &as_reader,
            "reader",
            "DELETE FROM health_case",
            "permission denied for table health_case",
        ),
        (
            &as_reader,
            "reader",
            "UPDATE case_score SET score = 0",
            "permission denied for table case_score",
        ),
        (
            &as_reader,
            "reader",
            "SELECT * FROM sink_offsets",
            "permission denied for table sink_offsets",
        ),
        (
            &as_reader,
            "reader",
            "CREATE TABLE t (x int)",
            "permission denied for schema public",
        ),
        (
            &as_sink,
            "sink",
            "CREATE TABLE t (x int)",
            "permission denied for schema public",
        ),
        (
            &as_sink,
            "sink",
            "DROP TABLE health_case",
            "must be owner of table health_case",
        ),
        (
            &as_sink,
            "sink",
            "DELETE FROM health_case",
            "permission denied for table health_case",
        ),
    ] {
        let err = sqlx::raw_sql(sql)
            .execute(pool)
            .await
            .expect_err(&format!("{who}: {sql} is refused"))
            .to_string();
        assert!(err.contains(refusal), "{who}: {sql}: {err}");
    }
    as_reader.close().await;
    as_sink.close().await;
    drop_login(&db, &reader).await;
    drop_login(&db, &sinker).await;
}
