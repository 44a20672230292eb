//! `tls`: what encryption and authentication cost. The raw envelope
//! producer (`vigie produce`) and the exactly-once PostgreSQL sink (`vigie
//! consume --sink postgres`) over TLS, each against itself over plaintext,
//! side by side on the same broker, PostgreSQL server and load:
//! - TLS: Kafka's SASL_SSL listener with SCRAM-SHA-512, and PostgreSQL with
//!   `sslmode=verify-full`;
//! - plaintext: the broker's PLAINTEXT listener, PostgreSQL without TLS.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::json;

use super::sink_postgres::{BACKLOG_SEED, Backlog, run_vigie_over};
use crate::common::{
    BROKER, Bar, Events, Vigie, alternate, count_records, create_topics, median, produce_backlog,
    record, uuid_like,
};

/// Options of `tls`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) backlog: Backlog,
    /// The broker's SASL_SSL listener (scripts/bench starts the broker with one).
    #[arg(long, env = "VIGIE_BENCH_SASL_SSL")]
    pub(crate) sasl_ssl: String,
    /// PEM file of the CA of the broker's TLS listener.
    #[arg(long, env = "VIGIE_BENCH_KAFKA_CA")]
    pub(crate) kafka_ca: PathBuf,
    /// A SCRAM user of the broker, `name=password`.
    #[arg(long, env = "VIGIE_BENCH_SCRAM_USER")]
    pub(crate) scram_user: String,
    /// PEM file of the CA of PostgreSQL's certificate.
    #[arg(long, env = "VIGIE_BENCH_PG_CA")]
    pub(crate) pg_ca: PathBuf,
    /// Apache Kafka's tools (`kafka-acls` grants the SCRAM user its topics
    /// and groups).
    #[arg(long, default_value = "scripts/kafka-cli")]
    pub(crate) kafka_cli: PathBuf,
}

