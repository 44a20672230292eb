//! `sink-postgres-connect`: the exactly-once PostgreSQL sink, `vigie
//! consume --sink postgres`, against the way a Kafka user usually fills
//! PostgreSQL: Kafka Connect (standalone) running the Debezium JDBC sink
//! connector, upserting on the record key into the same `health_case`
//! table of the same PostgreSQL server. Then a semantics comparison: each
//! sink is killed with `kill -9` at the same random points of its drain
//! and restarted, and an audit trigger counts every row write that
//! committed, so duplicate writes and losses show.
//!
//! The connector needs records that carry their schema: the peer's topic
//! holds the same cases as Connect's `JsonConverter` reads them with
//! `schemas.enable=true` (the schema in every record, the payload flat with
//! `health_case`'s columns), keyed by the event id.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::common::{
    BROKER, Bar, Consumer, Launch, Settings, Vigie, committed, create_topics, median, peak_rss_mib,
    produce_backlog, record, tail, terminate,
};
use crate::scenarios::sink_postgres::{BACKLOG_SEED, Backlog, Db, progress_sql, run_vigie};

/// Options of `sink-postgres-connect`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) backlog: Backlog,
    /// The connector's `batch.size`, and the `max.poll.records` of its
    /// consumers (Connect's defaults: 500 each).
    #[arg(long, default_value_t = 4000)]
    pub(crate) batch_size: u32,
    /// Connect's `offset.flush.interval.ms`: how often a sink task commits
    /// its consumer offsets (Connect's default: 60000).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) offset_flush_ms: u32,
    /// `kill -9`s of each sink in the semantics comparison (0: skip it).
    #[arg(long, default_value_t = 5)]
    pub(crate) kills: usize,
    /// Events of the semantics comparison's backlog.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) kill_events: u64,
    /// Seed of the random kill points.
    #[arg(long, default_value_t = 1)]
    pub(crate) kill_seed: u64,
}

/// `health_case`'s columns taken as they are from the case's `data`.
const DATA_TEXT: &str = "row_id res_state age_group sex race ethnicity process exposure_yn \
    current_status symptom_status hosp_yn icu_yn death_yn underlying_conditions_yn";
/// `health_case`'s integer columns, from the case's `data`.
const DATA_INT: [&str; 2] = ["case_positive_specimen_interval", "case_onset_interval"];

/// The Connect schema of the peer's records: `health_case`'s columns.
/// Texts, dates and timestamps are strings (PostgreSQL casts them, the
/// JDBC URL saying `stringtype=unspecified`), the intervals `int32`.
fn connect_schema() -> Value {
    let field = |name: &str, ty: &str, optional: bool| json!({"field": name, "type": ty, "optional": optional});
    let mut fields = vec![field("event_id", "string", false)];
    fields.extend(
        DATA_TEXT
            .split_whitespace()
            .map(|c| field(c, "string", false)),
    );
    fields.extend(DATA_INT.iter().map(|c| field(c, "int32", true)));
    fields.extend([
        field("case_month", "string", false),
        field("county_fips", "string", true),
        field("source", "string", false),
        field("occurred_at", "string", false),
        field("ingested_at", "string", false),
        field("upstream_updated_at", "string", true),
    ]);
    json!({"type": "struct", "name": "health_case", "optional": false, "fields": fields})
}

/// The Connect schema of the peer's keys: a struct of the event id (the
/// connector's `record_key` mode takes its primary key from a struct key,
/// as a Debezium source writes them).
fn key_schema() -> Value {
    json!({"type": "struct", "name": "health_case_key", "optional": false,
           "fields": [{"field": "event_id", "type": "string", "optional": false}]})
}

/// The peer's record of the case envelope `envelope`: its event id as the
/// key, and the row `health_case` gets as the value, both Connect JSON with
/// their schemas (`schemas`: the key's and the value's); the mapping of
/// [`crate::scenarios::sink_postgres`]'s upsert.
fn connect_record(
    envelope: &[u8],
    (key_schema, schema): (&Value, &Value),
) -> anyhow::Result<(String, Vec<u8>)> {
    let doc: Value = serde_json::from_slice(envelope).context("a backlog envelope")?;
    let d = &doc["data"];
    let id = doc["id"].as_str().context("an envelope without an id")?;
    let month = d["case_month"].as_str().context("a case without a month")?;
    let mut row = Map::new();
    row.insert("event_id".into(), json!(id));
    for c in DATA_TEXT.split_whitespace().chain(DATA_INT) {
        row.insert(c.into(), d[c].clone());
    }
    row.insert("case_month".into(), json!(format!("{month}-01")));
    row.insert("county_fips".into(), d["county_fips_code"].clone());
    for c in [
        "source",
        "occurred_at",
        "ingested_at",
        "upstream_updated_at",
    ] {
        row.insert(c.into(), doc[c].clone());
    }
    let key = json!({"schema": key_schema, "payload": {"event_id": id}}).to_string();
    let value = serde_json::to_vec(&json!({"schema": schema, "payload": row}))?;
    Ok((key, value))
}

