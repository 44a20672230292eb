//! Telemetry and lifecycle shared by every long-running Vigie component:
//! the Prometheus registry and its `/metrics`, `/healthz` and `/readyz`
//! endpoints, `tracing` logs, and graceful shutdown on SIGTERM / SIGINT.

pub mod http;
pub mod logging;
pub mod shutdown;

pub use http::{
    DEFAULT_CHECK_TIMEOUT, Readiness, ReadinessReport, TelemetryConfig, TelemetryServer,
};
pub use logging::{LogConfig, LogFormat, init_logging};
pub use shutdown::shutdown_on_signals;