/// How a `vigie` command reaches Kafka and PostgreSQL over TLS.
pub(crate) struct Secure {
    /// The SASL_SSL listener.
    pub(crate) brokers: String,
    /// `[kafka.security]`, as environment variables.
    pub(crate) kafka: Vec<(&'static str, String)>,
    /// Query parameters appended to the PostgreSQL URL.
    pub(crate) pg_params: String,
}

impl Secure {
    fn new(a: &Args) -> anyhow::Result<Self> {
        let (user, password) = a
            .scram_user
            .split_once('=')
            .context("--scram-user is name=password")?;
        for ca in [&a.kafka_ca, &a.pg_ca] {
            if !ca.is_file() {
                bail!("no CA file {}", ca.display());
            }
        }
        Ok(Self {
            brokers: a.sasl_ssl.clone(),
            kafka: vec![
                ("VIGIE__KAFKA__SECURITY__PROTOCOL", "sasl_ssl".to_owned()),
                (
                    "VIGIE__KAFKA__SECURITY__SASL_MECHANISM",
                    "SCRAM-SHA-512".to_owned(),
                ),
                ("VIGIE__KAFKA__SECURITY__SASL_USERNAME", user.to_owned()),
                ("VIGIE__KAFKA__SECURITY__SASL_PASSWORD", password.to_owned()),
                (
                    "VIGIE__KAFKA__SECURITY__SSL_CA_FILE",
                    a.kafka_ca.display().to_string(),
                ),
            ],
            pg_params: format!("?sslmode=verify-full&sslrootcert={}", a.pg_ca.display()),
        })
    }
}

/// Grants `user` every operation on the `bench.` topics and the `bench`
/// groups, with Kafka's own `kafka-acls`.
fn grant(kafka_cli: &PathBuf, brokers: &str, user: &str) -> anyhow::Result<()> {
    for resource in [["--topic", "bench."], ["--group", "bench"]] {
        let out = Command::new(kafka_cli)
            .args(["kafka-acls", "--bootstrap-server", brokers, "--add"])
            .args(["--allow-principal", &format!("User:{user}")])
            .args(["--operation", "All", "--resource-pattern-type", "prefixed"])
            .args(resource)
            .output()
            .with_context(|| format!("cannot run {}", kafka_cli.display()))?;
        if !out.status.success() {
            bail!(
                "kafka-acls failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

pub(crate) async fn run(vigie: &Vigie, a: Args) -> anyhow::Result<()> {
    let (events, partitions, runs) = a.backlog.size();
    let docs = &a.backlog.load.common.docs;
    let s = vigie.settings()?;
    let brokers = s.kafka.brokers.clone();
    let tls = Secure::new(&a)?;
    let user = a.scram_user.split_once('=').map_or("", |(u, _)| u);
    grant(&a.kafka_cli, &brokers, user)?;
    let cmd =
        format!("scripts/bench tls --events {events} --partitions {partitions} --runs {runs}");

    // The producer: the same serialized events, over each listener.
    let written = Events::write(events, false)?;
    let input = &written.tsv;
    let (p_err, t_err) = (
        written.dir.path().join("plain.stderr"),
        written.dir.path().join("tls.stderr"),
    );
    let (mut plain_secs, mut tls_secs) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let suffix = uuid_like(r);
        let (pt, tt) = (
            format!("bench.plain.{suffix}"),
            format!("bench.tls.{suffix}"),
        );
        create_topics(&brokers, &[&pt, &tt], partitions, false).await?;
        let (p, t) = alternate(
            r,
            async { vigie.timed_produce((&brokers, &[]), &pt, input, &p_err) },
            async { vigie.timed_produce((&tls.brokers, &tls.kafka), &tt, input, &t_err) },
        )
        .await?;
        plain_secs.push(p.secs);
        tls_secs.push(t.secs);
        for topic in [&pt, &tt] {
            let n = count_records(&a.backlog.tools.kcat, &brokers, topic)?;
            anyhow::ensure!(n == events, "{topic} holds {n} records, not {events}");
        }
        eprintln!(
            "producer run {}: plaintext {:.3} s, TLS {:.3} s",
            r + 1,
            p.secs,
            t.secs
        );
    }
    let (plain, over_tls) = (
        events as f64 / median(&mut plain_secs.clone()),
        events as f64 / median(&mut tls_secs.clone()),
    );
    record(
        docs,
        Bar::rate(
            "producer_tls_vs_plaintext",
            "vigie produce over SASL_SSL (TLS 1.3, SCRAM-SHA-512) vs the same over PLAINTEXT: same serialized events, same broker and topic layout, zstd, idempotent, acks=all",
            (over_tls, plain),
            "records/s",
            &cmd,
            json!({
                "events": events, "partitions": partitions, "runs": runs, "broker": BROKER,
                "tls_seconds": tls_secs, "plaintext_seconds": plain_secs,
            }),
        ),
    )?;
    println!(
        "producer: TLS {over_tls:.0} records/s, plaintext {plain:.0} records/s, ratio {:.3}",
        over_tls / plain
    );

    // The sink: the same backlog drained over each.
    let topic = format!("bench.sink.tls.{}", uuid_like(0));
    create_topics(&brokers, &[&topic], partitions, true).await?;
    let producer = s.producer()?;
    produce_backlog(&producer, &topic, BACKLOG_SEED, events, |_, _| Ok(())).await?;
    let admin = a.backlog.tools.pg.as_str();
    let (mut plain_secs, mut tls_secs) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let counts = (events, events);
        let (p, t) = alternate(
            r,
            run_vigie_over(vigie, &brokers, &topic, counts, admin, None),
            run_vigie_over(vigie, &brokers, &topic, counts, admin, Some(&tls)),
        )
        .await?;
        plain_secs.push(p.secs);
        tls_secs.push(t.secs);
        p.db.drop_db().await?;
        t.db.drop_db().await?;
        eprintln!(
            "sink run {}: plaintext {:.2} s, TLS {:.2} s",
            r + 1,
            plain_secs[r],
            tls_secs[r]
        );
    }
    let (plain, over_tls) = (
        events as f64 / median(&mut plain_secs.clone()),
        events as f64 / median(&mut tls_secs.clone()),
    );
    record(
        docs,
        Bar::rate(
            "sink_postgres_tls_vs_plaintext",
            "exactly-once sink reading Kafka over SASL_SSL (SCRAM-SHA-512) and writing PostgreSQL with sslmode=verify-full vs the same over plaintext, same backlog",
            (over_tls, plain),
            "events/s",
            &cmd,
            json!({
                "events": events, "partitions": partitions, "runs": runs, "broker": BROKER,
                "tls_seconds": tls_secs, "plaintext_seconds": plain_secs,
            }),
        ),
    )?;
    println!(
        "sink: TLS {over_tls:.0} events/s, plaintext {plain:.0} events/s, ratio {:.3}",
        over_tls / plain
    );
    Ok(())
}
