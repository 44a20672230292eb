//! Test harness for Vigie: a real Kafka-API broker (Tansu, started once and
//! shared by every test process) and a fresh PostgreSQL database per test.
//!
//! Tests never sleep to synchronise: they wait, with a deadline, for a
//! condition they can observe ([`wait_for`]).
//!
//! Environment:
//! - `VIGIE_TEST_BROKER`: use this broker instead of starting Tansu (memory storage);
//! - `VIGIE_TEST_DURABLE_BROKER`: same, for the broker with durable storage;
//! - `VIGIE_TEST_PG`: admin URL of PostgreSQL (default `postgres://postgres@localhost:5432/postgres`);
//! - `TANSU_BIN`: the Tansu binary (default: `tansu` on the `PATH`, then `~/.cargo/bin/tansu`).

mod broker;
mod kafka;
mod onnx;
mod postgres;
mod wait;

pub use broker::{Broker, Storage, broker, durable_broker, tansu_bin};
pub use kafka::{
    RawInput, RawRecord, create_topic, create_topic_and_dlq, produce_raw, read_topic, topic_len,
    unique_name,
};
pub use onnx::ort_dylib;
pub use postgres::{TestDb, admin_url};
pub use wait::wait_for;