/// Connect's settings, recorded with the results.
struct ConnectSettings<'a> {
    brokers: &'a str,
    topic: &'a str,
    tasks: i32,
    batch_size: u32,
    offset_flush_ms: u32,
}

impl ConnectSettings<'_> {
    /// The worker's and the connector's properties, writing into `db`.
    fn properties(&self, name: &str, db: &Db, dir: &Path) -> anyhow::Result<(String, String)> {
        // Where scripts/setup installs the plugin (scripts/lib.sh).
        let plugins = crate::common::state_dir()?.join("connect-plugins");
        let worker = format!(
            "bootstrap.servers={brokers}\n\
             key.converter=org.apache.kafka.connect.json.JsonConverter\n\
             key.converter.schemas.enable=true\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\n\
             value.converter.schemas.enable=true\n\
             offset.storage.file.filename={offsets}\n\
             offset.flush.interval.ms={flush}\n\
             consumer.max.poll.records={batch}\n\
             plugin.path={plugins}\n\
             plugin.discovery=service_load\n\
             listeners=http://127.0.0.1:0\n",
            brokers = self.brokers,
            offsets = dir.join("connect.offsets").display(),
            flush = self.offset_flush_ms,
            batch = self.batch_size,
            plugins = plugins.display(),
        );
        let (url, user) = jdbc_url(&db.url())?;
        let connector = format!(
            "name={name}\n\
             connector.class=io.debezium.connector.jdbc.JdbcSinkConnector\n\
             tasks.max={tasks}\n\
             topics={topic}\n\
             connection.url={url}\n\
             connection.username={user}\n\
             connection.password=\n\
             insert.mode=upsert\n\
             primary.key.mode=record_key\n\
             primary.key.fields=event_id\n\
             collection.name.format=health_case\n\
             schema.evolution=none\n\
             batch.size={batch}\n",
            tasks = self.tasks,
            topic = self.topic,
            batch = self.batch_size,
        );
        Ok((worker, connector))
    }

    fn details(&self) -> Value {
        json!({
            "connector": "io.debezium.connector.jdbc.JdbcSinkConnector (Debezium 3.6.0.Final), Kafka Connect 4.4.0 standalone",
            "tasks.max": self.tasks, "batch.size": self.batch_size,
            "consumer.max.poll.records": self.batch_size,
            "offset.flush.interval.ms": self.offset_flush_ms,
            "insert.mode": "upsert", "primary.key.mode": "record_key",
            "key.converter": "JsonConverter, schemas.enable=true",
            "value.converter": "JsonConverter, schemas.enable=true",
            "heap": "-Xms256m -Xmx2g (as bin/connect-standalone.sh)",
        })
    }
}

/// `jdbc:postgresql://host:port/db?stringtype=unspecified` and the user
/// of the password-less `postgres://user@host:port/db` URL `url`.
fn jdbc_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .with_context(|| format!("not a postgres:// URL: {url}"))?;
    let (user, host) = rest
        .split_once('@')
        .with_context(|| format!("no user in {url}"))?;
    ensure!(
        !user.contains(':'),
        "the PostgreSQL URL carries a password: Connect's is given apart, give the bench a URL without one"
    );
    Ok((
        format!("jdbc:postgresql://{host}?stringtype=unspecified"),
        user.to_owned(),
    ))
}

/// A running Kafka Connect standalone worker.
struct Connect {
    child: Child,
    log: PathBuf,
}

