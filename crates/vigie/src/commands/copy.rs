//! `vigie replay copy`: a topic's committed records, or a range of them by
//! time, into another topic, each in the same partition with its key,
//! headers and timestamp, optionally only some sources or schemas;
//! resumable: what the destination already holds of the copy is
//! recognised and not sent again.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use vigie_kafka::OutRecord;

use crate::archive::{Next, TimeRange, read_committed};

/// Arguments of `vigie replay copy`.
#[derive(Debug, clap::Args)]
pub(crate) struct CopyArgs {
    /// Topic to copy from.
    #[arg(long)]
    from_topic: String,
    /// Topic to copy to (created with the source's partition count if
    /// missing; else it needs at least as many partitions).
    #[arg(long)]
    to_topic: String,
    #[command(flatten)]
    range: TimeRange,
    /// Only events of this source (the envelope's `source`), repeatable.
    #[arg(long = "source")]
    sources: Vec<String>,
    /// Only events of this schema (the envelope's `schema`, e.g.
    /// `health.case`), repeatable.
    #[arg(long = "schema")]
    schemas: Vec<String>,
    /// A JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

/// The envelope fields a filter looks at.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    schema: Option<&'a str>,
    #[serde(borrow)]
    source: Option<&'a str>,
}

/// What a copy did.
#[derive(Debug, Serialize)]
struct Summary {
    from_topic: String,
    to_topic: String,
    /// Records of the range read.
    read: u64,
    /// Of those, records the filter kept.
    kept: u64,
    /// Of those, records the destination already held (an earlier run).
    already_there: u64,
    /// Records sent now.
    copied: u64,
    seconds: f64,
}

/// A digest of what a copy keeps of a record: key, value, headers and
/// timestamp, each length-prefixed.
fn digest(m: &BorrowedMessage<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut put = |b: Option<&[u8]>| match b {
        None => h.update((-1i64).to_le_bytes()),
        Some(b) => {
            h.update((b.len() as i64).to_le_bytes());
            h.update(b);
        }
    };
    put(m.key());
    put(m.payload());
    if let Some(hs) = m.headers() {
        for x in hs.iter() {
            put(Some(x.key.as_bytes()));
            put(x.value);
        }
    }
    put(m
        .timestamp()
        .to_millis()
        .map(i64::to_le_bytes)
        .as_ref()
        .map(|b| &b[..]));
    h.finalize().into()
}

