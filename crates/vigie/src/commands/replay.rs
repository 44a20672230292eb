//! `vigie replay`: re-drives a consumer group from a point of its topics,
//! as `kafka-consumer-groups --reset-offsets` does, and also where a sink
//! keeps its offsets with its rows (the PostgreSQL sink), so that the sink
//! really reads again; and copies a topic's range to another
//! ([`copy`](super::copy)).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, FixedOffset};
use clap::{Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use vigie_consumers::sinks::postgres::{PostgresConfig, PostgresSink};
use vigie_kafka::PartitionLag;

/// Replay commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Move a consumer group's offsets to a point (a plan unless --execute); refused while the group has members.
    ResetGroup(ResetArgs),
    /// Copy a topic's committed records, or a time range of them, to another topic: same partitions, keys, headers and timestamps; filter by source or schema; resumable.
    Copy(super::copy::CopyArgs),
}

/// Where a reset moves each partition.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("to").required(true)))]
pub(crate) struct To {
    /// To each partition's earliest retained offset (its low watermark).
    #[arg(long, group = "to")]
    pub(crate) to_earliest: bool,
    /// To each partition's end (its high watermark): skip what is there.
    #[arg(long, group = "to")]
    pub(crate) to_latest: bool,
    /// To this offset on each partition (between its watermarks).
    #[arg(long, group = "to", value_name = "OFFSET")]
    pub(crate) to_offset: Option<i64>,
    /// To each partition's first record at or after this time (RFC 3339,
    /// e.g. 2026-12-07T08:00:00Z; the record timestamps), or its end when
    /// every record is older.
    #[arg(long, group = "to", value_name = "RFC3339")]
    pub(crate) to_datetime: Option<DateTime<FixedOffset>>,
    /// By this many records from the current offset (negative: back),
    /// within the partition's watermarks.
    #[arg(long, group = "to", value_name = "N", allow_hyphen_values = true)]
    pub(crate) shift_by: Option<i64>,
}

/// Arguments of `vigie replay reset-group`.
#[derive(Debug, clap::Args)]
pub(crate) struct ResetArgs {
    #[command(flatten)]
    target: super::GroupArgs,
    #[command(flatten)]
    to: To,
    /// Only this partition, repeatable (default: every partition).
    #[arg(long = "partition", value_name = "PARTITION")]
    partitions: Vec<i32>,
    /// The group's sink keeps its offsets with its rows, and resumes from
    /// them: reset them there too, in a new epoch (`postgres`).
    #[arg(long, value_enum)]
    store: Option<Store>,
    /// Apply the plan; without it, print it and change nothing.
    #[arg(long)]
    execute: bool,
    /// The plan as one JSON object per partition.
    #[arg(long)]
    json: bool,
}

/// A sink whose offsets live in its store.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Store {
    /// The PostgreSQL sink (`sink_offsets`, `[consumers.sinks.postgres]`).
    Postgres,
}

const TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn run(config: Option<&Path>, cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::ResetGroup(a) => {
            let s = super::load(config)?;
            reset_group(
                &s,
                a.target,
                &a.to,
                &a.partitions,
                a.store,
                a.execute,
                a.json,
            )
            .await?;
        }
        Cmd::Copy(a) => super::copy::copy(&super::load(config)?, a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// One partition's move.
#[derive(Debug, Serialize)]
struct Move {
    topic: String,
    partition: i32,
    /// Where the group resumes now: the store's offset with `--store`,
    /// else Kafka's committed one.
    current: Option<i64>,
    new: i64,
    low: i64,
    high: i64,
    /// Records the group reads from its new offset on.
    to_read: i64,
    /// Of those, the records it had already processed.
    again: i64,
    /// The store's epoch after the reset (`--store` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<i64>,
}

/// Plans, and with `execute` applies, a reset of `target`'s group.
pub(crate) async fn reset_group(
    s: &crate::settings::Settings,
    target: super::GroupArgs,
    to: &To,
    only: &[i32],
    store: Option<Store>,
    execute: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut c = s.kafka.consumer.clone();
    target.apply(&mut c);
    anyhow::ensure!(
        !c.topics.is_empty(),
        "no topic: set kafka.consumer.topics or --topic"
    );
    let group = c.group_id;
    let cluster = s.connect().await?;
    // Moving the offsets of a running group would be undone by its next
    // commit (Kafka's tool refuses too).
    let members = vigie_kafka::group_members(&cluster, &group, TIMEOUT).await?;
    if !members.is_empty() {
        bail!(
            "group {group} has {} running member(s) ({}): stop its consumers before resetting \
             its offsets",
            members.len(),
            members.join(", ")
        );
    }
    let sink = match store {
        Some(Store::Postgres) => {
            let pg = PostgresConfig::deserialize(toml::Value::Table(
                s.consumers.sinks.section("postgres"),
            ))
            .context("consumers.sinks.postgres")?;
            Some(PostgresSink::connect(&pg).await?)
        }
        None => None,
    };
    let partitions = vigie_kafka::group_lag(&cluster, &group, &c.topics, TIMEOUT).await?;
    for p in only {
        if !partitions.iter().any(|q| q.partition == *p) {
            bail!(
                "--partition {p}: no such partition in {}",
                c.topics.join(", ")
            );
        }
    }
    let chosen: Vec<&PartitionLag> = partitions
        .iter()
        .filter(|p| only.is_empty() || only.contains(&p.partition))
        .collect();
    let mut stored = BTreeMap::new();
    if let Some(sink) = &sink {
        for t in &c.topics {
            for (p, (offset, epoch)) in sink.offsets_of(&group, t).await? {
                stored.insert((t.clone(), p), (offset, epoch));
            }
        }
    }
    let at_time = match &to.to_datetime {
        Some(when) => {
            let keys: Vec<_> = chosen
                .iter()
                .map(|p| (p.topic.clone(), p.partition))
                .collect();
            vigie_kafka::offsets_for_time(&cluster, &keys, when.timestamp_millis(), TIMEOUT).await?
        }
        None => BTreeMap::new(),
    };

    // The whole plan first: a bad offset changes nothing anywhere.
    let mut plan = Vec::new();
    for p in chosen {
        let key = (p.topic.clone(), p.partition);
        let (low, high) = (p.low_watermark, p.high_watermark);
        let current = match &sink {
            Some(_) => stored.get(&key).map(|(o, _)| *o),
            None => p.committed,
        };
        let new = if to.to_earliest {
            low
        } else if to.to_latest {
            high
        } else if let Some(o) = to.to_offset {
            if !(low..=high).contains(&o) {
                bail!(
                    "--to-offset {o}: partition {}/{} holds offsets {low} to {high} (its \
                     watermarks)",
                    p.topic,
                    p.partition
                );
            }
            o
        } else if to.to_datetime.is_some() {
            at_time.get(&key).copied().flatten().unwrap_or(high)
        } else if let Some(n) = to.shift_by {
            current.unwrap_or(low).saturating_add(n).clamp(low, high)
        } else {
            bail!(
                "one of --to-earliest, --to-latest, --to-offset, --to-datetime, --shift-by is needed"
            )
        };
        plan.push(Move {
            topic: p.topic.clone(),
            partition: p.partition,
            current,
            new,
            low,
            high,
            to_read: high - new,
            again: current.map_or(0, |c| (c - new).max(0)),
            epoch: sink
                .as_ref()
                .map(|_| stored.get(&key).map_or(1, |(_, e)| e + 1)),
        });
    }

    if execute {
        if let Some(sink) = &sink {
            for t in &c.topics {
                let next: BTreeMap<i32, i64> = plan
                    .iter()
                    .filter(|m| &m.topic == t)
                    .map(|m| (m.partition, m.new))
                    .collect();
                if next.is_empty() {
                    continue;
                }
                for r in sink.reset_offsets(&group, t, &next).await? {
                    if let Some(m) = plan
                        .iter_mut()
                        .find(|m| &m.topic == t && m.partition == r.partition)
                    {
                        m.epoch = Some(r.epoch);
                    }
                }
            }
        }
        // Kafka's committed offsets: where a sink without a store resumes,
        // and what `vigie lag` and the lag metric read for every sink.
        let committed = plan
            .iter()
            .map(|m| ((m.topic.clone(), m.partition), m.new))
            .collect();
        vigie_kafka::commit_group_offsets(&cluster, &group, &committed)
            .await
            .with_context(|| match &sink {
                Some(_) => {
                    "the store is reset; committing the same offsets to Kafka failed".to_owned()
                }
                None => format!("committing the new offsets of group {group} failed"),
            })?;
    }
    print_plan(&plan, json, execute)?;
    Ok(())
}

fn print_plan(plan: &[Move], json: bool, executed: bool) -> anyhow::Result<()> {
    if json {
        for m in plan {
            println!("{}", serde_json::to_string(m)?);
        }
        return Ok(());
    }
    println!(
        "{:<40} {:>9} {:>12} {:>12} {:>12} {:>12}{}",
        "topic",
        "partition",
        "current",
        "new",
        "to read",
        "again",
        if plan.iter().any(|m| m.epoch.is_some()) {
            "  epoch"
        } else {
            ""
        }
    );
    for m in plan {
        let current = m.current.map_or("-".to_owned(), |c| c.to_string());
        let epoch = m.epoch.map_or(String::new(), |e| format!(" {e:>6}"));
        println!(
            "{:<40} {:>9} {current:>12} {:>12} {:>12} {:>12}{epoch}",
            m.topic, m.partition, m.new, m.to_read, m.again
        );
    }
    let (read, again): (i64, i64) = plan
        .iter()
        .fold((0, 0), |(r, a), m| (r + m.to_read, a + m.again));
    println!("{read} records to read, {again} of them again");
    if !executed {
        println!("dry run: nothing changed (add --execute to reset)");
    }
    Ok(())
}
