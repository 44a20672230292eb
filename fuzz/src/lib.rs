//! What the fuzz targets assert about one message, and the envelope
//! templates the `payload` target splices its input into (see
//! docs/fuzzing.md).
//!
//! Every consumed record goes through [`SchemaRegistry::parse`]: whatever
//! the bytes, it must return, never panic. Beyond that the targets hold the
//! code to what it promises:
//!
//! - the typed fast path and the JSON Schema agree ("the Rust types accept
//!   exactly what their JSON Schemas accept", vigie-core's event.rs): a
//!   message `parse` accepts, `validate` accepts, and a message `validate`
//!   accepts, `parse` accepts unless it is unstorable or repeats a key in
//!   an object (serde refuses a duplicate field, `serde_json::Value` keeps
//!   the last one: the message is still refused, never let through);
//!   when both refuse, they give the same error;
//! - an event re-encodes to bytes that parse back to the same event, its
//!   timestamps cut to the microseconds the wire form keeps, and
//!   [`Envelope::encode`] writes the very bytes of
//!   [`Envelope::to_json_bytes`];
//! - an envelope `validate` accepts re-encodes to one it accepts again, and
//!   for a schema with a Rust type, [`Envelope::into_payload`] takes it.

pub mod sources;

use std::collections::HashSet;
use std::fmt::{self, Debug};
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use vigie_core::{
    Case, CaseScore, CountryDay, Envelope, Event, OutbreakNews, Payload, SchemaRegistry,
    ValidationErrorKind,
};

/// The embedded registry, built once per fuzzing process.
pub fn registry() -> &'static SchemaRegistry {
    static REGISTRY: OnceLock<SchemaRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| SchemaRegistry::embedded().expect("the embedded schemas compile"))
}

/// The bytes, readable in a failure message.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `t` cut to whole microseconds, as the wire form writes it.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

/// The parse target: [`SchemaRegistry::parse`] against
/// [`SchemaRegistry::validate`], then the round trip of an accepted event.
pub fn check_parse(bytes: &[u8]) {
    let registry = registry();
    let parsed = registry.parse(bytes);
    let checked = registry.validate(bytes);
    match (parsed, checked) {
        (Ok(event), Ok(envelope)) => {
            assert_eq!(event.id(), envelope.id);
            assert_eq!(event.schema(), envelope.schema);
            assert_eq!(event.schema_version(), envelope.schema_version);
            assert_same_as_untyped(&event, envelope);
            round_trip(&event);
        }
        (Ok(event), Err(err)) => {
            panic!(
                "parse accepts what validate refuses ({err}): {event:?}\n{}",
                text(bytes)
            )
        }
        (Err(err), Ok(_)) => assert!(
            err.kind() == ValidationErrorKind::Unstorable || has_duplicate_keys(bytes),
            "parse refuses what validate accepts: {err}\n{}",
            text(bytes)
        ),
        (Err(parsed), Err(checked)) => assert_eq!(
            parsed,
            checked,
            "parse and validate refuse differently\n{}",
            text(bytes)
        ),
    }
}

/// The typed event equals the one [`Envelope::into_payload`] makes of the
/// generic envelope `validate` returned.
fn assert_same_as_untyped(event: &Event, envelope: Envelope<Value>) {
    fn typed<D: Payload + PartialEq + Debug>(envelope: Envelope<Value>, expected: &Envelope<D>) {
        match envelope.into_payload::<D>() {
            Ok(typed) => assert_eq!(&typed, expected, "into_payload and parse disagree"),
            Err(err) => panic!("into_payload refuses what parse accepts: {err}"),
        }
    }
    match event {
        Event::Case(e) => typed(envelope, e),
        Event::CountryDay(e) => typed(envelope, e),
        Event::OutbreakNews(e) => typed(envelope, e),
        Event::CaseScore(e) => typed(envelope, e),
        Event::Other(e) => assert_eq!(&envelope, e),
    }
}

