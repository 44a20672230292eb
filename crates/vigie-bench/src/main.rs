//! `vigie-bench`: Vigie's benchmarks, a binary of their own beside the
//! shipped `vigie`. Each scenario runs `vigie` (its subcommands, as a user
//! would) and a baseline side by side, on the same input and the same
//! broker, in alternating order, and records the ratio in
//! `docs/benchmarks/latest.json` and `docs/benchmarks.md`. `scripts/bench`
//! builds both binaries, starts a fresh broker and runs this one.

mod common;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Vigie's benchmarks: each scenario runs vigie and its baseline side by
/// side and records the result in docs/benchmarks.md and
/// docs/benchmarks/latest.json.
#[derive(Debug, Parser)]
#[command(name = "vigie-bench", version, about, arg_required_else_help = true)]
struct Cli {
    /// Configuration file of vigie (TOML): the scenarios' own Kafka clients
    /// take its `[kafka]` settings, as `vigie config check` prints them.
    #[arg(long, short, global = true, env = "VIGIE_CONFIG")]
    config: Option<PathBuf>,
    /// The vigie binary to run [default: `vigie` beside this binary].
    #[arg(long, global = true)]
    vigie: Option<PathBuf>,
    #[command(subcommand)]
    scenario: scenarios::Scenario,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match common::Vigie::new(cli.vigie, cli.config) {
        Ok(vigie) => cli.scenario.run(&vigie).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
