//! `vigie simulate`: the upstream simulator. `export` writes generated
//! events as NDJSON (training data, fixtures, backfills).

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;
use vigie_simulator::{CaseGenConfig, CaseGenerator, Drift};

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
}

pub(crate) fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    let Cmd::Export {
        dataset: Dataset::Cases,
        count,
        start,
        seed,
        drift_age_from,
    } = cmd;
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
