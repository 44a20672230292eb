//! `infra/scylla/schema.cql` on a real CQL server (Apache Cassandra, or
//! ScyllaDB at `SCYLLA_URI`): it applies, twice, to a keyspace with
//! `NetworkTopologyStrategy`, and each table answers the query it is
//! designed for.

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
