//! Typed events: a validated message decoded straight into its Rust type.
//!
//! The Rust types accept exactly what their JSON Schemas accept (the sample
//! tests hold them to it), so for a schema with a Rust type, decoding *is*
//! validation, and much cheaper than walking a JSON tree with a schema
//! validator. Only a message that fails to decode goes through the JSON
//! Schema validator, for an error that names the failing field.

use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::envelope::{Envelope, Payload};
use crate::health::{Case, CaseScore, CountryDay, OutbreakNews};
use crate::registry::{SchemaRegistry, ValidationError, Violation};

/// A validated event, typed when Vigie has a Rust type for its schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `health.case` v1.
    Case(Envelope<Case>),
    /// `health.country_day` v1.
    CountryDay(Envelope<CountryDay>),
    /// `health.outbreak_news` v1.
    OutbreakNews(Envelope<OutbreakNews>),
    /// `health.case_score` v1.
    CaseScore(Envelope<CaseScore>),
    /// A schema of the registry without a Rust type, validated by its JSON Schema.
    Other(Envelope<Value>),
}

macro_rules! each {
    ($self:ident, $e:ident => $body:expr) => {
        match $self {
            Event::Case($e) => $body,
            Event::CountryDay($e) => $body,
            Event::OutbreakNews($e) => $body,
            Event::CaseScore($e) => $body,
            Event::Other($e) => $body,
        }
    };
}

impl Event {
    /// The envelope id.
    pub fn id(&self) -> Uuid {
        each!(self, e => e.id)
    }

    /// The schema name.
    pub fn schema(&self) -> &str {
        each!(self, e => &e.schema)
    }

    /// The schema version.
    pub fn schema_version(&self) -> u32 {
        each!(self, e => e.schema_version)
    }
}

/// The same envelope around other data.
fn rewrap<D, E>(head: Envelope<D>, data: E) -> Envelope<E> {
    Envelope {
        id: head.id,
        schema: head.schema,
        schema_version: head.schema_version,
        source: head.source,
        occurred_at: head.occurred_at,
        ingested_at: head.ingested_at,
        upstream_updated_at: head.upstream_updated_at,
        data,
    }
}

fn typed<D: Payload>(head: Envelope<Box<RawValue>>) -> Result<Envelope<D>, serde_json::Error> {
    let data: D = serde_json::from_str(head.data.get())?;
    Ok(rewrap(head, data))
}

impl SchemaRegistry {
    /// Validates a raw message and decodes it into its type.
    ///
    /// # Errors
    ///
    /// The same [`ValidationError`] as [`validate`](Self::validate) gives.
    pub fn parse(&self, bytes: &[u8]) -> Result<Event, ValidationError> {
        let fast = serde_json::from_slice::<Envelope<Box<RawValue>>>(bytes).and_then(|head| {
            Ok(match (head.schema.as_str(), head.schema_version) {
                (Case::SCHEMA, Case::VERSION) => Event::Case(typed(head)?),
                (CountryDay::SCHEMA, CountryDay::VERSION) => Event::CountryDay(typed(head)?),
                (OutbreakNews::SCHEMA, OutbreakNews::VERSION) => Event::OutbreakNews(typed(head)?),
                (CaseScore::SCHEMA, CaseScore::VERSION) => Event::CaseScore(typed(head)?),
                _ => {
                    return Ok(Event::Other(rewrap(head, Value::Null)));
                }
            })
        });
        match fast {
            Ok(Event::Other(_)) | Err(_) => {
                // Untyped schema, or invalid: the schema validator decides
                // and, for invalid input, names the failing field.
                let precise = self.validate(bytes)?;
                match fast {
                    Ok(_) => Ok(Event::Other(precise)),
                    // The type refused what the schema accepts: still refused.
                    Err(e) => Err(ValidationError::SchemaViolation {
                        schema: precise.schema,
                        version: precise.schema_version,
                        violations: vec![Violation {
                            pointer: "/data".into(),
                            message: e.to_string(),
                        }],
                        truncated: false,
                    }),
                }
            }
            Ok(event) => Ok(event),
        }
        .and_then(|event| match unstorable(bytes, &event) {
            None => Ok(event),
            Some(violation) => Err(ValidationError::Unstorable {
                schema: event.schema().to_owned(),
                version: event.schema_version(),
                violation,
            }),
        })
    }
}

/// Years a stored date may have: PostgreSQL has no year 0 and ISO 8601
/// text has four digits.
const STORABLE_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// A value of a valid event that no store can keep, if any: a NUL
/// character in any string (JSON can only spell it `\u0000`; no text
/// column holds it), or a date outside [`STORABLE_YEARS`].
fn unstorable(bytes: &[u8], event: &Event) -> Option<Violation> {
    if let Some(at) = nul_escape(bytes) {
        return Some(Violation {
            pointer: String::new(),
            message: format!(
                "a string holds a NUL character (\\u0000 at byte {at}), which no text column can store"
            ),
        });
    }
    let date = |pointer: &str, year: i32, text: &dyn std::fmt::Display| {
        (!STORABLE_YEARS.contains(&year)).then(|| Violation {
            pointer: pointer.to_owned(),
            message: format!(
                "{text} is outside the storable years {}..={}",
                STORABLE_YEARS.start(),
                STORABLE_YEARS.end()
            ),
        })
    };
    use chrono::Datelike;
    let envelope =
        each!(event, e => [("/occurred_at", e.occurred_at), ("/ingested_at", e.ingested_at)]);
    let version = each!(event, e => e.upstream_updated_at).map(|t| ("/upstream_updated_at", t));
    for (pointer, t) in envelope.into_iter().chain(version) {
        if let Some(v) = date(pointer, t.year(), &t.to_rfc3339()) {
            return Some(v);
        }
    }
    match event {
        Event::Case(e) => {
            let m = e.data.case_month;
            date("/data/case_month", m.year().into(), &m)
        }
        Event::CountryDay(e) => {
            let d = e.data.date_reported;
            date("/data/date_reported", d.year(), &d)
        }
        Event::OutbreakNews(e) => {
            let d = e.data.published_on;
            date("/data/published_on", d.year(), &d)
        }
        Event::CaseScore(e) => {
            let t = e.data.scored_at;
            date("/data/scored_at", t.year(), &t.to_rfc3339())
        }
        Event::Other(_) => None,
    }
}

/// The byte position of the first `\u0000` escape in JSON text: a `\`
/// that is not itself escaped, then `u0000`.
fn nul_escape(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memmem::find(&bytes[from..], b"u0000").map(|i| i + from) {
        let backslashes = bytes[..i].iter().rev().take_while(|b| **b == b'\\').count();
        if backslashes % 2 == 1 {
            return Some(i - 1);
        }
        from = i + 1;
    }
    None
}
