//! `blackhole`: accepts every valid event and discards it, like Vector's
//! sink of the same name. It proves the pipeline end to end (validation,
//! DLQ, commits, lag) without a store.

use serde::{Deserialize, Serialize};

use crate::sink::{Accepted, BatchContext, Rejects, Sink, SinkError, SinkSpec};

/// The registry entry.
pub const SPEC: SinkSpec = SinkSpec {
    name: "blackhole",
    about: "validates, counts and discards: a pipeline check and a baseline",
    secrets: &[],
    check: crate::sink::check_section::<BlackholeConfig>,
    build: |args| {
        Box::pin(async move {
            let _: BlackholeConfig = args.config()?;
            Ok(Box::new(Blackhole::default()) as Box<dyn Sink>)
        })
    },
};

/// The `[consumers.sinks.blackhole]` section: nothing to set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {}

/// A sink that keeps nothing.
#[derive(Debug, Default)]
pub struct Blackhole {
    written: u64,
}

impl Blackhole {
    /// Events accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

#[async_trait::async_trait]
impl Sink for Blackhole {
    async fn write(
        &mut self,
        events: &[Accepted],
        _ctx: &BatchContext<'_>,
        _rejects: &mut dyn Rejects,
    ) -> Result<usize, SinkError> {
        self.written += events.len() as u64;
        Ok(events.len())
    }
}
