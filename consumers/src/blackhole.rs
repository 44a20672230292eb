//! `blackhole`: accepts every valid event and discards it, like Vector's
//! sink of the same name. It proves the pipeline end to end (validation,
//! DLQ, commits, lag) without a store.

use crate::sink::{Accepted, BatchContext, Rejects, Sink, SinkError};

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
