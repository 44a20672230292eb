//! `vigie ingest` as a process, polling the simulator's SODA endpoint and
//! WHO file: killed with SIGKILL at random points and restarted from its
//! checkpoint. No row (nor version of a row) may be missing from the topic,
//! and any row produced twice must carry the same event id and the same
//! data.

mod common;

use common::{Reaped, SpawnReaped, free_port, metric, postgres_sink, stored_offsets, vigie};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use vigie_core::{Envelope, encode_event};
use vigie_simulator::server::{
    CASES_PATH, CasesSim, Endpoint, FaultKind, FaultRule, SimConfig, Simulator, Updates,
    WHO_CSV_PATH, WHO_FIRST_DATE, WhoSim, served_case, served_rows,
};
use vigie_simulator::{CaseGenConfig, CaseGenerator, CountryDayGenerator};
use vigie_testkit::{
    TestDb, broker, create_topic_and_dlq, read_topic, topic_len, unique_name, wait_for,
};

const DEADLINE: Duration = Duration::from_secs(120);
const ROWS: u64 = 40_000;
const SEED: u64 = 23;

fn config(dir: &std::path::Path, sim: &str, topic: &str) -> std::path::PathBuf {
    source_config(
        dir,
        "cdc-cases",
        &format!("{sim}{CASES_PATH}"),
        topic,
        "page_size = 1000",
    )
}

/// The configuration of one source, `name`, polling `url` every 50 ms.
fn source_config(
    dir: &std::path::Path,
    name: &str,
    url: &str,
    topic: &str,
    options: &str,
) -> std::path::PathBuf {
    let path = dir.join("vigie.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[producers]
checkpoint_dir = "{cp}"
quarantine_dir = "{q}"

[producers.sources.{name}]
url = "{url}"
topic = "{topic}"
poll_interval_ms = 50
options = {{ {options} }}
"#,
            cp = dir.join("checkpoints").display(),
            q = dir.join("quarantine").display(),
        ),
    )
    .unwrap();
    path
}

fn start(config: &std::path::Path, port: u16, until_caught_up: bool) -> Reaped {
    start_source(config, "cdc-cases", port, until_caught_up)
}

fn start_source(config: &std::path::Path, name: &str, port: u16, until_caught_up: bool) -> Reaped {
    let mut c = vigie();
    c.arg("--config")
        .arg(config)
        .args(["ingest", "--source", name])
        .env("VIGIE__KAFKA__BROKERS", &broker().bootstrap)
        .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if until_caught_up {
        c.arg("--until-caught-up");
    }
    c.spawn_reaped()
}

#[tokio::test]
async fn kill_9_at_random_points_then_restart_leaves_no_gap_and_repeats_keep_their_id() {
    let cases = CasesSim {
        rows: ROWS,
        ..CasesSim::default()
    };
    // Five kill points spread over the load, each at a random row.
    let mut points: Vec<u64> = (0..5)
        .map(|i| i * ROWS / 6 + rand::random_range(1_000..ROWS / 6))
        .collect();
    points.sort_unstable();
    ingest_with_kills(SEED, cases, Vec::new(), &points).await;
}

/// Rows sharing one `:updated_at` across several pages (2,500 rows a
/// timestamp, pages of 1,000): keyset paging on (`:updated_at`, `:id`) takes
/// each of them, across kills. Paging the tie by `$offset` under
/// `$order=:updated_at` alone, as `cdc-cases` did, loses rows (and repeats
/// others): the order of rows that tie is the upstream's to choose, and
/// differs from one request to the next.
#[tokio::test]
async fn rows_tied_on_updated_at_across_pages_are_all_taken_across_kills() {
    const TIED_ROWS: u64 = 10_700;
    let cases = CasesSim {
        rows: TIED_ROWS,
        rows_per_timestamp: 2_500,
        ..CasesSim::default()
    };
    // Three kill points, each at a random row; every page served 100 ms
    // late, so that each kill lands while pages are still to come.
    let mut points: Vec<u64> = (0..3)
        .map(|i| i * TIED_ROWS / 4 + rand::random_range(500..TIED_ROWS / 4))
        .collect();
    points.sort_unstable();
    let slow = FaultRule {
        endpoint: Endpoint::Cases,
        kind: FaultKind::Slow { delay_ms: 100 },
        every: 1,
        times: None,
    };
    let mid_load = ingest_with_kills(SEED + 1, cases, vec![slow], &points).await;
    assert_eq!(mid_load, points.len(), "every kill before the last row");
}

