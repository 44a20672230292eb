//! `vigie config check`: print the effective configuration, secrets redacted.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::settings::Settings;

/// Configuration tools.
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Load defaults + FILE + environment and print the result, secrets as `***`.
    Check {
        /// The file to check (default: `--config`).
        file: Option<PathBuf>,
    },
}

pub(crate) fn run(config: Option<&Path>, cmd: Cmd) -> anyhow::Result<ExitCode> {
    let Cmd::Check { file } = cmd;
    let file = file.as_deref().or(config);
    match Settings::load(file) {
        Ok(s) => {
            print!("{}", vigie_config::redacted_toml(&s)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
    }
}
