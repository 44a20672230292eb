//! `infra/scylla/schema.cql` and the `scylla` sink on a real CQL server
//! (Apache Cassandra, or ScyllaDB at `SCYLLA_URI`): the schema applies,
//! twice, to a keyspace with `NetworkTopologyStrategy`, and each table
//! answers the query it is designed for; the sink creates it, writes each
//! table, keeps the newest version of a case whatever the order, and
//! refuses what it does not store.

mod common;

use common::Refused;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

const SCHEMA: &str = include_str!("../../infra/scylla/schema.cql");

/// The statements of a CQL file: comments dropped, split at `;`.
fn statements(cql: &str) -> Vec<String> {
    let code: String = cql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    code.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn run(session: &Session, cql: impl Into<String>) {
    let cql = cql.into();
    session
        .query_unpaged(cql.clone(), &[])
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"));
}

async fn rows<T>(session: &Session, cql: &str) -> Vec<T>
where
    T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    let result = session
        .query_unpaged(cql.to_owned(), &[])
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"))
        .into_rows_result()
        .unwrap();
    result.rows::<T>().unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn the_schema_applies_twice_and_each_table_serves_its_query() {
    let server = vigie_testkit::cql_server();
    let session = SessionBuilder::new()
        .known_node(&server.uri)
        .build()
        .await
        .unwrap();
    let ks = vigie_testkit::unique_name("vigie_schema").replace('-', "_");
    run(
        &session,
        format!(
            "CREATE KEYSPACE {ks} WITH replication = \
             {{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}}"
        ),
    )
    .await;
    session.use_keyspace(&ks, false).await.unwrap();
    let statements = statements(SCHEMA);
    assert_eq!(statements.len(), 3, "{statements:?}");
    for _ in 0..2 {
        for s in &statements {
            run(&session, s.as_str()).await;
        }
    }

    // Cases of a state-month: one partition per bucket, read together.
    for (bucket, id) in [
        (0, "00000000-0000-0000-0000-000000000001"),
        (31, "1f000000-0000-0000-0000-000000000002"),
    ] {
        run(
            &session,
            format!(
                "INSERT INTO health_case_by_state_month (res_state, case_month, bucket, event_id, hosp_yn) \
                 VALUES ('CA', '2022-01-01', {bucket}, {id}, 'Yes') USING TIMESTAMP 2000"
            ),
        )
        .await;
    }
    // An older version of the first case, arriving late, changes nothing.
    run(
        &session,
        "INSERT INTO health_case_by_state_month (res_state, case_month, bucket, event_id, hosp_yn) \
         VALUES ('CA', '2022-01-01', 0, 00000000-0000-0000-0000-000000000001, 'No') USING TIMESTAMP 1000",
    )
    .await;
    let buckets = (0..32).map(|b| b.to_string()).collect::<Vec<_>>().join(",");
    let cases: Vec<(String,)> = rows(
        &session,
        &format!(
            "SELECT hosp_yn FROM health_case_by_state_month \
             WHERE res_state = 'CA' AND case_month = '2022-01-01' AND bucket IN ({buckets})"
        ),
    )
    .await;
    assert_eq!(cases, [("Yes".to_owned(),), ("Yes".to_owned(),)]);

    // A country's year, newest day first.
    for day in ["2021-03-01", "2021-03-02", "2021-02-28"] {
        run(
            &session,
            format!(
                "INSERT INTO country_day_by_country (country_code, year, date_reported, new_cases) \
                 VALUES ('FR', 2021, '{day}', 1)"
            ),
        )
        .await;
    }
    let days: Vec<(scylla::value::CqlDate,)> = rows(
        &session,
        "SELECT date_reported FROM country_day_by_country WHERE country_code = 'FR' AND year = 2021",
    )
    .await;
    // CQL's date: days since 1970-01-01, plus 2^31.
    let cql_date = |d: &str| {
        let days = d.parse::<chrono::NaiveDate>().unwrap() - chrono::NaiveDate::default();
        scylla::value::CqlDate((1u32 << 31) + days.num_days() as u32)
    };
    let expected: Vec<_> = ["2021-03-02", "2021-03-01", "2021-02-28"]
        .iter()
        .map(|d| (cql_date(d),))
        .collect();
    assert_eq!(days, expected);

    // A model version's scores of a day.
    run(
        &session,
        "INSERT INTO case_score_by_model_day (model_name, model_version, day, bucket, case_event_id, score) \
         VALUES ('hosp_risk', '1.0.0', '2026-12-06', 3, 03000000-0000-0000-0000-000000000003, 0.25)",
    )
    .await;
    let scores: Vec<(f64,)> = rows(
        &session,
        "SELECT score FROM case_score_by_model_day \
         WHERE model_name = 'hosp_risk' AND model_version = '1.0.0' AND day = '2026-12-06' AND bucket = 3",
    )
    .await;
    assert_eq!(scores, [(0.25,)]);
    run(&session, format!("DROP KEYSPACE {ks}")).await;
}

/// 2026-01-01 at `h` o'clock.
fn hour(h: u32) -> chrono::DateTime<chrono::Utc> {
    chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 1, 1, h, 0, 0).unwrap()
}

