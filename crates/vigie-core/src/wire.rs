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
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
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
