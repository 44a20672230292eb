//! Database migrations of the health model (`infra/postgres/migrations`),
//! embedded in the binary. Applying them again is a no-op.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// The embedded migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("../infra/postgres/migrations");

/// Applies every migration not yet applied.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// The migrations applied to the database, as (version, description), in
/// order.
pub async fn applied(pool: &PgPool) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
}
