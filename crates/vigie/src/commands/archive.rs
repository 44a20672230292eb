//! `vigie archive` and `vigie restore`: a topic, or a time range of it, to
//! compressed files with a manifest, and back, with keys, headers,
//! timestamps and partitions unchanged, and the consumer groups' offsets
//! carried over to the restored offsets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::Message;
use rdkafka::message::Headers;
use serde::{Deserialize, Serialize};
use vigie_consumers::sinks::postgres::{PostgresConfig, PostgresSink};
use vigie_kafka::{Cluster, EventProducer, OutRecord};

use crate::archive::format::{Reader, RecordRef, Writer};
use crate::archive::{
    FORMAT, FileEntry, MANIFEST, Manifest, Next, OffsetMap, TimeRange, read_committed,
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `vigie archive`.
#[derive(Debug, clap::Args)]
pub(crate) struct ArchiveArgs {
    /// Topic to archive, repeatable: each goes to `<out>/<topic>/`.
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
    /// Folder to write (created; a topic's folder must not exist yet).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    range: TimeRange,
    /// Consumer group whose committed offsets go in the manifest, for a
    /// restore to carry them over; repeatable.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// zstd level (1 to 19).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// A JSON summary on stdout, no progress bar.
    #[arg(long)]
    json: bool,
}

/// Arguments of `vigie restore`.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// An archived topic's folder (holding `manifest.json`), or a folder of
    /// them (what `vigie archive --out` wrote).
    #[arg(long)]
    from: PathBuf,
    /// Restore into this topic instead of the archived one's name (one
    /// archived topic only).
    #[arg(long)]
    to_topic: Option<String>,
    /// Carry this group's offsets over to the restored topic, translated
    /// through the offset map: from the manifest (`archive --group`), or
    /// with `--store` from the sink's own store. Repeatable.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// The groups' sink keeps its offsets with its rows (`postgres`):
    /// translate those, in a new epoch.
    #[arg(long, value_enum)]
    store: Option<super::replay::Store>,
    /// Records sent between two waits for every acknowledgement, which
    /// say where each landed (the offset map is built from them). Each
    /// wait drains what is in flight: 10^6 restored 10^6 cases in about
    /// 3.0 s, 10^5 in 3.45 s.
    #[arg(long, default_value_t = 1_000_000)]
    chunk_records: usize,
    /// Folder for the offset map, `offset-map.<topic>.json` (default:
    /// the archived topic's folder).
    #[arg(long, value_name = "DIR")]
    offset_map: Option<PathBuf>,
    /// A JSON summary on stdout, no progress bar.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn archive(config: Option<&Path>, a: ArchiveArgs) -> anyhow::Result<ExitCode> {
    let s = super::load(config)?;
    let cluster = s.connect().await?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut summaries = Vec::new();
    for topic in &a.topics {
        summaries.push(archive_topic(&cluster, topic, &a).await?);
    }
    report(&summaries, a.json)?;
    Ok(ExitCode::SUCCESS)
}

/// What one topic's archive or restore did.
#[derive(Debug, Serialize)]
struct Summary {
    action: &'static str,
    topic: String,
    folder: PathBuf,
    partitions: usize,
    records: u64,
    /// Restore: records already in the topic, found identical, skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    already_there: Option<u64>,
    bytes: u64,
    seconds: f64,
}

fn report(summaries: &[Summary], json: bool) -> anyhow::Result<()> {
    for s in summaries {
        if json {
            println!("{}", serde_json::to_string(s)?);
        } else {
            let verb = if s.action == "archive" {
                "archived"
            } else {
                "restored"
            };
            let skipped = s
                .already_there
                .filter(|n| *n > 0)
                .map_or(String::new(), |n| format!(" ({n} already there)"));
            println!(
                "{verb} {} records{skipped} of {} ({} partitions, {:.1} MB of files) in {:.1} s: {}",
                s.records,
                s.topic,
                s.partitions,
                s.bytes as f64 / 1e6,
                s.seconds,
                s.folder.display()
            );
        }
    }
    Ok(())
}

