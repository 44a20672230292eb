//! `vigie migrate`: applies the PostgreSQL migrations of the health model
//! (`infra/postgres/migrations`, embedded), as the postgres sink does at
//! start-up with `migrate = true`. For deployments whose sinks run as the
//! least-privilege role, which has no DDL right (`migrate = false`): a
//! job runs this as the owner first.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde::Deserialize;
use vigie_consumers::sinks::postgres::migrate::{self, MIGRATOR};
use vigie_consumers::sinks::postgres::{PostgresConfig, PostgresSink};

pub(crate) async fn run(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let s = super::load(config)?;
    let mut pg =
        PostgresConfig::deserialize(toml::Value::Table(s.consumers.sinks.section("postgres")))
            .context("consumers.sinks.postgres")?;
    pg.migrate = true;
    pg.pool_size = 1;
    let sink = PostgresSink::connect(&pg).await?;
    let applied = migrate::applied(sink.pool())
        .await
        .context("reading the applied migrations")?;
    for (version, description) in &applied {
        println!("{version} {description}");
    }
    println!(
        "{} of {} migrations applied",
        applied.len(),
        MIGRATOR.iter().count()
    );
    Ok(ExitCode::SUCCESS)
}
