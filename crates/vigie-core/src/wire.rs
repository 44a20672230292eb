//! Serde helpers shared by the envelope and the payload types.
//!
//! JSON Schema and serde disagree on a few points by default: a schema
//! `integer` admits `3.0`, serde's integers do not; chrono parses dates and
//! timestamps more leniently than the schema patterns allow; serde treats a
//! missing `Option` field and an explicit `null` alike. These helpers close
//! those gaps so that a Rust type accepts exactly what its schema accepts.

use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::de::{self, Deserialize, Deserializer, Unexpected};
use serde::ser::Serializer;

/// Largest integer a JSON double holds exactly; the schemas bound counts to
/// it so that consumers in any language read the same number we wrote.
pub(crate) const SAFE_INT: i64 = 9_007_199_254_740_991;

struct IntVisitor {
    min: i64,
    max: i64,
}

impl IntVisitor {
    fn check<E: de::Error>(&self, value: i64, unexpected: Unexpected<'_>) -> Result<i64, E> {
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(E::invalid_value(unexpected, self))
        }
    }
}

impl<'de> de::Visitor<'de> for IntVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer from {} to {}", self.min, self.max)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        self.check(v, Unexpected::Signed(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        match i64::try_from(v) {
            Ok(signed) => self.check(signed, Unexpected::Unsigned(v)),
            Err(_) => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
        }
    }

    // JSON Schema counts `2.0` and `1e3` as integers, so we must too.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // Every bound we use is exactly representable as an f64, so these
        // comparisons and the cast below are exact.
        if v.fract() == 0.0 && v >= self.min as f64 && v <= self.max as f64 {
            Ok(v as i64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

struct NullableIntVisitor(IntVisitor);

impl<'de> de::Visitor<'de> for NullableIntVisitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)?;
        f.write_str(" or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self.0).map(Some)
    }
}

fn int<'de, D: Deserializer<'de>>(d: D, min: i64, max: i64) -> Result<i64, D::Error> {
    d.deserialize_any(IntVisitor { min, max })
}

fn nullable_int<'de, D: Deserializer<'de>>(
    d: D,
    min: i64,
    max: i64,
) -> Result<Option<i64>, D::Error> {
    d.deserialize_option(NullableIntVisitor(IntVisitor { min, max }))
}

/// An `integer` in `[-2^31, 2^31)`, or `null`.
pub(crate) fn nullable_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    let value = nullable_int(d, i32::MIN.into(), i32::MAX.into())?;
    // The range check above makes the conversion infallible.
    Ok(value.and_then(|v| i32::try_from(v).ok()))
}

/// A signed count bounded by [`SAFE_INT`], or `null`.
pub(crate) fn nullable_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    nullable_int(d, -SAFE_INT, SAFE_INT)
}

/// A non-negative count bounded by [`SAFE_INT`].
pub(crate) fn cumulative_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = int(d, 0, SAFE_INT)?;
    Ok(value.unsigned_abs())
}

/// A schema version: an `integer` from 1 to `u32::MAX`.
pub(crate) fn schema_version<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let value = int(d, 1, u32::MAX.into())?;
    u32::try_from(value).map_err(|_| de::Error::custom("schema_version out of range"))
}

/// An optional field that, when present, must not be `null`; serde alone
/// would let `null` through as `None`, which the schema rejects.
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A string with at least one character.
pub(crate) fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        Err(de::Error::invalid_length(0, &"a non-empty string"))
    } else {
        Ok(s)
    }
}

/// An array of non-empty strings.
pub(crate) fn non_empty_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    if items.iter().any(String::is_empty) {
        Err(de::Error::invalid_value(
            Unexpected::Str(""),
            &"a non-empty string",
        ))
    } else {
        Ok(items)
    }
}

fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0, |acc, b| acc * 10 + u32::from(b - b'0')),
    )
}

fn two_digits_at_most(bytes: &[u8], max: u32) -> Option<u32> {
    (bytes.len() == 2)
        .then(|| digits(bytes))
        .flatten()
        .filter(|v| *v <= max)
}

/// Parses `YYYY-MM-DD` with exactly four year digits, as the schema pattern
/// and the `date` format require; chrono's `%Y-%m-%d` would also take
/// signed, longer or unpadded fields.
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = two_digits_at_most(&b[5..7], 12)?;
    let day = two_digits_at_most(&b[8..10], 31)?;
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)
}