impl Connect {
    fn spawn(s: &ConnectSettings<'_>, name: &str, db: &Db, dir: &Path) -> anyhow::Result<Self> {
        let (worker, connector) = s.properties(name, db, dir)?;
        let (wp, cp) = (
            dir.join("worker.properties"),
            dir.join("connector.properties"),
        );
        std::fs::write(&wp, worker)?;
        std::fs::write(&cp, connector)?;
        let log = dir.join("connect.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new("scripts/kafka-cli")
            .arg("connect-standalone")
            .args([&wp, &cp])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .context("cannot run scripts/kafka-cli connect-standalone")?;
        Ok(Self { child, log })
    }

    fn peak_rss_mib(&self) -> f64 {
        peak_rss_mib(self.child.id()).unwrap_or(0.0)
    }
}

/// Gives `health_case` of `db` a `written_at` column that each row write
/// stamps with the time it ran: when the peer wrote its last row.
async fn stamp_writes(db: &Db) -> anyhow::Result<()> {
    db.execute(
        "ALTER TABLE health_case ADD COLUMN written_at timestamptz DEFAULT clock_timestamp()",
    )
    .await
}

/// One drain by Connect.
struct ConnectDrain {
    /// From Connect's start to its last row written.
    secs: f64,
    /// From its first row written to its last.
    writing_secs: f64,
    peak_mib: f64,
}

/// Runs Connect over the peer's backlog, `events` records, into a database
/// of its own until `health_case` holds `events` rows.
async fn run_connect(
    s: &ConnectSettings<'_>,
    events: u64,
    admin: &str,
) -> anyhow::Result<ConnectDrain> {
    let db = Db::create(admin, "connect").await?.migrated().await?;
    stamp_writes(&db).await?;
    let dir = tempfile::tempdir()?;
    let name = format!("bench-{}", db.name);
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let mut c = Connect::spawn(s, &name, &db, dir.path())?;
    let mut peak = 0f64;
    loop {
        peak = peak.max(c.peak_rss_mib());
        // The statistics collector's insert count trails the commits by
        // about a second and costs nothing to read; the exact count only
        // confirms it.
        let ins = db
            .scalar("SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables WHERE relname = 'health_case'")
            .await?;
        if ins as u64 >= events
            && db.scalar("SELECT count(*) FROM health_case").await? as u64 == events
        {
            break;
        }
        c.check_alive()?;
        if clock.elapsed() > Duration::from_secs(3600) {
            let _ = c.kill();
            bail!("Kafka Connect did not drain the backlog in an hour");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peak = peak.max(c.peak_rss_mib());
    c.stop()?;
    let first = db
        .scalar_f64("SELECT extract(epoch FROM min(written_at))::float8 FROM health_case")
        .await?;
    let last = db
        .scalar_f64("SELECT extract(epoch FROM max(written_at))::float8 FROM health_case")
        .await?;
    db.drop_db().await?;
    let t0 = started.timestamp_micros() as f64 / 1e6;
    Ok(ConnectDrain {
        secs: last - t0,
        writing_secs: last - first,
        peak_mib: peak,
    })
}

/// What one sink did under `kill -9`s.
#[derive(Debug, serde::Serialize)]
struct Killed {
    kills: usize,
    /// Row writes that committed (the audit trigger's count).
    writes: i64,
    /// Writes of a row already written.
    duplicate_writes: i64,
    /// Cases of the backlog without a row.
    lost: i64,
    /// From the first start to the backlog written, restarts included.
    secs: f64,
}

/// An audit of `db`'s `health_case`: a trigger records every row write
/// (insert, or the insert an upsert tries first) that commits.
async fn audit(db: &Db) -> anyhow::Result<()> {
    db.execute(
        "CREATE TABLE write_audit (event_id uuid NOT NULL);
         CREATE FUNCTION audit_write() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO write_audit VALUES (NEW.event_id); RETURN NEW; END $$;
         CREATE TRIGGER audit_write BEFORE INSERT ON health_case
         FOR EACH ROW EXECUTE FUNCTION audit_write();",
    )
    .await
}

async fn reconcile(db: &Db, events: u64, kills: usize, secs: f64) -> anyhow::Result<Killed> {
    let writes = db.scalar("SELECT count(*) FROM write_audit").await?;
    let distinct = db
        .scalar("SELECT count(DISTINCT event_id) FROM write_audit")
        .await?;
    let rows = db.scalar("SELECT count(*) FROM health_case").await?;
    Ok(Killed {
        kills,
        writes,
        duplicate_writes: writes - distinct,
        lost: events as i64 - rows,
        secs,
    })
}

/// Rows of `health_case` in `db` (0 before the sink made the table).
async fn rows(db: &Db) -> i64 {
    db.scalar("SELECT count(*) FROM health_case")
        .await
        .unwrap_or(0)
}

/// A sink process of the kill comparison.
trait Killable: Sized {
    fn child(&mut self) -> &mut Child;
    fn check_alive(&mut self) -> anyhow::Result<()>;
    /// Stops it cleanly.
    fn stop(self) -> anyhow::Result<()>;
    /// `kill -9`, then waits for it.
    fn kill(mut self) -> anyhow::Result<()> {
        self.child().kill()?;
        self.child().wait()?;
        Ok(())
    }
}

impl Killable for Consumer {
    fn child(&mut self) -> &mut Child {
        &mut self.child
    }
    fn check_alive(&mut self) -> anyhow::Result<()> {
        Consumer::check_alive(self)
    }
    fn stop(self) -> anyhow::Result<()> {
        Consumer::stop(self)
    }
}

impl Killable for Connect {
    fn child(&mut self) -> &mut Child {
        &mut self.child
    }
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "Kafka Connect exited early ({status}):\n{}",
                tail(&self.log)
            );
        }
        Ok(())
    }
    /// SIGTERM, then waits for it to stop (the JVM's exit status after
    /// SIGTERM is not a success).
    fn stop(mut self) -> anyhow::Result<()> {
        terminate(&mut self.child)?;
        Ok(())
    }
}