/// Re-encodes an accepted event and parses it again.
fn round_trip(event: &Event) {
    match event {
        Event::Case(e) => round_trip_typed(e, Event::Case, |_| {}),
        Event::CountryDay(e) => round_trip_typed(e, Event::CountryDay, |_| {}),
        Event::OutbreakNews(e) => round_trip_typed(e, Event::OutbreakNews, |_| {}),
        Event::CaseScore(e) => round_trip_typed(e, Event::CaseScore, |score| {
            score.scored_at = micros(score.scored_at);
        }),
        Event::Other(e) => {
            let bytes = e.to_json_bytes().expect("an envelope serialises");
            let again = registry()
                .parse(&bytes)
                .unwrap_or_else(|err| panic!("re-encoded event refused: {err}\n{}", text(&bytes)));
            let mut expected = e.clone();
            expected.occurred_at = micros(expected.occurred_at);
            expected.ingested_at = micros(expected.ingested_at);
            assert_eq!(again, Event::Other(expected), "\n{}", text(&bytes));
        }
    }
}

fn round_trip_typed<D: Payload + Clone + PartialEq + Debug>(
    e: &Envelope<D>,
    wrap: fn(Envelope<D>) -> Event,
    cut_to_micros: fn(&mut D),
) {
    let bytes = e.to_json_bytes().expect("an event serialises");
    let encoded = e.encode().expect("an event encodes");
    assert_eq!(
        text(&encoded),
        text(&bytes),
        "encode() and to_json_bytes() write different bytes"
    );
    let again = registry()
        .parse(&bytes)
        .unwrap_or_else(|err| panic!("re-encoded event refused: {err}\n{}", text(&bytes)));
    let mut expected = e.clone();
    expected.occurred_at = micros(expected.occurred_at);
    expected.ingested_at = micros(expected.ingested_at);
    cut_to_micros(&mut expected.data);
    assert_eq!(
        again,
        wrap(expected),
        "the re-encoded event parses to another event\n{}",
        text(&bytes)
    );
}

/// The validate target: an accepted envelope re-encodes to one accepted
/// again, and a schema with a Rust type takes its data.
pub fn check_validate(bytes: &[u8]) {
    let registry = registry();
    let Ok(envelope) = registry.validate(bytes) else {
        return;
    };
    let typed = match (envelope.schema.as_str(), envelope.schema_version) {
        (Case::SCHEMA, Case::VERSION) => into_payload::<Case>(&envelope),
        (CountryDay::SCHEMA, CountryDay::VERSION) => into_payload::<CountryDay>(&envelope),
        (OutbreakNews::SCHEMA, OutbreakNews::VERSION) => into_payload::<OutbreakNews>(&envelope),
        (CaseScore::SCHEMA, CaseScore::VERSION) => into_payload::<CaseScore>(&envelope),
        _ => Ok(()),
    };
    if let Err(err) = typed {
        panic!(
            "into_payload refuses what validate accepts: {err}\n{}",
            text(bytes)
        );
    }
    // The wire form has four-digit years: an instant outside years 1 to
    // 9999 in UTC (`0001-01-01T00:00:00+01:00`) has none, and parse
    // refuses it as unstorable. validate only checks the schema.
    let storable = |t: DateTime<Utc>| (1..=9999).contains(&t.year());
    if !storable(envelope.occurred_at) || !storable(envelope.ingested_at) {
        return;
    }
    let again_bytes = envelope.to_json_bytes().expect("an envelope serialises");
    let again = registry.validate(&again_bytes).unwrap_or_else(|err| {
        panic!(
            "re-encoded envelope refused: {err}\n{}\nfrom\n{}",
            text(&again_bytes),
            text(bytes)
        )
    });
    let mut expected = envelope;
    expected.occurred_at = micros(expected.occurred_at);
    expected.ingested_at = micros(expected.ingested_at);
    assert_eq!(
        again,
        expected,
        "the re-encoded envelope validates to another one\n{}",
        text(&again_bytes)
    );
}

