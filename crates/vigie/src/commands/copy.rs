//! `vigie replay copy`: a topic's committed records, or a range of them by
//! time, into another topic, each in the same partition with its key,
//! headers and timestamp, optionally only some sources or schemas; in
//! Kafka transactions, and resumable: what the destination already holds
//! of the copy is recognised and not sent again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, FixedOffset};
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use vigie_kafka::{EventProducer, KafkaMetrics, OutRecord, TopicSpec, Transactions};

use crate::archive::read_committed;

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
    /// Only records at or after this time (RFC 3339, record timestamps).
    #[arg(long, value_name = "RFC3339")]
    from_datetime: Option<DateTime<FixedOffset>>,
    /// Only records before this time.
    #[arg(long, value_name = "RFC3339")]
    to_datetime: Option<DateTime<FixedOffset>>,
    /// Only events of this source (the envelope's `source`), repeatable.
    #[arg(long = "source")]
    sources: Vec<String>,
    /// Only events of this schema (the envelope's `schema`, e.g.
    /// `health.case`), repeatable.
    #[arg(long = "schema")]
    schemas: Vec<String>,
    /// Records per Kafka transaction.
    #[arg(long, default_value_t = 1_000_000)]
    transaction_records: usize,
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

/// A record on its way from the reading thread to the producer.
struct Owned {
    partition: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_ms: Option<i64>,
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
    let (count, ranges) =
        crate::archive::ranges(&cluster, &a.from_topic, a.from_datetime, a.to_datetime).await?;
    let mut spec = TopicSpec::new(&a.to_topic, count);
    spec.dlq = false;
    vigie_kafka::ensure_topics(&cluster, &[spec]).await?;
    let (dest_count, dest) = crate::archive::ranges(&cluster, &a.to_topic, None, None).await?;
    ensure!(
        dest_count >= count,
        "topic {} has {dest_count} partitions, fewer than {}'s {count}: each record keeps its \
         partition",
        a.to_topic,
        a.from_topic
    );
    // What the destination holds already, per partition, as digests: it
    // must be the copy's first records.
    let (c, t) = (cluster.clone(), a.to_topic.clone());
    let dest_ranges: BTreeMap<i32, (i64, i64)> = dest
        .into_iter()
        .filter(|(p, _)| ranges.contains_key(p))
        .collect();
    let held = tokio::task::spawn_blocking(move || {
        let mut held: BTreeMap<i32, Vec<[u8; 32]>> = BTreeMap::new();
        read_committed(&c, &t, &dest_ranges, |m| {
            held.entry(m.partition()).or_default().push(digest(m));
            Ok(())
        })?;
        anyhow::Ok(held)
    })
    .await??;

    let producer = EventProducer::transactional(
        &cluster,
        &s.kafka.producer,
        KafkaMetrics::unregistered(),
        &Transactions {
            id: format!("vigie-copy-{}", a.to_topic),
            timeout: Duration::from_secs(300),
            latency_first: false,
        },
    )
    .await?;
    let (tx, mut rx) = mpsc::channel::<anyhow::Result<Owned>>(10_000);
    let (c, from, sources, schemas) = (
        cluster.clone(),
        a.from_topic.clone(),
        a.sources.clone(),
        a.schemas.clone(),
    );
    let to = a.to_topic.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let held = held;
        let mut matched: BTreeMap<i32, usize> = BTreeMap::new();
        let (mut read, mut kept) = (0u64, 0u64);
        let outcome = read_committed(&c, &from, &ranges, |m| {
            read += 1;
            if !keep(m, &sources, &schemas) {
                return Ok(());
            }
            kept += 1;
            let p = m.partition();
            let at = matched.entry(p).or_default();
            if let Some(prefix) = held.get(&p).filter(|h| *at < h.len()) {
                if prefix[*at] != digest(m) {
                    bail!(
                        "{to}/{p} holds, at its record {}, another record than {from}/{p} at \
                         offset {}: not a copy of this range (copy into an empty topic)",
                        *at,
                        m.offset()
                    );
                }
                *at += 1;
                return Ok(());
            }
            let owned = Owned {
                partition: p,
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default(),
                timestamp_ms: m.timestamp().to_millis(),
            };
            tx.blocking_send(Ok(owned))
                .map_err(|_| anyhow::anyhow!("the producer stopped"))?;
            Ok(())
        });
        if let Err(e) = outcome {
            let _ = tx.blocking_send(Err(e));
            return Ok((read, kept, 0));
        }
        for (p, h) in &held {
            let at = matched.get(p).copied().unwrap_or(0);
            if at < h.len() {
                let _ = tx.blocking_send(Err(anyhow::anyhow!(
                    "{to}/{p} holds {} records, more than the {at} the range has: not a copy of \
                     this range",
                    h.len()
                )));
            }
        }
        anyhow::Ok((read, kept, matched.values().sum::<usize>() as u64))
    });

    let mut copied = 0u64;
    let mut ended = false;
    while !ended {
        producer.begin_transaction()?;
        let mut pipeline = producer.pipeline(false);
        let mut in_txn = 0usize;
        let mut failure = None;
        while in_txn < a.transaction_records.max(1) {
            match rx.recv().await {
                None => {
                    ended = true;
                    break;
                }
                Some(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                Some(Ok(r)) => {
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
                            payload: r.value.as_deref(),
                            headers: &headers,
                            timestamp_ms: r.timestamp_ms,
                        })
                        .await
                    {
                        failure = Some(e.into());
                        break;
                    }
                    in_txn += 1;
                }
            }
        }
        let finished = pipeline.finish().await;
        if let Some(e) = failure.or(finished.err().map(Into::into)) {
            let _ = producer.abort_transaction().await;
            return Err(e).context(format!(
                "copying {} into {}: the open transaction is aborted; run the copy again to \
                 resume",
                a.from_topic, a.to_topic
            ));
        }
        producer.commit_produced().await?;
        copied += in_txn as u64;
    }
    let (read, kept, already_there) = reader.await??;
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
