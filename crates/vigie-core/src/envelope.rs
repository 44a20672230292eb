//! The envelope every Vigie event travels in, and the deterministic event id.
//!
//! Producers build an [`Envelope`] around a typed [`Payload`]; consumers get
//! an `Envelope<serde_json::Value>` back from the schema registry and turn it
//! into a typed one with [`Envelope::into_payload`].

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::wire;

/// Namespace under which every event id is a UUID v5.
///
/// Changing it changes every event id Vigie has ever produced, which defeats
/// de-duplication of re-polled records downstream: never change it.
pub const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x12cd5e74_f029_4813_9b5f_a36c42686bec);

/// Separates the parts of the name hashed by [`event_id`].
const UNIT_SEPARATOR: char = '\u{1f}';

/// Derives the id of the event for one upstream record.
///
/// The id is a UUID v5 under [`EVENT_NAMESPACE`] over `source` followed by
/// each part of the record's natural key. Each of these strings is written as
/// its length in bytes (decimal), a `:`, then the string itself, and they are
/// joined with the unit separator `U+001F`. The length prefix makes the
/// encoding unambiguous: `["a\u{1f}b"]` and `["a", "b"]`, or `[]` and `[""]`,
/// give different ids even though a plain join would not tell them apart.
///
/// The same record polled twice therefore gets the same id, which is what
/// lets consumers drop duplicates. Changing this encoding or the namespace
/// changes every id: treat both as frozen.
#[must_use]
pub fn event_id<S: AsRef<str>>(source: &str, natural_key: &[S]) -> Uuid {
    use std::fmt::Write as _;

    let parts = || std::iter::once(source).chain(natural_key.iter().map(AsRef::as_ref));
    // Every part with up to 20 bytes of length prefix and separator: one
    // allocation per event.
    let mut name = String::with_capacity(parts().map(|p| p.len() + 20).sum());
    for (i, part) in parts().enumerate() {
        if i > 0 {
            name.push(UNIT_SEPARATOR);
        }
        // Writing to a String cannot fail.
        let _ = write!(name, "{}:{part}", part.len());
    }
    Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes())
}

/// A typed event payload: one record of one data set, described by one
/// version of one JSON Schema.
pub trait Payload: Serialize + DeserializeOwned {
    /// Dotted schema name written to the envelope's `schema`, e.g. `health.case`.
    const SCHEMA: &'static str;
    /// Schema version written to the envelope's `schema_version`.
    const VERSION: u32;

    /// The parts of the key that identify the upstream record; it feeds the
    /// event id, so it must not depend on anything that changes on re-poll.
    fn natural_key(&self) -> Vec<String>;

    /// When the observation happened, for the envelope's `occurred_at`.
    fn occurred_at(&self) -> DateTime<Utc>;

    /// The Kafka message key: records sharing it keep their relative order.
    fn partition_key(&self) -> String;

    /// Appends the payload's JSON to `out`: by default serde_json's. A
    /// payload produced at high rates overrides it with a writer of the
    /// very same bytes that skips serde's per-field work (see
    /// [`Envelope::encode`]).
    ///
    /// # Errors
    ///
    /// Those of the payload's `Serialize` implementation.
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        serde_json::to_writer(out, self)
    }

    /// The id of this record's event from `source`: [`event_id`] over
    /// [`Payload::natural_key`]. A payload produced at high rates overrides
    /// it to hash its key without collecting it into strings first.
    fn event_id(&self, source: &str) -> Uuid {
        event_id(source, &self.natural_key())
    }
}

/// The wrapper around every event on a Vigie topic.
///
/// Its JSON form is described by `envelope.v1.json`; `data` is described by
/// the schema named in `schema` and `schema_version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<D = serde_json::Value> {
    /// Deterministic event id, see [`event_id`].
    #[serde(deserialize_with = "uuid_text")]
    pub id: Uuid,
    /// Dotted name of the payload schema, e.g. `health.case`.
    #[serde(deserialize_with = "schema_name")]
    pub schema: String,
    /// Version of the payload schema.
    #[serde(deserialize_with = "wire::schema_version")]
    pub schema_version: u32,
    /// Short name of the upstream system, lower-case with hyphens.
    #[serde(deserialize_with = "source_name")]
    pub source: String,
    /// When the observation happened.
    #[serde(with = "wire::timestamp")]
    pub occurred_at: DateTime<Utc>,
    /// When Vigie fetched the record.
    #[serde(with = "wire::timestamp")]
    pub ingested_at: DateTime<Utc>,
    /// When the upstream last changed the record, by its own account
    /// (SODA's `:updated_at`): the record's version. Absent when the
    /// upstream keeps none. For a score, the version of the case scored.
    /// Sinks keep, per id, the version with the latest
    /// `upstream_updated_at`, then the latest `ingested_at`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "wire::optional_timestamp"
    )]
    pub upstream_updated_at: Option<DateTime<Utc>>,
    /// The payload.
    pub data: D,
}