fn into_payload<D: Payload>(envelope: &Envelope<Value>) -> Result<(), String> {
    envelope
        .clone()
        .into_payload::<D>()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Whether some object in the JSON text names a key twice (`false` for
/// text that is not JSON).
pub fn has_duplicate_keys(bytes: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    matches!(DuplicateKeys.deserialize(&mut de), Ok(true))
}

/// Walks a JSON value; `true` if an object in it repeats a key.
struct DuplicateKeys;

impl<'de> DeserializeSeed<'de> for DuplicateKeys {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DuplicateKeys {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(inner) = seq.next_element_seed(DuplicateKeys)? {
            found |= inner;
        }
        Ok(found)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut keys = HashSet::new();
        let mut found = false;
        while let Some(key) = map.next_key::<String>()? {
            found |= !keys.insert(key);
            found |= map.next_value_seed(DuplicateKeys)?;
        }
        Ok(found)
    }
}

/// A valid envelope of one payload schema, field by field, as JSON text.
#[derive(Debug)]
pub struct Template {
    /// The schema the envelope names.
    pub schema: &'static str,
    /// The envelope's `source`.
    pub source: &'static str,
    /// The payload's fields, in order, with valid values.
    pub data: &'static [(&'static str, &'static str)],
}

/// The envelope's fields before `data`, with valid values (`schema` is the
/// template's).
pub const ENVELOPE: [(&str, &str); 6] = [
    ("id", r#""46239cc6-a1d2-5c25-b435-1c10f1a427f0""#),
    ("schema", ""),
    ("schema_version", "1"),
    ("source", ""),
    ("occurred_at", r#""2024-05-01T00:00:00Z""#),
    ("ingested_at", r#""2024-05-01T06:30:15.123456Z""#),
];

/// One template per payload schema (the samples of vigie-core's tests).
pub const TEMPLATES: [Template; 4] = [
    Template {
        schema: "health.case",
        source: "cdc-case-surveillance",
        data: &[
            ("row_id", r#""row-ab12.cd34_ef56""#),
            ("case_month", r#""2020-11""#),
            ("res_state", r#""CA""#),
            ("state_fips_code", r#""6""#),
            ("res_county", r#""LOS ANGELES""#),
            ("county_fips_code", r#""6037""#),
            ("age_group", r#""18 to 49 years""#),
            ("sex", r#""Female""#),
            ("race", r#""White""#),
            ("ethnicity", r#""Hispanic/Latino""#),
            ("case_positive_specimen_interval", "0"),
            ("case_onset_interval", "null"),
            ("process", r#""Missing""#),
            ("exposure_yn", r#""Missing""#),
            ("current_status", r#""Laboratory-confirmed case""#),
            ("symptom_status", r#""Symptomatic""#),
            ("hosp_yn", r#""No""#),
            ("icu_yn", r#""Missing""#),
            ("death_yn", r#""No""#),
            ("underlying_conditions_yn", r#""NA""#),
        ],
    },
    Template {
        schema: "health.country_day",
        source: "who-covid",
        data: &[
            ("date_reported", r#""2023-06-11""#),
            ("country_code", r#""FR""#),
            ("country", r#""France""#),
            ("who_region", r#""EURO""#),
            ("new_cases", "-1253"),
            ("cumulative_cases", "38997490"),
            ("new_deaths", "null"),
            ("cumulative_deaths", "167985"),
        ],
    },
    Template {
        schema: "health.outbreak_news",
        source: "who-don",
        data: &[
            (
                "url",
                r#""https://www.who.int/emergencies/disease-outbreak-news/item/2024-DON501""#,
            ),
            ("title", r#""Avian Influenza A(H5N1) - Cambodia""#),
            ("published_on", r#""2024-02-12""#),
            ("disease", r#""Avian influenza A(H5N1)""#),
            ("countries", r#"["Cambodia"]"#),
            (
                "summary",
                r#""On 9 February 2024, the National Focal Point for Cambodia notified WHO of a case.""#,
            ),
            (
                "content_hash",
                r#""ea716a682db936bf4e211ca61ffdafdfcb087ea7845f94d991ed53fbf73e039e""#,
            ),
        ],
    },
    Template {
        schema: "health.case_score",
        source: "vigie-scorer",
        data: &[
            ("case_event_id", r#""04c7e04a-8d54-5b70-9d40-e4b580a8f36e""#),
            ("model_name", r#""hosp_risk""#),
            ("model_version", r#""1.0.0""#),
            ("score", "0.0731"),
            ("scored_at", r#""2026-11-28T12:00:00.123456Z""#),
        ],
    },
];

impl Template {
    /// How many places a value can go: each envelope field, each payload
    /// field, and the whole `data`.
    pub fn slots(&self) -> usize {
        ENVELOPE.len() + self.data.len() + 1
    }

    /// The name of a slot (`data` for the whole payload).
    pub fn slot_name(&self, slot: usize) -> &'static str {
        let slot = slot % self.slots();
        match slot.checked_sub(ENVELOPE.len()) {
            None => ENVELOPE[slot].0,
            Some(i) if i < self.data.len() => self.data[i].0,
            Some(_) => "data",
        }
    }

    /// The valid value of a slot, as JSON text.
    pub fn value(&self, slot: usize) -> Vec<u8> {
        let slot = slot % self.slots();
        match slot.checked_sub(ENVELOPE.len()) {
            None => match ENVELOPE[slot] {
                ("schema", _) => quoted(self.schema),
                ("source", _) => quoted(self.source),
                (_, value) => value.as_bytes().to_vec(),
            },
            Some(i) if i < self.data.len() => self.data[i].1.as_bytes().to_vec(),
            Some(_) => {
                let fields: Vec<String> = self
                    .data
                    .iter()
                    .map(|(name, value)| format!("\"{name}\":{value}"))
                    .collect();
                format!("{{{}}}", fields.join(",")).into_bytes()
            }
        }
    }

    /// The envelope with `value` (raw JSON text, or any bytes) in place
    /// `slot` (modulo [`Template::slots`]); an empty `value` leaves the field
    /// out. Without a slot, the valid envelope.
    pub fn message(&self, slot: Option<usize>, value: &[u8]) -> Vec<u8> {
        let slot = slot.map(|s| s % self.slots());
        // Writes `"name":` and the slot's value unless it is the slot being
        // dropped; `true` if the caller writes the valid value.
        let field = |out: &mut Vec<u8>, first: &mut bool, index: usize, name: &str| {
            if slot == Some(index) && value.is_empty() {
                return false;
            }
            if !*first {
                out.push(b',');
            }
            *first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            if slot == Some(index) {
                out.extend_from_slice(value);
                return false;
            }
            true
        };
        let mut out = Vec::with_capacity(1024);
        out.push(b'{');
        let mut first = true;
        for (i, (name, _)) in ENVELOPE.iter().enumerate() {
            if field(&mut out, &mut first, i, name) {
                out.extend_from_slice(&self.value(i));
            }
        }
        let whole = ENVELOPE.len() + self.data.len();
        if field(&mut out, &mut first, whole, "data") {
            out.push(b'{');
            let mut first = true;
            for (i, (name, value)) in self.data.iter().enumerate() {
                if field(&mut out, &mut first, ENVELOPE.len() + i, name) {
                    out.extend_from_slice(value.as_bytes());
                }
            }
            out.push(b'}');
        }
        out.push(b'}');
        out
    }
}

fn quoted(s: &str) -> Vec<u8> {
    format!("\"{s}\"").into_bytes()
}

/// The payload target's input: a template, a slot, then the value.
pub fn payload_input(template: usize, slot: usize, value: &[u8]) -> Vec<u8> {
    let mut input = vec![
        u8::try_from(template).expect("a template index"),
        u8::try_from(slot).expect("a slot index"),
    ];
    input.extend_from_slice(value);
    input
}

/// The message a payload target input stands for: its first byte picks the
/// template (modulo 4), its second the slot, the rest is the value.
pub fn payload_message(input: &[u8]) -> Option<Vec<u8>> {
    let [template, slot, value @ ..] = input else {
        return None;
    };
    let template = &TEMPLATES[usize::from(*template) % TEMPLATES.len()];
    Some(template.message(Some(usize::from(*slot)), value))
}