fn accepted(index: usize, json: Vec<u8>) -> vigie_consumers::Accepted {
    vigie_consumers::Accepted {
        index,
        partition: 0,
        event: vigie_core::SchemaRegistry::embedded()
            .unwrap()
            .parse(&json)
            .unwrap(),
    }
}

#[tokio::test]
async fn the_sink_creates_its_tables_writes_each_and_keeps_the_newest_version() {
    use vigie_consumers::Sink;
    use vigie_consumers::sinks::scylla::{ScyllaConfig, ScyllaSink};

    let keyspace = vigie_testkit::unique_name("vigie_sink").replace('-', "_");
    let config = ScyllaConfig {
        nodes: vigie_testkit::cql_server().uri.clone(),
        keyspace: keyspace.clone(),
        ..ScyllaConfig::default()
    };
    let mut sink = ScyllaSink::connect(&config, &prometheus::Registry::new())
        .await
        .expect("the sink creates its keyspace and tables");

    // Case 1 in two versions, the newer written first; a country day; a
    // score; and a news article, which this sink does not store.
    let cases = vigie_simulator::CaseGenerator::new(Default::default()).unwrap();
    let version = |hosp: &str, upstream: u32| {
        let mut e = vigie_simulator::case_envelope(&cases, 1, hour(upstream));
        e.data.hosp_yn = hosp.parse().unwrap();
        e.upstream_updated_at = Some(hour(upstream));
        e
    };
    let (newer, older) = (version("Yes", 5), version("No", 2));
    let days = vigie_simulator::CountryDayGenerator::new(
        1,
        chrono::NaiveDate::from_ymd_opt(2021, 1, 1).unwrap(),
        1,
    )
    .unwrap();
    let day = vigie_simulator::country_day_envelopes(&days, 0, hour(1))
        .into_iter()
        .next()
        .unwrap();
    let news = vigie_simulator::NewsGenerator::new(1, vigie_simulator::DEFAULT_BASE_URL).unwrap();
    let article = vigie_simulator::news_envelope(&news, 0, 0, hour(1));
    let score = vigie_core::Envelope::new(
        "test",
        vigie_core::CaseScore {
            case_event_id: newer.id,
            model_name: "hosp_risk".into(),
            model_version: "1.0.0".into(),
            score: 0.75,
            scored_at: hour(3),
        },
        hour(3),
    );
    let ctx = common::no_offsets();
    let mut refused = Refused::default();
    for batch in [
        vec![
            accepted(0, newer.to_json_bytes().unwrap()),
            accepted(1, day.to_json_bytes().unwrap()),
            accepted(2, article.to_json_bytes().unwrap()),
        ],
        vec![
            accepted(0, older.to_json_bytes().unwrap()),
            accepted(1, score.to_json_bytes().unwrap()),
        ],
    ] {
        sink.write(&batch, &ctx, &mut refused).await.unwrap();
    }
    assert_eq!(refused.0.len(), 1, "the article is refused");
    assert_eq!(refused.0[0].reason, "unsupported_schema");
    assert!(
        refused.0[0].error.contains("health.outbreak_news"),
        "{:?}",
        refused.0
    );

    let session = SessionBuilder::new()
        .known_node(&vigie_testkit::cql_server().uri)
        .build()
        .await
        .unwrap();
    session.use_keyspace(&keyspace, false).await.unwrap();
    let hosp: Vec<(String,)> = rows(
        &session,
        &format!(
            "SELECT hosp_yn FROM health_case_by_state_month WHERE event_id = {} ALLOW FILTERING",
            newer.id
        ),
    )
    .await;
    assert_eq!(hosp, [("Yes".to_owned(),)], "the newer version stays");
    let country: Vec<(String, i64)> = rows(
        &session,
        &format!(
            "SELECT country_code, cumulative_cases FROM country_day_by_country WHERE country_code = '{}' AND year = 2021",
            day.data.country_code.as_str()
        ),
    )
    .await;
    assert_eq!(
        country,
        [(
            day.data.country_code.as_str().to_owned(),
            day.data.cumulative_cases as i64
        )]
    );
    let scores: Vec<(f64,)> = rows(
        &session,
        "SELECT score FROM case_score_by_model_day WHERE model_name = 'hosp_risk' \
         AND model_version = '1.0.0' AND day = '2026-01-01' ALLOW FILTERING",
    )
    .await;
    assert_eq!(scores, [(0.75,)]);

    // A write the server refuses whatever the tries (its table dropped
    // under the running sink) stops the sink, naming the table; a node
    // that cannot be reached is worth retrying (cql_restart.rs).
    run(&session, "DROP TABLE health_case_by_state_month".to_owned()).await;
    let err = sink
        .write(
            &[accepted(0, newer.to_json_bytes().unwrap())],
            &ctx,
            &mut refused,
        )
        .await
        .expect_err("the table is gone");
    assert!(
        matches!(err, vigie_consumers::SinkError::Fatal(_))
            && err.to_string().contains("health_case_by_state_month")
            && err.to_string().contains("retrying cannot help"),
        "{err:?}"
    );
    run(&session, format!("DROP KEYSPACE {keyspace}")).await;
}

