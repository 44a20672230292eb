//! PostgreSQL's binary `COPY` format, for the direct load: the server
//! parses no text (no timestamp, date or uuid input functions), and the
//! sink formats none. A value the server refuses (a date out of its range,
//! a NUL in a text) fails the `COPY` as in text format, and the staged
//! path takes over with its row-by-row isolation.
//!
//! A stream is [`HEADER`], tuples, [`TRAILER`]; a tuple is its field
//! count, then each field as its length (`-1`: NULL) and its bytes in the
//! type's binary form.

use chrono::{DateTime, NaiveDate, Utc};

/// Signature, flags (no OIDs) and header extension length (none).
pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// End of the tuples.
pub(crate) const TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// PostgreSQL's epoch for dates and timestamps, 2000-01-01 00:00 UTC, in
/// Unix microseconds.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A tuple being appended to a binary `COPY` stream.
#[derive(Debug)]
pub(crate) struct Tuple<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'b> Tuple<'b> {
    /// Starts a tuple of `fields` fields at the end of `buf`.
    pub(crate) fn new(buf: &'b mut Vec<u8>, fields: i16) -> Self {
        buf.extend_from_slice(&fields.to_be_bytes());
        Self { buf }
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        let len = i32::try_from(bytes.len()).expect("a field under 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    /// NULL.
    pub(crate) fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    /// `text`, `char(n)`: the UTF-8 bytes.
    pub(crate) fn text(&mut self, s: &str) -> &mut Self {
        self.field(s.as_bytes())
    }

    /// An optional text (`None` is NULL).
    pub(crate) fn opt_text(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.text(s),
            None => self.null(),
        }
    }

    /// `uuid`: its 16 bytes.
    pub(crate) fn uuid(&mut self, id: uuid::Uuid) -> &mut Self {
        self.field(id.as_bytes())
    }

    /// `integer`, or NULL.
    pub(crate) fn opt_int4(&mut self, v: Option<i32>) -> &mut Self {
        match v {
            Some(v) => self.field(&v.to_be_bytes()),
            None => self.null(),
        }
    }

    /// `date`: days since 2000-01-01.
    pub(crate) fn date(&mut self, d: NaiveDate) -> &mut Self {
        let epoch = NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date");
        // chrono's dates span less than ±2^31 days.
        let days = (d - epoch).num_days() as i32;
        self.field(&days.to_be_bytes())
    }

    /// `timestamptz`: microseconds since 2000-01-01 00:00 UTC.
    pub(crate) fn timestamptz(&mut self, t: &DateTime<Utc>) -> &mut Self {
        // chrono's range in microseconds fits an i64 with room to spare.
        self.field(&(t.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_length_prefixed_big_endian_from_postgresqls_epoch() {
        let mut buf = Vec::new();
        let t = DateTime::parse_from_rfc3339("2000-01-02T00:00:00.000001Z")
            .unwrap()
            .with_timezone(&Utc);
        Tuple::new(&mut buf, 5)
            .text("é")
            .null()
            .opt_int4(Some(-2))
            .date(NaiveDate::from_ymd_opt(1999, 12, 31).unwrap())
            .timestamptz(&t);
        let expected: Vec<u8> = [
            &5i16.to_be_bytes()[..],
            &2i32.to_be_bytes(),
            "é".as_bytes(),
            &(-1i32).to_be_bytes(),
            &4i32.to_be_bytes(),
            &(-2i32).to_be_bytes(),
            &4i32.to_be_bytes(),
            &(-1i32).to_be_bytes(),
            &8i32.to_be_bytes(),
            &86_400_000_001i64.to_be_bytes(),
        ]
        .concat();
        assert_eq!(buf, expected);
        assert_eq!(HEADER.len(), 19);
        assert_eq!(TRAILER, [0xff, 0xff]);
    }
}
