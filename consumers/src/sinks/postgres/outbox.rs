//! The dead-letter outbox (`dlq_outbox`): the letters of a batch, stored in
//! the transaction of its rows and offsets, published by the runtime after
//! the commit, then deleted.

use std::collections::BTreeSet;

use sqlx::{PgPool, Postgres, Transaction};
use vigie_kafka::consumer::TopicPartition;
use vigie_kafka::dlq::{Letter, Origin};

use super::classify;
use crate::sink::{Outbox, OutboxLetter, SinkError};

/// Stores `letters` of `group` in the transaction; a letter already there
/// (the same record refused again before its letter went out) is kept once.
pub(super) async fn store(
    tx: &mut Transaction<'_, Postgres>,
    group: &str,
    letters: &[OutboxLetter],
) -> Result<(), SinkError> {
    if letters.is_empty() {
        return Ok(());
    }
    let n = letters.len();
    let (mut topics, mut parts, mut offsets) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut dlqs, mut keys, mut values, mut headers, mut times) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for l in letters {
        topics.push(l.origin.0.as_str());
        parts.push(l.origin.1);
        offsets.push(l.origin.2);
        dlqs.push(l.letter.topic.as_str());
        keys.push(l.letter.key.as_deref());
        values.push(l.letter.value.as_slice());
        headers.push(encode_headers(&l.letter.headers));
        times.push(l.letter.timestamp_ms);
    }
    sqlx::query(
        "INSERT INTO dlq_outbox (consumer_group, origin_topic, origin_partition, origin_offset,
            dlq_topic, key, value, headers, timestamp_ms)
         SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::text[], $6::bytea[],
            $7::bytea[], $8::bytea[], $9::bigint[])
         ON CONFLICT DO NOTHING",
    )
    .bind(group)
    .bind(&topics)
    .bind(&parts)
    .bind(&offsets)
    .bind(&dlqs)
    .bind(&keys)
    .bind(&values)
    .bind(&headers)
    .bind(&times)
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Headers as stored: per header, a 4-byte big-endian key length, the key,
/// a 4-byte value length and the value.
fn encode_headers(headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in headers {
        for part in [k.as_bytes(), v.as_slice()] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// The headers of [`encode_headers`]; `None` if `bytes` is not such.
fn decode_headers(mut bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    fn take(bytes: &mut &[u8]) -> Option<Vec<u8>> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        let part = rest.get(..len)?.to_vec();
        *bytes = &rest[len..];
        Some(part)
    }
    let mut headers = Vec::new();
    while !bytes.is_empty() {
        let key = String::from_utf8(take(&mut bytes)?).ok()?;
        headers.push((key, take(&mut bytes)?));
    }
    Some(headers)
}

/// A stored letter's columns.
type Row = (
    String,
    i32,
    i64,
    String,
    Option<Vec<u8>>,
    Vec<u8>,
    Vec<u8>,
    Option<i64>,
    i64,
);

/// The outbox of the sink's database, for the runtime.
pub(super) struct PgOutbox(pub(super) PgPool);

#[async_trait::async_trait]
impl Outbox for PgOutbox {
    async fn pending(
        &self,
        group: &str,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<Vec<OutboxLetter>, SinkError> {
        pending(&self.0, group, partitions).await
    }

    async fn published(&self, group: &str, origins: &[Origin]) -> Result<(), SinkError> {
        delete(&self.0, group, origins).await
    }
}

/// The letters of `group` not yet published, for records of `partitions`,
/// in origin order.
async fn pending(
    pool: &PgPool,
    group: &str,
    partitions: &BTreeSet<TopicPartition>,
) -> Result<Vec<OutboxLetter>, SinkError> {
    let (topics, parts): (Vec<&str>, Vec<i32>) =
        partitions.iter().map(|(t, p)| (t.as_str(), *p)).unzip();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT o.origin_topic, o.origin_partition, o.origin_offset, o.dlq_topic, o.key, o.value,
                o.headers, o.timestamp_ms,
                (extract(epoch FROM o.stored_at) * 1000)::bigint
         FROM dlq_outbox o
         JOIN unnest($2::text[], $3::int[]) AS a(t, p)
           ON o.origin_topic = a.t AND o.origin_partition = a.p
         WHERE o.consumer_group = $1
         ORDER BY 1, 2, 3",
    )
    .bind(group)
    .bind(&topics)
    .bind(&parts)
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    rows.into_iter()
        .map(
            |(t, p, o, topic, key, value, headers, timestamp_ms, stored_ms)| {
                let headers = decode_headers(&headers).ok_or_else(|| {
                    SinkError::Fatal(format!(
                        "dlq_outbox: the headers of the letter of {t}/{p}@{o} are corrupt"
                    ))
                })?;
                Ok(OutboxLetter {
                    origin: (t, p, o),
                    letter: Letter {
                        topic,
                        key,
                        value,
                        headers,
                        timestamp_ms,
                    },
                    stored_ms,
                })
            },
        )
        .collect()
}

/// Deletes the letters of `group` from `origins`: they are published.
async fn delete(pool: &PgPool, group: &str, origins: &[Origin]) -> Result<(), SinkError> {
    let (mut topics, mut parts, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
    for (t, p, o) in origins {
        topics.push(t.as_str());
        parts.push(*p);
        offsets.push(*o);
    }
    sqlx::query(
        "DELETE FROM dlq_outbox o USING unnest($2::text[], $3::int[], $4::bigint[]) AS d(t, p, f)
         WHERE o.consumer_group = $1 AND o.origin_topic = d.t AND o.origin_partition = d.p
           AND o.origin_offset = d.f",
    )
    .bind(group)
    .bind(&topics)
    .bind(&parts)
    .bind(&offsets)
    .execute(pool)
    .await
    .map_err(classify)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_empty_and_binary_values() {
        let headers = vec![
            ("vigie.dlq.reason".to_owned(), b"oversized".to_vec()),
            (String::new(), Vec::new()),
            ("bin".to_owned(), vec![0, 255, 4, 0, 0, 0]),
        ];
        assert_eq!(decode_headers(&encode_headers(&headers)), Some(headers));
        assert_eq!(decode_headers(&[]), Some(vec![]));
        assert_eq!(decode_headers(&[0, 0, 0, 9, b'a']), None, "cut short");
    }
}