#[tokio::test]
async fn batches_stay_under_the_servers_size_limit_whatever_their_row_count() {
    use vigie_consumers::Sink;
    use vigie_consumers::sinks::scylla::{ScyllaConfig, ScyllaSink};

    const CASES: usize = 2_000;
    let keyspace = vigie_testkit::unique_name("vigie_batch").replace('-', "_");
    let config = |max_bytes| ScyllaConfig {
        nodes: vigie_testkit::cql_server().uri.clone(),
        keyspace: keyspace.clone(),
        // Rows alone would put every case of a replica in one batch.
        batch_max_rows: 100_000,
        batch_max_bytes: max_bytes,
        ..ScyllaConfig::default()
    };
    let cases = vigie_simulator::CaseGenerator::new(Default::default()).unwrap();
    let batch: Vec<_> = (0..CASES)
        .map(|i| {
            let e = vigie_simulator::case_envelope(&cases, i as u64, hour(1));
            accepted(i, e.to_json_bytes().unwrap())
        })
        .collect();
    let ctx = common::no_offsets();

    // Without a byte limit, the one node's batch is refused as too large
    // (Cassandra's batch_size_fail_threshold, 50 KiB).
    let mut unbounded = ScyllaSink::connect(&config(usize::MAX), &prometheus::Registry::new())
        .await
        .unwrap();
    let err = unbounded
        .write(&batch, &ctx, &mut Refused::default())
        .await
        .expect_err("a batch of 2,000 cases is over the server's limit");
    assert!(
        matches!(err, vigie_consumers::SinkError::Fatal(_))
            && err.to_string().contains("too large"),
        "{err}"
    );

    // With the default limit, every case is written, in batches under it.
    let registry = prometheus::Registry::new();
    let mut sink = ScyllaSink::connect(&config(ScyllaConfig::default().batch_max_bytes), &registry)
        .await
        .unwrap();
    let mut refused = Refused::default();
    sink.write(&batch, &ctx, &mut refused).await.unwrap();
    assert!(refused.0.is_empty(), "{:?}", refused.0);
    let counted = |name: &str| -> f64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
            .sum()
    };
    assert_eq!(counted("vigie_scylla_rows_total"), CASES as f64);
    // Cassandra warns about batches over 5 KiB or 10 partitions: the sink
    // counts its warnings (and logs the first of each kind).
    let warned = |kind: &str| -> f64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "vigie_scylla_server_warnings_total")
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| m.get_label().iter().any(|l| l.value() == kind))
            .map(|m| m.get_counter().get_value())
            .sum()
    };
    // (ScyllaDB warns only above 128 KiB.)
    if std::env::var_os("SCYLLA_URI").is_none() {
        assert!(warned("batch_size") > 0.0 && warned("batch_partitions") > 0.0);
    }
    // A case row's values are about 300 bytes: some 50 per 16 KiB batch.
    assert!(counted("vigie_scylla_batches_total") >= 30.0);

    let session = SessionBuilder::new()
        .known_node(&vigie_testkit::cql_server().uri)
        .build()
        .await
        .unwrap();
    let stored: Vec<(i64,)> = rows(
        &session,
        &format!("SELECT count(*) FROM {keyspace}.health_case_by_state_month"),
    )
    .await;
    assert_eq!(stored, [(CASES as i64,)]);
    run(&session, format!("DROP KEYSPACE {keyspace}")).await;
}

