//! A fresh PostgreSQL database per test, dropped afterwards.

use sqlx::{Connection, Executor, PgConnection, PgPool};

/// Admin URL of the PostgreSQL server used by tests.
pub fn admin_url() -> String {
    std::env::var("VIGIE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@localhost:5432/postgres".to_owned())
}

/// The CA that signed the test server's certificate (made by
/// `scripts/setup` in `$VIGIE_STATE/postgres-tls/`), for
/// `sslmode=verify-full&sslrootcert=...`.
pub fn postgres_ca() -> std::path::PathBuf {
    crate::state_dir().join("postgres-tls/ca.pem")
}

/// A database created for one test. Dropping it drops the database.
#[derive(Debug)]
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Connection URL.
    pub url: String,
}

impl TestDb {
    /// Creates an empty database with a unique name.
    pub async fn create() -> Self {
        let admin = admin_url();
        let name = format!("vigie_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} must be reachable for tests: {e}"));
        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name}"
        ))))
        .await
        .expect("create test database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// A connection pool on the test database.
    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context we can rely on: use a thread
        // with its own runtime, and FORCE to end connections still open.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut c) = PgConnection::connect(&admin_url()).await {
                    let _ = c
                        .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        ))))
                        .await;
                }
            });
        })
        .join();
    }
}