/// Serves `cases` of generator `seed` (with `faults`), runs `vigie ingest`,
/// killed with SIGKILL once each of `points` rows is produced and
/// restarted, then once more until caught up; then every row must be on the
/// topic (counted by distinct row, i.e. event id), every record must carry
/// a version the row had, and the last record of each row must carry its
/// latest version (with no updates: every repeat the same data). Drained
/// into PostgreSQL, the table must hold each row once, in its latest
/// version. Returns how many kills came before the last row was produced.
async fn ingest_with_kills(
    seed: u64,
    cases: CasesSim,
    faults: Vec<FaultRule>,
    points: &[u64],
) -> usize {
    let rows = cases.rows;
    let updates = cases.updates;
    let sim = Simulator::start(
        SimConfig {
            seed,
            cases,
            faults,
            ..SimConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let b = broker();
    let topic = unique_name("health.case.v1");
    create_topic_and_dlq(&b.bootstrap, &topic, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), sim.base_url(), &topic);

    let mut mid_load = 0;
    for &point in points {
        let port = free_port();
        let mut child = start(&config, port, false);
        // Rows acknowledged by this run; the topic holds the earlier ones.
        let before = topic_len(&b.bootstrap, &topic) as u64;
        wait_for(&format!("{point} rows produced"), DEADLINE, || async {
            let n = metric(port, "vigie_source_events_total").await?;
            (before + n as u64 >= point).then_some(())
        })
        .await;
        let produced = before + metric(port, "vigie_source_events_total").await.unwrap() as u64;
        child.kill().unwrap(); // SIGKILL, mid-stream
        child.wait().unwrap();
        if produced < rows {
            mid_load += 1;
        }
    }
    // A growing data set: the last run once it has stopped growing.
    wait_for("every row available", DEADLINE, || async {
        (sim.manifest().cases.rows_available == rows).then_some(())
    })
    .await;
    let mut last = start(&config, free_port(), true);
    let status = tokio::task::spawn_blocking(move || last.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "the last run catches up and exits 0");

    let total = topic_len(&b.bootstrap, &topic);
    let g = CaseGenerator::new(CaseGenConfig {
        seed,
        ..CaseGenConfig::default()
    })
    .unwrap();
    // Every version the data set holds, by event id, and the last one.
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..rows {
        let case = served_case(&g, updates, i);
        let env = Envelope::new("cdc-cases", case, Utc::now());
        let data = serde_json::to_value(&env.data).unwrap().to_string();
        let id = env.id.to_string();
        versions.entry(id.clone()).or_default().insert(data.clone());
        latest.insert(id, data);
    }
    assert!(total >= latest.len() as i64, "{total} records");
    let (seen_versions, last) = versions_on_topic(&topic, &versions);
    assert_eq!(
        last.len(),
        latest.len(),
        "no gap: distinct rows on the topic ({total} records)"
    );
    assert!(
        last == latest,
        "the last version of each row on the topic is the data set's latest"
    );
    let updated_after_read = seen_versions.values().filter(|v| v.len() > 1).count();
    if updates.is_some() {
        assert!(
            updated_after_read > 0,
            "no row was updated after it was read: the scenario did not happen"
        );
    } else {
        assert_eq!(updated_after_read, 0, "a repeat with other data");
    }

    // The PostgreSQL sink drains the topic: the table holds each row once,
    // in its latest version, as the simulator's final state has it.
    let (_db, pool) = drain_into_postgres(&topic).await;
    type Values = (String, String, String);
    let mut expected: BTreeMap<String, Values> = BTreeMap::new();
    for i in 0..rows {
        let c = served_case(&g, updates, i);
        let values = (
            c.hosp_yn.to_string(),
            c.icu_yn.to_string(),
            c.current_status.to_string(),
        );
        expected.insert(c.row_id.to_string(), values);
    }
    let stored: BTreeMap<String, Values> = sqlx::query_as::<_, (String, String, String, String)>(
        "SELECT row_id, hosp_yn, icu_yn, current_status FROM health_case",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, h, i, s)| (id, (h, i, s)))
    .collect();
    assert_eq!(stored.len(), expected.len(), "each row once in the table");
    assert!(stored == expected, "each row in its latest version");
    mid_load
}

