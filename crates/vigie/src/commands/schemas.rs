//! `vigie schemas check`: backward compatibility of every schema version.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

/// Schema tools.
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Check that each version of each schema is backward compatible with
    /// every earlier one: no field removed or retyped, no new required field,
    /// no enum value dropped.
    Check {
        /// Directory of `<family>.v<N>.json` files.
        #[arg(default_value = "schemas")]
        dir: PathBuf,
    },
}

pub(crate) fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    let Cmd::Check { dir } = cmd;
    let reports = vigie_core::compat::check_dir(&dir)?;
    let mut ok = true;
    for r in &reports {
        let versions: Vec<String> = r.versions.iter().map(|v| format!("v{v}")).collect();
        if r.problems.is_empty() {
            println!("ok    {} ({})", r.family, versions.join(", "));
        } else {
            ok = false;
            println!("FAIL  {} ({})", r.family, versions.join(", "));
            for (old, new, p) in &r.problems {
                println!("      v{old} -> v{new}: {p}");
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
