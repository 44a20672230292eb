//! `vigie offsets`: the offsets the PostgreSQL sink stores with its rows
//! (`sink_offsets`), which decide where its consumers resume.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
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
            let g = Group::open(&s, r.target).await?;
            let members = vigie_kafka::group_members(&g.cluster, &g.name, TIMEOUT).await?;
            if !members.is_empty() {
                bail!(
                    "group {} has {} running member(s) ({}): stop its consumers before \
                     resetting its offsets",
                    g.name,
                    members.len(),
                    members.join(", ")
                );
            }
            let to = To {
                earliest: r.to_earliest,
                latest: r.to_latest,
                offset: r.to_offset,
            };
            reset(&g, &to, &r.partitions, r.execute).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// A group's topics: their partitions on the broker and the store.
struct Group {
    name: String,
    cluster: vigie_kafka::Cluster,
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
            cluster,
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

/// Where a reset moves each partition: one of the three is set.
struct To {
    earliest: bool,
    latest: bool,
    offset: Option<i64>,
}

async fn reset(g: &Group, to: &To, only: &[i32], execute: bool) -> anyhow::Result<()> {
    for p in only {
        if !g.partitions.iter().any(|q| q.partition == *p) {
            bail!(
                "--partition {p}: no such partition in {}",
                g.topics.join(", ")
            );
        }
    }
    println!(
        "{:<40} {:>9} {:>12} {:>12} {:>6}",
        "topic", "partition", "stored", "new", "epoch"
    );
    // Every topic's plan first: a bad offset changes nothing anywhere.
    let mut plans = Vec::new();
    for t in &g.topics {
        let mut next = BTreeMap::new();
        for p in g
            .partitions
            .iter()
            .filter(|p| &p.topic == t && (only.is_empty() || only.contains(&p.partition)))
        {
            let (low, high) = (p.low_watermark, p.high_watermark);
            let offset = match to.offset {
                _ if to.earliest => low,
                _ if to.latest => high,
                Some(o) if (low..=high).contains(&o) => o,
                Some(o) => bail!(
                    "--to-offset {o}: partition {t}/{} holds offsets {low} to {high} (its \
                     watermarks)",
                    p.partition
                ),
                None => bail!("one of --to-earliest, --to-latest, --to-offset is needed"),
            };
            next.insert(p.partition, offset);
        }
        plans.push((t, next));
    }
    for (t, next) in plans {
        if execute {
            let resets = g.sink.reset_offsets(&g.name, t, &next).await?;
            // Kafka's committed offsets follow, as the sink's commits do
            // after each batch (they feed `vigie lag`).
            let committed = next.iter().map(|(p, o)| ((t.clone(), *p), *o)).collect();
            vigie_kafka::commit_group_offsets(&g.cluster, &g.name, &committed)
                .await
                .context("the store is reset; committing the same offsets to Kafka failed")?;
            for r in resets {
                let before = r.before.map_or("-".to_owned(), |o| o.to_string());
                println!(
                    "{t:<40} {:>9} {before:>12} {:>12} {:>6}",
                    r.partition, r.after, r.epoch
                );
            }
        } else {
            let stored = g.sink.offsets_of(&g.name, t).await?;
            for (p, offset) in &next {
                let (before, epoch) = stored
                    .get(p)
                    .map_or(("-".to_owned(), 1), |(o, e)| (o.to_string(), e + 1));
                println!("{t:<40} {p:>9} {before:>12} {offset:>12} {epoch:>6}");
            }
        }
    }
    if !execute {
        println!("dry run: nothing changed (add --execute to reset)");
    }
    Ok(())
}
