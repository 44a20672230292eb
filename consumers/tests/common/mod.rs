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

/// A PEM file in `dir` holding a CA of its own, one that signed no
/// server's certificate: what a client trusting it must refuse.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) fn unrelated_ca(dir: &std::path::Path) -> std::path::PathBuf {
    let ca = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let path = dir.join("other-ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    path
}

/// No partition: the sink is called directly.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) static NONE_ASSIGNED: std::collections::BTreeSet<vigie_kafka::consumer::TopicPartition> =
    std::collections::BTreeSet::new();

/// A batch context without offsets (the sink is called directly).
pub(crate) fn no_offsets() -> vigie_consumers::BatchContext<'static> {
    static OFFSETS: std::collections::BTreeMap<vigie_kafka::consumer::TopicPartition, i64> =
        std::collections::BTreeMap::new();
    vigie_consumers::BatchContext {
        group: "g",
        next_offsets: &OFFSETS,
        assigned: &NONE_ASSIGNED,
        dead_letters: &[],
        group_metadata: None,
    }
}
