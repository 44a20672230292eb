//! `vigie topics create`: make sure every configured topic and its DLQ exist.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use vigie_kafka::{TopicOutcome, ensure_topics};

/// Topic administration.
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Create the configured topics (and `<topic>.dlq` twins); existing ones are left as they are.
    Create(CreateArgs),
}

/// Arguments of `vigie topics create`.
#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// Replication factor of every topic created, instead of each topic's
    /// own (1 in `infra/topics.toml`, for a one-broker cluster). A
    /// production cluster of three brokers or more: 3.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    replication: Option<i32>,
    /// `min.insync.replicas` of every topic created: with `acks=all`, a
    /// write succeeds once this many replicas have it. With a replication
    /// of 3: 2, so one broker may be down without losing a write.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    min_insync_replicas: Option<i32>,
}

pub(crate) async fn run(config: Option<&Path>, cmd: Cmd) -> anyhow::Result<ExitCode> {
    let Cmd::Create(a) = cmd;
    let s = super::load(config)?;
    let mut topics = s.topics.clone();
    for t in &mut topics {
        if let Some(r) = a.replication {
            t.replication = r;
        }
        if let Some(m) = a.min_insync_replicas {
            anyhow::ensure!(
                m <= t.replication,
                "--min-insync-replicas {m} is more than topic {}'s {} replicas: no write could \
                 succeed",
                t.name,
                t.replication
            );
            t.config
                .insert("min.insync.replicas".to_owned(), m.to_string());
        }
    }
    for (name, outcome) in ensure_topics(&s.connect().await?, &topics).await? {
        let what = match outcome {
            TopicOutcome::Created => "created",
            TopicOutcome::Existed => "exists ",
        };
        println!("{what} {name}");
    }
    Ok(ExitCode::SUCCESS)
}