/// Rows updated upstream while the data set grows (one row in 7 a new
/// version of the row 900 rows before it), across kills: every row reaches
/// the topic, and its last record there is its latest version, the one the
/// sinks keep: the PostgreSQL sink, draining the topic, holds each row
/// once, in its latest version. A row updated before `cdc-cases` reached it
/// is only ever served, hence produced, in its new version.
#[tokio::test]
async fn rows_updated_between_polls_end_in_their_latest_version_across_kills() {
    const UPDATED_ROWS: u64 = 20_000;
    let cases = CasesSim {
        rows: UPDATED_ROWS,
        initial_rows: Some(2_000),
        rows_per_second: 4_000,
        updates: Some(Updates {
            every: 7,
            distance: 900,
        }),
        ..CasesSim::default()
    };
    let mut points: Vec<u64> = (0..3)
        .map(|i| i * UPDATED_ROWS / 4 + rand::random_range(500..UPDATED_ROWS / 4))
        .collect();
    points.sort_unstable();
    ingest_with_kills(SEED + 2, cases, Vec::new(), &points).await;
}

/// The `data` of every record of `topic`, by event id: every version seen,
/// and the last one in its partition's order. Each record must carry one of
/// `versions`, the versions its row had upstream.
type Versions = BTreeMap<String, BTreeSet<String>>;
fn versions_on_topic(topic: &str, versions: &Versions) -> (Versions, BTreeMap<String, String>) {
    let b = broker();
    let total = topic_len(&b.bootstrap, topic);
    let mut seen = Versions::new();
    let mut last: BTreeMap<String, (i32, i64, String)> = BTreeMap::new();
    for (partition, offset, _, value, _) in
        read_topic(&b.bootstrap, topic, total as usize, DEADLINE)
    {
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        let data = v["data"].to_string();
        assert!(
            versions.get(&id).is_some_and(|d| d.contains(&data)),
            "{id}: data no version of the row had: {data}"
        );
        seen.entry(id.clone()).or_default().insert(data.clone());
        let slot = last.entry(id).or_insert((partition, offset, data.clone()));
        // A row's versions share its key, hence its partition.
        assert_eq!(slot.0, partition, "a row's versions share a partition");
        if offset >= slot.1 {
            *slot = (partition, offset, data);
        }
    }
    let last = last.into_iter().map(|(id, (_, _, d))| (id, d)).collect();
    (seen, last)
}

/// Runs the PostgreSQL sink on `topic` until it has stored the whole
/// topic, then kills it; returns the database (dropped with it) and a pool.
async fn drain_into_postgres(topic: &str) -> (TestDb, sqlx::PgPool) {
    let b = broker();
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let total = topic_len(&b.bootstrap, topic);
    let group = unique_name("g");
    let mut sink = postgres_sink(&b.bootstrap, topic, &group, &db.url, free_port())
        .stderr(Stdio::null())
        .spawn_reaped();
    wait_for("the sink to store the whole topic", DEADLINE, || async {
        (stored_offsets(&pool, &group).await == Some(total)).then_some(())
    })
    .await;
    sink.kill().unwrap();
    sink.wait().unwrap();
    (db, pool)
}

