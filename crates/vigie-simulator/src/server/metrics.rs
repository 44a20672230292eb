//! Prometheus metrics of a running simulator: requests served by endpoint
//! and status, faults injected by endpoint and kind. `vigie simulate serve`
//! registers them with its `/metrics`; a test can register them with its
//! own registry.

use prometheus::{IntCounterVec, Opts, Registry};

use super::faults::{Endpoint, FaultKind};

/// The simulator's counters. Every simulator counts from its start,
/// registered or not; registering only makes them visible.
#[derive(Debug, Clone)]
pub struct SimMetrics {
    requests: IntCounterVec,
    faults: IntCounterVec,
}

impl SimMetrics {
    /// Fresh counters, registered nowhere.
    pub(crate) fn new() -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "vigie_simulator_requests_total",
                "Requests the simulator answered, by endpoint and status \
                 (the /_sim control routes are not counted).",
            ),
            &["endpoint", "status"],
        )
        .expect("valid metric definition");
        let faults = IntCounterVec::new(
            Opts::new(
                "vigie_simulator_faults_injected_total",
                "Faults the simulator injected, by endpoint and kind.",
            ),
            &["endpoint", "kind"],
        )
        .expect("valid metric definition");
        // Every kind is visible at 0 on the endpoints it applies to, so a
        // rate() over a kind that never fired is 0 rather than absent.
        for endpoint in Endpoint::SERVED {
            for kind in FaultKind::NAMES {
                if kind_applies(kind, endpoint) {
                    faults.with_label_values(&[endpoint.as_str(), kind]);
                }
            }
        }
        Self { requests, faults }
    }

    /// Registers the counters with `registry`.
    ///
    /// # Errors
    ///
    /// If `registry` already holds metrics of the same names.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.faults.clone()))?;
        Ok(())
    }

    /// Requests answered by `endpoint` (a name of the manifest's
    /// `requests`) with `status`, so far.
    pub fn requests(&self, endpoint: &str, status: u16) -> u64 {
        self.requests
            .with_label_values(&[endpoint, &status.to_string()])
            .get()
    }

    /// Faults of kind `kind` (a [`FaultKind::NAMES`] name) injected into
    /// requests to `endpoint`, so far.
    pub fn faults_injected(&self, endpoint: Endpoint, kind: &str) -> u64 {
        self.faults
            .with_label_values(&[endpoint.as_str(), kind])
            .get()
    }

    pub(crate) fn count_request(&self, endpoint: &str, status: u16) {
        self.requests
            .with_label_values(&[endpoint, &status.to_string()])
            .inc();
    }

    pub(crate) fn count_fault(&self, endpoint: Endpoint, kind: &FaultKind) {
        self.faults
            .with_label_values(&[endpoint.as_str(), kind.name()])
            .inc();
    }
}

/// Whether a fault kind can be injected into requests to `endpoint`.
fn kind_applies(kind: &str, endpoint: Endpoint) -> bool {
    match kind {
        "repeat_rows" => endpoint == Endpoint::Cases,
        "layout_change" => matches!(endpoint, Endpoint::NewsListing | Endpoint::NewsArticle),
        _ => true,
    }
}
