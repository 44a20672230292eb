//! The checked text types: codes, identifiers, hashes and URLs that only
//! hold values matching their schema pattern, the case month (`YYYY-MM`),
//! and [`InvalidValue`], the error for a string that does not fit.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use crate::wire;

/// A string that does not fit the pattern its field requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: expected {expected}")]
pub struct InvalidValue {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl InvalidValue {
    pub(super) fn new(what: &'static str, value: &str, expected: &'static str) -> Self {
        // The offending value ends up in logs and dead-letter headers; a
        // bounded excerpt is enough to recognise it.
        let value = value.chars().take(80).collect();
        Self {
            what,
            value,
            expected,
        }
    }

    /// Name of the kind of value that was expected, e.g. `country code`.
    pub fn what(&self) -> &'static str {
        self.what
    }
}

/// Defines a string newtype that only holds values passing `$check`. Up to
/// 23 bytes (codes, row ids) it is kept inline, not on the heap: a case
/// carries several.
macro_rules! checked_text {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal, $expected:literal, $check:expr
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(SmolStr);

        impl $name {
            /// The value as written on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;

            fn try_from(s: String) -> Result<Self, InvalidValue> {
                s.parse()
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;

            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                let check: fn(&str) -> bool = $check;
                if check(s) {
                    Ok(Self(SmolStr::new(s)))
                } else {
                    Err(InvalidValue::new($what, s, $expected))
                }
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0.into()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn all_digits(s: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn two_upper_letters(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// Whether `s` is a URI by the same rules the schema registry applies to the
/// `uri` format, so that the type and the registry cannot disagree.
fn is_uri(s: &str) -> bool {
    static URI: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    let validator = URI.get_or_init(|| {
        jsonschema::options()
            .should_validate_formats(true)
            .build(&serde_json::json!({ "type": "string", "format": "uri" }))
            .ok()
    });
    validator
        .as_ref()
        .is_some_and(|v| v.is_valid(&serde_json::Value::String(s.to_owned())))
}

checked_text! {
    /// Socrata row identifier (`:id`) of a CDC case row; never empty.
    RowId, "row id", "a non-empty string", |s| !s.is_empty()
}

checked_text! {
    /// Two-letter USPS state abbreviation, e.g. `CA`.
    StateCode, "state code", "two upper-case letters", two_upper_letters
}

checked_text! {
    /// State FIPS code as published: one or two digits.
    StateFips, "state FIPS code", "one or two digits", |s| all_digits(s, 1..=2)
}

checked_text! {
    /// County FIPS code as published: four or five digits.
    CountyFips, "county FIPS code", "four or five digits", |s| all_digits(s, 4..=5)
}

checked_text! {
    /// A country code as WHO publishes it: ISO 3166-1 alpha-2 (user-assigned
    /// codes such as `XK` included), or, for an entity that is not a country
    /// (`XXX`: international commercial vessels), one of the alpha-3 codes
    /// ISO 3166 leaves to users from `XAA` to `XZZ`.
    CountryCode, "country code",
    "two upper-case letters, or X and two upper-case letters (WHO's codes of entities that are not countries)",
    |s| two_upper_letters(s) || s.strip_prefix('X').is_some_and(two_upper_letters)
}

checked_text! {
    /// SHA-256 digest in lower-case hex.
    ContentHash, "content hash", "64 lower-case hex digits", |s| {
        s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl ContentHash {
    /// SHA-256 (lower-case hex) of an article's normalised text: title and
    /// summary with every run of whitespace made a single space and the ends
    /// trimmed, joined by a line feed. Whitespace-only changes therefore do
    /// not count as revisions; any other change does. The simulator and the
    /// scraper both hash with this, so their hashes agree.
    pub fn of_article(title: &str, summary: &str) -> Self {
        use sha2::{Digest, Sha256};
        fn normalised(hasher: &mut Sha256, text: &str) {
            for (i, word) in text.split_whitespace().enumerate() {
                if i > 0 {
                    hasher.update(b" ");
                }
                hasher.update(word.as_bytes());
            }
        }
        let mut hasher = Sha256::new();
        normalised(&mut hasher, title);
        hasher.update(b"\n");
        normalised(&mut hasher, summary);
        let mut hex = String::with_capacity(64);
        for byte in hasher.finalize() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
        }
        Self(hex.into())
    }
}

checked_text! {
    /// Absolute `http` or `https` URI.
    HttpUrl, "URL", "an absolute http(s) URI", |s| {
        (s.starts_with("http://") || s.starts_with("https://")) && is_uri(s)
    }
}

/// A calendar month written `YYYY-MM`, as the CDC data set reports cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct CaseMonth {
    // Field order gives chronological `Ord`.
    year: u16,
    month: u8,
}

impl CaseMonth {
    /// The month `month` (1 to 12) of `year` (0 to 9999).
    ///
    /// # Errors
    ///
    /// If either is out of range.
    pub fn new(year: u16, month: u8) -> Result<Self, InvalidValue> {
        if year <= 9999 && (1..=12).contains(&month) {
            Ok(Self { year, month })
        } else {
            Err(InvalidValue::new(
                "case month",
                &format!("{year}-{month}"),
                "a year from 0 to 9999 and a month from 1 to 12",
            ))
        }
    }

    /// `YYYY-MM`, on the stack: every case event carries one.
    pub(super) fn text(self) -> [u8; 7] {
        let mut text = *b"0000-00";
        wire::write_digits(&mut text[..4], self.year.into());
        wire::write_digits(&mut text[5..], self.month.into());
        text
    }

    /// The year.
    pub fn year(self) -> u16 {
        self.year
    }

    /// The month, from 1 to 12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// The first day of the month.
    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year.into(), self.month.into(), 1).unwrap_or(NaiveDate::MIN)
    }
}

impl TryFrom<String> for CaseMonth {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, InvalidValue> {
        s.parse()
    }
}

impl FromStr for CaseMonth {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let invalid = || InvalidValue::new("case month", s, "YYYY-MM with a month from 01 to 12");
        let b = s.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !all_digits(&s[..4], 4..=4)
            || !all_digits(&s[5..], 2..=2)
        {
            return Err(invalid());
        }
        let year = s[..4].parse().map_err(|_| invalid())?;
        let month = s[5..].parse().map_err(|_| invalid())?;
        Self::new(year, month).map_err(|_| invalid())
    }
}

impl fmt::Display for CaseMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.text()).unwrap_or_default())
    }
}