/// Formats a date the way [`parse_date`] reads it.
pub(crate) fn format_date(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// `t` as chrono's `to_rfc3339_opts(SecondsFormat::Micros, true)` writes
/// it (`2024-03-01T12:00:00.000000Z`, the fraction truncated), for the
/// years 0 to 9999 and no leap second; `None` otherwise. Every event
/// carries two timestamps: this writes them without chrono's formatting
/// machinery or an allocation.
fn timestamp_text(t: &DateTime<Utc>) -> Option<[u8; 27]> {
    use chrono::{Datelike, Timelike};
    // The naive value once: each accessor of a `DateTime` converts again.
    let t = t.naive_utc();
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = t.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let fields = [
        (0, 4, year),
        (5, 2, t.month()),
        (8, 2, t.day()),
        (11, 2, t.hour()),
        (14, 2, t.minute()),
        (17, 2, t.second()),
        (20, 6, nanos / 1000),
    ];
    for (at, width, value) in fields {
        write_digits(&mut text[at..at + width], value);
    }
    Some(text)
}

/// Writes `value` in decimal into all of `digits`, right-aligned and
/// zero-padded (the highest digits are dropped if it does not fit).
pub(crate) fn write_digits(digits: &mut [u8], mut value: u32) {
    for digit in digits.iter_mut().rev() {
        // A digit: `value % 10` is below 10.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Appends `t` as a JSON string, as [`timestamp::serialize`] writes it.
pub(crate) fn write_timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    match timestamp_text(t) {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(&text);
            out.push(b'"');
        }
        None => write_str(out, &t.to_rfc3339_opts(SecondsFormat::Micros, true)),
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it: most
/// strings need no escape and are copied as they are.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Appends `"key":` to an object being written: `key` is a field name,
/// which needs no escape. `first` leaves out the comma.
pub(crate) fn write_key(out: &mut Vec<u8>, key: &str, first: bool) {
    if !first {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Whether `s` has the shape of the envelope's timestamp pattern: RFC 3339
/// with a `T` separator, no leap second and an optional fraction. chrono
/// alone would also accept a space separator and `:60`.
fn is_timestamp_shape(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || s.get(..10).and_then(parse_date).is_none() || !matches!(b[10], b'T' | b't') {
        return false;
    }
    let clock = two_digits_at_most(&b[11..13], 23).is_some()
        && b[13] == b':'
        && two_digits_at_most(&b[14..16], 59).is_some()
        && b[16] == b':'
        && two_digits_at_most(&b[17..19], 59).is_some();
    if !clock {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return false;
        }
        rest = &fraction[len..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            two_digits_at_most(&[*h1, *h2], 23).is_some()
                && two_digits_at_most(&[*m1, *m2], 59).is_some()
        }
        _ => false,
    }
}

/// Serde for an envelope timestamp: written as RFC 3339 in UTC with a `Z`
/// and microseconds, read from any offset the schema pattern allows.
pub(crate) mod timestamp {
    use super::{DateTime, Deserialize, Deserializer, SecondsFormat, Serializer, Utc, de};

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        match super::timestamp_text(t) {
            Some(text) => s.serialize_str(std::str::from_utf8(&text).unwrap_or_default()),
            None => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true)),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        if !super::is_timestamp_shape(&s) {
            return Err(de::Error::invalid_value(
                de::Unexpected::Str(&s),
                &"an RFC 3339 timestamp such as 2024-03-01T12:00:00Z",
            ));
        }
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| de::Error::custom(format!("invalid timestamp {s:?}: {e}")))
    }
}

/// Serde for an optional envelope timestamp, left out when absent (never
/// written `null`, which the schema refuses).
pub(crate) mod optional_timestamp {
    use super::{DateTime, Deserializer, Serializer, Utc};

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::timestamp::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        super::timestamp::deserialize(d).map(Some)
    }
}

/// Serde for a calendar date written `YYYY-MM-DD`.
pub(crate) mod date {
    use super::{Deserialize, Deserializer, NaiveDate, Serializer, de};

    pub(crate) fn serialize<S: Serializer>(date: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_date(*date))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_date(&s).ok_or_else(|| {
            de::Error::invalid_value(de::Unexpected::Str(&s), &"a date written YYYY-MM-DD")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_need_the_exact_shape() {
        assert_eq!(
            parse_date("2024-02-29"),
            NaiveDate::from_ymd_opt(2024, 2, 29)
        );
        for bad in [
            "2023-02-29",
            "2024-2-01",
            "+2024-02-01",
            "2024-02-01 ",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "2024/01/01",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        use chrono::TimeZone;
        // Every field at its bounds, a truncated fraction, and a walk
        // across four years in 100,000 uneven steps of about 21 minutes.
        let mut times = vec![
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
                + chrono::Duration::nanoseconds(999_999_999),
            Utc.with_ymd_and_hms(2024, 2, 29, 12, 0, 0).unwrap()
                + chrono::Duration::nanoseconds(1_999),
        ];
        let mut t = Utc.with_ymd_and_hms(1800, 1, 1, 0, 0, 0).unwrap();
        for _ in 0..100_000 {
            t += chrono::Duration::nanoseconds(126_230_400_000_000_000 / 100_000 + 7_919);
            times.push(t);
        }
        for t in times {
            let fast = timestamp_text(&t).expect("in range");
            let chrono = t.to_rfc3339_opts(SecondsFormat::Micros, true);
            assert_eq!(std::str::from_utf8(&fast).unwrap(), chrono);
            assert!(is_timestamp_shape(&chrono), "{chrono}");
        }
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        assert!(timestamp_text(&far).is_none(), "chrono writes +10000");
        let before = Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap();
        assert!(timestamp_text(&before).is_none());
    }

    #[test]
    fn timestamps_follow_the_schema_pattern() {
        for good in [
            "2024-03-01T12:00:00Z",
            "2024-03-01t12:00:00.123456z",
            "2024-03-01T12:00:00+05:30",
            "2024-03-01T23:59:59.1-00:00",
        ] {
            assert!(is_timestamp_shape(good), "{good:?}");
        }
        for bad in [
            "2024-03-01 12:00:00Z",
            "2024-03-01T12:00:60Z",
            "2024-03-01T24:00:00Z",
            "2024-03-01T12:00:00",
            "2024-03-01T12:00:00.Z",
            "2024-03-01T12:00:00+0530",
            "2024-03-01T12:00Z",
        ] {
            assert!(!is_timestamp_shape(bad), "{bad:?}");
        }
    }
}
