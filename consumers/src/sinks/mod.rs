//! Every sink Vigie ships, one folder each; [`crate::sink::REGISTRY`] lists
//! them.

pub mod blackhole;
pub mod drift;
pub mod postgres;
pub mod scorer;
pub mod scylla;
