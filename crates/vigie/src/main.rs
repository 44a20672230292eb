//! `vigie`: the one binary of the Vigie platform. Each subcommand is a
//! component (producer, consumer) or a tool (topics, lag, schemas, config,
//! simulate); the work is done by the library crates. The benchmarks are
//! another binary, `vigie-bench`, which runs this one.

mod archive;
mod commands;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Vigie: event streaming for public-health surveillance data.
#[derive(Debug, Parser)]
#[command(name = "vigie", version, about)]
struct Cli {
    /// Configuration file (TOML), layered over the embedded defaults and
    /// under `VIGIE__SECTION__KEY` environment variables.
    #[arg(long, short, global = true, env = "VIGIE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a consumer-group component: validate, write to a sink, DLQ, commit.
    Consume(commands::consume::Args),
    /// Run the upstream sources (SODA and CSV pollers, the news scraper) into their topics.
    Ingest(commands::ingest::Args),
    /// Publish events to a topic (from a file, stdin, or the built-in sample generator).
    Produce(commands::produce::Args),
    /// Topic administration.
    #[command(subcommand)]
    Topics(commands::topics::Cmd),
    /// Print consumer lag per partition (committed offset vs high watermark).
    Lag(commands::lag::Args),
    /// The offsets the postgres sink stores with its rows: show them, reset them.
    #[command(subcommand)]
    Offsets(commands::offsets::Cmd),
    /// Re-drive a consumer group: move its offsets to a time, an offset, an end or by a shift.
    #[command(subcommand)]
    Replay(commands::replay::Cmd),
    /// Write topics, or a time range of them, to compressed files with a manifest of offsets, counts and checksums.
    Archive(commands::archive::ArchiveArgs),
    /// Restore archived topics: checksums verified, keys, headers, timestamps and partitions kept, groups' offsets carried over.
    Restore(commands::archive::RestoreArgs),
    /// Apply the PostgreSQL migrations of the health model (what the postgres sink does at start-up with migrate = true).
    Migrate,
    /// Schema tools.
    #[command(subcommand)]
    Schemas(commands::schemas::Cmd),
    /// Configuration tools.
    #[command(subcommand)]
    Config(commands::config::Cmd),
    /// The upstream simulator (seeded generators of the health sources).
    #[command(subcommand)]
    Simulate(commands::simulate::Cmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        let config = cli.config.as_deref();
        match cli.command {
            Command::Consume(a) => commands::consume::run(config, a).await,
            Command::Ingest(a) => commands::ingest::run(config, a).await,
            Command::Produce(a) => commands::produce::run(config, a).await,
            Command::Topics(c) => commands::topics::run(config, c).await,
            Command::Lag(a) => commands::lag::run(config, a).await,
            Command::Offsets(c) => commands::offsets::run(config, c).await,
            Command::Archive(a) => commands::archive::archive(config, a).await,
            Command::Restore(a) => commands::archive::restore(config, a).await,
            Command::Migrate => commands::migrate::run(config).await,
            Command::Replay(c) => commands::replay::run(config, c).await,
            Command::Schemas(c) => commands::schemas::run(c),
            Command::Config(c) => commands::config::run(config, c),
            Command::Simulate(c) => commands::simulate::run(config, c).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
