//! An owned copy of a consumed Kafka record, detached from the client.

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};

/// A consumed record with its coordinates, key, headers and bytes unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic it was read from.
    pub topic: String,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The record key, if any.
    pub key: Option<Vec<u8>>,
    /// The record value, if any (a tombstone has none).
    pub payload: Option<Vec<u8>>,
    /// Headers in their original order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Record timestamp in milliseconds since the epoch, if the broker kept one.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// Copies a message out of the client's buffers.
    pub fn from_message(m: &BorrowedMessage<'_>) -> Self {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
        }
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Size of the value in bytes (0 for a tombstone).
    pub fn payload_len(&self) -> usize {
        self.payload.as_ref().map_or(0, Vec::len)
    }
}