#[tokio::test]
async fn over_tls_the_sink_trusts_the_nodes_ca_and_refuses_another() {
    use vigie_consumers::sinks::scylla::{ScyllaConfig, ScyllaSink};

    let server = vigie_testkit::cql_server();
    let Some(ca) = server.ca.clone() else {
        eprintln!("SCYLLA_URI without SCYLLA_CA_FILE: the node's TLS is not known, not tested");
        return;
    };
    let keyspace = vigie_testkit::unique_name("vigie_tls").replace('-', "_");
    let config = |tls, ca: Option<&std::path::Path>| ScyllaConfig {
        nodes: server.uri.clone(),
        keyspace: keyspace.clone(),
        tls,
        tls_ca_file: ca.map(Into::into),
        ..ScyllaConfig::default()
    };
    let refused = |r: Result<ScyllaSink, vigie_consumers::SinkError>| match r {
        Ok(_) => panic!("the sink connected"),
        Err(e) => e.to_string(),
    };

    // The node's CA: every connection of the sink is encrypted (the
    // node's own list of its clients says so, by their keyspace).
    let sink = ScyllaSink::connect(&config(true, Some(&ca)), &prometheus::Registry::new())
        .await
        .expect("the sink connects over TLS");
    let session = SessionBuilder::new()
        .known_node(&server.uri)
        .build()
        .await
        .unwrap();
    let clients: Vec<(Option<String>, Option<bool>)> = rows(
        &session,
        "SELECT keyspace_name, ssl_enabled FROM system_views.clients",
    )
    .await;
    let tls: Vec<Option<bool>> = clients
        .into_iter()
        .filter(|(ks, _)| ks.as_deref() == Some(keyspace.as_str()))
        .map(|(_, tls)| tls)
        .collect();
    assert!(
        !tls.is_empty() && tls.iter().all(|t| *t == Some(true)),
        "{tls:?}"
    );
    drop(sink);

    // A CA that did not sign the node's certificate.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = common::unrelated_ca(dir.path());
    let err = refused(
        ScyllaSink::connect(&config(true, Some(&other_ca)), &prometheus::Registry::new()).await,
    );
    assert!(err.contains("certificate verify failed"), "{err}");

    // A CA file without TLS, and a CA file that is not there, are refused
    // before connecting, naming the key.
    let err =
        refused(ScyllaSink::connect(&config(false, Some(&ca)), &prometheus::Registry::new()).await);
    assert!(
        err.contains("tls_ca_file") && err.contains("tls is false"),
        "{err}"
    );
    let missing = dir.path().join("missing.pem");
    let err = refused(
        ScyllaSink::connect(&config(true, Some(&missing)), &prometheus::Registry::new()).await,
    );
    assert!(
        err.contains("tls_ca_file") && err.contains("missing.pem"),
        "{err}"
    );
    run(&session, format!("DROP KEYSPACE IF EXISTS {keyspace}")).await;
}