/// Starts a sink with `spawn`, kills it with `kill -9` once `db`'s
/// `health_case` holds `points[0]` rows, starts it again at once, and so on
/// through `points`; then lets the last start run until `done`, and stops
/// it. Returns the seconds from the first start to `done`.
async fn kill_at<S: Killable>(
    db: &Db,
    points: &[u64],
    mut spawn: impl FnMut() -> anyhow::Result<S>,
    done: impl AsyncFn() -> anyhow::Result<bool>,
) -> anyhow::Result<f64> {
    let clock = Instant::now();
    for &point in points {
        let mut sink = spawn()?;
        while (rows(db).await as u64) < point {
            sink.check_alive()?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sink.kill()?;
    }
    let mut sink = spawn()?;
    while !done().await? {
        sink.check_alive()?;
        ensure!(
            clock.elapsed() < Duration::from_secs(3600),
            "the sink killed {} times did not finish in an hour",
            points.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = clock.elapsed().as_secs_f64();
    sink.stop()?;
    Ok(secs)
}

/// One sink's run of the kill comparison: its backlog's size, where
/// PostgreSQL is, and the kill points (in rows written).
struct KillRun<'a> {
    events: u64,
    admin: &'a str,
    points: &'a [u64],
}

impl KillRun<'_> {
    /// Runs `drive` on a database of its own, migrated, with the audit of
    /// [`audit`], a scratch directory and a name for the sink
    /// (`bench-<db>`); `drive` returns its seconds. Then reconciles the
    /// audit.
    async fn audited(
        &self,
        tag: &str,
        drive: impl AsyncFnOnce(&Db, &Path, String) -> anyhow::Result<f64>,
    ) -> anyhow::Result<Killed> {
        let db = Db::create(self.admin, tag).await?.migrated().await?;
        audit(&db).await?;
        let dir = tempfile::tempdir()?;
        let name = format!("bench-{}", db.name);
        let secs = drive(&db, dir.path(), name).await?;
        let k = reconcile(&db, self.events, self.points.len(), secs).await?;
        db.drop_db().await?;
        Ok(k)
    }

    /// Vigie's sink over `topic`, killed with `kill -9` at the points (see
    /// [`kill_at`]) until its stored offsets cover the topic.
    async fn vigie(&self, vigie: &Vigie, brokers: &str, topic: &str) -> anyhow::Result<Killed> {
        self.audited("vigie_kill", async |db, dir, group| {
            let env = [("VIGIE__CONSUMERS__SINKS__POSTGRES__URL", db.url())];
            let launch = Launch {
                vigie,
                brokers,
                sink: "postgres",
                topic,
                group: &group,
                port: 0,
                env: &env,
                logs: dir,
            };
            let offsets = progress_sql(&group);
            let done = async || Ok(db.scalar(&offsets).await.unwrap_or(-1) >= self.events as i64);
            kill_at(db, self.points, || Consumer::spawn(&launch), done).await
        })
        .await
    }

    /// Connect over its topic, killed and restarted at the same points,
    /// until every row is there and its committed offsets cover the topic:
    /// rows reach the backlog's count while a task may still be rewriting
    /// what it read again, and those rewrites count.
    async fn connect(&self, s: &ConnectSettings<'_>) -> anyhow::Result<Killed> {
        self.audited("connect_kill", async |db, dir, name| {
            let group = format!("connect-{name}");
            let done = async || {
                Ok(rows(db).await as u64 >= self.events
                    && committed(s.brokers, &group, s.topic).await? >= self.events as i64)
            };
            kill_at(db, self.points, || Connect::spawn(s, &name, db, dir), done).await
        })
        .await
    }
}

/// Creates `topic` and `peer_topic` and fills them with the same `events`
/// cases: envelopes for Vigie, Connect records for the peer.
async fn backlogs(
    s: &Settings,
    (topic, peer_topic): (&str, &str),
    events: u64,
    partitions: i32,
) -> anyhow::Result<()> {
    create_topics(&s.kafka.brokers, &[topic], partitions, true).await?;
    create_topics(&s.kafka.brokers, &[peer_topic], partitions, false).await?;
    let producer = s.producer()?;
    produce_backlog(&producer, topic, BACKLOG_SEED, events, |_, _| Ok(())).await?;
    let schemas = (&key_schema(), &connect_schema());
    produce_backlog(&producer, peer_topic, BACKLOG_SEED, events, |_, lines| {
        for line in lines.iter_mut() {
            *line = connect_record(&line.1, schemas)?;
        }
        Ok(())
    })
    .await?;
    eprintln!("backlogs: {events} events in {topic} and in {peer_topic} ({partitions} partitions)");
    Ok(())
}

/// `n` distinct kill points, in rows written, drawn in the middle 90 % of
/// `events` with `seed`, in increasing order.
fn kill_points(n: usize, events: u64, seed: u64) -> Vec<u64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut points: Vec<u64> = (0..n)
        .map(|_| rng.random_range(events / 20..events - events / 20))
        .collect();
    points.sort_unstable();
    points
}

