//! `vigie simulate`: the upstream simulator. `export` writes generated
//! events as NDJSON (training data, fixtures, backfills); `serve` runs the
//! simulated upstream HTTP servers (SODA, WHO CSV, Disease Outbreak News).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use tracing::info;
use vigie_simulator::server::{
    CASES_PATH, DEFAULT_LISTEN, NEWS_PATH, SimConfig, Simulator, WHO_CSV_PATH,
};
use vigie_simulator::{CaseGenConfig, CaseGenerator, Drift};
use vigie_telemetry::{LogConfig, init_logging, shutdown_on_signals};

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
    },
    /// Serve the simulated upstream over HTTP until SIGTERM or Ctrl-C (see
    /// docs/simulator.md).
    Serve {
        /// Simulator configuration (TOML); the defaults without it. Not the
        /// global `--config`, which is the platform's configuration.
        #[arg(long, value_name = "FILE.toml")]
        sim_config: Option<PathBuf>,
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value_t = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Seed, overriding the file's.
        #[arg(long)]
        seed: Option<u64>,
    },
}

pub(crate) async fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Export {
            dataset: Dataset::Cases,
            count,
            start,
            seed,
            drift_age_from,
        } => export(count, start, seed, drift_age_from),
        Cmd::Serve {
            sim_config,
            listen,
            seed,
        } => {
            let mut config = match &sim_config {
                Some(path) => load(path)?,
                None => SimConfig::default(),
            };
            if let Some(seed) = seed {
                config.seed = seed;
            }
            init_logging(&LogConfig::default());
            serve(config, listen).await
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

async fn serve(config: SimConfig, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_on_signals();
    let seed = config.seed;
    let sim = Simulator::start(config, listen).await?;
    let base = sim.base_url().to_owned();
    info!(
        listen = %sim.addr(),
        seed,
        cases = format!("{base}{CASES_PATH}"),
        who = format!("{base}{WHO_CSV_PATH}"),
        news = format!("{base}{NEWS_PATH}"),
        control = format!("{base}/_sim/manifest"),
        "Simulator listening"
    );
    shutdown.cancelled().await;
    sim.shutdown().await;
    info!("Simulator stopped");
    Ok(ExitCode::SUCCESS)
}

fn export(
    count: u64,
    start: u64,
    seed: u64,
    drift_age_from: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let generator = CaseGenerator::new(CaseGenConfig {
        seed,
        drift: drift_age_from.map(|from_index| Drift::AgeShiftOlder { from_index }),
        ..CaseGenConfig::default()
    })?;
    let now = chrono::Utc::now();
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
