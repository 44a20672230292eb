//! `vigie simulate`: the upstream simulator. `export` writes generated
//! events as NDJSON (training data, fixtures, backfills); `serve` runs the
//! simulated upstream HTTP servers (SODA, WHO CSV, Disease Outbreak News),
//! with `/metrics`, `/healthz` and `/readyz` on `telemetry.listen` like
//! every long-running component.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use prometheus::Registry;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tracing::info;
use vigie_simulator::server::{
    CASES_PATH, DEFAULT_LISTEN, NEWS_PATH, SimConfig, Simulator, WHO_CSV_PATH,
};
use vigie_simulator::{CaseGenConfig, CaseGenerator, Drift};
use vigie_telemetry::{Readiness, TelemetryServer, init_logging, shutdown_on_signals};

/// Data sets the simulator exports.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Dataset {
    /// CDC-style case envelopes (`health.case.v1`).
    Cases,
}

/// Simulator commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Write generated envelopes to stdout, one JSON object per line.
    Export {
        /// Which data set.
        #[arg(long, default_value = "cases")]
        dataset: Dataset,
        /// Number of events.
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// First row index (rows are a pure function of seed and index).
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Seed (same seed, same events).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// From this row index on, the age mix shifts older (a drift scenario).
        #[arg(long)]
        drift_age_from: Option<u64>,
        /// The envelopes' `ingested_at` (RFC 3339), for an export that is the
        /// same bytes every time (the DVC pipeline's); now by default.
        #[arg(long, value_name = "RFC3339")]
        ingested_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Serve the simulated upstream over HTTP until SIGTERM or Ctrl-C (see
    /// docs/simulator.md), with /metrics, /healthz and /readyz on
    /// `telemetry.listen`.
    Serve {
        /// Simulator configuration (TOML); the defaults without it. Not the
        /// global `--config`, the platform's configuration, of which only
        /// `[telemetry]` and `[log]` apply here.
        #[arg(long, value_name = "FILE.toml")]
        sim_config: Option<PathBuf>,
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value_t = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Address of /metrics, /healthz and /readyz, overriding
        /// `telemetry.listen` (give another port than a component running
        /// beside it on the same host).
        #[arg(long, value_name = "ADDR")]
        telemetry_listen: Option<SocketAddr>,
        /// Seed, overriding the file's.
        #[arg(long)]
        seed: Option<u64>,
    },
}

pub(crate) async fn run(platform: Option<&Path>, cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Export {
            dataset: Dataset::Cases,
            count,
            start,
            seed,
            drift_age_from,
            ingested_at,
        } => export(
            count,
            start,
            seed,
            drift_age_from,
            ingested_at.unwrap_or_else(chrono::Utc::now),
        ),
        Cmd::Serve {
            sim_config,
            listen,
            telemetry_listen,
            seed,
        } => {
            let settings = super::load(platform)?;
            let mut telemetry = settings.telemetry;
            if let Some(addr) = telemetry_listen {
                telemetry.listen = addr;
            }
            let mut config = match &sim_config {
                Some(path) => load(path)?,
                None => SimConfig::default(),
            };
            if let Some(seed) = seed {
                config.seed = seed;
            }
            init_logging(&settings.log);
            serve(config, listen, &telemetry).await
        }
    }
}

/// Reads a simulator configuration file.
fn load(path: &Path) -> anyhow::Result<SimConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = SimConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
    config
        .validate()
        .with_context(|| format!("in {}", path.display()))?;
    Ok(config)
}

async fn serve(
    config: SimConfig,
    listen: SocketAddr,
    telemetry: &vigie_telemetry::TelemetryConfig,
) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_on_signals();
    let seed = config.seed;
    let sim = Simulator::start(config, listen).await?;
    let base = sim.base_url().to_owned();
    let registry = Registry::new();
    sim.metrics().register(&registry)?;
    // Ready while the simulated upstream answers HTTP on its own address.
    let probe_addr: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .context("the simulator's address")?;
    let readiness = Readiness::default().with("simulator", move || probe(probe_addr));
    let server = TelemetryServer::start(telemetry, registry, readiness, shutdown.child_token())
        .await
        .with_context(|| format!("cannot serve telemetry on {}", telemetry.listen))?;
    info!(
        listen = %sim.addr(),
        seed,
        cases = format!("{base}{CASES_PATH}"),
        who = format!("{base}{WHO_CSV_PATH}"),
        news = format!("{base}{NEWS_PATH}"),
        control = format!("{base}/_sim/manifest"),
        telemetry = %server.addr(),
        "Simulator listening"
    );
    shutdown.cancelled().await;
    sim.shutdown().await;
    server.join().await;
    info!("Simulator stopped");
    Ok(ExitCode::SUCCESS)
}

/// An HTTP round trip to the simulator's control API (`/_sim` requests
/// are neither counted nor logged): `Ok` on a 200.
async fn probe(addr: SocketAddr) -> Result<(), String> {
    let round_trip = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET /_sim/manifest HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut status = String::new();
        tokio::io::BufReader::new(stream)
            .read_line(&mut status)
            .await?;
        Ok::<_, std::io::Error>(status)
    };
    match tokio::time::timeout(Duration::from_secs(3), round_trip).await {
        Err(_) => Err(format!("{addr}: no answer within 3s")),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Ok(Ok(status)) => match status.split_whitespace().nth(1) {
            Some("200") => Ok(()),
            _ => Err(format!("{addr}: answered {:?}", status.trim_end())),
        },
    }
}

fn export(
    count: u64,
    start: u64,
    seed: u64,
    drift_age_from: Option<u64>,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<ExitCode> {
    let generator = CaseGenerator::new(CaseGenConfig {
        seed,
        drift: drift_age_from.map(|from_index| Drift::AgeShiftOlder { from_index }),
        ..CaseGenConfig::default()
    })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for i in start..start + count {
        let env = vigie_simulator::case_envelope(&generator, i, now);
        out.write_all(&env.to_json_bytes()?)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
