//! Helpers shared by the sinks' tests.

/// Collects what the sink refuses (no broker involved).
#[derive(Default)]
pub(crate) struct Refused(pub(crate) Vec<vigie_consumers::Rejected>);

#[async_trait::async_trait]
impl vigie_consumers::Rejects for Refused {
    async fn publish(
        &mut self,
        rejected: &[vigie_consumers::Rejected],
    ) -> Result<(), vigie_consumers::SinkError> {
        self.0.extend_from_slice(rejected);
        Ok(())
    }

    /// Collects them too; the letters name partition 0 of topic `t`, the
    /// batch index as offset.
    fn letters(
        &mut self,
        rejected: &[vigie_consumers::Rejected],
    ) -> Vec<vigie_consumers::OutboxLetter> {
        self.0.extend_from_slice(rejected);
        rejected
            .iter()
            .map(|r| vigie_consumers::OutboxLetter {
                origin: ("t".to_owned(), 0, r.index as i64),
                letter: vigie_kafka::dlq::Letter {
                    topic: "t.dlq".into(),
                    key: None,
                    value: r.error.clone().into_bytes(),
                    headers: vec![("vigie.dlq.reason".into(), r.reason.into())],
                    timestamp_ms: None,
                },
                stored_ms: 0,
            })
            .collect()
    }
}
