//! `tracing` subscriber set-up: human-readable or JSON lines on stderr.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable, for a terminal: each event on its own block of
    /// lines, its fields one per line, with the source location.
    #[default]
    Pretty,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// The `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info,vigie_kafka=debug`;
    /// the `RUST_LOG` variable overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info,librdkafka=warn,rdkafka=warn".into(),
        }
    }
}

/// Installs the global subscriber, writing to stderr (colours only when
/// stderr is a terminal). Calling it twice is harmless (the second call is
/// ignored), so tests and binaries can both call it.
pub fn init_logging(config: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let ansi = std::io::stderr().is_terminal();
    let _ = subscriber(config.format, filter, ansi, std::io::stderr).try_init();
}

/// The subscriber of `format`, writing to `writer`.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let quiet = FilterFn::new(|meta| !is_cql_server_warning(meta));
    match format {
        LogFormat::Pretty => Box::new(builder.pretty().finish().with(quiet)),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish().with(quiet)),
    }
}

/// The CQL driver's event for each warning a server attaches to a response
/// (`scylla::network::connection`, with a `warning` field). A bulk writer
/// gets one per request (Cassandra warns about every batch over 5 KiB or
/// 10 partitions), so the ScyllaDB sink counts them
/// (`vigie_scylla_server_warnings_total{kind}`) and logs the first of each
/// kind itself, instead of a log line per request.
fn is_cql_server_warning(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_event()
        && meta.target() == "scylla::network::connection"
        && meta.fields().field("warning").is_some()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What one event with two fields looks like in `format`.
    fn one_event(format: LogFormat) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let s = subscriber(format, EnvFilter::new("info"), false, move || {
            writer.clone()
        });
        tracing::subscriber::with_default(s, || {
            tracing::info!(group = "g1", consumed = 42, "Consumer stopped");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn pretty_is_multi_line_with_fields_and_source_location() {
        let text = one_event(LogFormat::Pretty);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(lines.len() >= 2, "one event spans several lines:\n{text}");
        assert!(lines[0].contains("INFO"), "{text}");
        assert!(text.contains("Consumer stopped"), "{text}");
        assert!(text.contains("group: \"g1\""), "{text}");
        assert!(text.contains("consumed: 42"), "{text}");
        assert!(
            lines
                .iter()
                .any(|l| l.trim_start().starts_with("at ") && l.contains("logging.rs")),
            "source location line:\n{text}"
        );
        assert!(
            !text.contains('\u{1b}'),
            "no colour codes without a terminal"
        );
    }

    #[test]
    fn the_cql_drivers_per_response_server_warnings_are_left_out() {
        let out = Captured::default();
        let writer = out.clone();
        let s = subscriber(LogFormat::Json, EnvFilter::new("warn"), false, move || {
            writer.clone()
        });
        tracing::subscriber::with_default(s, || {
            tracing::warn!(
                target: "scylla::network::connection",
                warning = "Batch for [ks.t] is of size 15KiB, exceeding specified threshold of 5KiB",
                "Response from the database contains a warning",
            );
            tracing::warn!(target: "scylla::network::connection", "Could not allocate stream id");
            tracing::warn!(warning = "kept", "Another component's warning");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("Batch for"), "{text}");
        assert!(text.contains("Could not allocate stream id"), "{text}");
        assert!(text.contains("Another component's warning"), "{text}");
    }

    #[test]
    fn json_is_one_flat_object_per_line() {
        let text = one_event(LogFormat::Json);
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["message"], "Consumer stopped");
        assert_eq!(v["consumed"], 42);
        assert_eq!(v["group"], "g1");
        assert_eq!(v["level"], "INFO");
    }

    #[test]
    fn the_config_values_are_pretty_and_json() {
        for (text, format) in [
            ("\"pretty\"", LogFormat::Pretty),
            ("\"json\"", LogFormat::Json),
        ] {
            assert_eq!(serde_json::from_str::<LogFormat>(text).unwrap(), format);
        }
    }
}
