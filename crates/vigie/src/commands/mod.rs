//! One module per subcommand.

pub(crate) mod config;
pub(crate) mod consume;
pub(crate) mod lag;
pub(crate) mod produce;
pub(crate) mod schemas;
pub(crate) mod topics;

use std::path::Path;

use anyhow::Context;

use crate::settings::Settings;

/// Loads the settings, with the file named in the error.
pub(crate) fn load(config: Option<&Path>) -> anyhow::Result<Settings> {
    Settings::load(config).context("invalid configuration")
}
