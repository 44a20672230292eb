//! The harness itself: databases are fresh and dropped, waits time out.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use vigie_testkit::{TestDb, admin_url, wait_for};

async fn database_exists(name: &str) -> bool {
    let mut c = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn each_test_gets_a_fresh_database_that_is_dropped_afterwards() {
    let (a, b) = (TestDb::create().await, TestDb::create().await);
    assert_ne!(a.name, b.name);
    let pool = a.pool().await;
    let current: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(current, a.name);
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 0, "a new database is empty");
    let name = a.name.clone();
    // Dropped even while a pool still holds connections.
    drop(a);
    assert!(!database_exists(&name).await);
    assert!(database_exists(&b.name).await);
    pool.close().await;
}

#[tokio::test]
#[should_panic(expected = "timed out after 200ms waiting for a condition that never holds")]
async fn wait_for_fails_with_what_it_waited_for() {
    wait_for(
        "a condition that never holds",
        Duration::from_millis(200),
        || async { None::<()> },
    )
    .await;
}

#[tokio::test]
async fn the_shared_broker_answers() {
    let b = vigie_testkit::broker();
    let topic = vigie_testkit::unique_name("harness");
    vigie_testkit::create_topic(&b.bootstrap, &topic, 1).await;
    vigie_testkit::produce_raw(
        &b.bootstrap,
        &topic,
        &[(b"k".to_vec(), b"v".to_vec(), vec![])],
    )
    .await;
    let got = vigie_testkit::read_topic(&b.bootstrap, &topic, 1, Duration::from_secs(30));
    assert_eq!(got[0].3, b"v");
}

/// The CQL server answers the driver Vigie's ScyllaDB sink is built on: a
/// keyspace of the replication the sink will use, a table, prepared
/// inserts and a read back.
#[tokio::test]
async fn the_cql_server_takes_a_keyspace_prepared_writes_and_reads() {
    use scylla::client::session_builder::SessionBuilder;

    let server = vigie_testkit::cql_server();
    let session = SessionBuilder::new()
        .known_node(&server.uri)
        .build()
        .await
        .unwrap_or_else(|e| panic!("connect to the CQL server at {}: {e}", server.uri));
    let ks = vigie_testkit::unique_name("vigie_test").replace('-', "_");
    session
        .query_unpaged(
            format!(
                "CREATE KEYSPACE {ks} WITH replication = \
                 {{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}}"
            ),
            &[],
        )
        .await
        .unwrap();
    session
        .query_unpaged(
            format!("CREATE TABLE {ks}.t (k text, n int, v text, PRIMARY KEY (k, n))"),
            &[],
        )
        .await
        .unwrap();
    let insert = session
        .prepare(format!("INSERT INTO {ks}.t (k, n, v) VALUES (?, ?, ?)"))
        .await
        .unwrap();
    for n in 0..20i32 {
        session
            .execute_unpaged(&insert, ("a", n, format!("v{n}")))
            .await
            .unwrap();
    }
    let rows = session
        .query_unpaged(format!("SELECT n, v FROM {ks}.t WHERE k = 'a'"), &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let got: Vec<(i32, String)> = rows
        .rows::<(i32, String)>()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        got,
        (0..20).map(|n| (n, format!("v{n}"))).collect::<Vec<_>>()
    );
    session
        .query_unpaged(format!("DROP KEYSPACE {ks}"), &[])
        .await
        .unwrap();
}
