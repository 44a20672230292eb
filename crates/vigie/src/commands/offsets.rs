//! `vigie offsets`: the offsets the PostgreSQL sink stores with its rows
//! (`sink_offsets`), which decide where its consumers resume.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde::Deserialize;
use vigie_consumers::sinks::postgres::{PostgresConfig, PostgresSink};

/// Stored offsets of the `postgres` sink.
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Print the group's stored offsets per partition, with their epoch and the partition's watermarks.
    Show {
        #[command(flatten)]
        target: super::GroupArgs,
    },
    /// Move the group's stored offsets (a dry run unless --execute); each partition moved starts a new epoch.
    Reset(ResetArgs),
}

/// Arguments of `vigie offsets reset`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("to").required(true)))]
pub(crate) struct ResetArgs {
    #[command(flatten)]
    target: super::GroupArgs,
    /// To each partition's earliest retained offset (its low watermark).
    #[arg(long, group = "to")]
    to_earliest: bool,
    /// To each partition's end (its high watermark): skip what is there.
    #[arg(long, group = "to")]
    to_latest: bool,
    /// To this offset on each partition (between its watermarks).
    #[arg(long, group = "to", value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// Only this partition, repeatable (default: every partition).
    #[arg(long = "partition", value_name = "PARTITION")]
    partitions: Vec<i32>,
    /// Apply the reset; without it, print what it would do.
    #[arg(long)]
    execute: bool,
}

pub(crate) async fn run(config: Option<&Path>, cmd: Cmd) -> anyhow::Result<ExitCode> {
    let s = super::load(config)?;
    match cmd {
        Cmd::Show { target } => show(&Group::open(&s, target).await?).await?,
        Cmd::Reset(r) => {
            // `vigie replay reset-group --store postgres` with fewer choices.
            let to = super::replay::To {
                to_earliest: r.to_earliest,
                to_latest: r.to_latest,
                to_offset: r.to_offset,
                to_datetime: None,
                shift_by: None,
            };
            let store = Some(super::replay::Store::Postgres);
            super::replay::reset_group(&s, r.target, &to, &r.partitions, store, r.execute, false)
                .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// A group's topics: their partitions on the broker and the store.
struct Group {
    name: String,
    topics: Vec<String>,
    partitions: Vec<vigie_kafka::PartitionLag>,
    sink: PostgresSink,
}

impl Group {
    async fn open(s: &crate::settings::Settings, target: super::GroupArgs) -> anyhow::Result<Self> {
        let mut c = s.kafka.consumer.clone();
        target.apply(&mut c);
        anyhow::ensure!(
            !c.topics.is_empty(),
            "no topic: set kafka.consumer.topics or --topic"
        );
        let pg =
            PostgresConfig::deserialize(toml::Value::Table(s.consumers.sinks.section("postgres")))
                .context("consumers.sinks.postgres")?;
        let sink = PostgresSink::connect(&pg).await?;
        let cluster = s.connect().await?;
        let partitions = vigie_kafka::group_lag(&cluster, &c.group_id, &c.topics, TIMEOUT).await?;
        Ok(Self {
            name: c.group_id,
            topics: c.topics,
            partitions,
            sink,
        })
    }
}

async fn show(g: &Group) -> anyhow::Result<()> {
    println!(
        "{:<40} {:>9} {:>12} {:>6} {:>12} {:>12}",
        "topic", "partition", "stored", "epoch", "low", "high"
    );
    for t in &g.topics {
        let stored = g.sink.offsets_of(&g.name, t).await?;
        for p in g.partitions.iter().filter(|p| &p.topic == t) {
            let (next, epoch) = stored
                .get(&p.partition)
                .map_or(("-".to_owned(), "-".to_owned()), |(o, e)| {
                    (o.to_string(), e.to_string())
                });
            println!(
                "{t:<40} {:>9} {next:>12} {epoch:>6} {:>12} {:>12}",
                p.partition, p.low_watermark, p.high_watermark
            );
        }
    }
    Ok(())
}