impl From<CaseMonth> for String {
    fn from(value: CaseMonth) -> String {
        value.to_string()
    }
}

impl Serialize for CaseMonth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(&self.text()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_month_round_trips() {
        let month: CaseMonth = "2021-03".parse().unwrap();
        assert_eq!((month.year(), month.month()), (2021, 3));
        assert_eq!(month.to_string(), "2021-03");
        assert_eq!(
            month.first_day(),
            NaiveDate::from_ymd_opt(2021, 3, 1).unwrap()
        );
        for bad in [
            "2021-13",
            "2021-00",
            "2021-3",
            "21-03",
            "2021/03",
            "2021-03-01",
            "+202-03",
        ] {
            assert!(bad.parse::<CaseMonth>().is_err(), "{bad:?}");
        }
        for (year, month) in [(0, 1), (7, 9), (999, 10), (2021, 3), (9999, 12)] {
            let m = CaseMonth::new(year, month).unwrap();
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{m}\""));
            assert_eq!(serde_json::from_str::<CaseMonth>(&json).unwrap(), m);
        }
    }

    #[test]
    fn urls_need_an_http_scheme_and_uri_syntax() {
        assert!(
            "https://www.who.int/emergencies/disease-outbreak-news/item/2024-DON500"
                .parse::<HttpUrl>()
                .is_ok()
        );
        for bad in [
            "ftp://who.int/x",
            "HTTPS://who.int/",
            "https://who int/",
            "who.int",
        ] {
            assert!(bad.parse::<HttpUrl>().is_err(), "{bad:?}");
        }
    }
}
