//! Test harness for Vigie: a real Apache Kafka broker (started once and
//! shared by every test process, or private to a test that restarts it), a
//! fresh PostgreSQL database per test, and a shared CQL server (Apache
//! Cassandra, or ScyllaDB at `SCYLLA_URI`).
//!
//! Tests never sleep to synchronise: they wait, with a deadline, for a
//! condition they can observe ([`wait_for`]).
//!
//! Environment:
//! - `VIGIE_TEST_BROKER`: use this broker instead of starting Apache Kafka
//!   on 127.0.0.1:19092 with `scripts/kafka`;
//! - `SCYLLA_URI`: use this CQL server (`host:port`) instead of starting
//!   Apache Cassandra on 127.0.0.1:19042 with `scripts/cassandra`;
//! - `VIGIE_TEST_PG`: admin URL of PostgreSQL (default `postgres://postgres@localhost:5432/postgres`);
//! - `RUST_LOG`: the components' logs in a test that calls [`logs`]
//!   (shown with its output when it fails, or with `--nocapture`).

mod broker;
mod cql;
mod kafka;
mod onnx;
mod postgres;
mod wait;

pub use broker::{Broker, PrivateKafka, broker, kafka_tool, repo_root};
pub use cql::{CqlServer, PrivateCql, cql_server};
pub use kafka::{
    RawInput, RawRecord, create_topic, create_topic_and_dlq, create_topic_with, dlq_origin,
    end_offsets, produce_raw, produce_raw_at, read_to_end, read_topic, topic_len, unique_name,
};
pub use onnx::ort_dylib;
pub use postgres::{TestDb, admin_url, postgres_ca};
pub use wait::wait_for;

/// Where the scripts keep their state: `VIGIE_STATE`, else `.vigie/` at the
/// top of the source tree.
pub fn state_dir() -> std::path::PathBuf {
    std::env::var_os("VIGIE_STATE")
        .map_or_else(|| repo_root().join(".vigie"), std::path::PathBuf::from)
}

/// The Python of the virtualenv `.vigie/<venv>` that scripts/setup makes
/// (`evidently-venv`: Evidently; `ml-venv`: training, DVC, the Kafka
/// client). Panics, saying so, when it is not there.
pub fn venv_python(venv: &str) -> std::path::PathBuf {
    let python = state_dir().join(venv).join("bin/python");
    assert!(
        python.exists(),
        "no {} (scripts/setup makes it)",
        python.display()
    );
    python
}

/// Shows the components' logs at the level `RUST_LOG` asks for (none when
/// unset) in the output of the test, once per test process.
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
