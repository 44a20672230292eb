//! Vigie producers: components that publish events to Kafka.
//!
//! Today: [`raw`], which publishes already-serialized events line by line
//! (the `vigie produce` command and the producer benchmark). The upstream
//! pollers and the scraper are added here, one module each.

pub mod raw;
