//! One module per subcommand.

pub(crate) mod archive;
pub(crate) mod config;
pub(crate) mod consume;
pub(crate) mod copy;
pub(crate) mod ingest;
pub(crate) mod lag;
pub(crate) mod migrate;
pub(crate) mod offsets;
pub(crate) mod produce;
pub(crate) mod replay;
pub(crate) mod schemas;
pub(crate) mod simulate;
pub(crate) mod topics;

use std::path::Path;

use anyhow::Context;

use crate::settings::Settings;

/// `--group` and `--topic`, shared by the commands that act on a group.
#[derive(Debug, clap::Args)]
pub(crate) struct GroupArgs {
    /// Consumer group (overrides `kafka.consumer.group_id`).
    #[arg(long)]
    group: Option<String>,
    /// Topic, repeatable (overrides `kafka.consumer.topics`).
    #[arg(long = "topic")]
    topics: Vec<String>,
}

impl GroupArgs {
    /// Applies the overrides to the consumer settings.
    pub(crate) fn apply(self, c: &mut vigie_kafka::ConsumerConfig) {
        if let Some(g) = self.group {
            c.group_id = g;
        }
        if !self.topics.is_empty() {
            c.topics = self.topics;
        }
    }
}

/// Loads the settings, with the file named in the error.
pub(crate) fn load(config: Option<&Path>) -> anyhow::Result<Settings> {
    Settings::load(config).context("invalid configuration")
}
