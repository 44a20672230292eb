//! The raw producer: NDJSON lines, each `value` or `key<TAB>value` (the
//! format `kcat -K '\t'` reads), published in order with the shared
//! idempotent producer. With validation on, every value is checked against
//! its schema first and the first invalid line stops the run: the lines
//! before it are sent and acknowledged, nothing after it is.

use std::io::BufRead;

use vigie_core::SchemaRegistry;
use vigie_kafka::{EventProducer, KafkaError, OutRecord};

/// Sample events generated per step of `vigie produce --sample`.
pub const CHUNK: usize = 20_000;

/// Why a raw produce run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// Reading the input failed.
    #[error("cannot read input: {0}")]
    Io(#[from] std::io::Error),
    /// The broker did not acknowledge a record.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A line is not a valid event.
    #[error("invalid input at line {line} (the {sent} records before it were sent): {reason}")]
    Invalid {
        /// 1-based line number.
        line: u64,
        /// Records sent and acknowledged before it.
        sent: u64,
        /// What was wrong.
        reason: String,
    },
}

/// Splits `key<TAB>value` (or a bare value) without copying.
pub fn split_line(line: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match line.iter().position(|b| *b == b'\t') {
        Some(i) => (Some(&line[..i]), &line[i + 1..]),
        None => (None, line),
    }
}

/// Publishes every non-empty line of `input` to `topic`; returns the number
/// of records acknowledged.
pub async fn produce_lines(
    producer: &EventProducer,
    topic: &str,
    mut input: impl BufRead,
    schemas: Option<&SchemaRegistry>,
) -> Result<u64, RawError> {
    let mut pipeline = producer.pipeline(false);
    let mut line_no = 0u64;
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        if buf.is_empty() {
            continue;
        }
        let (key, payload) = split_line(&buf);
        if let Some(Err(e)) = schemas.map(|reg| reg.validate(payload)) {
            // Everything before the bad line is delivered before we stop.
            let (sent, _) = pipeline.finish().await?;
            return Err(RawError::Invalid {
                line: line_no,
                sent,
                reason: e.to_string(),
            });
        }
        pipeline
            .push(OutRecord {
                partition: None,
                topic,
                key,
                payload: Some(payload),
                headers: &[],
                timestamp_ms: None,
            })
            .await?;
    }
    Ok(pipeline.finish().await?.0)
}

#[cfg(test)]
mod tests {
    use super::split_line;

    #[test]
    fn splits_on_the_first_tab_only() {
        assert_eq!(
            split_line(b"NY\t{\"a\":\"b\\tc\"}"),
            (Some(&b"NY"[..]), &b"{\"a\":\"b\\tc\"}"[..])
        );
        assert_eq!(split_line(b"{}"), (None, &b"{}"[..]));
        assert_eq!(split_line(b"\t{}"), (Some(&b""[..]), &b"{}"[..]));
    }
}
