//! `vigie topics create`: make sure every configured topic and its DLQ exist.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use vigie_kafka::{TopicOutcome, ensure_topics};

/// Topic administration.
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Create the configured topics (and `<topic>.dlq` twins); existing ones are left as they are.
    Create,
}

pub(crate) async fn run(config: Option<&Path>, cmd: Cmd) -> anyhow::Result<ExitCode> {
    let Cmd::Create = cmd;
    let s = super::load(config)?;
    for (name, outcome) in ensure_topics(&s.connect().await?, &s.topics).await? {
        let what = match outcome {
            TopicOutcome::Created => "created",
            TopicOutcome::Existed => "exists ",
        };
        println!("{what} {name}");
    }
    Ok(ExitCode::SUCCESS)
}