impl<D: Payload> Envelope<D> {
    /// Wraps `data`, deriving the id, schema, version and `occurred_at` from it.
    ///
    /// `source` should match `^[a-z][a-z0-9-]*$`; the schema registry rejects
    /// envelopes whose source does not.
    pub fn new(source: &str, data: D, ingested_at: DateTime<Utc>) -> Self {
        Self {
            id: data.event_id(source),
            schema: D::SCHEMA.to_owned(),
            schema_version: D::VERSION,
            source: source.to_owned(),
            occurred_at: data.occurred_at(),
            ingested_at,
            upstream_updated_at: None,
            data,
        }
    }

    /// The same envelope, carrying the upstream's version of the record.
    #[must_use]
    pub fn with_upstream_updated_at(mut self, at: DateTime<Utc>) -> Self {
        self.upstream_updated_at = Some(at);
        self
    }

    /// The Kafka message key for this event.
    pub fn partition_key(&self) -> String {
        self.data.partition_key()
    }

    /// The bytes of [`Envelope::to_json_bytes`], written by hand around
    /// [`Payload::write_json`]: what producers send, once per event.
    ///
    /// # Errors
    ///
    /// Those of the payload's writer.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        EnvelopeRef {
            id: self.id,
            schema: &self.schema,
            schema_version: self.schema_version,
            source: &self.source,
            occurred_at: self.occurred_at,
            ingested_at: self.ingested_at,
            upstream_updated_at: self.upstream_updated_at,
            data: &self.data,
        }
        .encode()
    }
}

/// The bytes of `Envelope::new(source, data, ingested_at).encode()`, without
/// building the envelope: no copy of the schema, the source or the data.
///
/// # Errors
///
/// Those of the payload's writer.
pub fn encode_event<D: Payload>(
    source: &str,
    data: &D,
    ingested_at: DateTime<Utc>,
) -> Result<Vec<u8>, serde_json::Error> {
    encode_versioned_event(source, data, ingested_at, None)
}

/// [`encode_event`] with the upstream's version of the record
/// ([`Envelope::upstream_updated_at`]), when it has one.
///
/// # Errors
///
/// Those of the payload's writer.
pub fn encode_versioned_event<D: Payload>(
    source: &str,
    data: &D,
    ingested_at: DateTime<Utc>,
    upstream_updated_at: Option<DateTime<Utc>>,
) -> Result<Vec<u8>, serde_json::Error> {
    EnvelopeRef {
        id: data.event_id(source),
        schema: D::SCHEMA,
        schema_version: D::VERSION,
        source,
        occurred_at: data.occurred_at(),
        ingested_at,
        upstream_updated_at,
        data,
    }
    .encode()
}

/// An envelope's fields, borrowed, for [`Envelope::encode`] and [`encode_event`].
struct EnvelopeRef<'a, D> {
    id: Uuid,
    schema: &'a str,
    schema_version: u32,
    source: &'a str,
    occurred_at: DateTime<Utc>,
    ingested_at: DateTime<Utc>,
    upstream_updated_at: Option<DateTime<Utc>>,
    data: &'a D,
}

impl<D: Payload> EnvelopeRef<'_, D> {
    fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"id\":\"");
        let mut id = Uuid::encode_buffer();
        out.extend_from_slice(self.id.hyphenated().encode_lower(&mut id).as_bytes());
        out.push(b'"');
        wire::write_key(&mut out, "schema", false);
        wire::write_str(&mut out, self.schema);
        wire::write_key(&mut out, "schema_version", false);
        out.extend_from_slice(itoa::Buffer::new().format(self.schema_version).as_bytes());
        wire::write_key(&mut out, "source", false);
        wire::write_str(&mut out, self.source);
        wire::write_key(&mut out, "occurred_at", false);
        wire::write_timestamp(&mut out, &self.occurred_at);
        wire::write_key(&mut out, "ingested_at", false);
        wire::write_timestamp(&mut out, &self.ingested_at);
        if let Some(at) = &self.upstream_updated_at {
            wire::write_key(&mut out, "upstream_updated_at", false);
            wire::write_timestamp(&mut out, at);
        }
        wire::write_key(&mut out, "data", false);
        self.data.write_json(&mut out)?;
        out.push(b'}');
        Ok(out)
    }
}