pub(crate) async fn run(vigie: &Vigie, a: Args) -> anyhow::Result<()> {
    let (events, partitions, runs) = a.backlog.size();
    let admin = a.backlog.tools.pg.as_str();
    let settings = vigie.settings()?;
    let brokers = settings.kafka.brokers.clone();
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S%f");
    let (topic, peer_topic) = (
        format!("bench.sink.{stamp}"),
        format!("bench.connect.{stamp}"),
    );
    backlogs(&settings, (&topic, &peer_topic), events, partitions).await?;
    let connect = ConnectSettings {
        brokers: &brokers,
        topic: &peer_topic,
        tasks: partitions,
        batch_size: a.batch_size,
        offset_flush_ms: a.offset_flush_ms,
    };

    let (mut v_secs, mut c_secs, mut c_writing, mut v_peaks, mut c_peaks) =
        (vec![], vec![], vec![], vec![], vec![]);
    for r in 0..runs {
        let d = run_vigie(vigie, &brokers, &topic, (events, events), admin).await?;
        d.db.drop_db().await?;
        v_secs.push(d.secs);
        v_peaks.push(d.peak_mib);
        let c = run_connect(&connect, events, admin).await?;
        c_secs.push(c.secs);
        c_writing.push(c.writing_secs);
        c_peaks.push(c.peak_mib);
        eprintln!(
            "run {}: vigie {:.2} s (peak RSS {:.0} MiB), Kafka Connect {:.2} s ({:.2} s from its first row; peak RSS {:.0} MiB)",
            r + 1,
            d.secs,
            d.peak_mib,
            c.secs,
            c.writing_secs,
            c.peak_mib
        );
    }

    let mut killed = Value::Null;
    if a.kills > 0 {
        let kill_stamp = chrono::Utc::now().format("%Y%m%d%H%M%S%f");
        let (kt, kpt) = (
            format!("bench.sink.kill.{kill_stamp}"),
            format!("bench.connect.kill.{kill_stamp}"),
        );
        backlogs(&settings, (&kt, &kpt), a.kill_events, partitions).await?;
        let points = kill_points(a.kills, a.kill_events, a.kill_seed);
        let run = KillRun {
            events: a.kill_events,
            admin,
            points: &points,
        };
        let v = run.vigie(vigie, &brokers, &kt).await?;
        eprintln!("vigie under kill -9 at rows {points:?}: {v:?}");
        let c = run
            .connect(&ConnectSettings {
                topic: &kpt,
                ..connect
            })
            .await?;
        eprintln!("Kafka Connect under kill -9 at rows {points:?}: {c:?}");
        killed = json!({"events": a.kill_events, "kill_points_rows": points, "vigie": v, "kafka_connect": c});
    }

    let vigie_eps = events as f64 / median(&mut v_secs.clone());
    let connect_eps = events as f64 / median(&mut c_secs.clone());
    let cmd = format!(
        "scripts/bench sink-postgres-connect --events {events} --partitions {partitions} --runs {runs} --batch-size {} --offset-flush-ms {} --kills {} --kill-events {}",
        a.batch_size, a.offset_flush_ms, a.kills, a.kill_events
    );
    let details = json!({
        "events": events, "partitions": partitions, "runs": runs, "broker": BROKER,
        "vigie_seconds": v_secs, "kafka_connect_seconds": c_secs,
        "kafka_connect_seconds_from_first_row": c_writing,
        "vigie_peak_rss_mib": v_peaks, "kafka_connect_peak_rss_mib": c_peaks,
        "kafka_connect": connect.details(),
        "kill_9": killed,
    });
    record(
        &a.backlog.load.common.docs,
        Bar::rate(
            "sink_postgres_vs_kafka_connect_jdbc",
            "exactly-once sink (Kafka -> health_case, offsets in the same transaction) vs Kafka Connect standalone with the Debezium JDBC sink (upsert on the record key) into the same table, from the same backlog (JSON with its schema for Connect) to every row committed",
            (vigie_eps, connect_eps),
            "events/s",
            &cmd,
            details.clone(),
        ),
    )?;
    let (vp, cp) = (median(&mut v_peaks.clone()), median(&mut c_peaks.clone()));
    record(
        &a.backlog.load.common.docs,
        Bar {
            name: "sink_postgres_vs_kafka_connect_jdbc_peak_rss".to_owned(),
            description: "peak RSS (VmHWM, median of the runs) of vigie consume --sink postgres vs the Kafka Connect worker running the Debezium JDBC sink, draining the same backlog".to_owned(),
            vigie: json!((vp * 10.0).round() / 10.0),
            baseline: json!((cp * 10.0).round() / 10.0),
            ratio: vp / cp,
            unit: "MiB (lower is better)".to_owned(),
            higher_is_better: false,
            command: cmd.clone(),
            details,
        },
    )?;
    println!(
        "vigie {vigie_eps:.0} events/s, Kafka Connect {connect_eps:.0} events/s (ratio {:.3}); peak RSS {vp:.0} vs {cp:.0} MiB",
        vigie_eps / connect_eps
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_record_carries_the_rows_columns_and_its_schema() {
        let g = vigie_simulator::case_generator(3);
        let lines = vigie_simulator::case_lines(&g, 0..50);
        let (keys, schema) = (key_schema(), connect_schema());
        let names: Vec<&str> = schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        for (_, envelope) in &lines {
            let (key, value) = connect_record(envelope, (&keys, &schema)).unwrap();
            let doc: Value = serde_json::from_slice(&value).unwrap();
            let env: Value = serde_json::from_slice(envelope).unwrap();
            let key: Value = serde_json::from_str(&key).unwrap();
            assert_eq!(key["payload"]["event_id"], env["id"]);
            assert_eq!(key["schema"], keys);
            let payload = doc["payload"].as_object().unwrap();
            let mut keys: Vec<&str> = payload.keys().map(String::as_str).collect();
            let mut expected = names.clone();
            keys.sort_unstable();
            expected.sort_unstable();
            assert_eq!(keys, expected);
            assert_eq!(payload["event_id"], env["id"]);
            assert_eq!(
                payload["case_month"].as_str().unwrap(),
                format!("{}-01", env["data"]["case_month"].as_str().unwrap())
            );
            // A required field is never null.
            for f in schema["fields"].as_array().unwrap() {
                if f["optional"] == json!(false) {
                    assert!(!payload[f["field"].as_str().unwrap()].is_null(), "{f}");
                }
            }
        }
    }

    #[test]
    fn a_jdbc_url_keeps_host_port_and_database() {
        assert_eq!(
            jdbc_url("postgres://vigie@localhost:5432/vigie_bench_x").unwrap(),
            (
                "jdbc:postgresql://localhost:5432/vigie_bench_x?stringtype=unspecified".to_owned(),
                "vigie".to_owned()
            )
        );
        assert!(jdbc_url("mysql://x@y/z").is_err());
        assert!(jdbc_url("postgres://u:secret@y/z").is_err());
    }

    #[test]
    fn kill_points_are_increasing_inside_the_backlog() {
        let p = kill_points(5, 200_000, 1);
        assert_eq!(p.len(), 5);
        assert!(p.windows(2).all(|w| w[0] <= w[1]));
        assert!(p.iter().all(|&x| (10_000..190_000).contains(&x)));
        assert_eq!(p, kill_points(5, 200_000, 1));
    }
}