fn keep(m: &BorrowedMessage<'_>, sources: &[String], schemas: &[String]) -> bool {
    if sources.is_empty() && schemas.is_empty() {
        return true;
    }
    let Some(head) = m
        .payload()
        .and_then(|v| serde_json::from_slice::<Head<'_>>(v).ok())
    else {
        return false;
    };
    (sources.is_empty() || head.source.is_some_and(|s| sources.iter().any(|x| x == s)))
        && (schemas.is_empty() || head.schema.is_some_and(|s| schemas.iter().any(|x| x == s)))
}

pub(crate) async fn copy(s: &crate::settings::Settings, a: CopyArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure!(
        a.from_topic != a.to_topic,
        "--from-topic and --to-topic are both {}",
        a.from_topic
    );
    let cluster = s.connect().await?;
    let (count, ranges) = crate::archive::ranges(&cluster, &a.from_topic, a.range).await?;
    crate::archive::ensure_target(&cluster, &a.to_topic, count).await?;
    let (dest_count, dest) =
        crate::archive::ranges(&cluster, &a.to_topic, TimeRange::default()).await?;
    ensure!(
        dest_count >= count,
        "topic {} has {dest_count} partitions, fewer than {}'s {count}: each record keeps its \
         partition",
        a.to_topic,
        a.from_topic
    );
    // The idempotent producer with the gapless guarantee, not transactions
    // (whose markers carry the time of their commit, and would answer time
    // lookups on the copy of old records): each partition's records land
    // in order with no gap, so a copy stopped midway leaves a prefix of
    // the range, found below.
    let producer = crate::archive::gapless_producer(&cluster, &s.kafka.producer)?;
    let (c, t) = (cluster.clone(), a.to_topic.clone());
    let dest_ranges: BTreeMap<i32, (i64, i64)> = dest
        .into_iter()
        .filter(|(p, _)| ranges.contains_key(p))
        .collect();
    let held = tokio::task::spawn_blocking(move || {
        let mut held: BTreeMap<i32, Vec<[u8; 32]>> = BTreeMap::new();
        read_committed(&c, &t, &dest_ranges, |m| {
            held.entry(m.partition()).or_default().push(digest(m));
            Ok(Next::More)
        })?;
        anyhow::Ok(held)
    })
    .await??;
    // Every partition's records there must be the copy's first ones:
    // checked for all before anything is sent. Each partition then resumes
    // after the source record its last one copies.
    let (c, from, to, sources, schemas) = (
        cluster.clone(),
        a.from_topic.clone(),
        a.to_topic.clone(),
        a.sources.clone(),
        a.schemas.clone(),
    );
    let prefix_ranges: BTreeMap<i32, (i64, i64)> = ranges
        .iter()
        .filter(|(p, _)| held.contains_key(p))
        .map(|(p, r)| (*p, *r))
        .collect();
    let (resume, skipped, held) = tokio::task::spawn_blocking(move || {
        let mut matched: BTreeMap<i32, usize> = BTreeMap::new();
        let mut read = 0u64;
        let resume = read_committed(&c, &from, &prefix_ranges, |m| {
            read += 1;
            if !keep(m, &sources, &schemas) {
                return Ok(Next::More);
            }
            let p = m.partition();
            let prefix = &held[&p];
            let at = matched.entry(p).or_default();
            if prefix[*at] != digest(m) {
                bail!(
                    "{to}/{p} holds, as its record {}, another record than {from}/{p} at offset \
                     {}: not a copy of this range; nothing was copied (copy into an empty topic)",
                    *at,
                    m.offset()
                );
            }
            *at += 1;
            Ok(if *at == prefix.len() {
                Next::Stop
            } else {
                Next::More
            })
        })?;
        for (p, h) in &held {
            let at = matched.get(p).copied().unwrap_or(0);
            ensure!(
                at == h.len(),
                "{to}/{p} holds {} records, more than the {at} the range has: not a copy of this \
                 range; nothing was copied",
                h.len()
            );
        }
        anyhow::Ok((resume, read, held))
    })
    .await??;
    let already_there: u64 = held.values().map(|h| h.len() as u64).sum();
    let rest: BTreeMap<i32, (i64, i64)> = ranges
        .iter()
        .map(|(p, (start, end))| (*p, (resume.get(p).copied().unwrap_or(*start), *end)))
        .collect();

    let (tx, mut rx) = mpsc::channel::<anyhow::Result<vigie_kafka::Record>>(10_000);
    let (c, from, sources, schemas) = (
        cluster.clone(),
        a.from_topic.clone(),
        a.sources.clone(),
        a.schemas.clone(),
    );
    let reader = tokio::task::spawn_blocking(move || {
        let (mut read, mut kept) = (skipped, already_there);
        let outcome = read_committed(&c, &from, &rest, |m| {
            read += 1;
            if !keep(m, &sources, &schemas) {
                return Ok(Next::More);
            }
            kept += 1;
            let owned = vigie_kafka::Record::from_message(m);
            tx.blocking_send(Ok(owned))
                .map_err(|_| anyhow::anyhow!("the producer stopped"))?;
            Ok(Next::More)
        });
        if let Err(e) = outcome {
            let _ = tx.blocking_send(Err(e));
        }
        (read, kept)
    });

    let mut pipeline = producer.pipeline(false);
    let mut sent = 0u64;
    let mut failure = None;
    while let Some(next) = rx.recv().await {
        let r = match next {
            Ok(r) => r,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        if let Err(e) = pipeline
            .push(OutRecord {
                topic: &a.to_topic,
                partition: Some(r.partition),
                key: r.key.as_deref(),
                payload: r.payload.as_deref(),
                headers: &headers,
                timestamp_ms: r.timestamp_ms,
            })
            .await
        {
            failure = Some(e.into());
            break;
        }
        sent += 1;
    }
    drop(rx);
    let finished = pipeline.finish().await;
    if let Some(e) = failure.or(finished.as_ref().err().map(|e| anyhow::anyhow!("{e}"))) {
        return Err(e).context(format!(
            "copying {} into {}: what Kafka acknowledged stays; run the copy again to resume",
            a.from_topic, a.to_topic
        ));
    }
    let copied = finished.map(|(acked, _)| acked)?;
    debug_assert_eq!(copied, sent);
    let (read, kept) = reader.await?;
    let summary = Summary {
        from_topic: a.from_topic,
        to_topic: a.to_topic,
        read,
        kept,
        already_there,
        copied,
        seconds: started.elapsed().as_secs_f64(),
    };
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "copied {} records from {} to {} in {:.1} s ({} read, {} kept by the filter, {} \
             already there)",
            summary.copied,
            summary.from_topic,
            summary.to_topic,
            summary.seconds,
            summary.read,
            summary.kept,
            summary.already_there
        );
    }
    Ok(())
}