fn progress(total: u64, json: bool, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if json {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {human_pos}/{human_len} records, {per_sec}, ETA {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

async fn archive_topic(cluster: &Cluster, topic: &str, a: &ArchiveArgs) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let dir = a.out.join(topic);
    // Written under another name, renamed once its manifest is there: a
    // folder named after the topic is a whole archive.
    let partial = a.out.join(format!("{topic}.partial"));
    if dir.exists() {
        bail!(
            "{} exists: archive into a new folder (an archive is never overwritten)",
            dir.display()
        );
    }
    if partial.exists() {
        std::fs::remove_dir_all(&partial).with_context(|| {
            format!(
                "cannot remove {}, left by an archive that stopped",
                partial.display()
            )
        })?;
    }
    let topics = [topic.to_owned()];
    let (partitions, ranges) = crate::archive::ranges(cluster, topic, a.range).await?;
    let mut groups = BTreeMap::new();
    for g in &a.groups {
        let committed: BTreeMap<i32, i64> = vigie_kafka::group_lag(cluster, g, &topics, TIMEOUT)
            .await?
            .into_iter()
            .filter_map(|p| p.committed.map(|c| (p.partition, c)))
            .collect();
        ensure!(
            !committed.is_empty(),
            "group {g} has no committed offset on {topic}"
        );
        groups.insert(g.clone(), committed);
    }

    std::fs::create_dir_all(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let total: u64 = ranges.values().map(|(s, e)| (e - s) as u64).sum();
    let bar = progress(total, a.json, &format!("archive {topic}"));
    let (cluster, topic_owned, level, dir2) =
        (cluster.clone(), topic.to_owned(), a.level, partial.clone());
    let ranges2 = ranges.clone();
    let bar2 = bar.clone();
    let (written, stopped) = tokio::task::spawn_blocking(move || {
        let files = ranges2
            .keys()
            .map(|&p| (p, dir2.join(file_name(p))))
            .collect();
        let mut writer = Writer::create(&files, level)?;
        let stopped = read_committed(&cluster, &topic_owned, &ranges2, |m| {
            let headers = m.headers();
            let hs = headers
                .iter()
                .flat_map(|h| h.iter())
                .map(|h| (h.key, h.value));
            writer.push(
                m.partition(),
                m.offset(),
                m.timestamp().to_millis(),
                m.key(),
                m.payload(),
                hs,
            )?;
            bar2.inc(1);
            Ok(Next::More)
        })?;
        let written = writer.finish()?;
        anyhow::Ok((written, stopped))
    })
    .await??;
    bar.finish_and_clear();

    let files: Vec<FileEntry> = written
        .into_iter()
        .map(|(p, w)| FileEntry {
            path: file_name(p),
            partition: p,
            start: ranges[&p].0,
            end: stopped[&p],
            records: w.records,
            first_offset: w.first_offset,
            last_offset: w.last_offset,
            bytes: w.bytes,
            sha256: w.sha256,
        })
        .collect();
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        vigie: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: Utc::now(),
        topic: topic.to_owned(),
        partitions,
        from: a.range.from_datetime,
        to: a.range.to_datetime,
        files,
        groups,
    };
    manifest.write(&partial)?;
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), dir.display()))?;
    Ok(Summary {
        action: "archive",
        topic: topic.to_owned(),
        folder: dir,
        partitions: manifest.files.len(),
        records: manifest.files.iter().map(|f| f.records).sum(),
        already_there: None,
        bytes: manifest.files.iter().map(|f| f.bytes).sum(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn file_name(partition: i32) -> String {
    format!("p{partition:05}.vgar")
}

/// The offset map a restore writes, one per topic restored to: into the
/// archive's folder, or the `--offset-map` folder.
#[derive(Debug, Serialize, Deserialize)]
struct OffsetMapFile {
    from_topic: String,
    to_topic: String,
    partitions: BTreeMap<i32, OffsetMap>,
}

fn map_path(dir: &Path, to_topic: &str) -> PathBuf {
    dir.join(format!("offset-map.{to_topic}.json"))
}

pub(crate) async fn restore(config: Option<&Path>, a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let s = super::load(config)?;
    let dirs = archive_dirs(&a.from)?;
    ensure!(
        a.to_topic.is_none() || dirs.len() == 1,
        "--to-topic names one topic, and {} holds {} archived topics",
        a.from.display(),
        dirs.len()
    );
    // Every checksum first: nothing is restored from a damaged archive.
    let mut manifests = Vec::new();
    for d in &dirs {
        let m = Manifest::read(d)?;
        m.verify(d)?;
        for g in &a.groups {
            ensure!(
                a.store.is_some() || m.groups.contains_key(g),
                "group {g}: not in {} (archive it with --group {g}, or name its sink's --store)",
                d.join(MANIFEST).display()
            );
        }
        manifests.push(m);
    }
    let cluster = s.connect().await?;
    for g in &a.groups {
        let members = vigie_kafka::group_members(&cluster, g, TIMEOUT).await?;
        ensure!(
            members.is_empty(),
            "group {g} has {} running member(s) ({}): stop its consumers before restoring its \
             offsets",
            members.len(),
            members.join(", ")
        );
    }
    let sink = match a.store {
        Some(super::replay::Store::Postgres) => {
            let pg = PostgresConfig::deserialize(toml::Value::Table(
                s.consumers.sinks.section("postgres"),
            ))
            .context("consumers.sinks.postgres")?;
            Some(PostgresSink::connect(&pg).await?)
        }
        None => None,
    };
    let mut summaries = Vec::new();
    for (d, m) in dirs.iter().zip(&manifests) {
        let to_topic = a.to_topic.clone().unwrap_or_else(|| m.topic.clone());
        let (summary, maps) = restore_topic(&s, &cluster, d, m, &to_topic, &a).await?;
        let file = OffsetMapFile {
            from_topic: m.topic.clone(),
            to_topic: to_topic.clone(),
            partitions: maps,
        };
        for g in &a.groups {
            carry_over(&cluster, sink.as_ref(), g, m, &file).await?;
        }
        // Last: an archive on a read-only medium needs `--offset-map`, and
        // the groups are carried over before this fails.
        let map = map_path(a.offset_map.as_deref().unwrap_or(d), &to_topic);
        std::fs::write(&map, serde_json::to_vec(&file)?).with_context(|| {
            format!(
                "cannot write the offset map {} (--offset-map)",
                map.display()
            )
        })?;
        summaries.push(summary);
    }
    report(&summaries, a.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `from` itself when it holds a manifest, else its sub-folders that do.
fn archive_dirs(from: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if from.join(MANIFEST).is_file() {
        return Ok(vec![from.to_owned()]);
    }
    let mut dirs = Vec::new();
    for e in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let path = e?.path();
        if path.join(MANIFEST).is_file() {
            dirs.push(path);
        } else if path.is_dir() {
            eprintln!(
                "warning: {} has no {MANIFEST} (an archive that did not finish?): skipped",
                path.display()
            );
        }
    }
    dirs.sort();
    ensure!(
        !dirs.is_empty(),
        "{}: no {MANIFEST} in it or in its folders: not a Vigie archive",
        from.display()
    );
    Ok(dirs)
}

async fn restore_topic(
    s: &crate::settings::Settings,
    cluster: &Cluster,
    dir: &Path,
    m: &Manifest,
    to_topic: &str,
    a: &RestoreArgs,
) -> anyhow::Result<(Summary, BTreeMap<i32, OffsetMap>)> {
    let started = Instant::now();
    crate::archive::ensure_target(cluster, to_topic, m.partitions).await?;
    let targets = [to_topic.to_owned()];
    let watermarks = vigie_kafka::group_lag(cluster, "vigie-restore", &targets, TIMEOUT).await?;
    let count = watermarks.len() as i32;
    if let Some(f) = m.files.iter().find(|f| f.partition >= count) {
        bail!(
            "topic {to_topic} has {count} partitions, the archive has partition {}: add \
             partitions or restore into a new topic",
            f.partition
        );
    }
    // The idempotent producer, not transactions: a transaction's marker
    // carries the time of its commit, and old records restored behind
    // markers of today would answer every time lookup (`--to-datetime`)
    // with the first marker. Idempotence with the gapless guarantee keeps
    // each partition's records in order with no gap, so a restore stopped
    // midway leaves a prefix of the archive, which the next run keeps.
    let producer = crate::archive::gapless_producer(cluster, &s.kafka.producer)?;
    let total: u64 = m.files.iter().map(|f| f.records).sum();
    let bar = progress(total, a.json, &format!("restore {to_topic}"));
    // What a previous run (or anything else) left in each partition must
    // be the archive's first records, which are kept, not sent again:
    // every partition is checked before anything is sent.
    let mut started_at = Vec::new();
    let mut already = 0u64;
    for f in &m.files {
        let path = dir.join(&f.path);
        let reader = Reader::open(&path)?;
        let w = watermarks
            .iter()
            .find(|w| w.partition == f.partition)
            .with_context(|| format!("topic {to_topic} has no partition {}", f.partition))?;
        let mut ranges = BTreeMap::new();
        ranges.insert(f.partition, (w.low_watermark, w.high_watermark));
        let high = w.high_watermark;
        let (c, t) = (cluster.clone(), to_topic.to_owned());
        let (reader, found) = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            // Where the partition's next record goes: a group's offset past
            // the archive translates to it even when nothing is sent.
            let mut found = OffsetMap {
                runs: Vec::new(),
                end: high,
            };
            read_committed(&c, &t, &ranges, |msg| match reader.next_record()? {
                Some(r) if same(&r, msg) => {
                    found.push(r.offset, msg.offset());
                    Ok(Next::More)
                }
                _ => bail!(
                    "{t}/{}: offset {} holds a record that is not the archive's next one; \
                     nothing was restored: restore into an empty topic, or another one with \
                     --to-topic",
                    msg.partition(),
                    msg.offset()
                ),
            })?;
            anyhow::Ok((reader, found))
        })
        .await??;
        already += found.len();
        bar.inc(found.len());
        started_at.push((f, path, reader, found));
    }
    send_rest(&producer, to_topic, &mut started_at, a.chunk_records, &bar)
        .await
        .with_context(|| format!("restoring {} into {to_topic}", dir.display()))?;
    let mut maps = BTreeMap::new();
    for (f, path, _, map) in started_at {
        ensure!(
            map.len() == f.records,
            "{}: {} records read, the manifest says {}",
            path.display(),
            map.len(),
            f.records
        );
        maps.insert(f.partition, map);
    }
    bar.finish_and_clear();
    Ok((
        Summary {
            action: "restore",
            topic: to_topic.to_owned(),
            folder: dir.to_owned(),
            partitions: m.files.len(),
            records: total - already,
            already_there: Some(already),
            bytes: m.files.iter().map(|f| f.bytes).sum(),
            seconds: started.elapsed().as_secs_f64(),
        },
        maps,
    ))
}

/// The archived record and the topic's are the same record: key, value,
/// headers and timestamp.
fn same(r: &RecordRef<'_>, m: &rdkafka::message::BorrowedMessage<'_>) -> bool {
    let headers: Vec<(&str, Option<&[u8]>)> = m
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    r.key == m.key()
        && r.value == m.payload()
        && r.timestamp_ms == m.timestamp().to_millis()
        && r.headers == headers
}

/// Records taken from one partition's file at a time, so that every
/// partition has records in flight.
const ROUND: usize = 500;

/// Sends every reader's remaining records to its partition, in chunks of
/// `per_chunk` records that take from each partition in turn, adding
/// where each record landed to its partition's map.
async fn send_rest(
    producer: &EventProducer,
    topic: &str,
    parts: &mut [(&FileEntry, PathBuf, Reader, OffsetMap)],
    per_chunk: usize,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let per_chunk = per_chunk.max(1);
    let mut open: Vec<usize> = (0..parts.len()).collect();
    // Whose turn it is, and how many records it has sent in this turn:
    // kept from one chunk to the next.
    let mut turn = (0, 0);
    while !open.is_empty() {
        let (sent, delivered) =
            fill(producer, topic, parts, &mut open, &mut turn, per_chunk).await?;
        for ((i, old), d) in sent.iter().zip(&delivered) {
            parts[*i].3.push(*old, d.offset);
        }
        bar.inc(sent.len() as u64);
    }
    Ok(())
}

/// Sends one chunk of records: up to `per_txn`, [`ROUND`] at a time
/// from each open partition in turn. Returns `(index in parts, archived
/// offset)` of each record sent and where each landed, in order.
async fn fill(
    producer: &EventProducer,
    topic: &str,
    parts: &mut [(&FileEntry, PathBuf, Reader, OffsetMap)],
    open: &mut Vec<usize>,
    (turn, taken): &mut (usize, usize),
    per_txn: usize,
) -> anyhow::Result<(Vec<(usize, i64)>, Vec<vigie_kafka::Delivered>)> {
    let mut sent: Vec<(usize, i64)> = Vec::with_capacity(per_txn.min(1 << 17));
    let mut pipeline = producer.pipeline(true);
    while sent.len() < per_txn && !open.is_empty() {
        let i = open[*turn % open.len()];
        let (f, _, reader, _) = &mut parts[i];
        let mut exhausted = false;
        while *taken < ROUND && sent.len() < per_txn {
            let Some(r) = reader.next_record()? else {
                exhausted = true;
                break;
            };
            pipeline
                .push(OutRecord {
                    topic,
                    partition: Some(f.partition),
                    key: r.key,
                    payload: r.value,
                    headers: &r.headers,
                    timestamp_ms: r.timestamp_ms,
                })
                .await?;
            sent.push((i, r.offset));
            *taken += 1;
        }
        if exhausted {
            // The next partition takes this one's place in `open`.
            open.retain(|&j| j != i);
            *taken = 0;
        } else if *taken == ROUND {
            *turn += 1;
            *taken = 0;
        }
    }
    let (_, delivered) = pipeline.finish().await?;
    Ok((sent, delivered))
}

/// Commits `group`'s offsets on the restored topic: its archived ones, or
/// its sink's stored ones, translated through the offset map.
async fn carry_over(
    cluster: &Cluster,
    sink: Option<&PostgresSink>,
    group: &str,
    m: &Manifest,
    map: &OffsetMapFile,
) -> anyhow::Result<()> {
    let old: BTreeMap<i32, i64> = match sink {
        Some(sink) => sink
            .offsets_of(group, &m.topic)
            .await?
            .into_iter()
            .map(|(p, (o, _))| (p, o))
            .collect(),
        None => m.groups[group].clone(),
    };
    let new: BTreeMap<i32, i64> = old
        .iter()
        .filter_map(|(p, o)| map.partitions.get(p).map(|pm| (*p, pm.translate(*o))))
        .collect();
    if new.is_empty() {
        eprintln!(
            "warning: group {group} has no offsets on {} to carry over{}",
            m.topic,
            if sink.is_some() {
                " in the sink's store"
            } else {
                ""
            }
        );
        return Ok(());
    }
    if let Some(sink) = sink {
        sink.reset_offsets(group, &map.to_topic, &new).await?;
    }
    let committed = new
        .iter()
        .map(|(p, o)| ((map.to_topic.clone(), *p), *o))
        .collect();
    vigie_kafka::commit_group_offsets(cluster, group, &committed)
        .await
        .with_context(|| format!("committing group {group}'s translated offsets"))?;
    Ok(())
}