impl<D: Serialize> Envelope<D> {
    /// Serialises the envelope to the JSON bytes written to Kafka.
    ///
    /// # Errors
    ///
    /// Fails only if the payload's `Serialize` implementation does.
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        // A case envelope is about 700 bytes: one allocation instead of
        // serde_json's growth from 128 bytes.
        let mut out = Vec::with_capacity(1024);
        serde_json::to_writer(&mut out, self)?;
        Ok(out)
    }
}

impl Envelope<serde_json::Value> {
    /// Turns a generic envelope into a typed one.
    ///
    /// # Errors
    ///
    /// [`PayloadError::WrongSchema`] if the envelope does not carry `D`'s
    /// schema and version, [`PayloadError::Data`] if `data` does not
    /// deserialise into `D`.
    pub fn into_payload<D: Payload>(self) -> Result<Envelope<D>, PayloadError> {
        if self.schema != D::SCHEMA || self.schema_version != D::VERSION {
            return Err(PayloadError::WrongSchema {
                expected: D::SCHEMA,
                expected_version: D::VERSION,
                found: self.schema,
                found_version: self.schema_version,
            });
        }
        let data = serde_json::from_value(self.data).map_err(PayloadError::Data)?;
        Ok(Envelope {
            id: self.id,
            schema: self.schema,
            schema_version: self.schema_version,
            source: self.source,
            occurred_at: self.occurred_at,
            ingested_at: self.ingested_at,
            upstream_updated_at: self.upstream_updated_at,
            data,
        })
    }
}

/// Why a generic envelope could not be turned into a typed one.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The envelope carries another schema or version than the one asked for.
    #[error("expected schema {expected} v{expected_version}, found {found} v{found_version}")]
    WrongSchema {
        /// Schema of the requested payload type.
        expected: &'static str,
        /// Version of the requested payload type.
        expected_version: u32,
        /// Schema named by the envelope.
        found: String,
        /// Version named by the envelope.
        found_version: u32,
    },
    /// `data` does not fit the payload type.
    #[error("data does not match the payload type: {0}")]
    Data(#[source] serde_json::Error),
}

/// Whether `s` matches `^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`, or with
/// `min_dots == 0` the same with the dotted suffix optional.
pub(crate) fn is_dotted_name(s: &str, min_dots: usize) -> bool {
    let mut segments = 0;
    let valid = s.split('.').all(|segment| {
        segments += 1;
        let mut chars = segment.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    });
    valid && segments > min_dots
}

/// Whether `s` matches `^[a-z][a-z0-9-]*$`.
fn is_source_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn checked_string<'de, D: Deserializer<'de>>(
    d: D,
    valid: impl FnOnce(&str) -> bool,
    expected: &'static str,
) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if valid(&s) {
        Ok(s)
    } else {
        Err(de::Error::invalid_value(de::Unexpected::Str(&s), &expected))
    }
}

fn schema_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_string(
        d,
        |s| is_dotted_name(s, 1),
        "a dotted lower-case schema name such as health.case",
    )
}

fn source_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_string(
        d,
        is_source_name,
        "a lower-case source name such as who-covid",
    )
}

/// The schema only admits the lower-case hyphenated form, which is also how
/// `Uuid` serialises; `Uuid`'s own parser would take braces, URNs and
/// upper case too.
pub(crate) fn uuid_text<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
    let s = String::deserialize(d)?;
    let hyphenated = s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        });
    if !hyphenated {
        return Err(de::Error::invalid_value(
            de::Unexpected::Str(&s),
            &"a lower-case hyphenated UUID",
        ));
    }
    Uuid::parse_str(&s).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_frozen() {
        assert_eq!(
            EVENT_NAMESPACE.to_string(),
            "12cd5e74-f029-4813-9b5f-a36c42686bec"
        );
    }

    #[test]
    fn dotted_names() {
        assert!(is_dotted_name("health.case", 1));
        assert!(is_dotted_name("health.country_day2.x", 1));
        assert!(is_dotted_name("envelope", 0));
        for bad in [
            "envelope",
            "Health.case",
            "health.",
            ".case",
            "health..case",
            "health.1x",
        ] {
            assert!(!is_dotted_name(bad, 1), "{bad:?}");
        }
    }

    #[test]
    fn source_names() {
        assert!(is_source_name("cdc-case-surveillance"));
        assert!(is_source_name("who2"));
        for bad in ["", "Who", "2who", "who_covid", "who.covid"] {
            assert!(!is_source_name(bad), "{bad:?}");
        }
    }
}