/// WHO revises the days it published (blank cells filled in, figures
/// corrected) and a row may carry a mistyped future year. The file is
/// served at four sizes, its last 3 days preliminary each time and with a
/// row dated a century ahead; at each size `vigie ingest` is killed with
/// SIGKILL at a random point, then runs until caught up. Every version of
/// every row served reaches the topic, the last version of each row on the
/// topic is the final file's, and the only dead letters are the future
/// rows, each once (twice when a kill came before its checkpoint); drained
/// into PostgreSQL, the table is the final file.
#[tokio::test]
async fn who_corrections_and_future_rows_across_kills() {
    const COUNTRIES: usize = 30;
    let b = broker();
    let topic = unique_name("health.country_day.v1");
    create_topic_and_dlq(&b.bootstrap, &topic, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let who = |days| WhoSim {
        countries: COUNTRIES,
        initial_days: days,
        day_seconds: 0.0,
        preliminary_days: 3,
        future_row: true,
    };
    let generator = CountryDayGenerator::new(SEED, WHO_FIRST_DATE, COUNTRIES).unwrap();
    // Every version served, by event id; and the future rows.
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut futures = BTreeSet::new();
    let mut last = BTreeMap::new();
    let mut final_rows = Vec::new();
    for days in [20, 23, 24, 29] {
        let sim = Simulator::start(
            SimConfig {
                seed: SEED,
                who: who(days),
                ..SimConfig::default()
            },
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .unwrap();
        let rows = served_rows(&generator, days, &who(days));
        let (future, rows) = rows.split_last().unwrap();
        futures.insert(future.date_reported.to_string());
        final_rows = rows.to_vec();
        last.clear();
        // Versions first served at this size: what the run must produce.
        let mut fresh = 0;
        for row in rows {
            let v: serde_json::Value =
                serde_json::from_slice(&encode_event("who-covid", row, Utc::now()).unwrap())
                    .unwrap();
            let id = v["id"].as_str().unwrap().to_owned();
            if versions
                .entry(id.clone())
                .or_default()
                .insert(v["data"].to_string())
            {
                fresh += 1;
            }
            last.insert(id, v["data"].to_string());
        }
        let url = format!("{}{WHO_CSV_PATH}", sim.base_url());
        let config = source_config(dir.path(), "who-covid", &url, &topic, "");
        // Killed once some of this size's rows are acknowledged.
        let port = free_port();
        let mut child = start_source(&config, "who-covid", port, false);
        let point = rand::random_range(1..=fresh);
        wait_for(&format!("{point} rows produced"), DEADLINE, || async {
            let n = metric(port, "vigie_source_events_total").await?;
            (n as u64 >= point).then_some(())
        })
        .await;
        child.kill().unwrap(); // SIGKILL, mid-poll or between polls
        child.wait().unwrap();
        let mut run = start_source(&config, "who-covid", free_port(), true);
        let status = tokio::task::spawn_blocking(move || run.wait().unwrap())
            .await
            .unwrap();
        assert!(
            status.success(),
            "the run at {days} days catches up and exits 0"
        );
        sim.shutdown().await;
    }

    let (on_topic, newest) = versions_on_topic(&topic, &versions);
    assert_eq!(on_topic, versions, "every version of every row served");
    assert_eq!(
        newest, last,
        "the last version of each row is the final file's"
    );

    // Drained into PostgreSQL: the table is the final file, row for row.
    let (_db, pool) = drain_into_postgres(&topic).await;
    type Figures = (Option<i64>, i64, Option<i64>, i64);
    let stored: BTreeMap<(String, chrono::NaiveDate), Figures> = sqlx::query_as::<
        _,
        (
            String,
            chrono::NaiveDate,
            Option<i64>,
            i64,
            Option<i64>,
            i64,
        ),
    >(
        "SELECT country_code::text, date_reported, new_cases, cumulative_cases, new_deaths,
                    cumulative_deaths FROM country_day",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(c, d, n, cn, nd, cd)| ((c.trim().to_owned(), d), (n, cn, nd, cd)))
    .collect();
    let expected: BTreeMap<(String, chrono::NaiveDate), Figures> = final_rows
        .iter()
        .map(|r| {
            (
                (r.country_code.to_string(), r.date_reported),
                (
                    r.new_cases,
                    r.cumulative_cases as i64,
                    r.new_deaths,
                    r.cumulative_deaths as i64,
                ),
            )
        })
        .collect();
    assert_eq!(stored.len(), expected.len());
    assert!(stored == expected, "the table is the final file");

    let dlq = format!("{topic}.dlq");
    let dead = topic_len(&b.bootstrap, &dlq);
    let dead_dates: BTreeSet<String> = read_topic(&b.bootstrap, &dlq, dead as usize, DEADLINE)
        .into_iter()
        .map(|(_, _, _, value, _)| String::from_utf8(value[..10].to_vec()).unwrap())
        .collect();
    assert_eq!(
        dead_dates, futures,
        "each future row dead-lettered, nothing else"
    );
    // Once per poll would be dozens: at most once more after a kill.
    assert!(
        dead as usize <= 2 * futures.len(),
        "{dead} dead letters for {} future rows",
        futures.len()
    );
}
